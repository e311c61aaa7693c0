"""The model a GLUE run trains: base encoder + task head + method + readout."""

from __future__ import annotations

from typing import Dict

from torch import nn

from ...baselines import apply_method, trainable_parameters
from ...method.inject import head_module_names
from ...method.readout import install_readout, readout_kind
from .tasks import GlueTask

__all__ = ["build_model", "parameter_counts"]


def build_model(model_path: str, task: GlueTask, method: str, options: dict, seed: int, pooling: str) -> nn.Module:
    """The base model with a fresh task head (seeded), ``method`` applied and the readout ``pooling``.

    The readout (:mod:`layerconnect.method.readout`) is installed after the method, so it is trainable
    and identical for every method; its parameters count as head parameters.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, set_seed

    set_seed(seed)
    kwargs = {"num_labels": task.num_labels}
    if task.is_regression:
        kwargs["problem_type"] = "regression"
    if task.label_names is not None:
        kwargs["id2label"] = dict(enumerate(task.label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    config = AutoConfig.from_pretrained(model_path, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, config=config)
    model = apply_method(model, method, **options)
    return install_readout(model, pooling)


def _readout_parameters(model: nn.Module) -> int:
    if readout_kind(model) != "pooler":
        return 0
    base = model.get_base_model().base_model if hasattr(model, "peft_config") else model.base_model
    return sum(p.numel() for p in base.pooler.parameters())


def parameter_counts(model: nn.Module) -> Dict[str, int]:
    """``{"method", "head", "total_trainable", "total"}``: the method's own trainable parameters, the
    task head's (classifier and readout, the same for every method), and all of them."""
    trainable = trainable_parameters(model, include_head=True)
    hf = model.get_base_model() if hasattr(model, "peft_config") else model
    head = sum(p.numel() for n in head_module_names(hf) for p in getattr(hf, n).parameters() if p.requires_grad)
    head += _readout_parameters(model)
    return {
        "method": trainable - head,
        "head": head,
        "total_trainable": trainable,
        "total": sum(p.numel() for p in model.parameters()),
    }
