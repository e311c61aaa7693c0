"""``LayerConnectConfig``: the user-facing knobs of SPEC.md §1-§3 and the geometry they resolve to."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Union

from lc_kernels.reference import check_geometry

__all__ = ["LayerConnectConfig", "Geometry", "resolve_positions", "depth_coordinates"]

PositionsSpec = Union[None, str, Sequence[int]]


def resolve_positions(positions: PositionsSpec, num_layers: int) -> List[int]:
    """Connector positions P ⊆ {0..L} (SPEC §1): None/"inner" = {1..L-1}, "all" = {1..L}, or a list."""
    L = int(num_layers)
    if L < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if positions is None or positions == "inner":
        pos = list(range(1, L))
        if not pos:
            raise ValueError(
                f"a {L}-layer encoder has no inner position (positions=None means 1..L-1); "
                "pass positions='all' or an explicit list such as [0, 1]"
            )
        return pos
    if isinstance(positions, str):
        if positions == "all":
            return list(range(1, L + 1))
        try:
            positions = [int(p) for p in positions.replace(" ", "").split(",") if p != ""]
        except ValueError:
            raise ValueError(
                f"positions={positions!r} is not understood; use None/'inner' (1..L-1), 'all' (1..L), "
                "or a comma-separated list of ints in [0, L]"
            ) from None
    pos = [int(p) for p in positions]
    if not pos:
        raise ValueError("positions must not be empty")
    bad = [p for p in pos if p < 0 or p > L]
    if bad:
        raise ValueError(f"positions {bad} are out of range for a {L}-layer encoder: each must be in [0, {L}]")
    if len(set(pos)) != len(pos):
        raise ValueError(f"positions {pos} contain duplicates")
    return sorted(pos)


def depth_coordinates(n: int) -> List[float]:
    """t_l evenly spread over the positions in order: 0 for the first, 1 for the last (0 if n == 1)."""
    if n == 1:
        return [0.0]
    return [i / (n - 1) for i in range(n)]


@dataclass(frozen=True)
class Geometry:
    """A config resolved for an encoder of hidden size ``d`` and ``L`` layers."""

    d: int
    L: int
    r: int
    p: int
    q: int
    K: int
    positions: List[int]
    ts: List[float]
    alpha: float

    @property
    def num_connectors(self) -> int:
        return len(self.positions)

    def num_params(self) -> int:
        """Trainable connector parameters: K·p·q + |P|·d (SPEC §3; head and LayerNorms excluded)."""
        return self.K * self.p * self.q + self.num_connectors * self.d

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LayerConnectConfig:
    """How to add LayerConnect connectors to an encoder (SPEC.md §1-§3).

    Args:
        down_factor: r = d / down_factor (default 8); must divide d.
        num_anchors: K, the number of depth anchors of the seed bank (default 2).
        seed_rows: p, rows of each seed grid (default r); 1 <= p <= r.
        seed_cols: q, columns of each seed grid (default d/2); 1 <= q <= d.
        alpha: fixed output scale of every connector (default 1.0).
        positions: None/"inner" (every inner position 1..L-1, the default), "all" (1..L), or a list
            of positions in [0, L] (0 acts on the embeddings, L on the last layer's output).
        backend: kernel backend for every connector: "auto" or one of lc_kernels.available_backends().
        train_layernorm: also train the base model's LayerNorm parameters.
        inplace_inference: without autograd (``torch.no_grad()``/``torch.inference_mode()``) write each
            connector's output into the layer's own output tensor instead of a new one, on backends with
            an in-place kernel (``lc_kernels.inplace_supported``; today ``cpu``). Saves an allocation per
            connector (about 1 point of BERT-base CPU latency). Turn it off if you keep references to
            layer outputs (e.g. your own forward hooks that store activations registered before ours).
    """

    down_factor: int = 8
    num_anchors: int = 2
    seed_rows: Optional[int] = None
    seed_cols: Optional[int] = None
    alpha: float = 1.0
    positions: PositionsSpec = None
    backend: str = "auto"
    train_layernorm: bool = False
    inplace_inference: bool = True

    def __post_init__(self):
        for name in ("down_factor", "num_anchors"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("seed_rows", "seed_cols"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or a positive int, got {v!r}")
        if not isinstance(self.inplace_inference, bool):
            raise TypeError(f"inplace_inference must be True or False, got {self.inplace_inference!r}")
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a str, got {type(self.backend).__name__}")
        if isinstance(self.positions, tuple):
            self.positions = list(self.positions)
        self.alpha = float(self.alpha)

    def geometry(self, d: int, L: int) -> Geometry:
        """Resolve defaults for hidden size ``d`` and ``L`` layers, validating everything."""
        if d % self.down_factor != 0:
            raise ValueError(
                f"down_factor={self.down_factor} must divide the hidden size d={d}; "
                f"choose one of {[f for f in range(1, min(d, 64) + 1) if d % f == 0]}"
            )
        r = d // self.down_factor
        p = self.seed_rows if self.seed_rows is not None else r
        q = self.seed_cols if self.seed_cols is not None else max(1, d // 2)
        if p > r:
            raise ValueError(f"seed_rows (p) = {p} must be <= r = d/down_factor = {r}")
        if q > d:
            raise ValueError(f"seed_cols (q) = {q} must be <= d = {d}")
        check_geometry(d, r, p, q)
        pos = resolve_positions(self.positions, L)
        return Geometry(
            d=d, L=L, r=r, p=p, q=q, K=self.num_anchors, positions=pos, ts=depth_coordinates(len(pos)), alpha=self.alpha
        )

    def num_params(self, d: int, L: int) -> int:
        """K·p·q + |P|·d for this config on a (d, L) encoder."""
        return self.geometry(d, L).num_params()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LayerConnectConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LayerConnectConfig fields {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
