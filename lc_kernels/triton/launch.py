"""Launchers of the Triton connector kernels (normalised calling convention of ``lc_kernels.backends``).

Each launcher checks what a kernel would silently get wrong, allocates only its outputs (or writes
into ``out=``, which the tests pre-fill with NaN so that an element a kernel forgets to write fails),
and launches:

    build_weights     1 launch  (build_weights_kernel: W for all P positions x T tasks)
    forward           1 launch  (connector_fwd_kernel; + 1 build_weights launch without weights=)
    backward_dx       1 launch  (connector_bwd_dx_kernel; + 1 build_weights launch without weights=)
    backward_params   2 launches (connector_bwd_partial_kernel, connector_bwd_reduce_kernel)

Every launch is recorded for :func:`lc_kernels.triton.count_launches`. Block sizes: on a GPU the
forward and dx kernels are tuned once per (kernel, device, d, r, dtype, N bucket, task ids, z saved) over the
small spaces below, by timing each configuration on the call's own inputs into scratch outputs
(so in-place calls are safe); the params kernels use one fixed configuration per dtype class, so
that dTheta and db are bitwise identical across runs and processes. Under the interpreter
(``TRITON_INTERPRET=1``, CPU tensors) one small fixed configuration is used so tests stay fast.
:func:`kernel_plans` exposes exactly what these launchers compile, for ``python -m
lc_kernels.triton.inspect``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import triton

from .. import reference as _ref
from ..ops import padded_rank
from . import _audit
from . import kernels as _k

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_BF16_MSG = (
    "the Triton interpreter (TRITON_INTERPRET=1) computes garbage in bfloat16, so backend='triton' "
    "rejects bfloat16 {name} under it; cast {name} to float32, use backend='reference' (or 'cpu'), "
    "or run compiled kernels on a GPU with TRITON_INTERPRET unset"
)

#: largest chunk of r a program keeps in registers (z in the forward, v in dx, the dW block in the
#: partials): every SPEC default geometry up to d = 1024 (r = d/8 <= 128) fits in one chunk
RMAX = 128
#: bytes per row of one pooling slab (RC groups of GC channels): 128 bf16 / 64 fp32 / 32 fp64 values
SLAB_BYTES = 256


@dataclass(frozen=True)
class Config:
    """Block sizes of a row kernel: BN rows x BD columns per step, warps, software-pipeline stages."""

    bn: int
    bd: int
    warps: int
    stages: int

    def meta(self) -> Dict[str, int]:
        return {"BN": self.bn, "BD": self.bd, "num_warps": self.warps, "num_stages": self.stages}


# Autotune spaces on a GPU, per dtype class (and task ids: the multi-task loops hold more registers).
# Every point compiles for sm_80 and sm_90 at d in {384, 768, 1024} with 0 spills, the
# float16/bfloat16 ones also with <= 168 registers (python -m lc_kernels.triton.inspect [--multitask];
# tests/test_triton_inspect.py holds them to it). BN = 16/32 give 256/128 programs at N = 4096 (fills
# 132 SMs); BN = 64/128 amortise the L2 reads of W over more rows at large N.
_FWD_SPACE = {
    "half": [
        Config(128, 64, 8, 2),
        Config(128, 64, 16, 2),
        Config(64, 64, 4, 2),
        Config(32, 64, 4, 2),
        Config(16, 64, 4, 2),
    ],
    "half+ids": [Config(128, 64, 16, 2), Config(64, 64, 8, 2), Config(32, 64, 8, 2), Config(16, 64, 4, 2)],
    "float32": [Config(64, 32, 8, 2), Config(32, 32, 4, 2), Config(16, 32, 4, 2)],
    "float32+ids": [Config(64, 32, 8, 2), Config(16, 32, 4, 2)],
    "float64": [Config(32, 32, 8, 2), Config(16, 32, 4, 2)],
}
_DX_SPACE = {
    "half": [Config(128, 64, 16, 2), Config(64, 64, 8, 2), Config(32, 64, 4, 2), Config(16, 64, 4, 2)],
    "half+ids": [Config(128, 32, 16, 2), Config(64, 64, 8, 2), Config(32, 64, 8, 2), Config(16, 64, 4, 2)],
    "float32": [Config(32, 32, 8, 2), Config(16, 32, 8, 2), Config(16, 16, 4, 2)],
    "float32+ids": [Config(16, 32, 8, 2), Config(16, 16, 4, 2)],
    "float64": [Config(32, 32, 8, 2), Config(16, 32, 4, 2)],
    "float64+ids": [Config(32, 16, 8, 2), Config(16, 32, 4, 2)],
}
# One configuration (not tuned: the accumulation order of dTheta must not depend on timing)
_PARTIAL_CFG = {
    "half": Config(64, 64, 8, 2),
    "half+ids": Config(64, 64, 16, 2),
    "float32": Config(32, 32, 8, 2),
    "float32+ids": Config(32, 16, 8, 2),
    "float64": Config(32, 32, 4, 2),
    "float64+ids": Config(16, 32, 8, 2),
}
# Under the interpreter: one fixed configuration, with wider column blocks past d = 512 (the
# interpreter's cost is per program and per loop step, not per element; the small-d test cases keep
# several blocks per dimension, so every mask is still exercised)
_INTERP_CFG = Config(64, 32, 1, 1)
_INTERP_CFG_WIDE = Config(64, 256, 1, 1)
_WBUILD_GPU = dict(BR=16, BD=64, num_warps=4)
_REDUCE_GPU = dict(BP=32, BQ=32, BR=32, BD=64, num_warps=8)
_WBUILD = _WBUILD_GPU if not INTERPRET else dict(BR=128, BD=512)
_REDUCE = _REDUCE_GPU if not INTERPRET else dict(BP=16, BQ=16, BR=64, BD=128)


def _pick_table(table: dict, dtype: torch.dtype, has_ids: bool):
    cls = "half" if dtype in (torch.float16, torch.bfloat16) else str(dtype).replace("torch.", "")
    return table.get(cls + "+ids", table[cls]) if has_ids else table[cls]


def _interp_cfg(d: int) -> Config:
    return _INTERP_CFG if d <= 512 else _INTERP_CFG_WIDE


def fwd_space(dtype: torch.dtype, d: int, has_ids: bool = False, interpret: bool = INTERPRET) -> List[Config]:
    return [_interp_cfg(d)] if interpret else _pick_table(_FWD_SPACE, dtype, has_ids)


def dx_space(dtype: torch.dtype, d: int, has_ids: bool = False, interpret: bool = INTERPRET) -> List[Config]:
    return [_interp_cfg(d)] if interpret else _pick_table(_DX_SPACE, dtype, has_ids)


def partial_config(dtype: torch.dtype, d: int, has_ids: bool = False, interpret: bool = INTERPRET) -> Config:
    return _interp_cfg(d) if interpret else _pick_table(_PARTIAL_CFG, dtype, has_ids)


def r_pad(r: int) -> int:
    """Rows of a prebuilt W: r rounded up to a power of two, at least 16 (what tl.dot needs)."""
    return padded_rank(r)


def pool_meta(d: int, r: int, dtype: torch.dtype) -> Dict[str, int]:
    """Compile-time geometry of the pooling/matmul kernels: G = g, R_PAD, RK (chunk of r kept in
    registers), RC groups of GC channels per pooling slab."""
    g = d // r
    rp = r_pad(r)
    rk = min(rp, RMAX)
    slab = max(1, SLAB_BYTES // torch.empty((), dtype=dtype).element_size())
    if g & (g - 1) == 0:
        gc = min(g, slab)
    else:  # lanes per group: a power of two >= g (or chunks of 64 for wide groups)
        gc = min(triton.next_power_of_2(g), 64)
    rc = max(1, min(rk, slab // gc))
    return {"G": g, "R_PAD": rp, "RK": rk, "RC": rc, "GC": gc}


def dot_mode(dtype: torch.dtype) -> int:
    if dtype in (torch.float16, torch.bfloat16):
        return 0  # tensor cores, float32 accumulation
    return 1  # ieee: float32 FMA, float64 DMMA (see kernels.py on why not tf32x3)


def n_bucket(n: int) -> int:
    """The autotune key's N bucket: <= 4k, <= 16k, <= 64k, more."""
    return 0 if n <= 4096 else 1 if n <= 16384 else 2 if n <= 65536 else 3


