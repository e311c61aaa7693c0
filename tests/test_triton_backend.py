"""The Triton backend against the reference (SPEC §2-§6).

On CPU these run the kernels under the Triton interpreter (conftest sets TRITON_INTERPRET=1), so
shapes are small but chosen to hit every mask: odd N, d not a power of two, g = d/r in {1, 2, 8,
12}, seed grids smaller than and equal to (r, d), K in {1, 2, 3}, t at 0, 1 and between, 3-D
inputs, several tasks in one batch (some absent), and several token splits in dTheta/db.
GPU tests (bf16/fp16 error bounds, torch.compile, large shapes) are marked and skip without CUDA.
"""
from __future__ import annotations

import os

import pytest
import torch

import lc_kernels
from lc_kernels import backends, ops
from lc_kernels import reference as ref

pytest.importorskip("triton")
from lc_kernels.triton import launch as L  # noqa: E402

D64 = torch.float64
ON_CPU = os.environ.get("TRITON_INTERPRET") == "1"
DEV = "cpu" if ON_CPU else ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEV is None, reason="needs CUDA or TRITON_INTERPRET=1")


def _rel(a: torch.Tensor, e: torch.Tensor) -> float:
    """max |a - e| / max |e| in float64 (one scale per tensor: no per-element rtol to hide behind)."""
    a, e = a.double(), e.double()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-300))


# (lead shape of x, d, r, p, q, K, t, T or None for single task, ids maker)
CASES = {
    "g8_p<r_q<d_mix": ((37,), 48, 6, 3, 20, 2, 0.3, None),
    "g2_seed_eq_rd_t1_3d": ((2, 9), 20, 10, 10, 20, 3, 1.0, None),
    "g1_K1_t0_3d": ((5, 7), 36, 36, 5, 7, 1, 0.0, None),
    "g12_multitask": ((70,), 96, 8, 8, 48, 2, 0.5, 3),
    "g12_multitask_3d_bcast_ids": ((3, 11), 36, 3, 2, 36, 3, 0.25, 4),
    "r1_p1_q1": ((9,), 12, 1, 1, 1, 2, 0.6, None),
}


def _make(case, dtype, device=DEV):
    lead, d, r, p, q, kk, t, nt = case
    x = torch.randn(*lead, d, dtype=dtype, device=device)
    if nt is None:
        th = torch.randn(kk, p, q, dtype=dtype, device=device)
        b = torch.randn(d, dtype=dtype, device=device)
        ids = None
    else:
        th = torch.randn(nt, kk, p, q, dtype=dtype, device=device)
        b = torch.randn(nt, d, dtype=dtype, device=device)
        if len(lead) == 2:  # one task per sequence, broadcast over its tokens
            ids = torch.randint(0, nt, (lead[0], 1), device=device)
        else:  # token-level mix, skipping task 1 entirely (its gradients must be exact zeros)
            ids = torch.randint(0, nt - 1, lead, device=device)
            ids[ids >= 1] += 1
    return x, th, b, ids, t, r


def _grads(fn, x, th, b, ids, t, r, alpha, dy):
    xs = [v.detach().clone().requires_grad_() for v in (x, th, b)]
    y = fn(*xs, ids, t, r, alpha)
    g = torch.autograd.grad(y, xs, dy)
    return (y.detach(), *g)


def _triton_fn(x, th, b, ids, t, r, alpha):
    return lc_kernels.connector(x, th, b, t, r, alpha=alpha, backend="triton", task_ids=ids)


