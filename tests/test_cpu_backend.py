"""The fused CPU backend ("cpu", csrc/cpu/) against the ground truth lc_kernels.reference.

Every comparison is against the float64 reference with a tolerance relative to the largest
reference value: ~1e-12 for float64 inputs (a few ulps times the reduction lengths used here) and
1e-5 for float32 inputs (float32 accumulation over <= 768 products). Kernels are exercised on each
instruction-set build this CPU supports (default/SSE2, AVX2, AVX-512), at odd row counts that cross
the 64-row block boundary, hidden sizes that are not multiples of the vector width, and seed grids
smaller than and equal to (r, d).
"""

import math
import os
import subprocess
import sys

import pytest
import torch

import lc_kernels
from lc_kernels import _ext, backends
from lc_kernels import reference as ref

_REASON = backends.get("cpu").unavailable_reason()
if _REASON is not None:
    pytest.skip(f"cpu backend unavailable: {_REASON}", allow_module_level=True)

C = _ext.load()
ISAS = ["default", "avx2", "avx512"]

# (lead shape, d, r, K, p, q): g = d / r in {1, 2, 4, 8, 12, 16, 32}, d not a power of two, 2-D and 3-D x.
# The vectorised pooling tree (g a power of two) needs r >= the vector width (16 floats on AVX-512):
# the last three shapes run it for g = 4, 8, 16 with full vector chunks and a tail, with p == r (pooled
# sums written straight into the GEMM operand) and p != r (spread through A).
SHAPES = [
    ((37,), 24, 12, 2, 5, 7),  # g=2, tiny grid, odd N
    ((3, 43), 96, 12, 3, 12, 96),  # g=8, p=r and q=d (grid equal in width), 3-D x, 129 rows
    ((2, 9), 36, 3, 1, 2, 17),  # g=12, K=1
    ((65,), 30, 30, 2, 30, 30),  # g=1, grid equal to (r, d): interpolation is the identity
    ((70,), 100, 50, 3, 1, 1),  # p=q=1: every W entry is the one seed value
    ((131,), 200, 25, 2, 13, 100),  # g=8, d=200 has a vector tail, q = d/2
    ((19,), 64, 2, 2, 2, 40),  # g=32: the vectorised pooling path
    ((33,), 160, 40, 2, 40, 64),  # g=4, p=r: two AVX-512 chunks + a tail of 8, direct to u
    ((45,), 384, 48, 2, 48, 192),  # g=8, p=r, q=d/2: the default geometry at d=384
    ((21,), 528, 33, 2, 7, 100),  # g=16, p<r: two chunks + a tail of 1, spread through A
]
TS = [0.0, 1.0, 0.37, 0.5]


def _tol(dtype):
    return 1e-12 if dtype == torch.float64 else 1e-5


