"""The ``cpu`` backend: fused C++ kernels for CPU tensors (float32/float64), in ``lc_kernels._C``.

The kernels (``csrc/cpu/``) run one pass over ``x`` per 64-row block: pool, sparse row
interpolation, one dense ``(rows x p) @ (p x q)`` product against the mixed seed, and the residual
epilogue, threaded with ``at::parallel_for`` and compiled for SSE2/AVX2/AVX-512 (picked at run
time). Accumulation is float32 for float32 and float64 for float64 inputs; the parameter gradients
reduce per-chunk partial sums in a fixed order, so they are deterministic for any thread count.
Inputs follow the normalised convention of :mod:`lc_kernels.backends` (``lc_kernels.connector``
flattens, makes contiguous and casts before calling).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _ext
from .backends import Backend, register

_FUNCTIONS = ("forward_cpu", "backward_dx_cpu", "backward_params_cpu")


def _unavailable_reason() -> Optional[str]:
    reason = _ext.why_unavailable()
    if reason is not None:
        return reason
    mod = _ext.load()
    missing = [f for f in _FUNCTIONS if not hasattr(mod, f)]
    if missing:
        return (
            f"lc_kernels._C has no {', '.join(missing)} (it was built before the fused CPU kernels existed); "
            f"{_ext.REBUILD_HINT}"
        )
    return None


def forward(x, theta, bias, ids, t, r, alpha):
    return _ext.load().forward_cpu(x, theta, bias, ids, float(t), int(r), float(alpha))


def forward_inplace(x, theta, bias, ids, t, r, alpha):
    # the kernel pools each 64-row block before writing any of its rows (csrc/cpu/connector_cpu.cpp)
    return _ext.load().forward_cpu(x, theta, bias, ids, float(t), int(r), float(alpha), out=x)


def backward_dx(dy, theta, ids, t, r, alpha):
    return _ext.load().backward_dx_cpu(dy, theta, ids, float(t), int(r), float(alpha))


def backward_params(x, dy, theta, ids, t, r, alpha):
    return _ext.load().backward_params_cpu(x, dy, theta, ids, float(t), int(r), float(alpha))


register(
    Backend(
        name="cpu",
        forward=forward,
        backward_dx=backward_dx,
        backward_params=backward_params,
        unavailable_reason=_unavailable_reason,
        devices=("cpu",),
        dtypes={"cpu": (torch.float32, torch.float64)},
        priority={"cpu": 10},
        forward_inplace=forward_inplace,
    )
)
