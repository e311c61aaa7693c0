"""The ``cuda`` backend: the fused CUDA C++ kernels of ``csrc/cuda`` (SPEC §5) behind the
normalised calling convention of :mod:`lc_kernels.backends`.

Forward and dx are one launch each; dTheta/db are two deterministic launches (token-split partial
sums into a workspace, then a fixed-order reduction; no atomics). float16/bfloat16 run on tensor
cores (persistent kernels holding W in shared memory, csrc/cuda/tc_kernels.cuh; compute capability
8.0 or newer), float32/float64 on CUDA cores. Accumulation is float32 for float16/bfloat16/float32
and float64 for float64. The tiny parameters arrive already in the compute dtype (ops.py casts
them), so nothing is converted here.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _ext
from .backends import Backend, register

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _mod():
    reason = unavailable_reason()
    if reason is not None:  # only reachable when called despite unavailable_reason(); say why
        raise RuntimeError(f"cuda backend unavailable: {reason}")
    return _ext.load()


def unavailable_reason() -> Optional[str]:
    mod = _ext.load()
    if mod is None:
        return f"the compiled extension is missing: {_ext.why_unavailable()}"
    if not getattr(mod, "has_cuda", lambda: False)():
        return (
            "lc_kernels._C was built without CUDA (torch had no CUDA or nvcc was not found at build time); "
            "reinstall with a CUDA torch and nvcc: `pip install --no-build-isolation -e .` (LC_FORCE_CUDA=1 to insist)"
        )
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return None


# The op layer may pass extra keywords (e.g. a prebuilt ``weights=`` tensor for backends that
# take W from outside); these kernels build W from theta themselves and ignore them.
def forward(x, theta, bias, ids, t, r, alpha, **_ignored):
    return _mod().cuda_forward(x, theta, bias, ids, float(t), int(r), float(alpha))


def backward_dx(dy, theta, ids, t, r, alpha, **_ignored):
    return _mod().cuda_backward_dx(dy, theta, ids, float(t), int(r), float(alpha))


def backward_params(x, dy, theta, ids, t, r, alpha, **_ignored):
    dtheta, dbias = _mod().cuda_backward_params(x, dy, theta, ids, float(t), int(r), float(alpha))
    return dtheta, dbias


register(
    Backend(
        name="cuda",
        forward=forward,
        backward_dx=backward_dx,
        backward_params=backward_params,
        unavailable_reason=unavailable_reason,
        devices=("cuda",),
        dtypes={"cuda": _DTYPES},
        # "auto" on GPUs picks between cuda and triton from recorded figures per (dtype, d)
        # (lc_kernels/_gpu_choice.py); this order decides only where no figure exists.
        priority={"cuda": 10},
    )
)
