"""The per-task side of a :class:`~layerconnect.multitask.MultiTaskModel`: applying each task's head to
its rows of the shared encoder output, and writing one task back out as a single-task artefact."""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..method import LayerConnectHypernet, save_connectors

__all__ = ["apply_heads", "export_task"]


def apply_heads(
    mt, out, input_ids: Tensor, attention_mask: Optional[Tensor], task_ids: Tensor, present: Tensor
) -> List[Tuple[int, Tensor, Tensor]]:
    """``[(task index, rows, logits)]`` for each task in ``present``, from the encoder output ``out``."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    names = mt.task_names
    hidden = out[0]
    pooled = getattr(out, "pooler_output", None)
    groups = []
    for tau in present.tolist():
        rows = (task_ids == tau).nonzero().squeeze(1)
        name = names[tau]
        shell = mt.heads[name]
        mask = None if attention_mask is None else attention_mask[rows]
        if name in mt.readouts:
            task_pooled = mt.readouts[name](hidden[rows], mask)
        else:
            task_pooled = None if pooled is None else pooled[rows]
        shell.base_model.output = BaseModelOutputWithPooling(last_hidden_state=hidden[rows], pooler_output=task_pooled)
        try:
            logits = shell(input_ids=input_ids[rows], attention_mask=mask).logits
        finally:
            shell.base_model.output = None
        groups.append((tau, rows, logits))
    return groups


def export_task(mt, name: str, path: str, extra: Optional[dict] = None) -> str:
    """Task ``name`` of ``mt`` as a single-task ``save_connectors`` directory, loadable by
    ``load_connectors`` onto ``AutoModelForSequenceClassification.from_pretrained(base, num_labels=...)``."""
    info = mt.task_info(name)
    i = mt.task_names.index(name)
    hn = mt.hypernet
    shell = mt.heads[name]
    readout = mt.readouts[name] if name in mt.readouts else None
    cfg = dataclasses.replace(mt._cfg, backend="auto")
    single = LayerConnectHypernet(hn.geometry, backend="auto", num_tasks=None, dtype=torch.float32, config=cfg)
    with torch.no_grad():
        single.theta.copy_(hn.theta[i].detach().float().cpu())
        single.bias.copy_(hn.bias[i].detach().float().cpu())
    # save_connectors saves the parameters that require grad: attach the task's connectors (and a trained
    # pooler, under the encoder's own name for it) to its head shell for the duration of the call.
    old_grad = [p.requires_grad for p in shell.parameters()]
    old_name = shell.config._name_or_path
    slot = shell.base_model
    shell.add_module("layerconnect", single)
    if readout is not None and readout.dense is not None:
        slot.add_module("pooler", nn.Module())
        slot.pooler.add_module("dense", readout.dense)
    shell.config._name_or_path = getattr(mt.encoder.config, "_name_or_path", "")
    try:
        shell.requires_grad_(True)
        ex = {"task": name}
        if info.label_names is not None:
            ex["label_names"] = list(info.label_names)
        ex.update(extra or {})
        return save_connectors(shell, path, extra=ex, readout=None if readout is None else readout.kind)
    finally:
        del shell.layerconnect
        if hasattr(slot, "pooler"):
            del slot.pooler
        shell.config._name_or_path = old_name
        for p, g in zip(shell.parameters(), old_grad):
            p.requires_grad_(g)
