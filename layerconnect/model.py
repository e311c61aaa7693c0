"""Adding LayerConnect connectors to Hugging Face encoders, and saving/loading what was trained.

``add_connectors(model, cfg)`` freezes the base model, creates one :class:`LayerConnectHypernet`
(the seed bank Θ and the per-connector biases, SPEC §3) as ``model.layerconnect``, and registers a
forward hook at every connector position (SPEC §1): position 0 on the embeddings' output, position
``l >= 1`` on the output of layer ``l`` (1-based). The base model's modules and weights are not
touched, so its state dict keys are unchanged and ``remove_connectors`` restores it exactly.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor, nn

import lc_kernels
from lc_kernels import reference as ref

from ._io import atomic_write_bytes
from .config import Geometry, LayerConnectConfig

__all__ = [
    "LayerConnectHypernet",
    "EncoderParts",
    "find_layers",
    "add_connectors",
    "remove_connectors",
    "head_module_names",
    "save_connectors",
    "load_connectors",
    "CONNECTOR_FILE",
    "CONFIG_FILE",
]

CONNECTOR_FILE = "connectors.safetensors"
CONFIG_FILE = "layerconnect_config.json"


class LayerConnectHypernet(nn.Module):
    """The hypernetwork of SPEC §3: a seed bank shared by all connectors plus their biases.

    Single task: ``theta`` (K, p, q) and ``bias`` (|P|, d). Multi-task (SPEC §6, ``num_tasks=T``):
    ``theta`` (T, K, p, q), ``bias`` (T, |P|, d), and :attr:`task_ids` (one id per sequence) must be
    set (see :meth:`use_tasks`) before a forward pass.
    """

    def __init__(self, geometry: Geometry, backend: str = "auto", num_tasks: Optional[int] = None,
                 dtype: Optional[torch.dtype] = None, inplace_inference: bool = False):
        super().__init__()
        g = geometry
        self.geometry = g
        self.backend = backend
        self.inplace_inference = inplace_inference
        self.num_tasks = num_tasks
        lead = () if num_tasks is None else (int(num_tasks),)
        self.theta = nn.Parameter(torch.zeros(*lead, g.K, g.p, g.q, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(*lead, g.num_connectors, g.d, dtype=dtype))
        self.task_ids: Optional[Tensor] = None

    def extra_repr(self) -> str:
        g = self.geometry
        tasks = "" if self.num_tasks is None else f", tasks={self.num_tasks}"
        return (f"d={g.d}, r={g.r}, K={g.K}, seed=({g.p}, {g.q}), positions={g.positions}, "
                f"alpha={g.alpha}, backend={self.backend!r}{tasks}")

    def weight(self, index: int) -> Tensor:
        """The generated connector weight W (r x d) of connector ``index`` (for inspection)."""
        g = self.geometry
        return ref.interpolate_seeds(self.theta, g.ts[index], g.r, g.d)

    @contextmanager
    def use_tasks(self, task_ids: Tensor) -> Iterator[None]:
        """Multi-task mode: run the enclosed forward passes with one task id per sequence."""
        if self.num_tasks is None:
            raise RuntimeError("use_tasks needs a multi-task hypernetwork (num_tasks=T)")
        prev, self.task_ids = self.task_ids, task_ids
        try:
            yield
        finally:
            self.task_ids = prev

    def _in_place(self, h: Tensor) -> bool:
        """Overwrite ``h`` instead of allocating: no autograd, not tracing, ``h`` owns its memory (not a
        view of something else) and the backend has a true in-place kernel."""
        return (self.inplace_inference and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                and h._base is None and lc_kernels.inplace_supported(h, self.backend))

    def connect(self, index: int, h: Tensor) -> Tensor:
        """Apply connector ``index`` to hidden states ``h`` (..., d)."""
        g = self.geometry
        op = lc_kernels.connector_ if self._in_place(h) else lc_kernels.connector
        if self.num_tasks is None:
            return op(h, self.theta, self.bias[index], g.ts[index], g.r, g.alpha, self.backend)
        ids = self.task_ids
        if ids is None:
            raise RuntimeError(
                "this model has multi-task connectors: set the task of each sequence first, "
                "e.g. `with model.layerconnect.use_tasks(task_ids): model(...)`"
            )
        ids = ids.to(h.device)
        if ids.dim() == 1 and h.dim() >= 2:  # one id per sequence, broadcast over the tokens
            ids = ids.view(-1, *([1] * (h.dim() - 2)))
        return op(h, self.theta, self.bias[:, index], g.ts[index], g.r, g.alpha, self.backend, task_ids=ids)


@dataclass
class EncoderParts:
    embeddings: nn.Module  # its output is what position 0 acts on
    layers: Sequence[nn.Module]
    hidden_size: int


def _hidden_size(config) -> int:
    for name in ("hidden_size", "dim", "d_model"):
        v = getattr(config, name, None)
        if isinstance(v, int):
            return v
    raise ValueError("cannot read the hidden size from the model config (no hidden_size/dim/d_model)")


def find_layers(model: nn.Module, layers: Optional[Sequence[nn.Module]] = None,
                embeddings: Optional[nn.Module] = None) -> EncoderParts:
    """Locate the embeddings module and the list of Transformer layers of a HF encoder.

    Knows BERT, RoBERTa, DistilBERT and ELECTRA families (and anything with ``encoder.layer`` or
    ``transformer.layer``). Other models: pass ``layers=`` (and ``embeddings=``) explicitly.
    """
    base = getattr(model, "base_model", model)
    if layers is None:
        for path in ("encoder.layer", "transformer.layer", "layers", "layer"):
            obj = base
            for part in path.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, (nn.ModuleList, list, tuple)) and len(obj) > 0:
                layers = obj
                break
    if layers is None:
        raise ValueError(
            f"add_connectors does not know where the layers of {type(model).__name__} are "
            "(supported: BERT, RoBERTa, DistilBERT, ELECTRA families); pass layers=<the ModuleList of "
            "Transformer layers> (and embeddings=<module whose output feeds layer 1>) explicitly"
        )
    if embeddings is None:
        emb = getattr(base, "embeddings", None)
        proj = getattr(base, "embeddings_project", None)  # ELECTRA with embedding_size != hidden_size
        embeddings = proj if proj is not None else emb
    config = getattr(model, "config", None)
    d = _hidden_size(config) if config is not None else None
    if d is None:
        raise ValueError("pass a Hugging Face model (with .config) or give the hidden size")
    return EncoderParts(embeddings=embeddings, layers=list(layers), hidden_size=d)


def head_module_names(model: nn.Module) -> List[str]:
    """Names of the top-level modules that are not part of the pre-trained base (the task head)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return []
    return [n for n, m in model.named_children() if m is not base and n != "layerconnect"]