def split_f32(v: float) -> Tuple[float, float]:
    """v as a float32 pair hi + lo (hi + lo == v to ~2^-48): float64 kernels recombine it."""
    hi = struct.unpack("f", struct.pack("f", v))[0]
    lo = struct.unpack("f", struct.pack("f", v - hi))[0]
    return hi, lo


def _hat(t: float, num_anchors: int):
    """(k0, k1, h0, h1): the anchors with non-zero hat weight (SPEC §3.1) and their weights."""
    h = _ref.hat_weights(t, num_anchors)
    nz = [k for k, w in enumerate(h) if w != 0.0]
    if len(nz) > 1:
        return nz[0], nz[1], h[nz[0]], h[nz[1]]
    return nz[0], nz[0], h[nz[0]], 0.0


_HAT_CACHE: "collections.OrderedDict" = collections.OrderedDict()


def _hat_tables(ts: Tuple[float, ...], num_anchors: int, device: torch.device, cdt: torch.dtype):
    """Per-position anchors (P, 2) int32 and weights (P, 2) on ``device``, built once per key (the
    positions of a model never change), so building W costs no host-to-device copy per step."""
    key = (ts, num_anchors, str(device), cdt)
    hit = _HAT_CACHE.get(key)
    if hit is not None:
        _HAT_CACHE.move_to_end(key)
        return hit
    rows = [_hat(t, num_anchors) for t in ts]
    hk = torch.tensor([[a, b] for a, b, _, _ in rows], dtype=torch.int32).to(device)
    hw = torch.tensor([[c, e] for _, _, c, e in rows], dtype=torch.float64).to(device=device, dtype=cdt)
    _HAT_CACHE[key] = (hk, hw)
    if len(_HAT_CACHE) > 256:
        _HAT_CACHE.popitem(last=False)
    return hk, hw


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check(name: str, v: torch.Tensor, shape, dtype=None) -> None:
    if tuple(v.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(v.shape)}")
    if dtype is not None and v.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {v.dtype}")
    if not v.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernels index it as row-major); call .contiguous()")