def _ref_fn(x, th, b, ids, t, r, alpha):
    return ref.connector(x, th, b, t, r, alpha, task_ids=ids)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_and_gradients_match_reference(name, dtype, tol):
    x, th, b, ids, t, r = _make(CASES[name], dtype)
    dy = torch.randn_like(x)
    got = _grads(_triton_fn, x, th, b, ids, t, r, 0.7, dy)
    # ground truth: the reference in float64 from the very same inputs
    exp = _grads(_ref_fn, x.double(), th.double(), b.double(), ids, t, r, 0.7, dy.double())
    for what, a, e in zip(("y", "dx", "dtheta", "dbias"), got, exp):
        assert a.dtype == dtype and a.shape == e.shape, what
        assert _rel(a, e) <= tol, f"{what}: relative error {_rel(a, e):.3g} > {tol}"
    if ids is not None and CASES[name][0] == (70,):
        assert torch.count_nonzero(got[2][1]) == 0 and torch.count_nonzero(got[3][1]) == 0


def test_gradcheck_float64():
    x = torch.randn(5, 8, dtype=D64, device=DEV)
    th = torch.randn(2, 2, 3, dtype=D64, device=DEV)
    b = torch.randn(8, dtype=D64, device=DEV)
    args = (x.requires_grad_(), th.requires_grad_(), b.requires_grad_())
    fn1 = lambda *a: lc_kernels.connector(*a, 0.4, 4, 1.3, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn1, args, fast_mode=True)
    ids = torch.tensor([0, 1, 1, 0, 1], device=DEV)
    th2 = torch.randn(2, 2, 2, 3, dtype=D64, device=DEV).requires_grad_()
    b2 = torch.randn(2, 8, dtype=D64, device=DEV).requires_grad_()
    fn = lambda a, c, e: lc_kernels.connector(a, c, e, 0.7, 4, 0.9, backend="triton", task_ids=ids)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, th2, b2), fast_mode=True)


@pytest.mark.parametrize("kind", ["expanded", "transposed"])
def test_noncontiguous_and_expanded_upstream_grads(kind):
    x, th, b, ids, t, r = _make(CASES["g8_p<r_q<d_mix"], D64)
    n, d = x.shape
    if kind == "expanded":
        dy = torch.randn(1, d, dtype=D64, device=DEV).expand(n, d)
        assert dy.stride(0) == 0
    else:
        dy = torch.randn(d, n, dtype=D64, device=DEV).t()
        assert not dy.is_contiguous()
    got = _grads(_triton_fn, x, th, b, ids, t, r, 1.1, dy)
    exp = _grads(_ref_fn, x, th, b, ids, t, r, 1.1, dy.contiguous())
    for a, e in zip(got, exp):
        assert _rel(a, e) <= 1e-12


