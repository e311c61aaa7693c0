"""The sentence readout of a sequence classifier: how the encoder's hidden states become one vector.

A Hugging Face BERT-family ``...ForSequenceClassification`` computes ``classifier(dropout(pooler(h)))``
with ``pooler(h) = tanh(W h[:, 0] + b)``. Checkpoints trained without next-sentence prediction (the
offline all-MiniLM-L6-v2, trained with mean pooling) ship an untrained pooler, and every
parameter-efficient method freezes it with the base model: the classifier then reads a fixed random
projection. :func:`install_readout` makes the readout an explicit, trainable part of the task head,
identical for every method:

    pooler   tanh(W h[:, 0] + b), the model's own pooler made trainable (d·d + d head parameters)
    cls      h[:, 0], the first token's hidden state (no parameters)
    mean     the attention-masked mean of h over the tokens (no parameters)

It swaps the model's ``pooler`` module for a parameter-free one (``cls``, ``mean``) or marks the
pooler trainable (``pooler``). Call it after the method is applied (methods freeze the base).
:func:`readout_kind` reads back what a model uses ("model-pooler" when nothing was installed: the
model's own pooler, trained or not as the method decides).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

__all__ = ["READOUTS", "ReadoutPooler", "install_readout", "readout_kind", "pool_hidden"]

READOUTS = ("mean", "cls", "pooler")


def pool_hidden(hidden: Tensor, mask: Optional[Tensor], kind: str) -> Tensor:
    """``cls``: ``hidden[:, 0]``; ``mean``: the mean over the positions where ``mask`` is 1 (all if None)."""
    if kind == "cls":
        return hidden[:, 0]
    if kind != "mean":
        raise ValueError(f"pool_hidden: kind={kind!r} must be 'cls' or 'mean'")
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class ReadoutPooler(nn.Module):
    """Stands in for a BERT pooler: a parameter-free ``cls`` or ``mean`` readout.

    The pooler slot receives only the hidden states; for ``mean`` the attention mask of the current
    call is handed over by a forward pre-hook on the encoder (:func:`install_readout`)."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in ("cls", "mean"):
            raise ValueError(f"ReadoutPooler: kind={kind!r} must be 'cls' or 'mean'")
        self.kind = kind
        self.mask: Optional[Tensor] = None

    def forward(self, hidden: Tensor) -> Tensor:
        mask, self.mask = self.mask, None  # one call's mask; never kept alive past it
        return pool_hidden(hidden, mask, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class _HandMask:
    """Encoder pre-hook giving the pooler the call's ``attention_mask`` (keyword or 2nd positional)."""

    def __init__(self, pooler: ReadoutPooler):
        self.pooler = pooler

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        self.pooler.mask = mask
        return None


def _encoder_with_pooler(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", model)
    get_base = getattr(model, "get_base_model", None)  # a peft wrapper
    if callable(get_base) and getattr(model, "peft_config", None) is not None:
        base = get_base().base_model
    if not hasattr(base, "pooler"):
        raise ValueError(
            f"install_readout needs a BERT-family model whose encoder has a `pooler` slot; "
            f"{type(model).__name__} has none (RoBERTa/DistilBERT/ELECTRA heads: keep their own readout)"
        )
    return base


def install_readout(model: nn.Module, kind: str) -> nn.Module:
    """Give ``model`` the readout ``kind`` (one of :data:`READOUTS`) as a trainable part of its head."""
    if kind not in READOUTS:
        raise ValueError(f"readout {kind!r} is unknown; choose one of {', '.join(READOUTS)}")
    base = _encoder_with_pooler(model)
    if isinstance(base.pooler, ReadoutPooler):
        raise ValueError("this model already has an installed readout; build a fresh model to change it")
    if kind == "pooler":
        if base.pooler is None:
            raise ValueError("readout 'pooler' needs the model's pooler, but it was built without one")
        base.pooler.requires_grad_(True)
        base.pooler.layerconnect_readout = "pooler"  # what readout_kind reports, and save_connectors records
        return model
    pooler = ReadoutPooler(kind)
    base.pooler = pooler
    if kind == "mean":
        base.register_forward_pre_hook(_HandMask(pooler), with_kwargs=True)
    return model


def readout_kind(model: nn.Module) -> str:
    """``mean``/``cls``/``pooler`` (installed), ``model-pooler`` (the model as built) or ``model-head`` (a model
    family without a pooler slot)."""
    try:
        base = _encoder_with_pooler(model)
    except ValueError:
        return "model-head"
    if isinstance(base.pooler, ReadoutPooler):
        return base.pooler.kind
    if getattr(base.pooler, "layerconnect_readout", None) == "pooler":
        return "pooler"
    return "model-pooler"
