"""A task's whole adaptation as a small directory: ``save_connectors`` / ``load_connectors``.

Layout (format ``layerconnect/1``)::

    <dir>/connectors.safetensors     the trained tensors: seed bank, biases, head (and LayerNorms if trained)
    <dir>/layerconnect_config.json   config, geometry, model class, base model name, tensor names

The two files are written together or not at all: the directory is built aside and swapped in as a
whole (:func:`layerconnect.utils.io.atomic_directory`), so an interrupted save leaves the previous
artefact intact. Loading validates everything (format, geometry, every tensor's name and shape, the
head) before it changes the model, so a refused load leaves the model as it was.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..utils.io import atomic_directory
from .config import LayerConnectConfig
from .inject import add_connectors, find_layers, get_hypernet, head_module_names
from .readout import READOUTS, install_readout, readout_kind

__all__ = [
    "save_connectors",
    "load_connectors",
    "read_connector_meta",
    "trained_state",
    "ArtefactError",
    "CONNECTOR_FILE",
    "CONFIG_FILE",
    "FORMAT",
    "HEAD_CHOICES",
]

CONNECTOR_FILE = "connectors.safetensors"
CONFIG_FILE = "layerconnect_config.json"
FORMAT = "layerconnect/1"
HEAD_CHOICES = ("saved", "keep")
_GEOMETRY_KEYS = ("d", "L", "r", "p", "q", "K", "positions", "ts", "alpha")


class ArtefactError(ValueError):
    """An artefact directory is missing, malformed, or does not fit the model; the message names the file."""


def trained_state(model: nn.Module) -> Dict[str, Tensor]:
    """Every parameter that requires grad (connectors, head, LayerNorms if trained), on CPU."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_connectors(model: nn.Module, path: str, extra: Optional[dict] = None, *, readout: Optional[str] = None) -> str:
    """Save what was trained (seed bank, biases, head, ...) as the directory ``path``; returns ``path``.

    ``readout`` records how the head reads the encoder (default: detected, see
    :func:`layerconnect.method.readout.readout_kind`).

    ``path`` must be new, or an earlier artefact directory (it is then replaced as a whole): a folder
    holding other files is refused rather than emptied.
    """
    from safetensors.torch import save as st_save

    hn = get_hypernet(model)
    if hn is None:
        raise ValueError("model has no LayerConnect connectors (call add_connectors first)")
    if os.path.isdir(path):
        foreign = sorted(set(os.listdir(path)) - {CONNECTOR_FILE, CONFIG_FILE})
        if foreign:
            raise ArtefactError(
                f"save_connectors replaces the whole directory {path}, which holds other files too "
                f"({foreign[:5]}); save into a new or dedicated directory"
            )
    tensors = trained_state(model)
    tensors.setdefault("layerconnect.theta", hn.theta.detach().contiguous().cpu())
    tensors.setdefault("layerconnect.bias", hn.bias.detach().contiguous().cpu())
    cfg = getattr(model, "config", None)
    meta = {
        "format": FORMAT,
        "config": hn.config.to_dict(),
        "geometry": hn.geometry.to_dict(),
        "num_tasks": hn.num_tasks,
        "model_class": type(model).__name__,
        "base_model": getattr(cfg, "_name_or_path", None),
        "num_labels": getattr(cfg, "num_labels", None),
        "head": head_module_names(model),
        "readout": readout or readout_kind(model),
        "tensors": sorted(tensors),
    }
    if extra:
        meta["extra"] = extra
    with atomic_directory(path) as tmp:
        with open(os.path.join(tmp, CONNECTOR_FILE), "wb") as fh:
            fh.write(st_save(tensors))
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as fh:
            fh.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_connector_meta(path: str) -> dict:
    """The parsed ``layerconnect_config.json`` of artefact directory ``path``, checked for format and keys."""
    f = os.path.join(path, CONFIG_FILE)
    if not os.path.isdir(path):
        raise ArtefactError(f"{path} is not a directory: pass the directory written by save_connectors")
    if not os.path.isfile(f):
        raise ArtefactError(f"{f} not found: `path` must be a directory written by save_connectors")
    try:
        with open(f, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{f} is not valid UTF-8 JSON ({exc}); the artefact is damaged: save it again") from None
    if not isinstance(meta, dict):
        raise ArtefactError(f"{f} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise ArtefactError(f"{f} has format {meta.get('format')!r}; this version reads {FORMAT!r}")
    missing = [k for k in ("config", "geometry") if not isinstance(meta.get(k), dict)]
    if missing:
        raise ArtefactError(f"{f} lacks the {' and '.join(repr(k) for k in missing)} section(s); save it again")
    gone = [k for k in _GEOMETRY_KEYS if k not in meta["geometry"]]
    if gone:
        raise ArtefactError(f"{f}: 'geometry' lacks {gone}; save it again")
    return meta


def _read_tensors(path: str) -> Dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = os.path.join(path, CONNECTOR_FILE)
    if not os.path.isfile(f):
        what = "is a directory, not a file" if os.path.isdir(f) else "is missing"
        raise ArtefactError(f"{f} {what}: the artefact is incomplete; save it again")
    try:
        return load_file(f)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtefactError(f"{f} cannot be read as safetensors ({exc}); the file is damaged: save it again") from None


def _check_fit(
    model: nn.Module, path: str, meta: dict, cfg: LayerConnectConfig, tensors: Dict[str, Tensor], head: str
) -> List[str]:
    """Every reason the artefact does not fit ``model`` (empty: it fits)."""
    parts = find_layers(model)
    saved = meta["geometry"]
    if (parts.hidden_size, len(parts.layers)) != (saved["d"], saved["L"]):
        return [
            f"it was trained for hidden size {saved['d']} and {saved['L']} layers, but this model has hidden "
            f"size {parts.hidden_size} and {len(parts.layers)} layers; load it onto the base model it was "
            "trained with"
        ]
    geom = cfg.geometry(saved["d"], saved["L"])
    if geom.to_dict() != saved:
        return [f"its geometry {saved} does not follow from its config ({geom.to_dict()}); save it again"]
    hn = get_hypernet(model)
    if hn is not None and hn.geometry.to_dict() != saved:
        return [f"the model's connectors {hn.geometry.to_dict()} differ from the saved ones {saved}"]
    lead = () if meta.get("num_tasks") is None else (int(meta["num_tasks"]),)
    expected = {
        "layerconnect.theta": (*lead, geom.K, geom.p, geom.q),
        "layerconnect.bias": (*lead, geom.num_connectors, geom.d),
    }
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    problems = [f"{n}: missing from the file" for n in expected if n not in tensors]
    for name, t in tensors.items():
        want = expected.get(name, params.get(name))
        if want is None:
            problems.append(f"{name}: not a parameter of this {type(model).__name__}")
        elif tuple(t.shape) != tuple(want):
            problems.append(f"{name}: saved shape {tuple(t.shape)} != expected {tuple(want)}")
    kind = meta.get("readout")
    if kind in READOUTS and readout_kind(model) not in (kind, "model-pooler"):
        problems.append(
            f"it was trained with the {kind!r} readout but the model already has "
            f"{readout_kind(model)!r}; load it onto a fresh model"
        )
    elif kind in READOUTS and readout_kind(model) == "model-head":
        problems.append(f"it was trained with the {kind!r} readout, which needs a BERT-family model with a pooler")
    if head == "saved":
        for mod in head_module_names(model):
            names = [f"{mod}.{n}" for n, _ in getattr(model, mod).named_parameters()]
            absent = [n for n in names if n not in tensors]
            if absent:
                problems.append(
                    f"the model's head {mod!r} ({type(model).__name__}) has parameters the artefact lacks "
                    f"({absent[:3]}; it was saved from a {meta.get('model_class')}): its predictions would "
                    "come from an untrained head. Load it onto the class it was saved from, or pass "
                    "head='keep' to keep this model's own head on purpose"
                )
    return problems


def load_connectors(model: nn.Module, path: str, *, head: str = "saved") -> nn.Module:
    """Load a ``save_connectors`` directory onto the same base model (adds connectors if needed).

    ``head="saved"`` (default) requires the artefact to hold every parameter of the model's task head;
    ``head="keep"`` keeps the model's own head where the artefact has none (e.g. an artefact saved from a
    headless encoder). Nothing is changed unless everything fits; the error names the file and the fix.
    """
    if head not in HEAD_CHOICES:
        raise ValueError(f"head={head!r}: choose one of {HEAD_CHOICES}")
    meta = read_connector_meta(path)
    where = os.path.join(path, CONFIG_FILE)
    try:
        cfg = LayerConnectConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise ArtefactError(f"{where}: invalid 'config' ({exc}); save it again") from None
    tensors = _read_tensors(path)
    problems = _check_fit(model, path, meta, cfg, tensors, head)
    if problems:
        raise ArtefactError(f"cannot load {path} onto {type(model).__name__}: " + "; ".join(problems))
    if get_hypernet(model) is None:
        add_connectors(model, cfg, num_tasks=meta.get("num_tasks"))
    if meta.get("readout") in READOUTS and readout_kind(model) != meta["readout"]:
        install_readout(model, meta["readout"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    return model
