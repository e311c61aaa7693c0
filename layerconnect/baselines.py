"""The methods LayerConnect is compared with, applied to a Hugging Face ``...ForSequenceClassification``.

    from layerconnect.baselines import apply_method, print_trainable_parameters
    model = apply_method(model, "houlsby")        # or any name in METHODS
    print_trainable_parameters(model)

Every method freezes the pre-trained base, adds (or unfreezes) its own parameters and keeps the
**task head** trainable. The head is what the ``...ForSequenceClassification`` class adds on top
of ``model.base_model``: ``classifier`` (BERT, RoBERTa, ELECTRA; for RoBERTa/ELECTRA a two-layer
head) and also ``pre_classifier`` for DistilBERT. BERT's ``pooler`` lives inside ``model.bert``: it
was pre-trained (next-sentence prediction) and counts as base, so it stays frozen. That is the
AdapterHub / peft convention of training only the newly created head, and it is the same head
:func:`layerconnect.method.head_module_names` (and so ``add_connectors``) keeps trainable.

Methods:
    layerconnect  ``add_connectors(model, LayerConnectConfig(**options))`` (SPEC.md).
    houlsby       two bottleneck adapters per layer, equivalent to AdapterHub's ``double_seq_bn``.
    pfeiffer      one bottleneck adapter per layer, equivalent to AdapterHub's ``seq_bn``.
    lora          peft LoRA on the query and value projections (r=8, lora_alpha=16).
    bitfit        every bias of the base model (LayerNorm biases, pooler included).
    head          the task head only (a linear probe on the frozen encoder).
    full          every parameter.

Bottleneck adapters (our own implementation; the ``adapters`` library is not needed at run time).
With ``h`` the output of a sub-layer's output projection after its dropout (attention output
``dense``, FFN output ``dense``; DistilBERT: ``attention.out_lin`` and ``ffn``) and ``x_in`` the
sub-layer's input, the pre-trained block computes ``LN(h + x_in)``. With ``A(u) = W_up ·
act(W_down · u + b_down) + b_up`` the adapted block computes (AdapterHub's BnConfig with
``original_ln_after=True, residual_before_ln=True, ln_before=ln_after=False, scaling=1.0, dropout=0``):

    Houlsby  (original_ln_before=False):  LN(h + A(h) + x_in)
    Pfeiffer (original_ln_before=True):   LN(h + A(LN(h + x_in)) + x_in)   (the same LN, applied twice)

i.e. the adapter's own residual is taken on ``h`` before the pre-trained residual add and
LayerNorm, which then run unchanged; Pfeiffer's adapter reads the normalised sub-layer output.
Bottleneck size ``m = int(d // reduction_factor)`` (16 by default), non-linearity ``swish`` (SiLU)
for Houlsby (``mh_adapter`` after attention + ``output_adapter`` after the FFN) and ``relu`` for
Pfeiffer (``output_adapter`` only). Init as AdapterHub's default ``init_weights="bert"``: weights
N(0, 0.02), biases 0 — near-identity, not exactly identity (W_up is not zero).
The adapters are inserted with forward hooks on the sub-layer's last module (its ``dropout``, or
DistilBERT's ``out_lin``) so the base modules and their state-dict keys are untouched; the adapter
modules are registered as ``mh_adapter`` / ``output_adapter`` children of each Transformer layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .method.inject import find_layers, head_module_names

__all__ = [
    "METHODS",
    "BottleneckAdapter",
    "apply_method",
    "add_bottleneck_adapters",
    "head_parameter_names",
    "trainable_parameters",
    "print_trainable_parameters",
    "lora_target_modules",
]

METHODS = ("layerconnect", "houlsby", "pfeiffer", "lora", "bitfit", "head", "full")

# AdapterHub's presets (adapters/configuration/adapter_config.py: DoubleSeqBnConfig, SeqBnConfig).
BOTTLENECK_PRESETS: Dict[str, dict] = {
    "houlsby": dict(
        mh_adapter=True, output_adapter=True, non_linearity="swish", reduction_factor=16, original_ln_before=False
    ),
    "pfeiffer": dict(
        mh_adapter=False, output_adapter=True, non_linearity="relu", reduction_factor=16, original_ln_before=True
    ),
}
LORA_DEFAULTS = dict(r=8, lora_alpha=16, lora_dropout=0.0)

_ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``: a sequential bottleneck adapter with its own residual.

    ``d`` -> ``m`` -> ``d``; 2·d·m + m + d parameters.
    """

    def __init__(self, d: int, m: int, non_linearity: str = "swish", init_std: float = 0.02, device=None, dtype=None):
        super().__init__()
        key = non_linearity.lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"non_linearity={non_linearity!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        if m < 1:
            raise ValueError(f"bottleneck size m={m} must be >= 1 (reduction_factor too large for d={d})")
        self.down = nn.Linear(d, m, device=device, dtype=dtype)
        self.act = _ACTIVATIONS[key]()
        self.up = nn.Linear(m, d, device=device, dtype=dtype)
        self.non_linearity = key
        if self.down.weight.device.type != "meta":
            with torch.no_grad():
                for lin in (self.down, self.up):
                    lin.weight.normal_(0.0, init_std)
                    lin.bias.zero_()

    def bottleneck(self, u: torch.Tensor) -> torch.Tensor:
        """``up(act(down(u)))``, the adapter without its residual."""
        return self.up(self.act(self.down(u)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.bottleneck(h)

    def extra_repr(self) -> str:
        return f"d={self.up.out_features}, m={self.down.out_features}, act={self.non_linearity}"


class _ApplyAdapter:
    """Forward hook replacing a sub-layer's output ``h`` with the adapter's rewrite of it.

    Houlsby (``original_ln_before=False``): ``h + A(h)``. Pfeiffer (``original_ln_before=True``):
    ``h + A(LN(h + x_in))`` with the block's own pre-trained LayerNorm ``LN`` and residual input
    ``x_in`` (captured by :class:`_CaptureResidual` when the block is entered), so that the base's
    ``LN(h' + x_in)`` afterwards gives AdapterHub's ``LN(A(LN(h + x_in)) + h + x_in)``.
    A class (not a closure) so ``copy.deepcopy(model)`` re-targets the copy's hook at the copy's
    adapter (deepcopy shares function objects but copies instances through its memo).
    """

    def __init__(self, adapter: BottleneckAdapter, layer_norm: Optional[nn.Module] = None):
        self.adapter = adapter
        self.layer_norm = layer_norm
        self.residual: Optional[torch.Tensor] = None

    def _rewrite(self, h: torch.Tensor) -> torch.Tensor:
        if self.layer_norm is None:
            return self.adapter(h)
        x_in, self.residual = self.residual, None  # do not keep activations alive past this call
        if x_in is None:
            raise RuntimeError(
                "Pfeiffer adapter: the block's residual input was not captured "
                "(was the sub-layer called outside its block?)"
            )
        return h + self.adapter.bottleneck(self.layer_norm(h + x_in))

    def __call__(self, module, inputs, output):
        if isinstance(output, torch.Tensor):
            return self._rewrite(output)
        if isinstance(output, tuple):
            return (self._rewrite(output[0]),) + tuple(output[1:])
        raise TypeError(f"cannot apply an adapter to a sub-layer output of type {type(output).__name__}")


class _CaptureResidual:
    """Forward pre-hook (with kwargs) storing a block's residual input ``x_in`` for :class:`_ApplyAdapter`."""

    def __init__(self, target: _ApplyAdapter, index: int, names: Tuple[str, ...]):
        self.target, self.index, self.names = target, index, names

    def __call__(self, module, args, kwargs):
        if len(args) > self.index:
            self.target.residual = args[self.index]
        else:
            found = [kwargs[n] for n in self.names if n in kwargs]
            if not found:
                raise RuntimeError(
                    f"cannot find the residual input of {type(module).__name__} "
                    f"(positional #{self.index} or one of {self.names})"
                )
            self.target.residual = found[0]
        return None


def _module_at(root: nn.Module, path: str) -> Optional[nn.Module]:
    obj = root
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


@dataclass(frozen=True)
class _Site:
    """One sub-layer ``LN(h + x_in)`` of a Transformer layer, as paths relative to the layer."""

    output: str  # module whose output is h (after the output projection and its dropout)
    block: str  # module called with x_in ("" = the layer itself) ...
    arg: int  # ... as this positional argument ...
    kwargs: Tuple[str, ...]  # ... or one of these keywords
    layer_norm: str  # the pre-trained LayerNorm applied to h + x_in


# (attention sub-layer, FFN sub-layer) per family.
_SITES: Tuple[Tuple[_Site, _Site], ...] = (
    (  # BERT, RoBERTa, ELECTRA: BertSelfOutput / BertOutput.forward(hidden_states, input_tensor)
        _Site("attention.output.dropout", "attention.output", 1, ("input_tensor",), "attention.output.LayerNorm"),
        _Site("output.dropout", "output", 1, ("input_tensor",), "output.LayerNorm"),
    ),
    (  # DistilBERT: TransformerBlock.forward(x, ...), no dropout after out_lin; FFN.forward(input)
        _Site("attention.out_lin", "", 0, ("x", "hidden_states"), "sa_layer_norm"),
        _Site("ffn.dropout", "ffn", 0, ("input", "hidden_states"), "output_layer_norm"),
    ),
)


def _adapter_sites(layer: nn.Module) -> Tuple[_Site, _Site]:
    for sites in _SITES:
        if all(_module_at(layer, p) is not None for s in sites for p in (s.output, s.block, s.layer_norm)):
            return sites
    raise ValueError(
        f"cannot find where to insert bottleneck adapters in a {type(layer).__name__} layer: expected "
        f"sub-modules {[s.output for pair in _SITES for s in pair]} (BERT, RoBERTa, ELECTRA, DistilBERT); "
        "other architectures are not supported by layerconnect.baselines"
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a peft wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and getattr(model, "peft_config", None) is not None:
        return get_base()
    return model


def _set_trainable(modules, flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def add_bottleneck_adapters(
    model: nn.Module,
    *,
    mh_adapter: bool,
    output_adapter: bool,
    reduction_factor: float = 16,
    non_linearity: str = "swish",
    original_ln_before: bool = False,
    init_std: float = 0.02,
) -> List[BottleneckAdapter]:
    """Insert bottleneck adapters into every layer of ``model`` (no freezing); return them.

    ``original_ln_before=False`` is AdapterHub's Houlsby placement, ``True`` its Pfeiffer one (see
    the module docstring); both keep ``original_ln_after=True, residual_before_ln=True``.
    """
    if not (mh_adapter or output_adapter):
        raise ValueError("at least one of mh_adapter / output_adapter must be True")
    if reduction_factor <= 0:
        raise ValueError(f"reduction_factor must be > 0, got {reduction_factor}")
    parts = find_layers(model)
    d = parts.hidden_size
    m = max(1, int(d // reduction_factor))  # AdapterHub: int(hidden_size // reduction_factor)
    # validate every layer before changing any, so an error leaves the model untouched
    for layer in parts.layers:
        if hasattr(layer, "mh_adapter") or hasattr(layer, "output_adapter"):
            raise ValueError("this model already has bottleneck adapters; start from a fresh model")
        _adapter_sites(layer)
    added = []
    for layer in parts.layers:
        mh_site, out_site = _adapter_sites(layer)
        ref = next(layer.parameters())
        for name, want, site in (("mh_adapter", mh_adapter, mh_site), ("output_adapter", output_adapter, out_site)):
            if not want:
                continue
            adapter = BottleneckAdapter(d, m, non_linearity, init_std, device=ref.device, dtype=ref.dtype)
            layer.add_module(name, adapter)
            ln = _module_at(layer, site.layer_norm) if original_ln_before else None
            hook = _ApplyAdapter(adapter, ln)
            if original_ln_before:
                _module_at(layer, site.block).register_forward_pre_hook(
                    _CaptureResidual(hook, site.arg, site.kwargs), with_kwargs=True
                )
            _module_at(layer, site.output).register_forward_hook(hook)
            added.append(adapter)
    return added


def lora_target_modules(model: nn.Module) -> List[str]:
    """The query and value projection names of ``model``'s family (as peft ``target_modules``)."""
    names = {n.rsplit(".", 1)[-1] for n, _ in _unwrap(model).named_modules()}
    for pair in (("query", "value"), ("q_lin", "v_lin")):
        if set(pair) <= names:
            return list(pair)
    raise ValueError(
        f"cannot find the query/value projections of {type(model).__name__} (looked for query/value and "
        "q_lin/v_lin); pass target_modules=[...] to apply_method(model, 'lora', target_modules=...)"
    )


def _check_options(method: str, options: dict, allowed) -> None:
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"apply_method({method!r}) got unknown options {sorted(unknown)}; allowed: {sorted(allowed)}")


def apply_method(model: nn.Module, method: str, **options) -> nn.Module:
    """Prepare ``model`` for parameter-efficient fine-tuning with ``method`` (one of :data:`METHODS`).

    Options: ``layerconnect`` takes :class:`~layerconnect.LayerConnectConfig` fields;
    ``houlsby``/``pfeiffer`` take ``reduction_factor``, ``non_linearity``, ``init_std``; ``lora``
    takes ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``. Returns the model to train
    (for ``lora`` a peft ``PeftModel``, which is called exactly like the HF model).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}")
    if getattr(model, "base_model", None) is None or model.base_model is model:
        raise TypeError(
            f"apply_method needs a Hugging Face ...ForSequenceClassification model (a base model plus a head); "
            f"got {type(model).__name__}"
        )
    heads = [getattr(model, n) for n in head_module_names(model)]

    if method == "layerconnect":
        from .method import LayerConnectConfig, add_connectors

        model = add_connectors(model, LayerConnectConfig(**options))
        _set_trainable(heads, True)
        return model

    if method == "lora":
        _check_options(method, options, ("r", "lora_alpha", "lora_dropout", "target_modules"))
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:  # pragma: no cover - peft is in the [glue] extra
            raise ImportError("method 'lora' needs peft: pip install 'layerconnect[glue]' (or pip install peft)") from e
        opts = dict(LORA_DEFAULTS)
        opts.update(options)
        target = opts.pop("target_modules", None) or lora_target_modules(model)
        for p in model.parameters():
            p.requires_grad_(False)
        # Only heads with parameters: peft matches modules_to_save by name suffix, and the
        # parameter-free "dropout" head would also match every LoRA layer's lora_dropout.
        heads_to_save = [n for n in head_module_names(model) if any(True for _ in getattr(model, n).parameters())]
        cfg = LoraConfig(
            task_type="SEQ_CLS", target_modules=list(target), bias="none", modules_to_save=heads_to_save, **opts
        )
        return get_peft_model(model, cfg)

    added: List[nn.Module] = []
    if method in BOTTLENECK_PRESETS:  # insert first: a refused insertion leaves the model as it was
        _check_options(method, options, ("reduction_factor", "non_linearity", "init_std"))
        cfg = dict(BOTTLENECK_PRESETS[method])
        cfg.update(options)
        added = add_bottleneck_adapters(model, **cfg)
    for p in model.parameters():
        p.requires_grad_(method == "full")
    _set_trainable(added, True)
    if method == "bitfit":
        _check_options(method, options, ())
        for name, p in model.base_model.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                p.requires_grad_(True)
    elif method in ("head", "full"):
        _check_options(method, options, ())
    _set_trainable(heads, True)
    return model


def head_parameter_names(model: nn.Module) -> List[str]:
    """Names (as in ``model.named_parameters()``) of the task head's parameters, peft-wrapped or not."""
    hf = _unwrap(model)
    head_ids = {id(p) for n in head_module_names(hf) for p in getattr(hf, n).parameters()}
    return [n for n, p in model.named_parameters() if id(p) in head_ids]


def trainable_parameters(model: nn.Module, include_head: bool = True) -> int:
    """Number of distinct parameters with ``requires_grad`` (optionally without the task head)."""
    hf = _unwrap(model)
    skip = set()
    if not include_head:
        skip = {id(p) for n in head_module_names(hf) for p in getattr(hf, n).parameters()}
    seen: Dict[int, int] = {}
    for p in model.parameters():  # parameters() already yields shared tensors once
        if p.requires_grad and id(p) not in skip:
            seen[id(p)] = p.numel()
    return sum(seen.values())


def print_trainable_parameters(model: nn.Module) -> str:
    """Print (and return) ``trainable params: X || all params: Y || trainable%: Z`` (peft's format)."""
    trainable = trainable_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    pct = 100.0 * trainable / max(total, 1)
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"
    print(line)
    return line