def _check_device_dtype(name: str, x: torch.Tensor) -> None:
    if INTERPRET and x.dtype == torch.bfloat16:  # CUDA tensors too: the interpreter copies them to the host
        raise TypeError(_BF16_MSG.format(name=name))
    if x.device.type == "cpu" and not INTERPRET:
        raise RuntimeError(
            f"{name} is on CPU but TRITON_INTERPRET is not '1'; backend='triton' runs CPU tensors only "
            "under the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
        )


def _check_inputs(name, x, theta, ids):
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    _check_device_dtype(name, x)
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


def _check_weights(weights: torch.Tensor, x: torch.Tensor, nt: int, r: int) -> None:
    want = (nt, r_pad(r), x.shape[1])
    if tuple(weights.shape) != want:
        raise ValueError(
            f"weights must have shape {want} (T, r_pad, d) here, got {tuple(weights.shape)}; pass "
            f"lc_kernels.build_weights(theta, ts, r, d, dtype=x.dtype)[l] for this connector's position l"
        )
    if weights.dtype != x.dtype:
        raise TypeError(
            f"weights has dtype {weights.dtype} but the activations have {x.dtype}; build them with dtype={x.dtype}"
        )
    if weights.device != x.device:
        raise ValueError(f"weights is on {weights.device} but the activations are on {x.device}")
    if not weights.is_contiguous():
        raise ValueError("weights must be contiguous (index build_weights' result as W[l], do not transpose it)")


