"""Task heads for many tasks on one encoder: Hugging Face head shells and per-task readouts.

To reproduce exactly what ``AutoModelForSequenceClassification`` + ``load_connectors`` computes, each
task keeps an instance of the artefact's own ``...ForSequenceClassification`` class whose encoder
sub-module is replaced by an :class:`EncoderSlot`: the shared encoder runs once, each task's rows of
its output are placed in the slot, and the class's own ``forward`` applies the head (BERT: pooler
output → dropout → classifier; DistilBERT: first token → pre_classifier → ReLU → classifier;
RoBERTa/ELECTRA: the ``classifier`` head module). The shell is built on the meta device and only its
head is materialised, so a task costs its artefact's numbers and nothing more.

A task trained with an installed readout (:mod:`layerconnect.method.readout`) also gets a
:class:`TaskReadout` that computes its pooled vector from the shared hidden states.
"""

from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from ..method.readout import pool_hidden

__all__ = ["EncoderSlot", "make_head_shell", "TaskReadout", "split_readout_tensors"]


class EncoderSlot(nn.Module):
    """Stands in for the encoder inside a task's ``...ForSequenceClassification`` shell.

    The class's ``forward`` calls its encoder and indexes the result (``outputs[0]`` or
    ``outputs[1]``); the slot returns the already-computed rows of the shared encoder's output.
    """

    def __init__(self):
        super().__init__()
        self.output = None

    def forward(self, *args, **kwargs):
        if self.output is None:
            raise RuntimeError("internal: the shared encoder output was not set before applying a task head")
        return self.output


def _sequence_classification_class(model_class: Optional[str], base_config):
    import transformers

    if model_class is None:
        mapping = transformers.AutoModelForSequenceClassification._model_mapping
        try:
            return mapping[type(base_config)]
        except KeyError:
            raise ValueError(
                f"no ...ForSequenceClassification class is known for config {type(base_config).__name__}"
            ) from None
    cls = getattr(transformers, model_class, None)
    if cls is None or not model_class.endswith("ForSequenceClassification"):
        raise ValueError(
            f"model_class={model_class!r}: a multi-task model needs task artefacts saved from a Hugging Face "
            "...ForSequenceClassification model (e.g. BertForSequenceClassification)"
        )
    if not isinstance(base_config, cls.config_class):
        raise ValueError(
            f"the task was trained with {model_class} (config {cls.config_class.__name__}) but the base encoder "
            f"has config {type(base_config).__name__}; use the base model the task was trained on"
        )
    return cls


def make_head_shell(
    base_config,
    num_labels: int,
    model_class: Optional[str] = None,
    label_names: Optional[Sequence[str]] = None,
    init: bool = False,
) -> nn.Module:
    """A ``...ForSequenceClassification`` instance whose encoder is an :class:`EncoderSlot`.

    Built on the meta device (the encoder weights are never allocated), then only the head is
    materialised on CPU: uninitialised unless ``init`` (then the class's own ``_init_weights``).
    """
    cls = _sequence_classification_class(model_class, base_config)
    cfg = copy.deepcopy(base_config)
    cfg.num_labels = int(num_labels)
    if label_names is not None:
        cfg.id2label = {i: str(n) for i, n in enumerate(label_names)}
        cfg.label2id = {str(n): i for i, n in enumerate(label_names)}
    cfg.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    with torch.device("meta"):
        shell = cls(cfg)
    setattr(shell, shell.base_model_prefix, EncoderSlot())
    shell.to_empty(device="cpu")
    if init:
        for m in shell.modules():
            if not isinstance(m, EncoderSlot):
                shell._init_weights(m)
    return shell


class TaskReadout(nn.Module):
    """One task's readout from the shared hidden states: ``mean``, ``cls`` or its own trained ``pooler``."""

    def __init__(self, kind: str, hidden_size: int):
        super().__init__()
        if kind not in ("mean", "cls", "pooler"):
            raise ValueError(f"TaskReadout: kind={kind!r} must be mean, cls or pooler")
        self.kind = kind
        self.dense = nn.Linear(hidden_size, hidden_size) if kind == "pooler" else None

    def forward(self, hidden: Tensor, mask: Optional[Tensor]) -> Tensor:
        if self.dense is not None:
            return torch.tanh(self.dense(hidden[:, 0]))
        return pool_hidden(hidden, mask, self.kind)


def split_readout_tensors(tensors: Dict[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Remove and return the ``<prefix>.pooler.dense.*`` tensors of a trained pooler, renamed ``dense.*``."""
    key = f"{prefix}.pooler."
    out = {}
    for name in [n for n in tensors if n.startswith(key)]:
        out[name[len(key) :]] = tensors.pop(name)
    return out
