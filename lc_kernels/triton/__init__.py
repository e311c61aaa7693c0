"""The ``triton`` backend of the connector: Triton kernels at the memory floor (SPEC.md §5, v2).

    build_weights    1 launch for all positions of a model: W (P, T, r_pad, d) in the activation dtype
    forward          1 launch with a prebuilt W (weights=): pool x into z once per row block, z @ W on
                     the tensor cores, y = x + alpha (z W + b); also writes z when gradients are needed
    backward_dx      1 launch: dx = dy + (alpha/g) U(dy W^T)
    backward_params  2 launches: deterministic split-K partials of z^T dy and sum dy, then the ordered
                     reduction with the interpolation adjoint and the hat weights

Without ``weights=`` the forward and dx build W themselves (one more small launch each). Kernels
live in :mod:`.kernels`, launchers in :mod:`.launch`; ``python -m lc_kernels.triton.inspect`` compiles
them for a GPU target and prints registers, spills and tensor-core instruction counts;
:func:`count_launches` counts launches for audits. On CUDA tensors the backend takes
float16/bfloat16/float32/float64. On CPU tensors it runs only under the Triton interpreter
(``TRITON_INTERPRET=1`` set before triton is imported), for tests, in float16/float32/float64 (the
interpreter computes garbage in bfloat16), and ``"auto"`` never picks it there. This module
registers the backend even when triton is missing, so that ``unavailable_reason`` can say why.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from ..backends import Backend, register
from ._audit import count_launches

__all__ = ["count_launches", "unavailable_reason"]

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

try:
    import triton  # noqa: F401

    _IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # optional dependency
    _IMPORT_ERROR = f"triton is not importable ({exc}); install it with `pip install triton`"


def unavailable_reason() -> Optional[str]:
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if not _INTERPRET and not torch.cuda.is_available():
        return (
            "no CUDA device is visible and TRITON_INTERPRET is not '1' "
            "(the Triton interpreter runs the kernels on CPU tensors, for tests only)"
        )
    return None


def _launch():
    # imported on first use: importing the kernels needs triton, and registration must not
    from . import launch

    return launch


def forward(x, theta, bias, ids, t, r, alpha, out=None, weights=None):
    return _launch().forward(x, theta, bias, ids, t, r, alpha, out=out, weights=weights)


def forward_save_z(x, theta, bias, ids, t, r, alpha, weights=None):
    return _launch().forward_save_z(x, theta, bias, ids, t, r, alpha, weights=weights)


def forward_inplace(x, theta, bias, ids, t, r, alpha, weights=None):
    return _launch().forward_inplace(x, theta, bias, ids, t, r, alpha, weights=weights)


def backward_dx(dy, theta, ids, t, r, alpha, out=None, weights=None):
    return _launch().backward_dx(dy, theta, ids, t, r, alpha, out=out, weights=weights)


def backward_params(x, dy, theta, ids, t, r, alpha, out=None):
    return _launch().backward_params(x, dy, theta, ids, t, r, alpha, out=out)


def backward_params_z(z, dy, theta, ids, t, r, alpha, out=None):
    return _launch().backward_params_z(z, dy, theta, ids, t, r, alpha, out=out)


def build_weights(theta, ts, r, d, dtype):
    return _launch().build_weights(theta, ts, r, d, dtype)


_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTERPRETER_DTYPES = (torch.float16, torch.float32, torch.float64)

register(
    Backend(
        name="triton",
        forward=forward,
        backward_dx=backward_dx,
        backward_params=backward_params,
        unavailable_reason=unavailable_reason,
        devices=("cuda", "cpu") if _INTERPRET else ("cuda",),
        dtypes={"cuda": _GPU_DTYPES, **({"cpu": _INTERPRETER_DTYPES} if _INTERPRET else {})},
        # no "cpu" priority: backend="auto" must never pick the (slow) interpreter; on GPUs the
        # cuda backend (10) measured faster on an H200 (v1 kernels), so triton is second
        priority={"cuda": 20},
        forward_inplace=forward_inplace,
        build_weights=build_weights,
        uses_weights=True,
        forward_save_z=forward_save_z,
        backward_params_z=backward_params_z,
    )
)
