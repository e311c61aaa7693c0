"""The ``triton`` backend of the connector: fused Triton kernels (SPEC.md §5).

    forward          1 launch: W generated tile by tile from Theta in registers, x read once, y written once
    backward_dx      1 launch: dy read once, dx written once
    backward_params  2 launches: deterministic token-split partial sums, then the interpolation adjoint

Kernels live in :mod:`.kernels`, launchers in :mod:`.launch`. On CUDA tensors the backend takes
float16/bfloat16/float32/float64 and is preferred by ``backend="auto"``. On CPU tensors it runs only
under the Triton interpreter (``TRITON_INTERPRET=1`` set before triton is imported), for tests, in
float16/float32/float64 (the interpreter computes garbage in bfloat16), and ``"auto"`` never picks it
there. This module registers the backend even when triton is missing, so that
``unavailable_reason`` can say why.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..backends import Backend, register

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


def forward(x, theta, bias, ids, t, r, alpha, out=None):
    return _launch().forward(x, theta, bias, ids, t, r, alpha, out=out)


def backward_dx(dy, theta, ids, t, r, alpha, out=None):
    return _launch().backward_dx(dy, theta, ids, t, r, alpha, out=out)


def backward_params(x, dy, theta, ids, t, r, alpha, out=None):
    return _launch().backward_params(x, dy, theta, ids, t, r, alpha, out=out)


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
        # cuda backend (10) measured faster on an H200, so triton is second
        priority={"cuda": 20},
    )
)
