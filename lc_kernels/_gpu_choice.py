"""Which GPU backend ``backend="auto"`` runs: the faster of the candidates (``cuda``, ``triton``) for
the tensor's dtype and hidden size d on this kind of GPU, decided by figures measured on a card
and recorded below, not by a fixed order. Where no recorded figure decides, ``auto_backend``
(lc_kernels/backends.py) falls back to the registry's priority order.

A figure applies to a device whose name contains the figure's ``device`` (e.g. "H200"); where no
figure was taken on such a device, figures of the same compute capability stand in (same
architecture: the kernels' relative speed carries over better than across architectures).
Among the figures for (dtype, d) — or for the dtype at any d when d is not given — a candidate
must appear in every one to compete; the winner has the smallest sum over figures of
log(time / fastest time of that figure), so each batch size counts once whatever its scale.

To record a measurement, append a ``Figure`` with its source (``benchmarks/RESULTS.md`` section,
date, commit): ``python benchmarks/bench_connector.py --device cuda --dtype bfloat16 --d 768
--compile all`` prints the medians (forward, backward; fwd_bwd is their sum as the bench reports).
Figures of an older kernel version keep deciding until a newer measurement replaces them: the
``kernels`` field says which version they timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class DeviceDescription:
    name: str  # torch.cuda.get_device_name(), e.g. "NVIDIA H200"
    capability: Tuple[int, int]  # torch.cuda.get_device_capability(), e.g. (9, 0)


@dataclass(frozen=True)
class Figure:
    device: str  # a substring of the device name it was measured on
    capability: Tuple[int, int]
    dtype: torch.dtype
    d: int
    n: int  # tokens (rows of x)
    fwd_ms: Dict[str, float]  # backend -> median forward time
    fwd_bwd_ms: Dict[str, float] = field(default_factory=dict)  # backend -> median forward + backward
    kernels: str = ""  # which kernel versions were timed
    source: str = ""


_H200_RUN2 = (
    "benchmarks/RESULTS.md section 3, run 2 (NVIDIA H200, 2026-11-28, the tree of bef0b4b): "
    "bench_connector.py --device cuda --dtype bfloat16 --n 16k,256k --d 768 --repeats 20 --compile all"
)

#: Every measurement that may decide; newest kernels last.
RECORDED: Tuple[Figure, ...] = (
    Figure(
        "H200",
        (9, 0),
        torch.bfloat16,
        768,
        16384,
        {"cuda": 0.381, "triton": 0.939},
        {"cuda": 1.318, "triton": 2.461},
        "cuda v1 (CUDA-core fp32 GEMM), triton v1",
        _H200_RUN2,
    ),
    Figure(
        "H200",
        (9, 0),
        torch.bfloat16,
        768,
        262144,
        {"cuda": 4.986, "triton": 14.436},
        {"cuda": 16.657, "triton": 34.808},
        "cuda v1 (CUDA-core fp32 GEMM), triton v1",
        _H200_RUN2,
    ),
)


def describe(device: torch.device) -> DeviceDescription:
    """The name and compute capability of a CUDA device (what the figures are matched on)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    return DeviceDescription(torch.cuda.get_device_name(idx), tuple(torch.cuda.get_device_capability(idx)))


def applicable(
    device: DeviceDescription, dtype: torch.dtype, d: Optional[int], figures: Optional[Iterable[Figure]] = None
) -> Tuple[Figure, ...]:
    """The figures (default: RECORDED) that speak for this device, dtype and d (any d when None)."""
    rows = [f for f in (RECORDED if figures is None else figures) if f.dtype == dtype and (d is None or f.d == d)]
    by_name = [f for f in rows if f.device.lower() in device.name.lower()]
    if by_name:
        return tuple(by_name)
    return tuple(f for f in rows if tuple(f.capability) == tuple(device.capability))


def choose(
    device: DeviceDescription,
    dtype: torch.dtype,
    d: Optional[int],
    candidates: Sequence[str],
    figures: Optional[Iterable[Figure]] = None,
) -> Optional[str]:
    """The fastest of ``candidates`` by the recorded figures, or None when they do not decide
    (no figure, or fewer than two candidates timed in every figure)."""
    rows = applicable(device, dtype, d, figures)
    if not rows:
        return None
    for key in ("fwd_bwd_ms", "fwd_ms"):  # training (forward + backward) where timed, else forward
        times = [getattr(f, key) for f in rows]
        timed = [c for c in candidates if all(c in t for t in times)]
        if len(timed) >= 2:
            break
    else:
        return None
    score = {c: sum(math.log(t[c] / min(t[o] for o in timed)) for t in times) for c in timed}
    return min(timed, key=lambda c: (score[c], list(candidates).index(c)))
