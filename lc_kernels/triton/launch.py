"""Launchers of the Triton connector kernels (normalised calling convention of ``lc_kernels.backends``).

Each launcher checks the few things a kernel would silently get wrong, allocates only its outputs
(or writes into ``out=``, which the tests pre-fill with NaN so that an element a kernel forgets to
write fails), computes the hat weights on the host from ``t`` (the at most two anchors with non-zero
weight and their weights, passed as float64 scalars), and launches:

    forward          1 launch   (connector_fwd_kernel)
    backward_dx      1 launch   (connector_bwd_dx_kernel)
    backward_params  2 launches (connector_bwd_partial_kernel, connector_bwd_reduce_kernel)

On a GPU the row/column block sizes are autotuned over a small space (keyed on the geometry and
dtypes); under the interpreter (``TRITON_INTERPRET=1``, CPU tensors) one small fixed configuration
is used so that tests stay fast.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional, Tuple

import torch
import triton

from .. import reference as _ref
from . import kernels as _k

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_BF16_MSG = (
    "the Triton interpreter (TRITON_INTERPRET=1) computes garbage in bfloat16, so backend='triton' "
    "rejects bfloat16 {name} under it; cast {name} to float32, use backend='reference' (or 'cpu'), "
    "or run compiled kernels on a GPU with TRITON_INTERPRET unset"
)


def _configs(space):
    if INTERPRET:
        return [triton.Config({"BLOCK_N": 32, "BLOCK_D": 32, "BLOCK_G": 8})]
    return [triton.Config({"BLOCK_N": bn, "BLOCK_D": bd, "BLOCK_G": bg}, num_warps=w) for bn, bd, w, bg in space]


# (BLOCK_N, BLOCK_D, num_warps, BLOCK_G) with BLOCK_R = 32: the points of a wider grid that compile
# for sm_90 (fp16, r = 96, d = 768) with no register spills (checked with cuobjdump -res-usage).
# BLOCK_G is the width of the (rows, BLOCK_R, BLOCK_G) view through which x is pooled (dy spread).
_ROW_SPACE = [(32, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2), (32, 32, 4, 2), (128, 64, 8, 1), (128, 32, 8, 1)]
_PARTIAL_SPACE = [(32, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2)]
_KEY = ["d", "r", "p", "q", "K", "HAS_IDS", "MIX"]

_fwd = triton.autotune(configs=_configs(_ROW_SPACE), key=_KEY)(_k.connector_fwd_kernel)
_bwd_dx = triton.autotune(configs=_configs(_ROW_SPACE), key=_KEY)(_k.connector_bwd_dx_kernel)
_bwd_partial = triton.autotune(configs=_configs(_PARTIAL_SPACE), key=["d", "r", "HAS_IDS"])(
    _k.connector_bwd_partial_kernel
)


def _pow2(n: int, lo: int = 16) -> int:
    # tl.dot needs every block dimension >= 16 on GPUs
    return max(lo, triton.next_power_of_2(max(1, n)))


def _block_r(r: int) -> int:
    """The chunk of r a program keeps live (z and W tiles): small enough to stay in registers."""
    return 16 if INTERPRET else min(_pow2(r), 32)


def _hat(t: float, num_anchors: int):
    """(k0, k1, h0, h1, mix): the anchors with non-zero hat weight (SPEC §3.1) and their weights."""
    h = _ref.hat_weights(t, num_anchors)
    nz = [k for k, w in enumerate(h) if w != 0.0]
    k0 = nz[0]
    if len(nz) > 1:
        return k0, nz[1], h[k0], h[nz[1]], True
    return k0, k0, h[k0], 0.0, False


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check(name: str, v: torch.Tensor, shape, dtype=None) -> None:
    if tuple(v.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(v.shape)}")
    if dtype is not None and v.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {v.dtype}")
    if not v.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernels index it as row-major); call .contiguous()")


def _check_inputs(name, x, theta, ids):
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if INTERPRET and x.dtype == torch.bfloat16:  # CUDA tensors too: the interpreter copies them to the host
        raise TypeError(_BF16_MSG.format(name=name))
    if x.device.type == "cpu" and not INTERPRET:
        raise RuntimeError(
            f"{name} is on CPU but TRITON_INTERPRET is not '1'; backend='triton' runs CPU tensors only "
            "under the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
        )
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    if theta.dim() != 4:
        raise ValueError(f"theta must have shape (T, K, p, q), got {tuple(theta.shape)}")
    _check("theta", theta, theta.shape, cdt)
    if ids is None:
        if theta.shape[0] != 1:
            raise ValueError(f"without ids theta must hold one task (T=1), got T={theta.shape[0]}")
    else:
        _check("ids", ids, (x.shape[0],), torch.int64)
    for n, v in (("theta", theta), ("ids", ids)):
        if v is not None and v.device != x.device:
            raise ValueError(f"{n} is on {v.device} but {name} is on {x.device}")
    _check(name, x, x.shape)
    return cdt


def _geometry(d: int, r: int, theta: torch.Tensor):
    nt, kk, p, q = theta.shape
    _ref.check_geometry(d, r, p, q)
    return dict(g=d // r, p=p, q=q, K=kk, den_r=max(r - 1, 1), den_d=max(d - 1, 1))


def _lowp(x: torch.Tensor) -> bool:
    # tensor-core dots on half inputs; the interpreter multiplies in float32 anyway
    return x.dtype in (torch.float16, torch.bfloat16) and not INTERPRET


def forward(x, theta, bias, ids, t, r, alpha, out: Optional[torch.Tensor] = None):
    """y = x + alpha (D(x) W + b), one launch; allocates only y."""
    cdt = _check_inputs("x", x, theta, ids)
    n, d = x.shape
    geo = _geometry(d, r, theta)
    _check("bias", bias, (theta.shape[0], d), cdt)
    if bias.device != x.device:
        raise ValueError(f"bias is on {bias.device} but x is on {x.device}")
    if out is None:
        y = torch.empty_like(x)
    else:
        _check("out", out, x.shape, x.dtype)
        y = out
    if n == 0:
        return y
    k0, k1, h0, h1, mix = _hat(t, geo["K"])
    block_r = _block_r(r)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    with _device_guard(x):
        _fwd[grid](
            x, theta, bias, ids if ids is not None else x, y,
            n, d, r, geo["g"], geo["p"], geo["q"], geo["K"], geo["den_r"], geo["den_d"], k0, k1,
            float(h0), float(h1), float(alpha),
            HAS_IDS=ids is not None, MIX=mix, LOWP=_lowp(x),
            BLOCK_R=block_r,
        )
    return y


def backward_dx(dy, theta, ids, t, r, alpha, out: Optional[torch.Tensor] = None):
    """dx = dy + alpha U(dy W^T), one launch; allocates only dx."""
    _check_inputs("dy", dy, theta, ids)
    n, d = dy.shape
    geo = _geometry(d, r, theta)
    if out is None:
        dx = torch.empty_like(dy)
    else:
        _check("out", out, dy.shape, dy.dtype)
        dx = out
    if n == 0:
        return dx
    k0, k1, h0, h1, mix = _hat(t, geo["K"])
    block_r = _block_r(r)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    with _device_guard(dy):
        _bwd_dx[grid](
            dy, theta, ids if ids is not None else dy, dx,
            n, d, r, geo["g"], geo["p"], geo["q"], geo["K"], geo["den_r"], geo["den_d"], k0, k1,
            float(h0), float(h1), float(alpha),
            HAS_IDS=ids is not None, MIX=mix, LOWP=_lowp(dy),
            BLOCK_R=block_r,
        )
    return dx


def _num_splits(n: int, nt: int, r: int, d: int, device: torch.device) -> Tuple[int, int]:
    """(S, rows per split). Enough splits to fill the GPU, few enough that the partial buffers
    (S*T*r*d elements) stay small next to x; under the interpreter a few splits of >= 16 rows, so
    the fixed-order cross-split reduction is exercised by the tests."""
    if INTERPRET or device.type != "cuda":
        s = max(1, min(3, triton.cdiv(n, 16)))
    else:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = max(1, (2 * sms) // max(1, triton.cdiv(d, 128)))
        cap = max(1, (1 << 24) // max(1, nt * r * d))  # <= 16M partial elements (64 MiB in fp32)
        s = max(1, min(want, cap, triton.cdiv(n, 64)))
    rps = triton.cdiv(n, s)
    return triton.cdiv(n, rps), rps


def backward_params(x, dy, theta, ids, t, r, alpha, out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
    """(dTheta (T,K,p,q), db (T,d)) in the compute dtype; two launches, deterministic (no atomics)."""
    cdt = _check_inputs("x", x, theta, ids)
    _check_inputs("dy", dy, theta, ids)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x {tuple(x.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but x has {x.dtype}; give them one dtype")
    n, d = x.shape
    geo = _geometry(d, r, theta)
    nt = theta.shape[0]
    if out is None:
        dtheta = torch.empty_like(theta)
        dbias = torch.empty((nt, d), dtype=cdt, device=x.device)
    else:
        dtheta, dbias = out
        _check("out[0]", dtheta, theta.shape, cdt)
        _check("out[1]", dbias, (nt, d), cdt)
    if n == 0:
        dtheta.zero_()
        dbias.zero_()
        return dtheta, dbias
    k0, k1, h0, h1, mix = _hat(t, geo["K"])
    s, rps = _num_splits(n, nt, r, d, x.device)
    # partial slots of tasks absent from a split are never written nor read (see rng)
    pw = torch.empty((s, nt, r, d), dtype=cdt, device=x.device)
    pb = torch.empty((s, nt, d), dtype=cdt, device=x.device)
    rng = torch.empty((s, 2), dtype=torch.int64, device=x.device)
    block_r = _block_r(r)
    has_ids = ids is not None
    grid = lambda meta: (s, triton.cdiv(r, block_r), triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
    with _device_guard(x):
        _bwd_partial[grid](
            x, dy, ids if has_ids else x, pw, pb, rng,
            n, d, r, geo["g"], nt, rps,
            HAS_IDS=has_ids, LOWP=_lowp(x),
            BLOCK_R=block_r,
        )
        small = 16
        block_q = small if INTERPRET else 32
        _k.connector_bwd_reduce_kernel[(nt, triton.cdiv(geo["q"], block_q))](
            pw, pb, rng, dtheta, dbias,
            s, nt, d, r, geo["p"], geo["q"], geo["K"], geo["den_r"], geo["den_d"], k0, k1,
            float(h0), float(h1), float(alpha),
            HAS_IDS=has_ids,
            BLOCK_P=_pow2(geo["p"]), BLOCK_Q=block_q,
            BLOCK_R=small if INTERPRET else 32, BLOCK_D=2 * small if INTERPRET else 64,
            num_warps=4,
        )
    return dtheta, dbias