def _geometry(d: int, r: int, theta: torch.Tensor):
    nt, kk, p, q = theta.shape
    _ref.check_geometry(d, r, p, q)
    return dict(g=d // r, p=p, q=q, K=kk, den_r=max(r - 1, 1), den_d=max(d - 1, 1))


# ---------------------------------------------------------------------------------------------
# tuning (GPU only)
# ---------------------------------------------------------------------------------------------

_TUNED: Dict[tuple, Config] = {}
#: LC_TRITON_AUTOTUNE=0 takes the first configuration of each space untimed (one compile per kernel:
#: for test runs on a GPU, where timing every point of every test shape would cost minutes)
AUTOTUNE = os.environ.get("LC_TRITON_AUTOTUNE", "1") != "0"


def _pick(key: tuple, configs: Sequence[Config], run) -> Config:
    """The fastest of ``configs`` for ``key``, timed once with ``run(cfg)`` (which must only write
    scratch outputs); a single configuration (or AUTOTUNE off) is returned untimed."""
    if len(configs) == 1 or not AUTOTUNE:
        return configs[0]
    cfg = _TUNED.get(key)
    if cfg is None:
        from triton.testing import do_bench

        times = {c: do_bench(lambda c=c: run(c), warmup=5, rep=20) for c in configs}
        cfg = min(configs, key=lambda c: times[c])
        _TUNED[key] = cfg
    return cfg


def _launch(kernel, grid, args, meta):
    _audit.record(kernel.fn.__name__)
    kernel[grid](*args, **meta)


# ---------------------------------------------------------------------------------------------
# W build
# ---------------------------------------------------------------------------------------------


def build_weights(
    theta: torch.Tensor, ts: Sequence[float], r: int, d: int, dtype: torch.dtype, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """W for every position: (P, T, r_pad, d) in ``dtype``, rows >= r zero; one launch."""
    if theta.dim() != 4:
        raise ValueError(f"theta must have shape (T, K, p, q), got {tuple(theta.shape)}")
    _check_device_dtype("theta", theta)
    if dtype == torch.bfloat16 and INTERPRET:
        raise TypeError(_BF16_MSG.format(name="the weights dtype"))
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    _check("theta", theta, theta.shape, cdt)
    nt, kk, p, q = theta.shape
    _ref.check_geometry(d, r, p, q)
    ts = tuple(float(t) for t in ts)
    rp = r_pad(r)
    shape = (len(ts), nt, rp, d)
    if out is None:
        w = torch.empty(shape, dtype=dtype, device=theta.device)
    else:
        _check("out", out, shape, dtype)
        w = out
    if not ts:
        return w
    hk, hw = _hat_tables(ts, kk, theta.device, cdt)
    grid = (len(ts) * nt, triton.cdiv(rp, _WBUILD["BR"]), triton.cdiv(d, _WBUILD["BD"]))
    with _device_guard(theta):
        _launch(
            _k.build_weights_kernel,
            grid,
            (theta, hk, hw, w, nt, kk, p, q, r, d, max(r - 1, 1), max(d - 1, 1)),
            dict(R_PAD=rp, **_WBUILD),
        )
    return w


def _weights_for(x, theta, t, r, weights):
    if weights is None:
        return build_weights(theta, [t], r, x.shape[1], x.dtype)[0]
    _check_weights(weights, x, theta.shape[0], r)
    return weights


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------


def _fwd_launch(x, w, bias, ids, y, z, r, alpha, cfg: Config, save_z: bool):
    n, d = x.shape
    pm = pool_meta(d, r, x.dtype)
    a_hi, a_lo = split_f32(alpha)
    _launch(
        _k.connector_fwd_kernel,
        (triton.cdiv(n, cfg.bn),),
        (x, w, bias, ids if ids is not None else x, y, z if z is not None else y, n, d, r, n_bucket(n), a_hi, a_lo),
        dict(pm, HAS_IDS=ids is not None, SAVE_Z=save_z, DOT=dot_mode(x.dtype), **cfg.meta()),
    )


def _forward(x, theta, bias, ids, t, r, alpha, y, z, weights):
    n, d = x.shape
    if n == 0:
        return
    save_z = z is not None
    if z is None and pool_meta(d, r, x.dtype)["RK"] < r_pad(r):
        z = torch.empty((n, r), dtype=x.dtype, device=x.device)  # scratch: z does not fit in registers
    with _device_guard(x):
        w = _weights_for(x, theta, t, r, weights)
        key = ("fwd", str(x.device), d, r, x.dtype, n_bucket(n), ids is not None, save_z)
        cfg = _pick(
            key,
            fwd_space(x.dtype, d, ids is not None),
            lambda c: _fwd_launch(
                x, w, bias, ids, torch.empty_like(x), None if z is None else torch.empty_like(z), r, alpha, c, save_z
            ),
        )
        _fwd_launch(x, w, bias, ids, y, z, r, alpha, cfg, save_z)


def _check_forward(x, theta, bias, ids, r):
    cdt = _check_inputs("x", x, theta, ids)
    _geometry(x.shape[1], r, theta)
    _check("bias", bias, (theta.shape[0], x.shape[1]), cdt)
    if bias.device != x.device:
        raise ValueError(f"bias is on {bias.device} but x is on {x.device}")


def forward(x, theta, bias, ids, t, r, alpha, out: Optional[torch.Tensor] = None, weights=None):
    """y = x + alpha (D(x) W + b): one launch with ``weights`` (W of this position, (T, r_pad, d)),
    two without; allocates only y (and, for r_pad > RMAX, an N x r scratch for z)."""
    _check_forward(x, theta, bias, ids, r)
    if out is None:
        y = torch.empty_like(x)
    else:
        _check("out", out, x.shape, x.dtype)
        y = out
    _forward(x, theta, bias, ids, t, r, alpha, y, None, weights)
    return y


def forward_save_z(x, theta, bias, ids, t, r, alpha, weights=None, out=None):
    """(y, z): the forward that also writes z = D(x) (N, r) in x's dtype for the params backward."""
    _check_forward(x, theta, bias, ids, r)
    if out is None:
        y = torch.empty_like(x)
        z = torch.empty((x.shape[0], r), dtype=x.dtype, device=x.device)
    else:
        y, z = out
        _check("out[0]", y, x.shape, x.dtype)
        _check("out[1]", z, (x.shape[0], r), x.dtype)
    _forward(x, theta, bias, ids, t, r, alpha, y, z, weights)
    return y, z


def forward_inplace(x, theta, bias, ids, t, r, alpha, weights=None):
    """x <- x + alpha (D(x) W + b), in x's memory: every program pools its rows completely before it
    writes any of them (see the kernel), so no temporary of x's size is needed."""
    _check_forward(x, theta, bias, ids, r)
    _forward(x, theta, bias, ids, t, r, alpha, x, None, weights)
    return x


# ---------------------------------------------------------------------------------------------
# backward dx
# ---------------------------------------------------------------------------------------------


def _dx_launch(dy, w, ids, dx, r, alpha, cfg: Config):
    n, d = dy.shape
    pm = pool_meta(d, r, dy.dtype)
    s_hi, s_lo = split_f32(alpha / (d // r))
    _launch(
        _k.connector_bwd_dx_kernel,
        (triton.cdiv(n, cfg.bn),),
        (dy, w, ids if ids is not None else dy, dx, n, d, r, n_bucket(n), s_hi, s_lo),
        dict(G=pm["G"], R_PAD=pm["R_PAD"], RK=pm["RK"], HAS_IDS=ids is not None, DOT=dot_mode(dy.dtype), **cfg.meta()),
    )


def backward_dx(dy, theta, ids, t, r, alpha, out: Optional[torch.Tensor] = None, weights=None):
    """dx = dy + alpha U(dy W^T): one launch with ``weights``, two without; allocates only dx."""
    _check_inputs("dy", dy, theta, ids)
    n, d = dy.shape
    _geometry(d, r, theta)
    if out is None:
        dx = torch.empty_like(dy)
    else:
        _check("out", out, dy.shape, dy.dtype)
        dx = out
    if n == 0:
        return dx
    with _device_guard(dy):
        w = _weights_for(dy, theta, t, r, weights)
        key = ("dx", str(dy.device), d, r, dy.dtype, n_bucket(n), ids is not None)
        cfg = _pick(
            key,
            dx_space(dy.dtype, d, ids is not None),
            lambda c: _dx_launch(dy, w, ids, torch.empty_like(dy), r, alpha, c),
        )
        _dx_launch(dy, w, ids, dx, r, alpha, cfg)
    return dx


# ---------------------------------------------------------------------------------------------
# backward dTheta, db
# ---------------------------------------------------------------------------------------------


def _num_splits(
    n: int, nt: int, r: int, d: int, device: torch.device, dtype=torch.float32, has_ids: bool = False
) -> Tuple[int, int]:
    """(S, rows per split). Under the interpreter a few splits of >= 16 rows, so the fixed-order
    cross-split reduction is exercised by the tests; on a GPU see :func:`gpu_splits`."""
    if INTERPRET or device.type != "cuda":
        s = max(1, min(3, triton.cdiv(n, 16)))
    else:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        s = gpu_splits(n, nt, r, d, dtype, has_ids, sms)
    rps = triton.cdiv(n, s)
    return triton.cdiv(n, rps), rps


def gpu_splits(n: int, nt: int, r: int, d: int, dtype: torch.dtype, has_ids: bool, sms: int) -> int:
    """Token splits of the params partials on a GPU with ``sms`` SMs: about two programs per SM over
    S x column blocks x r chunks (so N = 4096 still fills a 132-SM card), at least 128 rows per split
    (the S*T*r*d partials stay below the bytes of z and dy) and at most 16M partial elements. Depends
    only on the shape and the card: deterministic."""
    cfg = partial_config(dtype, d, has_ids, interpret=False)
    pm = pool_meta(d, r, dtype)
    programs = triton.cdiv(d, cfg.bd) * (pm["R_PAD"] // pm["RK"])
    cap = max(1, (1 << 24) // max(1, nt * r * d))
    return max(1, min(triton.cdiv(2 * sms, programs), triton.cdiv(n, 128), cap))


def _params(src, from_x, dy, theta, ids, t, r, alpha, out):
    cdt = _check_inputs("dy", dy, theta, ids)
    n, d = dy.shape
    geo = _geometry(d, r, theta)
    nt = theta.shape[0]
    if out is None:
        dtheta = torch.empty_like(theta)
        dbias = torch.empty((nt, d), dtype=cdt, device=dy.device)
    else:
        dtheta, dbias = out
        _check("out[0]", dtheta, theta.shape, cdt)
        _check("out[1]", dbias, (nt, d), cdt)
    if n == 0:
        dtheta.zero_()
        dbias.zero_()
        return dtheta, dbias
    k0, k1, h0, h1 = _hat(t, geo["K"])
    has_ids = ids is not None
    s, rps = _num_splits(n, nt, r, d, dy.device, dy.dtype, has_ids)
    # partial slots of tasks absent from a split are never written nor read (see rng)
    pw = torch.empty((s, nt, r, d), dtype=cdt, device=dy.device)
    pb = torch.empty((s, nt, d), dtype=cdt, device=dy.device)
    rng = torch.empty((s, 2), dtype=torch.int64, device=dy.device)
    pm = pool_meta(d, r, dy.dtype)
    cfg = partial_config(dy.dtype, d, has_ids)
    with _device_guard(dy):
        _launch(
            _k.connector_bwd_partial_kernel,
            (triton.cdiv(d, cfg.bd), pm["R_PAD"] // pm["RK"], s),
            (src, dy, ids if has_ids else dy, pw, pb, rng, n, d, r, nt, rps),
            dict(pm, FROM_X=from_x, HAS_IDS=has_ids, DOT=dot_mode(dy.dtype), **cfg.meta()),
        )
        nq = triton.cdiv(geo["q"], _REDUCE["BQ"])
        db_ch = triton.cdiv(triton.cdiv(d, nq), _REDUCE["BD"]) * _REDUCE["BD"]
        _launch(
            _k.connector_bwd_reduce_kernel,
            (nt, triton.cdiv(geo["p"], _REDUCE["BP"]), nq),
            (
                pw,
                pb,
                rng,
                dtheta,
                dbias,
                s,
                nt,
                d,
                r,
                geo["p"],
                geo["q"],
                geo["K"],
                geo["den_r"],
                geo["den_d"],
                k0,
                k1,
                db_ch,
                *split_f32(h0),
                *split_f32(h1),
                *split_f32(alpha),
            ),
            dict(HAS_IDS=has_ids, **_REDUCE),
        )
    return dtheta, dbias


def backward_params(x, dy, theta, ids, t, r, alpha, out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
    """(dTheta (T,K,p,q), db (T,d)) in the compute dtype from x and dy; two launches, deterministic."""
    _check_inputs("x", x, theta, ids)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x {tuple(x.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but x has {x.dtype}; give them one dtype")
    return _params(x, True, dy, theta, ids, t, r, alpha, out)


def backward_params_z(z, dy, theta, ids, t, r, alpha, out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
    """As :func:`backward_params`, from the z = D(x) (N, r) saved by :func:`forward_save_z` (same bits)."""
    _check_inputs("dy", dy, theta, ids)
    _check("z", z, (dy.shape[0], r), dy.dtype)
    if z.device != dy.device:
        raise ValueError(f"z is on {z.device} but dy is on {dy.device}")
    return _params(z, False, dy, theta, ids, t, r, alpha, out)


# ---------------------------------------------------------------------------------------------
# what the launchers compile (for python -m lc_kernels.triton.inspect)
# ---------------------------------------------------------------------------------------------

_TL = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


@dataclass
class KernelPlan:
    """One kernel as a launcher would compile it: pointer dtypes, representative integer arguments
    (their divisibility by 16 is what Triton specialises on), compile-time constants and configs."""

    name: str
    fn: object
    pointers: Dict[str, str]
    ints: Dict[str, int]
    floats: Tuple[str, ...]
    constexprs: Dict[str, object]
    configs: List[Dict[str, int]]
    variant: str = ""


def kernel_plans(
    d: int, dtype: torch.dtype, n: int = 16384, r: Optional[int] = None, has_ids: bool = False, from_x: bool = False
) -> List[KernelPlan]:
    """Every kernel the backend launches on a GPU for one connector at the SPEC default geometry
    (r = d/8, p = r, q = d/2, K = 2) unless ``r`` is given, with every configuration it may use there
    (the GPU configurations, also when this process runs the interpreter): the forward twice (variant
    ``inference``, and ``training``, which also writes z), the partials reading the saved z (or, with
    ``from_x``, pooling x: direct ``backward_params`` calls); ``has_ids`` gives the multi-task
    variants (T = 3 tasks)."""
    r = d // 8 if r is None else r
    p, q, kk, nt = r, d // 2, 2, (3 if has_ids else 1)
    xdt, cdt = _TL[dtype], ("fp64" if dtype == torch.float64 else "fp32")
    pm = pool_meta(d, r, dtype)
    rows = dict(N=n, d=d, r=r, NB=n_bucket(n))
    s, rps = 22, triton.cdiv(n, 22)
    plans = [
        KernelPlan(
            "build_weights_kernel",
            _k.build_weights_kernel,
            dict(th_ptr=cdt, hk_ptr="i32", hw_ptr=cdt, w_ptr=xdt),
            dict(T=nt, K=kk, p=p, q=q, r=r, d=d, den_r=max(r - 1, 1), den_d=max(d - 1, 1)),
            (),
            dict(R_PAD=pm["R_PAD"], BR=_WBUILD_GPU["BR"], BD=_WBUILD_GPU["BD"]),
            [dict(num_warps=_WBUILD_GPU["num_warps"], num_stages=3)],
        ),
        *[
            KernelPlan(
                "connector_fwd_kernel",
                _k.connector_fwd_kernel,
                dict(x_ptr=xdt, w_ptr=xdt, b_ptr=cdt, ids_ptr="i64" if has_ids else xdt, y_ptr=xdt, z_ptr=xdt),
                rows,
                ("ALPHA_HI", "ALPHA_LO"),
                dict(pm, HAS_IDS=has_ids, SAVE_Z=save_z, DOT=dot_mode(dtype)),
                [c.meta() for c in fwd_space(dtype, d, has_ids, interpret=False)],
                "training" if save_z else "inference",
            )
            for save_z in (False, True)
        ],
        KernelPlan(
            "connector_bwd_dx_kernel",
            _k.connector_bwd_dx_kernel,
            dict(dy_ptr=xdt, w_ptr=xdt, ids_ptr="i64" if has_ids else xdt, dx_ptr=xdt),
            rows,
            ("SCALE_HI", "SCALE_LO"),
            dict(G=pm["G"], R_PAD=pm["R_PAD"], RK=pm["RK"], HAS_IDS=has_ids, DOT=dot_mode(dtype)),
            [c.meta() for c in dx_space(dtype, d, has_ids, interpret=False)],
        ),
        KernelPlan(
            "connector_bwd_partial_kernel",
            _k.connector_bwd_partial_kernel,
            dict(src_ptr=xdt, dy_ptr=xdt, ids_ptr="i64" if has_ids else xdt, pw_ptr=cdt, pb_ptr=cdt, rng_ptr="i64"),
            dict(N=n, d=d, r=r, T=nt, RPS=rps),
            (),
            dict(pm, FROM_X=from_x, HAS_IDS=has_ids, DOT=dot_mode(dtype)),
            [partial_config(dtype, d, has_ids, interpret=False).meta()],
            "from_x" if from_x else "from_z",
        ),
        KernelPlan(
            "connector_bwd_reduce_kernel",
            _k.connector_bwd_reduce_kernel,
            dict(pw_ptr=cdt, pb_ptr=cdt, rng_ptr="i64", dth_ptr=cdt, db_ptr=cdt),
            dict(
                S=s,
                T=nt,
                d=d,
                r=r,
                p=p,
                q=q,
                K=kk,
                den_r=max(r - 1, 1),
                den_d=max(d - 1, 1),
                K0=0,
                K1=1,
                DB_CH=triton.cdiv(d, 12),
            ),
            ("H0_HI", "H0_LO", "H1_HI", "H1_LO", "ALPHA_HI", "ALPHA_LO"),
            dict(HAS_IDS=has_ids, **{k: v for k, v in _REDUCE_GPU.items() if k != "num_warps"}),
            [dict(num_warps=_REDUCE_GPU["num_warps"], num_stages=3)],
        ),
    ]
    return plans
