"""The ``cuda`` backend on a GPU, against the float64 ground truth (lc_kernels.reference).

All tests are ``@pytest.mark.gpu`` and skip without CUDA. On a GPU machine the backend must be
available (the extension built with CUDA): a missing build fails loudly instead of skipping.

Tolerances: float64 to ~1e-12 relative; float32 to ~1e-5 of the output's scale (fp32 accumulation
over r or N terms); float16/bfloat16 within 2x the error eager PyTorch makes computing the same
function in that dtype (flash-attention's convention), both measured against float64.
"""

import math

import pytest
import torch

import lc_kernels
from lc_kernels import backends
from lc_kernels import reference as ref

pytestmark = pytest.mark.gpu

DEV = "cuda"

# (n, d, r, p, q, K): odd sizes, every degenerate interpolation, and the BERT-base connector
GEOMS = [
    (37, 24, 8, 3, 7, 2),
    (5, 12, 1, 1, 1, 1),  # r == p == q == 1
    (70, 96, 12, 12, 48, 2),  # BERT ratios: r = d/8, p = r, q = d/2
    (130, 30, 30, 7, 30, 4),  # g == 1, q == d
    (1, 8, 8, 8, 8, 3),  # interpolation is the identity, one row
    (33, 40, 5, 2, 40, 3),  # g == 8 with odd r
    (300, 768, 96, 96, 384, 2),  # BERT-base defaults
]
TS = [0.0, 0.3, 1.0]


@pytest.fixture(scope="module", autouse=True)
def _require_cuda_backend():
    reason = backends.get("cuda").unavailable_reason()
    assert reason is None, f"on a CUDA machine the cuda backend must be built and available: {reason}"


def _bk():
    return backends.get("cuda")