class _PoisonTorch:
    """Stands in for ``torch`` inside the launcher module: every empty/empty_like comes back filled
    with NaN (floats) or a huge bogus value (ints), so any element a kernel forgets to write shows."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def _poison(v):
        return v.fill_(float("nan")) if v.is_floating_point() else v.fill_(1 << 40)

    def empty(self, *a, **k):
        return self._poison(torch.empty(*a, **k))

    def empty_like(self, *a, **k):
        return self._poison(torch.empty_like(*a, **k))


@pytest.mark.parametrize("name", ["g8_p<r_q<d_mix", "g12_multitask"])
def test_poisoned_outputs_are_fully_written(name, monkeypatch):
    x, th, b, ids, t, r = _make(CASES[name], D64)
    # the backend's normalised convention: stacked (T, K, p, q) / (T, d) parameters
    th4, b2 = (th[None].contiguous(), b[None].contiguous()) if ids is None else (th, b)
    monkeypatch.setattr(L, "torch", _PoisonTorch())
    dy = torch.randn_like(x)
    # the launchers' own allocations (y, dx, dTheta, db, partial sums, split task ranges) ...
    y = L.forward(x, th4, b2, ids, t, r, 0.8)
    dx = L.backward_dx(dy, th4, ids, t, r, 0.8)
    dth, db = L.backward_params(x, dy, th4, ids, t, r, 0.8)
    # ... and caller-provided out= buffers
    y2 = L.forward(x, th4, b2, ids, t, r, 0.8, out=torch.full_like(x, float("nan")))
    dx2 = L.backward_dx(dy, th4, ids, t, r, 0.8, out=torch.full_like(dy, float("nan")))
    dth2, db2 = L.backward_params(
        x, dy, th4, ids, t, r, 0.8,
        out=(torch.full_like(th4, float("nan")), torch.full_like(b2, float("nan"))),
    )
    ey = ref.connector(x, th4, b2, t, r, 0.8, task_ids=ids) if ids is not None else ref.connector(x, th, b, t, r, 0.8)
    edx, edth, edb = ref.connector_backward(x, dy, th4 if ids is not None else th, t, r, 0.8, task_ids=ids)
    if ids is None:
        edth, edb = edth[None], edb[None]
    for a, e in ((y, ey), (y2, ey), (dx, edx), (dx2, edx), (dth, edth), (dth2, edth), (db, edb), (db2, edb)):
        assert not torch.isnan(a).any()
        assert _rel(a, e) <= 1e-12


def test_params_are_deterministic_and_ignore_absent_tasks():
    x, th, b, ids, t, r = _make(CASES["g12_multitask"], D64)
    dy = torch.randn_like(x)
    a = L.backward_params(x, dy, th, ids, t, r, 1.0)
    c = L.backward_params(x, dy, th, ids, t, r, 1.0)
    assert all(torch.equal(u, v) for u, v in zip(a, c))
    n = x.shape[0]
    s, rps = L._num_splits(n, th.shape[0], r, x.shape[1], x.device)
    assert s > 1 and (s - 1) * rps < n  # several splits, none empty: the cross-split sum is exercised


@pytest.mark.parametrize("lowp", [False, True], ids=["fp32-dots", "fp16-dots"])
def test_float16_error_within_twice_eager(lowp, monkeypatch):
    # fp16-dots forces the GPU path's tensor-core operands (z, W, dy rounded to fp16, fp32
    # accumulation) under the interpreter too, so that branch is checked without a GPU
    monkeypatch.setattr(L, "_lowp", lambda v: lowp and v.dtype == torch.float16)
    x, th, b, ids, t, r = _make(CASES["g12_multitask"], torch.float16)
    dy = torch.randn_like(x)
    got = _grads(_triton_fn, x, th, b, ids, t, r, 0.7, dy)
    eager = _grads(_ref_fn, x, th, b, ids, t, r, 0.7, dy)  # the same math in eager fp16
    exact = _grads(_ref_fn, x.double(), th.double(), b.double(), ids, t, r, 0.7, dy.double())
    for what, a, e, ex in zip(("y", "dx", "dtheta", "dbias"), got, eager, exact):
        err, err_eager = (a.double() - ex).abs().max(), (e.double() - ex).abs().max()
        assert err_eager > 0, what
        assert err <= 2 * err_eager, f"{what}: triton fp16 error {err:.3g} > 2x eager {err_eager:.3g}"


@pytest.mark.skipif(not ON_CPU, reason="bfloat16 is rejected only under the interpreter")
def test_bfloat16_on_interpreter_is_rejected_clearly():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    th, b = torch.randn(2, 2, 3), torch.randn(8)
    with pytest.raises(TypeError, match="bfloat16"):
        lc_kernels.connector(x, th, b, 0.5, 4, backend="triton")
    with pytest.raises(TypeError, match="interpreter.*bfloat16"):
        L.forward(x, th[None], b[None], None, 0.5, 4, 1.0)


def test_registration_and_auto_never_picks_interpreter(monkeypatch):
    be = backends.get("triton")
    assert be.unavailable_reason() is None and "triton" in lc_kernels.available_backends()
    assert be.priority.get("cuda") == 20 and "cpu" not in be.priority
    if ON_CPU:
        assert torch.bfloat16 not in be.dtypes["cpu"]
        for dt in (torch.float16, torch.float32, torch.float64):
            assert backends.auto_backend(torch.device("cpu"), dt) != "triton"
    import lc_kernels.triton as tb

    monkeypatch.setattr(tb, "_INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "TRITON_INTERPRET" in tb.unavailable_reason() and "CUDA" in tb.unavailable_reason()
    monkeypatch.setattr(tb, "_IMPORT_ERROR", "triton is not importable (x); install it with `pip install triton`")
    assert "pip install triton" in tb.unavailable_reason()


def test_empty_batch():
    x, th, b, ids, t, r = _make(CASES["g8_p<r_q<d_mix"], D64)
    x0 = x[:0].clone().requires_grad_()
    th0 = th.clone().requires_grad_()
    y = lc_kernels.connector(x0, th0, b, t, r, backend="triton")
    assert y.shape == x0.shape
    y.sum().backward()
    assert torch.count_nonzero(th0.grad) == 0


def test_opcheck_custom_ops():
    x = torch.randn(7, 12, dtype=D64, device=DEV)
    th4 = torch.randn(1, 2, 2, 5, dtype=D64, device=DEV)
    b2 = torch.randn(1, 12, dtype=D64, device=DEV)
    args = (x.requires_grad_(), th4.requires_grad_(), b2.requires_grad_(), None, 0.6, 3, 0.9, "triton")
    torch.library.opcheck(ops._connector_op, args)
    dy = torch.randn_like(x)
    torch.library.opcheck(ops._backward_dx_op, (dy, th4.detach(), None, 0.6, 3, 0.9, "triton"))
    torch.library.opcheck(ops._backward_params_op, (x.detach(), dy, th4.detach(), None, 0.6, 3, 0.9, "triton"))


_COMPILE_SCRIPT = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lc_kernels.triton import kernels as K

def sig(fn, ptrs):
    out = {}
    for prm in fn.params:
        if prm.is_constexpr:
            out[prm.name] = "constexpr"
        elif prm.name.endswith("_ptr"):
            out[prm.name] = ptrs.get(prm.name, "*i64")
        else:
            out[prm.name] = str(prm.annotation).strip("'\"") if prm.annotation else "i32"
    return out

ROW = dict(MIX=True, BLOCK_R=32, BLOCK_G=2, BLOCK_N=64, BLOCK_D=64)
jobs = [
    (K.connector_fwd_kernel, dict(x_ptr="*fp16", th_ptr="*fp32", b_ptr="*fp32", y_ptr="*fp16"),
     dict(ROW, HAS_IDS=True, LOWP=True)),
    (K.connector_bwd_dx_kernel, dict(dy_ptr="*bf16", th_ptr="*fp32", dx_ptr="*bf16"),
     dict(ROW, HAS_IDS=False, LOWP=True)),
    (K.connector_bwd_partial_kernel, dict(x_ptr="*fp64", dy_ptr="*fp64", pw_ptr="*fp64", pb_ptr="*fp64"),
     dict(HAS_IDS=True, LOWP=False, BLOCK_R=32, BLOCK_G=2, BLOCK_N=64, BLOCK_D=64)),
    (K.connector_bwd_reduce_kernel, dict(pw_ptr="*fp32", pb_ptr="*fp32", dth_ptr="*fp32", db_ptr="*fp32"),
     dict(HAS_IDS=True, BLOCK_P=128, BLOCK_Q=32, BLOCK_R=32, BLOCK_D=64)),
]
for fn, ptrs, ce in jobs:
    cc = triton.compile(ASTSource(fn=fn, signature=sig(fn, ptrs), constexprs=ce),
                        target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    assert cc.asm.get("cubin"), fn.__name__
    print("compiled", fn.__name__)
"""