def _replace_hidden(output, new_h):
    if isinstance(output, Tensor):
        return new_h
    if isinstance(output, tuple):
        return (new_h,) + tuple(output[1:])
    if isinstance(output, list):
        return [new_h] + list(output[1:])
    # ModelOutput-like objects (dict with attribute access)
    if hasattr(output, "keys") and "hidden_states" not in output and hasattr(output, "to_tuple"):
        first = next(iter(output.keys()))
        output[first] = new_h
        return output
    raise TypeError(f"cannot apply a connector to a layer output of type {type(output).__name__}")


def _first_tensor(output) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    if hasattr(output, "to_tuple"):
        return output.to_tuple()[0]
    raise TypeError(f"cannot find hidden states in a layer output of type {type(output).__name__}")


def add_connectors(model: nn.Module, config: Optional[LayerConnectConfig] = None, *,
                   layers: Optional[Sequence[nn.Module]] = None, embeddings: Optional[nn.Module] = None,
                   num_tasks: Optional[int] = None, freeze_base: bool = True) -> nn.Module:
    """Freeze ``model``'s base, add LayerConnect connectors at the SPEC positions, return ``model``.

    The task head (modules outside ``model.base_model``) stays trainable; base LayerNorms too when
    ``config.train_layernorm``. ``num_tasks`` makes the hypernetwork multi-task (SPEC §6).
    """
    config = config or LayerConnectConfig()
    if not isinstance(config, LayerConnectConfig):
        raise TypeError(f"config must be a LayerConnectConfig, got {type(config).__name__}")
    if hasattr(model, "layerconnect"):
        raise ValueError("this model already has LayerConnect connectors; call remove_connectors(model) first")
    parts = find_layers(model, layers, embeddings)
    geom = config.geometry(parts.hidden_size, len(parts.layers))
    if 0 in geom.positions and parts.embeddings is None:
        raise ValueError("position 0 needs the embeddings module; pass embeddings= explicitly")
    if config.backend != "auto" and config.backend not in lc_kernels.available_backends():
        raise ValueError(
            f"backend={config.backend!r} is not available here; available: {lc_kernels.available_backends()} or 'auto'"
        )
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
        for name in head_module_names(model):
            for p in getattr(model, name).parameters():
                p.requires_grad_(True)
        if config.train_layernorm:
            for m in model.modules():
                if isinstance(m, nn.LayerNorm):
                    for p in m.parameters():
                        p.requires_grad_(True)
    ref_param = next(model.parameters(), None)
    hn = LayerConnectHypernet(geom, backend=config.backend, num_tasks=num_tasks,
                              inplace_inference=config.inplace_inference)
    if ref_param is not None:
        hn.to(device=ref_param.device)
    model.add_module("layerconnect", hn)
    model.layerconnect_config = config

    handles = []
    for index, pos in enumerate(geom.positions):
        module = parts.embeddings if pos == 0 else parts.layers[pos - 1]

        def hook(mod, inputs, output, _i=index):
            h = _first_tensor(output)
            return _replace_hidden(output, model.layerconnect.connect(_i, h))

        handles.append(module.register_forward_hook(hook))
    model._layerconnect_handles = handles
    return model