def assert_rel_close(actual, expected, tol, what):
    """max |actual - expected| <= tol * max |expected|, with no NaN/inf in actual."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().item()
    err = (actual.to(torch.float64) - expected.to(torch.float64)).abs().max().item()
    assert err <= tol * max(scale, 1e-30), f"{what}: max error {err:.3e} > {tol:.0e} * {scale:.3e}"


@pytest.fixture(params=ISAS)
def isa(request):
    try:
        prev = C.cpu_set_isa(request.param)
    except RuntimeError as exc:
        pytest.skip(f"{request.param} not supported here: {exc}")
    yield request.param
    C.cpu_set_isa("auto" if prev is None else prev)


def _make(lead, d, K, p, q, dtype, nt=None, scale=1.0):
    x = torch.randn(*lead, d, dtype=dtype)
    tshape = (K, p, q) if nt is None else (nt, K, p, q)
    bshape = (d,) if nt is None else (nt, d)
    theta = torch.randn(*tshape, dtype=dtype) * scale
    bias = torch.randn(*bshape, dtype=dtype)
    return x, theta, bias


def _grads_public(x, theta, bias, t, r, alpha, dy, backend, task_ids=None):
    x = x.detach().clone().requires_grad_()
    theta = theta.detach().clone().requires_grad_()
    bias = bias.detach().clone().requires_grad_()
    if backend == "truth":
        y = ref.connector(x, theta, bias, t, r, alpha, task_ids=task_ids)
    else:
        y = lc_kernels.connector(x, theta, bias, t, r, alpha, backend=backend, task_ids=task_ids)
    y.backward(dy)
    return y.detach(), x.grad, theta.grad, bias.grad


def _truth(x, theta, bias, t, r, alpha, dy, task_ids=None):
    """Float64 reference outputs and gradients for (possibly float32) inputs."""
    f = lambda v: v.detach().to(torch.float64)  # noqa: E731
    return _grads_public(f(x), f(theta), f(bias), t, r, alpha, f(dy), "truth", task_ids)


# ------------------------------------------------------------------------------------------------
# registration
# ------------------------------------------------------------------------------------------------


def test_registered_and_preferred_for_cpu_float():
    assert "cpu" in lc_kernels.available_backends()
    assert backends.auto_backend(torch.device("cpu"), torch.float32) == "cpu"
    assert backends.auto_backend(torch.device("cpu"), torch.float64) == "cpu"
    # float16 is not a cpu-backend dtype: auto must not pick it
    assert backends.auto_backend(torch.device("cpu"), torch.float16) != "cpu"
    assert C.cpu_isa() in ISAS


# ------------------------------------------------------------------------------------------------
# forward and all gradients against the reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{math.prod(s[0])}-d{s[1]}-r{s[2]}-K{s[3]}-p{s[4]}-q{s[5]}")
def test_matches_reference(isa, shape, dtype):
    lead, d, r, K, p, q = shape
    x, theta, bias = _make(lead, d, K, p, q, dtype)
    dy = torch.randn(*lead, d, dtype=dtype)
    for t in TS if K > 1 else [0.0, 0.6]:
        alpha = 0.75
        got = _grads_public(x, theta, bias, t, r, alpha, dy, "cpu")
        want = _truth(x, theta, bias, t, r, alpha, dy)
        for name, a, b in zip(("y", "dx", "dtheta", "dbias"), got, want):
            assert a.dtype == dtype, f"{name} dtype {a.dtype} != {dtype}"
            assert_rel_close(a, b, _tol(dtype), f"{isa} {name} t={t}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_direct_calls_write_every_element(isa, dtype):
    """out= buffers pre-filled with NaN: any element a kernel skipped would stay NaN."""
    N, d, r, K, p, q = 133, 72, 9, 3, 4, 35  # g = 8, two full blocks + a 5-row tail, d % 16 != 0
    x, theta, bias = _make((N,), d, K, p, q, dtype)
    dy = torch.randn(N, d, dtype=dtype)
    th4, b2 = theta.unsqueeze(0), bias.unsqueeze(0)
    t, alpha = 0.8, -1.3
    nan = float("nan")
    y = torch.full((N, d), nan, dtype=dtype)
    dx = torch.full((N, d), nan, dtype=dtype)
    dth = torch.full_like(th4, nan)
    db = torch.full_like(b2, nan)
    assert C.forward_cpu(x, th4, b2, None, t, r, alpha, out=y) is not None
    C.backward_dx_cpu(dy, th4, None, t, r, alpha, out=dx)
    C.backward_params_cpu(x, dy, th4, None, t, r, alpha, out_dtheta=dth, out_dbias=db)
    want = _truth(x, theta, bias, t, r, alpha, dy)
    for name, a, b in (("y", y, want[0]), ("dx", dx, want[1]), ("dtheta", dth[0], want[2]), ("dbias", db[0], want[3])):
        assert_rel_close(a, b, _tol(dtype), f"{isa} {name}")


def test_zero_init_is_exact_identity():
    """SPEC §3: Theta = 0, b = 0 gives exactly the input (to the bit)."""
    x = torch.randn(5, 19, 48)
    y = lc_kernels.connector(x, torch.zeros(2, 6, 24), torch.zeros(48), 0.3, 6, backend="cpu")
    assert torch.equal(y, x)


def test_empty_batch():
    x = torch.randn(0, 24, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(24, dtype=torch.float64, requires_grad=True)
    y = lc_kernels.connector(x, theta, bias, 0.5, 6, backend="cpu")
    assert y.shape == (0, 24)
    y.sum().backward()
    assert torch.equal(theta.grad, torch.zeros_like(theta))
    assert torch.equal(bias.grad, torch.zeros_like(bias))


# ------------------------------------------------------------------------------------------------
# multi-task (SPEC §6)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_multitask_rows_equal_single_task(isa, dtype):
    nt, lead, d, r, K, p, q = 3, (4, 37), 48, 6, 2, 4, 20
    x, theta, bias = _make(lead, d, K, p, q, dtype, nt=nt)
    # runs of one task (as in a batch of sequences) and isolated rows of mixed tasks
    ids = torch.randint(0, nt, (lead[0], 1)).expand(lead).clone()
    ids[1] = torch.randint(0, nt, (lead[1],))
    dy = torch.randn(*lead, d, dtype=dtype)
    t, alpha = 0.4, 1.1
    y, dx, dth, db = _grads_public(x, theta, bias, t, r, alpha, dy, "cpu", task_ids=ids)
    want = _truth(x, theta, bias, t, r, alpha, dy, task_ids=ids)
    for name, a, b in zip(("y", "dx", "dtheta", "dbias"), (y, dx, dth, db), want):
        assert_rel_close(a, b, _tol(dtype), f"multi-task {name}")
    for tau in range(nt):
        m = ids == tau
        ys, dxs, dths, dbs = _grads_public(x, theta[tau], bias[tau], t, r, alpha, dy * m.unsqueeze(-1), "cpu")
        assert_rel_close(y[m], ys[m], _tol(dtype), f"task {tau} rows of y")
        assert_rel_close(dx[m], dxs[m], _tol(dtype), f"task {tau} rows of dx")
        assert_rel_close(dth[tau], dths, _tol(dtype), f"task {tau} dtheta")
        assert_rel_close(db[tau], dbs, _tol(dtype), f"task {tau} dbias")


def test_multitask_broadcast_ids_per_sequence():
    nt, B, L, d, r = 2, 3, 7, 24, 12
    x, theta, bias = _make((B, L), d, 2, 5, 9, torch.float64, nt=nt)
    ids = torch.tensor([[1], [0], [1]])  # one id per sequence, broadcast over tokens
    y = lc_kernels.connector(x, theta, bias, 0.25, r, backend="cpu", task_ids=ids)
    want = ref.connector(x, theta, bias, 0.25, r, task_ids=ids)
    assert_rel_close(y, want, 1e-12, "broadcast ids")


# ------------------------------------------------------------------------------------------------
# autograd details
# ------------------------------------------------------------------------------------------------


def test_gradcheck_float64():
    x, theta, bias = _make((2, 11), 36, 3, 4, 10, torch.float64)
    inputs = tuple(v.requires_grad_() for v in (x, theta, bias))
    fn = lambda a, b, c: lc_kernels.connector(a, b, c, 0.7, 9, alpha=0.9, backend="cpu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_float64_multitask():
    x, theta, bias = _make((13,), 24, 2, 3, 7, torch.float64, nt=2)
    ids = torch.tensor([0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0])
    inputs = tuple(v.requires_grad_() for v in (x, theta, bias))
    fn = lambda a, b, c: lc_kernels.connector(a, b, c, 0.2, 6, backend="cpu", task_ids=ids)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("kind", ["expanded", "transposed"])
def test_noncontiguous_upstream_grad(kind):
    N, d, r = 70, 40, 5
    x, theta, bias = _make((N,), d, 2, 3, 11, torch.float64)
    if kind == "expanded":
        dy = torch.randn(d, dtype=torch.float64).expand(N, d)  # stride 0 rows, e.g. from y.sum(0)
    else:
        dy = torch.randn(d, N, dtype=torch.float64).t()
    assert not dy.is_contiguous()
    got = _grads_public(x, theta, bias, 0.3, r, 1.0, dy, "cpu")
    want = _truth(x, theta, bias, 0.3, r, 1.0, dy.contiguous())
    for name, a, b in zip(("y", "dx", "dtheta", "dbias"), got, want):
        assert_rel_close(a, b, 1e-12, f"{kind} dy: {name}")


def test_noncontiguous_x_is_made_contiguous_by_the_op():
    """The public op copies a non-contiguous x (documented); the raw kernel refuses it."""
    x = torch.randn(48, 33, dtype=torch.float64).t()  # (33, 48), last-dim stride 33
    theta, bias = torch.randn(2, 4, 10, dtype=torch.float64), torch.randn(48, dtype=torch.float64)
    y = lc_kernels.connector(x, theta, bias, 0.5, 12, backend="cpu")
    assert_rel_close(y, ref.connector(x, theta, bias, 0.5, 12), 1e-12, "non-contiguous x")
    with pytest.raises(RuntimeError, match=r"x must be contiguous"):
        C.forward_cpu(x, theta.unsqueeze(0), bias.unsqueeze(0), None, 0.5, 12, 1.0)


def test_param_grads_only_and_no_grad():
    x, theta, bias = _make((9,), 24, 2, 3, 5, torch.float64)
    theta.requires_grad_()
    y = lc_kernels.connector(x, theta, bias, 0.5, 6, backend="cpu")
    y.sum().backward()
    want = _truth(x, theta, bias, 0.5, 6, 1.0, torch.ones(9, 24, dtype=torch.float64))
    assert_rel_close(theta.grad, want[2], 1e-12, "dtheta only")
    with torch.no_grad():
        y = lc_kernels.connector(x, theta, bias, 0.5, 6, backend="cpu")
    assert y.grad_fn is None and not y.requires_grad


def test_deterministic_across_thread_counts():
    """Partial sums are reduced in a fixed chunk order: bitwise equal for 1 and 2 threads."""
    N, d, r = 1500, 24, 6  # > 512 rows: several reduction chunks
    x, theta, bias = _make((N,), d, 2, 3, 7, torch.float32)
    dy = torch.randn(N, d)
    th4 = theta.unsqueeze(0)
    prev = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(C.backward_params_cpu(x, dy, th4, None, 0.3, r, 1.0))
            outs[-1] = outs[-1] + (C.forward_cpu(x, th4, bias.unsqueeze(0), None, 0.3, r, 1.0),)
        for a, b in zip(*outs):
            assert torch.equal(a, b)
    finally:
        torch.set_num_threads(prev)


def test_opcheck_custom_ops():
    x, theta, bias = _make((21,), 24, 2, 3, 7, torch.float64)
    dy = torch.randn(21, 24, dtype=torch.float64)
    th4, b2 = theta.unsqueeze(0), bias.unsqueeze(0)
    ids = None
    torch.library.opcheck(
        torch.ops.layerconnect.connector.default,
        (x.requires_grad_(), th4.requires_grad_(), b2.requires_grad_(), ids, 0.4, 6, 1.0, "cpu"),
    )
    torch.library.opcheck(
        torch.ops.layerconnect.connector_backward_dx.default, (dy, th4.detach(), ids, 0.4, 6, 1.0, "cpu")
    )
    torch.library.opcheck(
        torch.ops.layerconnect.connector_backward_params.default,
        (x.detach(), dy, th4.detach(), ids, 0.4, 6, 1.0, "cpu"),
    )
    # with task ids too
    x, theta, bias = _make((10,), 24, 2, 3, 7, torch.float64, nt=2)
    ids = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
    torch.library.opcheck(torch.ops.layerconnect.connector.default, (x, theta, bias, ids, 0.4, 6, 1.0, "cpu"))


# ------------------------------------------------------------------------------------------------
# bad inputs: clear errors naming the argument
# ------------------------------------------------------------------------------------------------


def _raw(dtype=torch.float32, N=10, d=24, T=1):
    x = torch.randn(N, d, dtype=dtype)
    return x, torch.randn(T, 2, 3, 5, dtype=dtype), torch.randn(T, d, dtype=dtype)


def test_error_non_cpu_device():
    x, th, b = _raw()
    with pytest.raises(RuntimeError, match=r"forward_cpu: x must be a CPU tensor, got device meta"):
        C.forward_cpu(x.to("meta"), th, b, None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"backward_dx_cpu: dy must be a CPU tensor"):
        C.backward_dx_cpu(x.to("meta"), th, None, 0.5, 6, 1.0)
    with pytest.raises(ValueError, match=r"backend='cpu' runs on \['cpu'\] tensors but x is on meta"):
        lc_kernels.connector(x.to("meta"), th[0].to("meta"), b[0].to("meta"), 0.5, 6, backend="cpu")


def test_error_mixed_devices():
    x, th, b = _raw()
    with pytest.raises(RuntimeError, match=r"theta must be a CPU tensor"):
        C.forward_cpu(x, th.to("meta"), b, None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"bias must be a CPU tensor"):
        C.forward_cpu(x, th, b.to("meta"), None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"ids must be a CPU tensor"):
        C.forward_cpu(x, th, b, torch.zeros(10, dtype=torch.long, device="meta"), 0.5, 6, 1.0)
    with pytest.raises(ValueError, match=r"theta is on meta but x is on cpu"):
        lc_kernels.connector(x, th[0].to("meta"), b[0], 0.5, 6, backend="cpu")


def test_error_half_precision():
    x, th, b = _raw(torch.float16)
    with pytest.raises(RuntimeError, match=r"x must be float32 or float64 for the 'cpu' backend, got Half"):
        C.forward_cpu(x, th, b, None, 0.5, 6, 1.0)
    with pytest.raises(TypeError, match=r"backend='cpu' on cpu supports x dtypes .* got torch.float16"):
        lc_kernels.connector(x, th[0].float(), b[0].float(), 0.5, 6, backend="cpu")


def test_error_dtype_mismatch_and_shapes():
    x, th, b = _raw()
    with pytest.raises(RuntimeError, match=r"theta must have the dtype of x"):
        C.forward_cpu(x, th.double(), b, None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"bias must have the dtype of x"):
        C.forward_cpu(x, th, b.double(), None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"r=5 must divide d=24"):
        C.forward_cpu(x, th, b, None, 0.5, 5, 1.0)
    with pytest.raises(RuntimeError, match=r"seed rows p=3 .* must be in \[1, r=2\]"):
        C.forward_cpu(x, th, b, None, 0.5, 2, 1.0)
    with pytest.raises(RuntimeError, match=r"theta must have shape \(T, K, p, q\)"):
        C.forward_cpu(x, th[0], b, None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(T, d\) = \(1, 24\)"):
        C.forward_cpu(x, th, b[:, :12], None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"t must be a float in \[0, 1\]"):
        C.forward_cpu(x, th, b, None, 1.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"x must have shape \(N, d\)"):
        C.forward_cpu(x[None], th, b, None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"dy must have the shape of x"):
        C.backward_params_cpu(x, x[:5], th, None, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"out must have shape"):
        C.forward_cpu(x, th, b, None, 0.5, 6, 1.0, out=torch.empty(3, 24))


def test_error_task_ids():
    x, th, b = _raw(T=2)
    with pytest.raises(RuntimeError, match=r"ids=None means a single task, but theta has T=2"):
        C.forward_cpu(x, th, b, None, 0.5, 6, 1.0)
    bad = torch.zeros(10, dtype=torch.long)
    bad[7] = 2
    with pytest.raises(RuntimeError, match=r"ids must be task indices in \[0, T=2\), got ids\[7\]=2"):
        C.forward_cpu(x, th, b, bad, 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"ids must be int64"):
        C.forward_cpu(x, th, b, bad.int(), 0.5, 6, 1.0)
    with pytest.raises(RuntimeError, match=r"ids must have shape \(N,\) = \(10,\)"):
        C.forward_cpu(x, th, b, bad[:4], 0.5, 6, 1.0)


def test_set_isa_rejects_unknown_name():
    with pytest.raises(RuntimeError, match=r"cpu_set_isa: name must be one of"):
        C.cpu_set_isa("neon")


def test_isa_chosen_by_environment_at_start_up():
    code = "from lc_kernels import _ext; print(_ext.load().cpu_isa())"
    env = dict(os.environ, LC_CPU_ISA="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "default"
