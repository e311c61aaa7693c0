"""The fast inference path of the connectors: validate once per forward, call prepared kernels directly.

``lc_kernels.connector`` validates and normalises its arguments and goes through the ``torch.library``
dispatcher on every call: the path autograd and ``torch.compile`` need, and tens of microseconds per
call. A model's connectors share one seed bank and see the same activation shape at every position,
so inside a forward pass without autograd (and outside ``torch.compile``) all of that can be decided
once, at the first connector, and each connector then calls a prepared kernel directly:

* ``cpu``: one ``CpuForwardPlan`` per position (interpolation tables, the mixed and scaled seed, the
  scaled bias, built by the extension), kept while Θ and the biases are unchanged -- their version
  counters are the cache key, so an optimiser step or ``load_state_dict`` invalidates it;
* backends that multiply by a materialised W (``triton``): W of every position is built by one
  ``lc_kernels.build_weights`` launch at the first connector of a forward pass -- or not at all while
  Θ is unchanged (same version-counter key) -- and each connector's op call gets its slice;
* the rest: the public op.

The result is the same function as the op's, to the bit on ``cpu`` (the same kernel runs; tested).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

import lc_kernels

__all__ = ["FastPath", "fast_path", "prebuilt_weights"]


class FastPath:
    """What the first connector of a forward pass decided for all of them."""

    def __init__(self, plans: List[object], ids: Optional[Tensor], shape: Tuple[int, ...], inplace: bool):
        self.plans, self.ids, self.shape, self.inplace = plans, ids, shape, inplace

    def apply(self, index: int, h: Tensor) -> Optional[Tensor]:
        """Connector ``index`` on ``h``; None when ``h`` is not what the path was built for."""
        if tuple(h.shape) != self.shape or not h.is_contiguous():
            return None
        x2 = h.view(-1, self.shape[-1])
        if self.inplace and h._base is None:
            self.plans[index].forward(x2, self.ids, x2)
            return h
        return self.plans[index].forward(x2, self.ids).view(self.shape)


def _cpu_plans_available() -> bool:
    try:
        from lc_kernels import _ext

        mod = _ext.load()
    except Exception:  # noqa: BLE001 - no extension: no fast path
        return False
    return mod is not None and hasattr(mod, "cpu_forward_plan")


def _token_ids(hn, h: Tensor) -> Optional[Tensor]:
    """One global task id per row of ``h`` flattened to (N, d), or None for a single-task model."""
    if hn.num_tasks is None:
        return None
    ids = hn.task_ids
    if ids is None:
        return None  # the op path raises the clear error
    ids = ids.to(h.device)
    if hn.task_subset is not None:  # ids index the subset: map them back to the stack
        ids = hn.task_subset.to(h.device)[ids]
    if ids.dim() == 1 and h.dim() >= 2:
        ids = ids.view(-1, *([1] * (h.dim() - 2)))
    return torch.broadcast_to(ids, h.shape[:-1]).reshape(-1).to(torch.int64).contiguous()


def _plans(hn, dtype: torch.dtype) -> List[object]:
    """The per-position CPU plans, rebuilt only when Θ, the biases or the dtype changed."""
    key = (id(hn.theta), hn.theta._version, id(hn.bias), hn.bias._version, dtype)
    cached = getattr(hn, "_plan_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    from lc_kernels import _ext

    mod, g = _ext.load(), hn.geometry
    theta = hn.theta.detach()
    theta4 = (theta if hn.num_tasks is not None else theta.unsqueeze(0)).to(dtype).contiguous()
    bias = hn.bias.detach().to(dtype)
    plans = []
    for index, t in enumerate(g.ts):
        b = bias[:, index] if hn.num_tasks is not None else bias[index].unsqueeze(0)
        plans.append(mod.cpu_forward_plan(theta4, b.contiguous(), float(t), int(g.r), float(g.alpha)))
    hn._plan_cache = (key, plans)
    return plans


def fast_path(hn, h: Tensor) -> Optional[FastPath]:
    """A :class:`FastPath` for this forward pass, or None when the op must run (autograd, compiling, a
    backend without prepared kernels, mixed dtypes, non-contiguous activations)."""
    if torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and (hn.theta.requires_grad or hn.bias.requires_grad or h.requires_grad):
        return None
    if h.device.type != "cpu" or h.dtype not in (torch.float32, torch.float64) or hn.theta.dtype != h.dtype:
        return None
    if not h.is_contiguous() or h.dim() < 1 or h.shape[-1] != hn.geometry.d:
        return None
    if hn.num_tasks is not None and hn.task_ids is None:
        return None
    name = hn._resolved_backend(h)
    if name != "cpu" or not _cpu_plans_available():
        return None
    inplace = hn.inplace_inference and lc_kernels.inplace_supported(h, name)
    return FastPath(_plans(hn, h.dtype), _token_ids(hn, h), tuple(h.shape), inplace)


def prebuilt_weights(hn, h: Tensor) -> Optional[Tensor]:
    """W of every position for this forward pass, for backends that use a prebuilt W (else None).

    Built from the whole stack of seed banks (multi-task: the op then takes global task ids), detached,
    in ``h``'s dtype; reused while Θ's version, the dtype and the device are unchanged. Under
    ``torch.compile`` the op builds what it needs itself."""
    if torch.compiler.is_compiling():
        return None
    from lc_kernels import backends as _backends

    name = hn._resolved_backend(h)
    if not getattr(_backends.get(name), "uses_weights", False):
        return None
    key = (id(hn.theta), hn.theta._version, h.dtype, h.device, name)
    cached = getattr(hn, "_weights_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    g = hn.geometry
    w = lc_kernels.build_weights(hn.theta, list(g.ts), g.r, g.d, dtype=h.dtype, backend=name)
    hn._weights_cache = (key, w)
    return w
