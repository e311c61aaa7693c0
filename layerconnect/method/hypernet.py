"""The hypernetwork of SPEC §3 as a module: the seed bank Θ, the connector biases, and the call that
applies connector ``l`` to hidden states."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from torch import Tensor, nn

import lc_kernels
from lc_kernels import reference as ref

from .config import Geometry, LayerConnectConfig
from .runtime import FastPath, fast_path, prebuilt_weights

__all__ = ["LayerConnectHypernet"]


class LayerConnectHypernet(nn.Module):
    """A seed bank shared by all connectors plus their biases (SPEC §3).

    Single task: ``theta`` (K, p, q) and ``bias`` (|P|, d). Multi-task (SPEC §6, ``num_tasks=T``):
    ``theta`` (T, K, p, q), ``bias`` (T, |P|, d), and :attr:`task_ids` (one id per sequence) must be
    set (see :meth:`use_tasks`) before a forward pass.

    ``add_connectors`` attaches it to a model as ``model.layerconnect`` together with the forward hooks
    that call :meth:`connect`; :attr:`config` is the :class:`LayerConnectConfig` it was built from.
    """

    def __init__(
        self,
        geometry: Geometry,
        backend: str = "auto",
        num_tasks: Optional[int] = None,
        dtype: Optional[torch.dtype] = None,
        inplace_inference: bool = False,
        config: Optional[LayerConnectConfig] = None,
    ):
        super().__init__()
        g = geometry
        self.geometry = g
        self.config = config if config is not None else LayerConnectConfig(backend=backend)
        self.backend = backend
        self.inplace_inference = inplace_inference
        self.num_tasks = num_tasks
        lead = () if num_tasks is None else (int(num_tasks),)
        self.theta = nn.Parameter(torch.zeros(*lead, g.K, g.p, g.q, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(*lead, g.num_connectors, g.d, dtype=dtype))
        self.task_ids: Optional[Tensor] = None
        self.task_subset: Optional[Tensor] = None  # rows of the stack the current batch uses (see use_tasks)
        self._handles: List[object] = []  # forward hooks installed by add_connectors
        self._fast: Optional[FastPath] = None  # decided at the first connector of each forward pass
        self._weights: Optional[Tensor] = None  # W of every position, when the backend multiplies by W
        self._backend_for: dict = {}  # (device, dtype) -> resolved backend name

    def extra_repr(self) -> str:
        g = self.geometry
        tasks = "" if self.num_tasks is None else f", tasks={self.num_tasks}"
        return (
            f"d={g.d}, r={g.r}, K={g.K}, seed=({g.p}, {g.q}), positions={g.positions}, "
            f"alpha={g.alpha}, backend={self.backend!r}{tasks}"
        )

    def weight(self, index: int) -> Tensor:
        """The generated connector weight W (r x d) of connector ``index`` (for inspection)."""
        g = self.geometry
        return ref.interpolate_seeds(self.theta, g.ts[index], g.r, g.d)

    @contextmanager
    def use_tasks(self, task_ids: Tensor, subset: Optional[Tensor] = None) -> Iterator[None]:
        """Multi-task mode: run the enclosed forward passes with one task id per sequence.

        ``subset`` (optional, 1-D indices into the stack) restricts the pass to those tasks' seed banks
        and biases; ``task_ids`` then index into ``subset``. A batch touching few of many loaded tasks
        then pays for the tasks it uses only (the gather is differentiable: gradients reach the stack).
        """
        if self.num_tasks is None:
            raise RuntimeError("use_tasks needs a multi-task hypernetwork (num_tasks=T)")
        prev = self.task_ids, self.task_subset
        self.task_ids, self.task_subset = task_ids, subset
        try:
            yield
        finally:
            self.task_ids, self.task_subset = prev

    def _in_place(self, h: Tensor) -> bool:
        """Overwrite ``h`` instead of allocating: no autograd, not tracing, ``h`` owns its memory (not a
        view of something else) and the backend has a true in-place kernel."""
        return (
            self.inplace_inference
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and h._base is None
            and lc_kernels.inplace_supported(h, self.backend)
        )

    def _resolved_backend(self, h: Tensor) -> str:
        """``self.backend`` resolved for ``h``'s device and dtype, once per (device, dtype)."""
        key = (h.device, h.dtype)
        name = self._backend_for.get(key)
        if name is None:
            name = self._backend_for[key] = lc_kernels.resolve_backend(self.backend, h)
        return name

    def connect(self, index: int, h: Tensor) -> Tensor:
        """Apply connector ``index`` to hidden states ``h`` (..., d).

        Without autograd and outside ``torch.compile``, the first connector of a forward pass decides
        the fast path for all of them (:mod:`layerconnect.method.runtime`); otherwise the public op runs.
        """
        if index == 0:
            self._fast = fast_path(self, h)
            self._weights = prebuilt_weights(self, h) if self._fast is None else None
        if self._fast is not None:
            y = self._fast.apply(index, h)
            if y is not None:
                return y
        g = self.geometry
        if self._weights is not None and self._weights.dtype == h.dtype:
            return self._connect_with_weights(index, h)
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
        theta, bias = self.theta, self.bias[:, index]
        if self.task_subset is not None:
            sub = self.task_subset.to(theta.device)
            theta, bias = theta.index_select(0, sub), bias.index_select(0, sub)
        return op(h, theta, bias, g.ts[index], g.r, g.alpha, self.backend, task_ids=ids)

    def _connect_with_weights(self, index: int, h: Tensor) -> Tensor:
        """The op with this forward's prebuilt W (whole stack, global task ids when multi-task)."""
        g = self.geometry
        w = self._weights[index]
        if self.num_tasks is None:
            return lc_kernels.connector(
                h, self.theta, self.bias[index], g.ts[index], g.r, g.alpha, self.backend, weights=w
            )
        if self.task_ids is None:
            raise RuntimeError(
                "this model has multi-task connectors: set the task of each sequence first, "
                "e.g. `with model.layerconnect.use_tasks(task_ids): model(...)`"
            )
        ids = self.task_ids.to(h.device)
        if self.task_subset is not None:
            ids = self.task_subset.to(h.device)[ids]
        if ids.dim() == 1 and h.dim() >= 2:
            ids = ids.view(-1, *([1] * (h.dim() - 2)))
        return lc_kernels.connector(
            h, self.theta, self.bias[:, index], g.ts[index], g.r, g.alpha, self.backend, task_ids=ids, weights=w
        )
