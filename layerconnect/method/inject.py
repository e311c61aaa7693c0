"""Attaching LayerConnect connectors to Hugging Face encoders (SPEC §1).

``add_connectors(model, cfg)`` freezes the base model and attaches one :class:`LayerConnectHypernet`
(the seed bank Θ and the per-connector biases, SPEC §3) plus one forward hook per connector position:
position 0 on the embeddings' output, position ``l >= 1`` on the output of layer ``l`` (1-based).

What it changes on the user's model, and nothing else:

* ``requires_grad`` of the parameters (base frozen; task head, and LayerNorms if asked, trainable);
* one new sub-module, ``model.layerconnect`` (so the optimiser, ``state_dict`` and ``.to()`` see it);
* the forward hooks (their handles live in ``model.layerconnect``).

The base model's own modules and weights are untouched, so ``remove_connectors`` restores it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

import lc_kernels

from .config import LayerConnectConfig
from .hypernet import LayerConnectHypernet

__all__ = ["EncoderParts", "find_layers", "add_connectors", "remove_connectors", "head_module_names", "get_hypernet"]


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


def find_layers(
    model: nn.Module, layers: Optional[Sequence[nn.Module]] = None, embeddings: Optional[nn.Module] = None
) -> EncoderParts:
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


def get_hypernet(model: nn.Module) -> Optional[LayerConnectHypernet]:
    """The model's :class:`LayerConnectHypernet`, or None when it has no connectors."""
    hn = getattr(model, "layerconnect", None)
    return hn if isinstance(hn, LayerConnectHypernet) else None


def _freeze_base(model: nn.Module, train_layernorm: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for name in head_module_names(model):
        for p in getattr(model, name).parameters():
            p.requires_grad_(True)
    if train_layernorm:
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                for p in m.parameters():
                    p.requires_grad_(True)


def add_connectors(
    model: nn.Module,
    config: Optional[LayerConnectConfig] = None,
    *,
    layers: Optional[Sequence[nn.Module]] = None,
    embeddings: Optional[nn.Module] = None,
    num_tasks: Optional[int] = None,
    freeze_base: bool = True,
) -> nn.Module:
    """Freeze ``model``'s base, add LayerConnect connectors at the SPEC positions, return ``model``.

    The task head (modules outside ``model.base_model``) stays trainable; base LayerNorms too when
    ``config.train_layernorm``. ``num_tasks`` makes the hypernetwork multi-task (SPEC §6). Everything
    is validated before the model is changed, so an error leaves it as it was.
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
        _freeze_base(model, config.train_layernorm)
    ref_param = next(model.parameters(), None)
    hn = LayerConnectHypernet(
        geom, backend=config.backend, num_tasks=num_tasks, inplace_inference=config.inplace_inference, config=config
    )
    if ref_param is not None:  # float64 models get float64 connectors; half-precision ones keep float32 (the op's)
        hn.to(device=ref_param.device, dtype=torch.float64 if ref_param.dtype == torch.float64 else None)
    model.add_module("layerconnect", hn)
    for index, pos in enumerate(geom.positions):
        module = parts.embeddings if pos == 0 else parts.layers[pos - 1]
        hn._handles.append(module.register_forward_hook(_ConnectorHook(hn, index)))
    return model


class _ConnectorHook:
    """Forward hook replacing a layer's hidden states ``h`` with connector ``index`` applied to them.

    A class holding the hypernetwork (not a closure over the model) so that ``copy.deepcopy(model)``
    re-targets the copy's hooks at the copy's hypernetwork."""

    def __init__(self, hypernet: LayerConnectHypernet, index: int):
        self.hypernet, self.index = hypernet, index

    def __call__(self, module, inputs, output):
        return _replace_hidden(output, self.hypernet.connect(self.index, _first_tensor(output)))


def remove_connectors(model: nn.Module) -> nn.Module:
    """Remove the connectors (hooks and hypernetwork); the base model is as before."""
    hn = get_hypernet(model)
    if hn is not None:
        for h in hn._handles:
            h.remove()
        hn._handles.clear()
    if hasattr(model, "layerconnect"):
        del model.layerconnect
    return model