@pytest.mark.skipif(not ON_CPU, reason="GPU runs compile the kernels anyway")
def test_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter never runs the compiled path (tensor-core dots, float64 scalar arguments,
    scf.if on task ranges): compile it for sm_90 here, in a subprocess without TRITON_INTERPRET."""
    import subprocess
    import sys

    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no NVIDIA backend to compile with")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    res = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("compiled") == 4


# ------------------------------------------------------------------------------------------------
# GPU only (compiled kernels: with TRITON_INTERPRET=1 they would run interpreted, slowly, and
# bfloat16 would be rejected; run them with TRITON_INTERPRET=0 on a CUDA machine)
# ------------------------------------------------------------------------------------------------

gpu_compiled = pytest.mark.skipif(ON_CPU, reason="TRITON_INTERPRET=1: set TRITON_INTERPRET=0 to test compiled kernels")


def _gpu_case(dtype, n=4096, d=768, r=96, multitask=False):
    q = d // 2
    return _make(((n,), d, r, r, q, 2, 0.4, 3 if multitask else None), dtype, device="cuda")


@pytest.mark.gpu
@gpu_compiled
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("multitask", [False, True])
def test_gpu_low_precision_within_twice_eager(dtype, multitask):
    x, th, b, ids, t, r = _gpu_case(dtype, multitask=multitask)
    dy = torch.randn_like(x)
    got = _grads(_triton_fn, x, th, b, ids, t, r, 1.0, dy)
    eager = _grads(_ref_fn, x, th, b, ids, t, r, 1.0, dy)
    exact = _grads(_ref_fn, x.double(), th.double(), b.double(), ids, t, r, 1.0, dy.double())
    for what, a, e, ex in zip(("y", "dx", "dtheta", "dbias"), got, eager, exact):
        err, err_eager = (a.double() - ex).abs().max(), (e.double() - ex).abs().max()
        assert err <= 2 * err_eager, f"{what}: triton {dtype} error {err:.3g} > 2x eager {err_eager:.3g}"


@pytest.mark.gpu
@gpu_compiled
@pytest.mark.parametrize("multitask", [False, True])
def test_gpu_float32_and_float64_large(multitask):
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-12)):
        x, th, b, ids, t, r = _gpu_case(dtype, multitask=multitask)
        dy = torch.randn_like(x)
        got = _grads(_triton_fn, x, th, b, ids, t, r, 0.9, dy)
        exp = _grads(_ref_fn, x.double(), th.double(), b.double(), ids, t, r, 0.9, dy.double())
        for what, a, e in zip(("y", "dx", "dtheta", "dbias"), got, exp):
            assert _rel(a, e) <= tol, f"{dtype} {what}: relative error {_rel(a, e):.3g}"


@pytest.mark.gpu
@gpu_compiled
def test_gpu_odd_shapes_all_dtypes():
    for name in CASES:
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            x, th, b, ids, t, r = _make(CASES[name], dtype, device="cuda")
            y = _triton_fn(x, th, b, ids, t, r, 0.7)
            e = _ref_fn(x.double(), th.double(), b.double(), ids, t, r, 0.7)
            tol = 1e-5 if dtype == torch.float32 else (4e-3 if dtype == torch.float16 else 3e-2)
            assert _rel(y, e) <= tol, (name, dtype)


@pytest.mark.gpu
@gpu_compiled
def test_gpu_torch_compile_fullgraph():
    x, th, b, ids, t, r = _gpu_case(torch.float16, n=512)
    th.requires_grad_()
    b.requires_grad_()

    def f(x, th, b):
        return lc_kernels.connector(x, th, b, t, r, backend="triton").float().square().mean()

    cf = torch.compile(f, fullgraph=True)
    out = cf(x, th, b)
    gth, gb = torch.autograd.grad(out, (th, b))
    out_e = f(x, th, b)
    eth, eb = torch.autograd.grad(out_e, (th, b))
    # inductor may fuse the square/mean (and their backward) differently: rounding-level only
    for a, e in ((out, out_e), (gth, eth), (gb, eb)):
        assert _rel(a, e) <= 1e-5