def _make(n, d, p, q, K, T=None, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    dy = torch.randn(n, d, generator=g, dtype=torch.float64)
    shape = (K, p, q) if T is None else (T, K, p, q)
    theta = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    bias = torch.randn((d,) if T is None else (T, d), generator=g, dtype=torch.float64) * scale
    return [v.to(DEV) for v in (x, dy, theta, bias)]


def _maxerr(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _scale(v):
    return 1.0 + (v.double().abs().max().item() if v.numel() else 0.0)


# ------------------------------------------------------------------------------------------------
# float64: the same numbers as the reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("t", TS)
def test_forward_float64_matches_reference(geom, t):
    n, d, r, p, q, K = geom
    x, _, theta, bias = _make(n, d, p, q, K)
    y = lc_kernels.connector(x, theta, bias, t, r, alpha=0.7, backend="cuda")
    want = ref.connector(x, theta, bias, t, r, alpha=0.7)
    assert y.dtype == torch.float64 and y.shape == x.shape
    assert _maxerr(y, want) <= 1e-12 * _scale(want)


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("t", TS)
def test_backward_float64_matches_reference(geom, t):
    n, d, r, p, q, K = geom
    x, dy, theta, _ = _make(n, d, p, q, K, seed=1)
    dx = _bk().backward_dx(dy, theta[None], None, t, r, 0.7)
    dtheta, db = _bk().backward_params(x, dy, theta[None], None, t, r, 0.7)
    dx_ref, dtheta_ref, db_ref = ref.connector_backward(x, dy, theta, t, r, 0.7)
    assert _maxerr(dx, dx_ref) <= 1e-12 * _scale(dx_ref)
    assert dtheta.shape == (1,) + tuple(theta.shape) and db.shape == (1, d)
    assert _maxerr(dtheta[0], dtheta_ref) <= 1e-11 * _scale(dtheta_ref)
    assert _maxerr(db[0], db_ref) <= 1e-11 * _scale(db_ref)


def test_gradcheck_float64():
    x, _, theta, bias = _make(9, 12, 2, 5, 2, seed=2)
    x.requires_grad_(), theta.requires_grad_(), bias.requires_grad_()
    fn = lambda a, b, c: lc_kernels.connector(a, b, c, 0.4, 3, alpha=0.9, backend="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, theta, bias), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_float64_multitask():
    x, _, theta, bias = _make(11, 12, 2, 5, 2, T=3, seed=3)
    ids = torch.tensor([0, 2, 2, 1, 0, 0, 1, 2, 1, 1, 0], device=DEV)
    x.requires_grad_(), theta.requires_grad_(), bias.requires_grad_()
    fn = lambda a, b, c: lc_kernels.connector(a, b, c, 0.6, 6, backend="cuda", task_ids=ids)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, theta, bias), eps=1e-6, atol=1e-8, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# float32 and half types
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("geom", GEOMS)
def test_float32_is_tight(geom):
    n, d, r, p, q, K = geom
    x, dy, theta, bias = _make(n, d, p, q, K, seed=4)
    t, alpha = 0.3, 1.3
    f = lambda v: v.float()  # noqa: E731
    y = _bk().forward(f(x), f(theta)[None], f(bias)[None], None, t, r, alpha)
    dx = _bk().backward_dx(f(dy), f(theta)[None], None, t, r, alpha)
    dtheta, db = _bk().backward_params(f(x), f(dy), f(theta)[None], None, t, r, alpha)
    assert y.dtype == dx.dtype == dtheta.dtype == db.dtype == torch.float32
    y_ref = ref.connector(x, theta, bias, t, r, alpha)
    dx_ref, dtheta_ref, db_ref = ref.connector_backward(x, dy, theta, t, r, alpha)
    assert _maxerr(y, y_ref) <= 2e-6 * _scale(y_ref) * math.sqrt(r)
    assert _maxerr(dx, dx_ref) <= 2e-6 * _scale(dx_ref) * math.sqrt(d)
    assert _maxerr(dtheta[0], dtheta_ref) <= 1e-5 * _scale(dtheta_ref)
    assert _maxerr(db[0], db_ref) <= 1e-5 * _scale(db_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("geom", [GEOMS[0], GEOMS[2], GEOMS[3], GEOMS[5], GEOMS[6]])
def test_half_types_within_twice_eager_error(dtype, geom):
    n, d, r, p, q, K = geom
    x, dy, theta, bias = _make(n, d, p, q, K, seed=5)
    t, alpha = 0.3, 1.0
    x_lp, dy_lp = x.to(dtype), dy.to(dtype)
    theta32, bias32 = theta.float(), bias.float()
    # ground truth on exactly the values the kernel sees
    x64, dy64, th64, b64 = x_lp.double(), dy_lp.double(), theta32.double(), bias32.double()
    y_ref = ref.connector(x64, th64, b64, t, r, alpha)
    dx_ref, dtheta_ref, db_ref = ref.connector_backward(x64, dy64, th64, t, r, alpha)
    # eager PyTorch doing the same math in the low-precision dtype
    y_eager = ref.connector(x_lp, theta.to(dtype), bias.to(dtype), t, r, alpha)
    dx_eager, dtheta_eager, db_eager = ref.connector_backward(x_lp, dy_lp, theta.to(dtype), t, r, alpha)

    y = lc_kernels.connector(x_lp, theta32, bias32, t, r, alpha, backend="cuda")
    dx = _bk().backward_dx(dy_lp, theta32[None], None, t, r, alpha)
    dtheta, db = _bk().backward_params(x_lp, dy_lp, theta32[None], None, t, r, alpha)
    assert y.dtype == dx.dtype == dtype and dtheta.dtype == db.dtype == torch.float32
    assert _maxerr(y, y_ref) <= 2 * _maxerr(y_eager, y_ref) + 1e-6
    assert _maxerr(dx, dx_ref) <= 2 * _maxerr(dx_eager, dx_ref) + 1e-6
    assert _maxerr(dtheta[0], dtheta_ref) <= 2 * _maxerr(dtheta_eager, dtheta_ref) + 1e-6
    assert _maxerr(db[0], db_ref) <= 2 * _maxerr(db_eager, db_ref) + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_misaligned_rows_take_the_scalar_path(dtype):
    # a storage offset of one element breaks 16-byte alignment of x: the kernels must fall back
    n, d, r, p, q, K = 21, 64, 8, 4, 32, 2
    x, dy, theta, bias = _make(n, d, p, q, K, seed=6)
    buf = torch.empty(n * d + 1, device=DEV, dtype=dtype)
    xm = buf[1:].view(n, d)
    xm.copy_(x)
    assert xm.data_ptr() % 16 != 0
    y = _bk().forward(xm, theta.float()[None], bias.float()[None], None, 0.5, r, 1.0)
    y_aligned = _bk().forward(xm.clone(), theta.float()[None], bias.float()[None], None, 0.5, r, 1.0)
    assert _maxerr(y, y_aligned) <= (1e-6 if dtype == torch.float32 else 1e-3) * _scale(y_aligned)
    y_ref = ref.connector(xm.double(), theta.float().double(), bias.float().double(), 0.5, r)
    tol = 2e-6 if dtype == torch.float32 else 2e-3
    assert _maxerr(y, y_ref) <= tol * _scale(y_ref)


# ------------------------------------------------------------------------------------------------
# every output element is written; gradients of awkward upstream layouts
# ------------------------------------------------------------------------------------------------
def _poison(*shapes_dtypes):
    """Fill the caching allocator's free blocks of these sizes with NaN, so an output element a
    kernel forgets to write shows up as NaN instead of a lucky zero."""
    held = [torch.full(s, float("nan"), device=DEV, dtype=dt) for s, dt in shapes_dtypes for _ in range(3)]
    torch.cuda.synchronize()
    del held


@pytest.mark.parametrize("geom", [GEOMS[0], GEOMS[3], GEOMS[5]])
def test_nan_poisoned_outputs_are_fully_written(geom):
    n, d, r, p, q, K = geom
    x, dy, theta, bias = _make(n, d, p, q, K, seed=7)
    th, b = theta.float()[None], bias.float()[None]
    xf, dyf = x.float(), dy.float()
    # the dTheta workspace size is internal: poison a generous block for it as well
    _poison(
        ((n, d), torch.float32), (tuple(th.shape), torch.float32), ((1, d), torch.float32), ((1 << 20,), torch.float32)
    )
    y = _bk().forward(xf, th, b, None, 0.3, r, 1.0)
    _poison(((n, d), torch.float32))
    dx = _bk().backward_dx(dyf, th, None, 0.3, r, 1.0)
    _poison((tuple(th.shape), torch.float32), ((1, d), torch.float32), ((1 << 20,), torch.float32))
    dtheta, db = _bk().backward_params(xf, dyf, th, None, 0.3, r, 1.0)
    for v in (y, dx, dtheta, db):
        assert torch.isfinite(v).all()
    assert _maxerr(y, ref.connector(x, theta, bias, 0.3, r)) <= 1e-5 * _scale(y) * math.sqrt(r)
    dx_ref, dtheta_ref, db_ref = ref.connector_backward(x, dy, theta, 0.3, r)
    assert _maxerr(dx, dx_ref) <= 1e-5 * _scale(dx_ref) * math.sqrt(d)
    assert _maxerr(dtheta[0], dtheta_ref) <= 1e-5 * _scale(dtheta_ref)
    assert _maxerr(db[0], db_ref) <= 1e-5 * _scale(db_ref)


@pytest.mark.parametrize("layout", ["expanded", "transposed", "leading_dims"])
def test_noncontiguous_and_expanded_upstream_grads(layout):
    n, d, r, p, q, K = 24, 40, 5, 3, 16, 2
    x, _, theta, bias = _make(n, d, p, q, K, seed=8)
    if layout == "expanded":
        grad = torch.randn(d, device=DEV, dtype=torch.float64).expand(n, d)
    elif layout == "transposed":
        grad = torch.randn(d, n, device=DEV, dtype=torch.float64).t()
    else:
        x = x.reshape(4, 6, d)
        grad = torch.randn(6, 4, d, device=DEV, dtype=torch.float64).transpose(0, 1)
    assert not grad.is_contiguous()
    leaves = [v.clone().requires_grad_() for v in (x, theta, bias)]
    lc_kernels.connector(*leaves, 0.5, r, alpha=1.1, backend="cuda").backward(grad)
    ref_leaves = [v.clone().requires_grad_() for v in (x, theta, bias)]
    ref.connector(*ref_leaves, 0.5, r, alpha=1.1).backward(grad)
    for a, b in zip(leaves, ref_leaves):
        assert _maxerr(a.grad, b.grad) <= 1e-11 * _scale(b.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_agrees_with_triton(dtype):
    if "triton" not in lc_kernels.available_backends():
        pytest.skip("the triton backend is not available here")
    if dtype not in backends.get("triton").dtypes.get("cuda", ()):
        pytest.skip(f"the triton backend does not take {dtype} on cuda")
    n, d, r, p, q, K = 70, 96, 12, 12, 48, 2
    x, dy, theta, bias = _make(n, d, p, q, K, seed=9)
    x, dy, theta, bias = (v.to(dtype) for v in (x, dy, theta, bias))
    grads = {}
    for name in ("cuda", "triton"):
        leaves = [v.clone().requires_grad_() for v in (x, theta, bias)]
        y = lc_kernels.connector(*leaves, 0.25, r, backend=name)
        y.backward(dy)
        grads[name] = [y.detach()] + [v.grad for v in leaves]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(grads["cuda"], grads["triton"]):
        assert _maxerr(a, b) <= tol * _scale(b)


# ------------------------------------------------------------------------------------------------
# multi-task (SPEC §6)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["random", "runs", "per_sequence"])
def test_multitask_matches_reference(pattern):
    T, n, d, r, p, q, K = 3, 150, 48, 6, 4, 20, 2
    x, dy, theta, bias = _make(n, d, p, q, K, T=T, seed=10)
    g = torch.Generator().manual_seed(11)
    if pattern == "random":  # tasks change inside every block of rows
        ids = torch.randint(0, T, (n,), generator=g).to(DEV)
    elif pattern == "runs":  # task 1 never appears: its gradients must be exactly zero
        ids = torch.tensor([0] * 70 + [2] * 80, device=DEV)
    else:
        x, dy = x.reshape(10, 15, d), dy.reshape(10, 15, d)
        ids = torch.randint(0, T, (10, 1), generator=g).to(DEV)
    leaves = [v.clone().requires_grad_() for v in (x, theta, bias)]
    y = lc_kernels.connector(*leaves, 0.7, r, alpha=0.8, backend="cuda", task_ids=ids)
    y.backward(dy)
    ref_leaves = [v.clone().requires_grad_() for v in (x, theta, bias)]
    y_ref = ref.connector(*ref_leaves, 0.7, r, alpha=0.8, task_ids=ids)
    y_ref.backward(dy)
    assert _maxerr(y, y_ref) <= 1e-12 * _scale(y_ref)
    for a, b in zip(leaves, ref_leaves):
        assert _maxerr(a.grad, b.grad) <= 1e-11 * _scale(b.grad)
    if pattern == "runs":
        assert torch.count_nonzero(leaves[1].grad[1]) == 0 and torch.count_nonzero(leaves[2].grad[1]) == 0


def test_invalid_task_ids_poison_only_their_rows():
    T, n, d, r, p, q, K = 2, 40, 16, 4, 2, 8, 2
    x, dy, theta, bias = _make(n, d, p, q, K, T=T, seed=12)
    ids = torch.zeros(n, dtype=torch.int64, device=DEV)
    ids[5], ids[17] = 7, -1  # the public op rejects these; the kernels must not read out of bounds
    y = _bk().forward(x, theta, bias, ids, 0.5, r, 1.0)
    dx = _bk().backward_dx(dy, theta, ids, 0.5, r, 1.0)
    bad = torch.zeros(n, dtype=torch.bool, device=DEV)
    bad[5] = bad[17] = True
    assert torch.isnan(y[bad]).all() and torch.isnan(dx[bad]).all()
    ok_ids = ids.clone()
    ok_ids[bad] = 0
    y_ref = ref.connector(x, theta, bias, 0.5, r, task_ids=ok_ids)
    assert _maxerr(y[~bad], y_ref[~bad]) <= 1e-12 * _scale(y_ref)


# ------------------------------------------------------------------------------------------------
# sizes, determinism, errors
# ------------------------------------------------------------------------------------------------
def test_many_token_chunks_and_deterministic_params():
    # 20000 rows > 64 chunks x 256 rows: chunks grow; two runs must agree to the bit (no atomics)
    n, d, r, p, q, K = 20000, 64, 8, 4, 32, 2
    x, dy, theta, _ = _make(n, d, p, q, K, seed=13)
    xf, dyf, th = x.float(), dy.float(), theta.float()[None]
    a = _bk().backward_params(xf, dyf, th, None, 0.4, r, 1.0)
    b = _bk().backward_params(xf, dyf, th, None, 0.4, r, 1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    _, dtheta_ref, db_ref = ref.connector_backward(x, dy, theta, 0.4, r)
    assert _maxerr(a[0][0], dtheta_ref) <= 1e-5 * _scale(dtheta_ref)
    assert _maxerr(a[1][0], db_ref) <= 1e-5 * _scale(db_ref)


def test_empty_batch():
    x, dy, theta, bias = _make(0, 16, 2, 8, 2, seed=14)
    y = _bk().forward(x, theta[None], bias[None], None, 0.5, 4, 1.0)
    dtheta, db = _bk().backward_params(x, dy, theta[None], None, 0.5, 4, 1.0)
    assert y.shape == (0, 16)
    assert torch.count_nonzero(dtheta) == 0 and torch.count_nonzero(db) == 0


# ------------------------------------------------------------------------------------------------
# the tensor-core path (float16 / bfloat16): sizes of SPEC's default geometry, determinism
# (bad inputs: tests/test_cuda_bad_inputs.py, one process per call)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, d", [(1, 384), (17, 768), (4097, 768), (17, 1024), (4097, 1024), (17, 4096)])
def test_tensor_core_path_at_spec_sizes(dtype, n, d):
    """SPEC defaults (r = d/8, p = r, q = d/2, K = 2): every output within twice the error eager
    PyTorch makes in the same dtype, outputs NaN-poisoned before the call."""
    r, p, q, K = d // 8, d // 8, d // 2, 2
    x, dy, theta, bias = _make(n, d, p, q, K, seed=20 + d)
    t, alpha = 0.4, 1.0
    x_lp, dy_lp = x.to(dtype), dy.to(dtype)
    th32, b32 = theta.float(), bias.float()
    x64, dy64, th64, b64 = x_lp.double(), dy_lp.double(), th32.double(), b32.double()
    y_ref = ref.connector(x64, th64, b64, t, r, alpha)
    dx_ref, dtheta_ref, db_ref = ref.connector_backward(x64, dy64, th64, t, r, alpha)
    y_eager = ref.connector(x_lp, theta.to(dtype), bias.to(dtype), t, r, alpha)
    dx_eager, dtheta_eager, db_eager = ref.connector_backward(x_lp, dy_lp, theta.to(dtype), t, r, alpha)
    _poison(((n, d), dtype), ((1, K, p, q), torch.float32), ((1, d), torch.float32), ((1 << 22,), torch.float32))
    y = _bk().forward(x_lp, th32[None], b32[None], None, t, r, alpha)
    _poison(((n, d), dtype))
    dx = _bk().backward_dx(dy_lp, th32[None], None, t, r, alpha)
    dtheta, db = _bk().backward_params(x_lp, dy_lp, th32[None], None, t, r, alpha)
    for v in (y, dx, dtheta, db):
        assert torch.isfinite(v).all()
    assert _maxerr(y, y_ref) <= 2 * _maxerr(y_eager, y_ref) + 1e-6
    assert _maxerr(dx, dx_ref) <= 2 * _maxerr(dx_eager, dx_ref) + 1e-6
    assert _maxerr(dtheta[0], dtheta_ref) <= 2 * _maxerr(dtheta_eager, dtheta_ref) + 1e-6
    assert _maxerr(db[0], db_ref) <= 2 * _maxerr(db_eager, db_ref) + 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensor_core_params_are_bitwise_deterministic(dtype):
    n, d, r, p, q, K = 20000, 768, 96, 96, 384, 2  # many token chunks
    x, dy, theta, _ = _make(n, d, p, q, K, seed=31)
    args = (x.to(dtype), dy.to(dtype), theta.float()[None], None, 0.4, r, 1.0)
    a = _bk().backward_params(*args)
    _poison(((1 << 24,), torch.float32))  # a differently dirty workspace
    b = _bk().backward_params(*args)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensor_core_multitask_matches_reference(dtype):
    T, n, d, r, p, q, K = 3, 300, 768, 96, 96, 384, 2
    x, dy, theta, bias = _make(n, d, p, q, K, T=T, seed=32)
    ids = torch.randint(0, T, (n,), generator=torch.Generator().manual_seed(33)).to(DEV)
    x_lp, dy_lp = x.to(dtype), dy.to(dtype)
    th32, b32 = theta.float(), bias.float()
    y = _bk().forward(x_lp, th32, b32, ids, 0.7, r, 1.0)
    dx = _bk().backward_dx(dy_lp, th32, ids, 0.7, r, 1.0)
    dtheta, db = _bk().backward_params(x_lp, dy_lp, th32, ids, 0.7, r, 1.0)
    x64, dy64, th64, b64 = x_lp.double(), dy_lp.double(), th32.double(), b32.double()
    y_ref = ref.connector(x64, th64, b64, 0.7, r, task_ids=ids)
    dx_ref, dtheta_ref, db_ref = ref.connector_backward(x64, dy64, th64, 0.7, r, task_ids=ids)
    y_eager = ref.connector(x_lp, theta.to(dtype), bias.to(dtype), 0.7, r, task_ids=ids)
    dx_eager, dtheta_eager, db_eager = ref.connector_backward(x_lp, dy_lp, theta.to(dtype), 0.7, r, task_ids=ids)
    assert _maxerr(y, y_ref) <= 2 * _maxerr(y_eager, y_ref) + 1e-6
    assert _maxerr(dx, dx_ref) <= 2 * _maxerr(dx_eager, dx_ref) + 1e-6
    assert _maxerr(dtheta, dtheta_ref) <= 2 * _maxerr(dtheta_eager, dtheta_ref) + 1e-6
    assert _maxerr(db, db_ref) <= 2 * _maxerr(db_eager, db_ref) + 1e-6