def remove_connectors(model: nn.Module) -> nn.Module:
    """Remove the connectors (hooks and hypernetwork); the base model is as before."""
    for h in getattr(model, "_layerconnect_handles", []):
        h.remove()
    for name in ("_layerconnect_handles", "layerconnect_config"):
        if hasattr(model, name):
            delattr(model, name)
    if hasattr(model, "layerconnect"):
        del model.layerconnect
    return model


# --------------------------------------------------------------------------------------------
# save / load: only what was trained
# --------------------------------------------------------------------------------------------




def trained_state(model: nn.Module) -> Dict[str, Tensor]:
    """Every parameter that requires grad (connectors, head, LayerNorms if trained)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_connectors(model: nn.Module, path: str, extra: Optional[dict] = None) -> str:
    """Save what was trained (seed bank, biases, head, ...) to directory ``path``, atomically.

    Writes ``connectors.safetensors`` and ``layerconnect_config.json`` (config, geometry, base model
    class and name). Returns ``path``.
    """
    from safetensors.torch import save as st_save

    hn = getattr(model, "layerconnect", None)
    if not isinstance(hn, LayerConnectHypernet):
        raise ValueError("model has no LayerConnect connectors (call add_connectors first)")
    os.makedirs(path, exist_ok=True)
    tensors = trained_state(model)
    tensors.setdefault("layerconnect.theta", hn.theta.detach().contiguous().cpu())
    tensors.setdefault("layerconnect.bias", hn.bias.detach().contiguous().cpu())
    cfg = getattr(model, "config", None)
    meta = {
        "format": "layerconnect/1",
        "config": model.layerconnect_config.to_dict(),
        "geometry": hn.geometry.to_dict(),
        "num_tasks": hn.num_tasks,
        "model_class": type(model).__name__,
        "base_model": getattr(cfg, "_name_or_path", None),
        "num_labels": getattr(cfg, "num_labels", None),
        "tensors": sorted(tensors),
    }
    if extra:
        meta["extra"] = extra
    atomic_write_bytes(os.path.join(path, CONNECTOR_FILE), st_save(tensors))
    atomic_write_bytes(os.path.join(path, CONFIG_FILE), json.dumps(meta, indent=2, sort_keys=True).encode())
    return path


def read_connector_meta(path: str) -> dict:
    f = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(f):
        raise FileNotFoundError(f"{f} not found: `path` must be a directory written by save_connectors")
    with open(f) as fh:
        return json.load(fh)


def load_connectors(model: nn.Module, path: str, *, strict: bool = True) -> nn.Module:
    """Load a ``save_connectors`` directory onto the same base model (adds connectors if needed).

    A geometry mismatch (hidden size, layers, seed bank or tensor shapes) raises ValueError; nothing
    is loaded partially.
    """
    from safetensors.torch import load_file

    meta = read_connector_meta(path)
    cfg = LayerConnectConfig.from_dict(meta["config"])
    parts = find_layers(model)
    saved = meta["geometry"]
    if (parts.hidden_size, len(parts.layers)) != (saved["d"], saved["L"]):
        raise ValueError(
            f"connectors in {path} were trained for hidden size {saved['d']} and {saved['L']} layers, "
            f"but this model has hidden size {parts.hidden_size} and {len(parts.layers)} layers; "
            "load them onto the same base model they were trained with"
        )
    if not hasattr(model, "layerconnect"):
        add_connectors(model, cfg, num_tasks=meta.get("num_tasks"))
    elif model.layerconnect.geometry.to_dict() != saved:
        raise ValueError(f"model's connectors {model.layerconnect.geometry} differ from the saved ones {saved}")
    tensors = load_file(os.path.join(path, CONNECTOR_FILE))
    params = dict(model.named_parameters())
    problems = []
    for name, t in tensors.items():
        if name not in params:
            problems.append(f"{name}: not a parameter of this model")
        elif params[name].shape != t.shape:
            problems.append(f"{name}: saved shape {tuple(t.shape)} != model shape {tuple(params[name].shape)}")
    if strict:
        missing = [n for n in ("layerconnect.theta", "layerconnect.bias") if n not in tensors]
        problems += [f"{n}: missing from the file" for n in missing]
    if problems:
        raise ValueError(f"cannot load {path} onto {type(model).__name__}: " + "; ".join(problems))
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    return model
