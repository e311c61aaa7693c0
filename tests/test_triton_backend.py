"""The Triton backend (v2 kernels) against the reference (SPEC §2-§6).

On CPU these run the kernels under the Triton interpreter (conftest sets TRITON_INTERPRET=1), so
shapes are small but chosen to hit every path and mask: g in {1, 3, 8, 12, 96, 128} (whole-group
slabs, groups wider than a slab, non-power-of-two groups), r in {1, 2, 5, 129, 512} (r_pad from 16
to 512: z kept in registers or pooled through memory), seed grids smaller than and equal to (r, d),
K = 1..4, t in {0, 0.3, 1} and between, N in {1, 17, 4097} and 3-D inputs, several tasks in one batch
(one absent), several token splits in dTheta/db, d = 4096 once. float64 is held to 1e-12; float32
and float16 to twice what eager PyTorch loses computing the same math in that dtype (the
flash-attention criterion). GPU tests (bf16, compiled kernels, large shapes) skip without CUDA.
"""

from __future__ import annotations

import os

import pytest
import torch

import lc_kernels
from lc_kernels import backends, ops
from lc_kernels import reference as ref

pytest.importorskip("triton")
import lc_kernels.triton as tb  # noqa: E402
from lc_kernels.triton import launch as L  # noqa: E402

D64 = torch.float64
ON_CPU = os.environ.get("TRITON_INTERPRET") == "1"
DEV = "cpu" if ON_CPU else ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEV is None, reason="needs CUDA or TRITON_INTERPRET=1")
EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-23, torch.float64: 2.0**-52}


@pytest.fixture(autouse=True)
def _first_config_untimed(monkeypatch):
    """On a GPU every test shape would otherwise compile and time every autotune point; correctness
    of each point is checked once, in test_gpu_every_autotune_point_bf16."""
    monkeypatch.setattr(L, "AUTOTUNE", False)


def _rel(a: torch.Tensor, e: torch.Tensor) -> float:
    """max |a - e| / max |e| in float64 (one scale per tensor: no per-element rtol to hide behind)."""
    a, e = a.double(), e.double()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-300))


# (lead shape of x, d, r, p, q, K, t, T or None for single task)
CASES = {
    "g3_r5_K3": ((17,), 15, 5, 3, 7, 3, 0.3, None),
    "r1_p1_q1_t1": ((17,), 12, 1, 1, 1, 2, 1.0, None),
    "g1_N1_K1_t0": ((1,), 24, 24, 5, 9, 1, 0.0, None),
    "g8_seed_eq_rd_3d_K4": ((2, 9), 64, 8, 8, 64, 4, 0.3, None),
    "g128_wide_group": ((5,), 256, 2, 2, 16, 2, 0.7, None),
    "g96_uneven_wide_group": ((5,), 192, 2, 2, 10, 2, 0.25, None),
    "r129_z_through_memory": ((7,), 258, 129, 5, 33, 2, 0.6, None),
    "g12_multitask_token_mix": ((70,), 96, 8, 8, 48, 2, 0.5, 3),
    "g12_multitask_3d_bcast_ids": ((3, 11), 36, 3, 2, 36, 3, 1.0, 4),
}
N4097 = ((4097,), 16, 2, 2, 8, 4, 0.3, None)
D4096 = ((3,), 4096, 512, 8, 64, 2, 0.3, None)  # r = d/8: r_pad = 512 > RMAX, z pooled through memory


def _make(case, dtype, device=DEV, seed=0):
    lead, d, r, p, q, kk, t, nt = case
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    x = rn(*lead, d)
    if nt is None:
        th, b, ids = rn(kk, p, q), rn(d), None
    else:
        th, b = rn(nt, kk, p, q), rn(nt, d)
        if len(lead) == 2:  # one task per sequence, broadcast over its tokens
            ids = torch.randint(0, nt, (lead[0], 1), generator=g).to(device)
        else:  # token-level mix, skipping task 1 entirely (its gradients must be exact zeros)
            ids = torch.randint(0, nt - 1, lead, generator=g)
            ids[ids >= 1] += 1
            ids = ids.to(device)
    return x, th, b, ids, t, r


def _grads(fn, x, th, b, ids, t, r, alpha, dy):
    xs = [v.detach().clone().requires_grad_() for v in (x, th, b)]
    y = fn(*xs, ids, t, r, alpha)
    g = torch.autograd.grad(y, xs, dy)
    return (y.detach(), *g)


def _triton_fn(x, th, b, ids, t, r, alpha, **kw):
    return lc_kernels.connector(x, th, b, t, r, alpha=alpha, backend="triton", task_ids=ids, **kw)


def _ref_fn(x, th, b, ids, t, r, alpha):
    return ref.connector(x, th, b, t, r, alpha, task_ids=ids)


def _check_within_twice_eager(case, dtype, alpha=0.7):
    x, th, b, ids, t, r = _make(case, dtype)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=D64).to(x.device, dtype)
    got = _grads(_triton_fn, x, th, b, ids, t, r, alpha, dy)
    eager = _grads(_ref_fn, x, th, b, ids, t, r, alpha, dy)  # the same math in eager PyTorch, same dtype
    exact = _grads(_ref_fn, x.double(), th.double(), b.double(), ids, t, r, alpha, dy.double())
    for what, a, e, ex in zip(("y", "dx", "dtheta", "dbias"), got, eager, exact):
        assert a.dtype == dtype and a.shape == ex.shape, what
        err, err_eager = float((a.double() - ex).abs().max()), float((e.double() - ex).abs().max())
        # + two roundings at the result's scale: a gradient of one or two numbers can come out of
        # eager PyTorch exact by luck, and twice zero is no bound
        floor = 2 * EPS[dtype] * float(ex.abs().max())
        assert err <= 2 * err_eager + floor, f"{what}: triton error {err:.3g} > 2x eager {err_eager:.3g} + {floor:.2g}"
    return got


@pytest.mark.parametrize("name", list(CASES))
def test_float64_forward_and_gradients_match_reference(name):
    x, th, b, ids, t, r = _make(CASES[name], D64)
    dy = torch.randn_like(x)
    got = _grads(_triton_fn, x, th, b, ids, t, r, 0.7, dy)
    exp = _grads(_ref_fn, x, th, b, ids, t, r, 0.7, dy)
    for what, a, e in zip(("y", "dx", "dtheta", "dbias"), got, exp):
        assert a.dtype == D64 and a.shape == e.shape, what
        assert _rel(a, e) <= 1e-12, f"{what}: relative error {_rel(a, e):.3g}"
    if ids is not None and CASES[name][0] == (70,):  # task 1 is absent: exact zeros, not leftovers
        assert torch.count_nonzero(got[2][1]) == 0 and torch.count_nonzero(got[3][1]) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(CASES))
def test_low_precision_within_twice_eager(name, dtype):
    _check_within_twice_eager(CASES[name], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_many_rows_within_twice_eager(dtype):
    """N = 4097: 65 row blocks, several token splits, K = 4 anchors."""
    _check_within_twice_eager(N4097, dtype)


def test_d4096_within_twice_eager():
    """d = 4096 at r = d/8: r_pad = 512 does not fit in registers, so z is pooled through memory
    (forward), dx and the partials take r in chunks, and W is built in several tiles."""
    _check_within_twice_eager(D4096, torch.float32)


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
    x, th, b, ids, t, r = _make(CASES["g3_r5_K3"], D64)
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
        return v.fill_(float("nan")) if v.is_floating_point() else v.fill_(1 << 30)

    def empty(self, *a, **k):
        return self._poison(torch.empty(*a, **k))

    def empty_like(self, *a, **k):
        return self._poison(torch.empty_like(*a, **k))


@pytest.mark.parametrize("name", ["g3_r5_K3", "r129_z_through_memory", "g12_multitask_token_mix"])
def test_poisoned_outputs_are_fully_written(name, monkeypatch):
    x, th, b, ids, t, r = _make(CASES[name], D64)
    # the backend's normalised convention: stacked (T, K, p, q) / (T, d) parameters
    th4, b2 = (th[None].contiguous(), b[None].contiguous()) if ids is None else (th, b)
    ids1 = None if ids is None else torch.broadcast_to(ids, x.shape[:-1]).reshape(-1).contiguous()
    monkeypatch.setattr(L, "torch", _PoisonTorch())
    dy = torch.randn_like(x)
    nan = float("nan")
    # the launchers' own allocations (W, y, z and its scratch, dx, dTheta, db, partial sums, task ranges) ...
    w_all = L.build_weights(th4, [0.0, t, 1.0], r, x.shape[1], x.dtype)
    w = w_all[1]
    ys = [L.forward(x, th4, b2, ids1, t, r, 0.8), L.forward(x, th4, b2, ids1, t, r, 0.8, weights=w)]
    y_z, z = L.forward_save_z(x, th4, b2, ids1, t, r, 0.8, weights=w)
    ys.append(y_z)
    dxs = [L.backward_dx(dy, th4, ids1, t, r, 0.8), L.backward_dx(dy, th4, ids1, t, r, 0.8, weights=w)]
    params = [L.backward_params(x, dy, th4, ids1, t, r, 0.8), L.backward_params_z(z, dy, th4, ids1, t, r, 0.8)]
    # ... and caller-provided out= buffers
    w2 = L.build_weights(th4, [t], r, x.shape[1], x.dtype, out=torch.full_like(w_all[:1], nan))[0]
    ys.append(L.forward(x, th4, b2, ids1, t, r, 0.8, out=torch.full_like(x, nan), weights=w2))
    y3, z3 = L.forward_save_z(
        x, th4, b2, ids1, t, r, 0.8, weights=w, out=(torch.full_like(x, nan), torch.full_like(z, nan))
    )
    ys.append(y3)
    dxs.append(L.backward_dx(dy, th4, ids1, t, r, 0.8, out=torch.full_like(dy, nan), weights=w))
    params.append(
        L.backward_params(x, dy, th4, ids1, t, r, 0.8, out=(torch.full_like(th4, nan), torch.full_like(b2, nan)))
    )
    ew = ref.interpolate_seeds(th4, t, r, x.shape[1])
    ey = ref.connector(x, th4, b2, t, r, 0.8, task_ids=ids) if ids is not None else ref.connector(x, th, b, t, r, 0.8)
    edx, edth, edb = ref.connector_backward(x, dy, th4 if ids is not None else th, t, r, 0.8, task_ids=ids)
    if ids is None:
        edth, edb = edth[None], edb[None]
    assert torch.equal(w_all[:, :, r:], torch.zeros_like(w_all[:, :, r:]))  # padding rows written as zeros
    for a, e in (
        [(w[:, :r], ew), (w2[:, :r], ew), (z, ref.downsample(x, r)), (z3, z)]
        + [(v, ey) for v in ys]
        + [(v, edx) for v in dxs]
        + [(v[0], edth) for v in params]
        + [(v[1], edb) for v in params]
    ):
        assert not torch.isnan(a).any()
        assert _rel(a, e) <= 1e-12


def test_inplace_forward_writes_into_x_and_matches(monkeypatch):
    for name in ("g8_seed_eq_rd_3d_K4", "r129_z_through_memory", "g12_multitask_3d_bcast_ids"):
        x, th, b, ids, t, r = _make(CASES[name], torch.float32)
        w = lc_kernels.build_weights(th, [t], r, x.shape[-1], backend="triton")[0]
        expect = lc_kernels.connector(x, th, b, t, r, 0.9, backend="triton", task_ids=ids)
        assert lc_kernels.inplace_supported(x, "triton")
        for kw in ({}, {"weights": w}):
            xi = x.clone()
            ptr = xi.data_ptr()
            with torch.no_grad():
                out = lc_kernels.connector_(xi, th, b, t, r, 0.9, backend="triton", task_ids=ids, **kw)
            assert out is xi and xi.data_ptr() == ptr
            assert torch.equal(xi, expect), name


def test_params_are_bitwise_deterministic_and_the_same_from_x_or_z():
    x, th, b, ids, t, r = _make(CASES["g12_multitask_token_mix"], torch.float32)
    dy = torch.randn_like(x)
    w = L.build_weights(th, [t], r, x.shape[1], x.dtype)[0]
    _, z = L.forward_save_z(x, th, b, ids, t, r, 1.0, weights=w)
    runs = [
        L.backward_params(x, dy, th, ids, t, r, 1.0),
        L.backward_params(x, dy, th, ids, t, r, 1.0),
        L.backward_params_z(z, dy, th, ids, t, r, 1.0),
        L.backward_params_z(z, dy, th, ids, t, r, 1.0),
    ]
    for other in runs[1:]:
        assert all(torch.equal(u, v) for u, v in zip(runs[0], other))
    n = x.shape[0]
    s, rps = L._num_splits(n, th.shape[0], r, x.shape[1], x.device)
    assert s > 1 and (s - 1) * rps < n  # several splits, none empty: the cross-split sum is exercised


def test_z_is_saved_instead_of_x_when_training():
    x, th, b, ids, t, r = _make(CASES["g8_seed_eq_rd_3d_K4"], torch.float32)
    saved = []

    def pack(v):
        saved.append(tuple(v.shape))
        return v

    xs = x.reshape(-1, x.shape[-1])
    th.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda v: v):
        y = lc_kernels.connector(xs, th, b, t, r, backend="triton")
    assert (xs.shape[0], r) in saved and tuple(xs.shape) not in saved, saved
    y.sum().backward()
    exp = torch.autograd.grad(ref.connector(xs, th, b, t, r).sum(), th)[0]
    assert _rel(th.grad, exp) <= 1e-5


def test_prebuilt_weights_give_the_same_bits_as_building_inside():
    for name in ("g3_r5_K3", "g12_multitask_3d_bcast_ids"):
        x, th, b, ids, t, r = _make(CASES[name], torch.float32)
        d = x.shape[-1]
        dy = torch.randn_like(x)
        w_all = lc_kernels.build_weights(th, [0.0, t, 1.0], r, d, backend="triton")
        assert w_all.shape == (
            (3, lc_kernels.padded_rank(r), d) if ids is None else (3, th.shape[0], lc_kernels.padded_rank(r), d)
        )
        a = _grads(_triton_fn, x, th, b, ids, t, r, 0.6, dy)
        c = _grads(lambda *v, w=w_all[1]: _triton_fn(*v, weights=w), x, th, b, ids, t, r, 0.6, dy)
        for u, v in zip(a, c):
            assert torch.equal(u, v), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_build_weights_matches_reference_for_every_position_and_task(dtype):
    th = torch.randn(3, 4, 5, 11, dtype=D64, device=DEV)  # T = 3 tasks, K = 4 anchors
    ts = [0.0, 0.2, 1 / 3, 0.5, 1.0]
    r, d = 10, 40
    with tb.count_launches() as n:
        w = lc_kernels.build_weights(th.to(dtype), ts, r, d, dtype=dtype, backend="triton")
    assert n == {"build_weights_kernel": 1}
    assert w.shape == (5, 3, 16, d) and w.dtype == dtype and w.is_contiguous()
    assert torch.count_nonzero(w[:, :, r:]) == 0
    for pos, t in enumerate(ts):
        exact = ref.interpolate_seeds(th.to(dtype).double(), t, r, d)
        # computed in the compute dtype (a handful of roundings: A S, then B^T), then rounded once to dtype
        tol = {D64: 1e-14, torch.float32: 4 * EPS[torch.float32], torch.float16: EPS[torch.float16]}[dtype]
        assert _rel(w[pos, :, :r], exact) <= tol, (pos, t)
    single = lc_kernels.build_weights(th[1].to(dtype), ts, r, d, dtype=dtype, backend="triton")
    assert single.shape == (5, 16, d) and torch.equal(single, w[:, 1])


def test_launch_counts_per_op():
    """forward with a prebuilt W: 1 launch; backward: dx 1 + params 2 (SPEC §5 v2)."""
    x, th, b, ids, t, r = _make(CASES["g8_seed_eq_rd_3d_K4"], torch.float32)
    d = x.shape[-1]
    w = lc_kernels.build_weights(th, [t], r, d, backend="triton")[0]
    with tb.count_launches() as n:
        with torch.no_grad():
            lc_kernels.connector(x, th, b, t, r, backend="triton", weights=w)
    assert n == {"connector_fwd_kernel": 1}
    with tb.count_launches() as n:
        with torch.no_grad():
            lc_kernels.connector(x, th, b, t, r, backend="triton")
    assert n == {"build_weights_kernel": 1, "connector_fwd_kernel": 1}
    xs, ths, bs = (v.clone().requires_grad_() for v in (x, th, b))
    with tb.count_launches() as fwd:
        y = lc_kernels.connector(xs, ths, bs, t, r, backend="triton", weights=w)
    with tb.count_launches() as bwd:
        y.backward(torch.randn_like(y))
    assert fwd == {"connector_fwd_kernel": 1}
    assert bwd == {"connector_bwd_dx_kernel": 1, "connector_bwd_partial_kernel": 1, "connector_bwd_reduce_kernel": 1}
    with tb.count_launches() as outer:  # nested blocks each see every launch
        with tb.count_launches() as inner:
            L.backward_dx(torch.randn(5, d, device=DEV), th[None], None, t, r, 1.0)
    assert outer == inner == {"build_weights_kernel": 1, "connector_bwd_dx_kernel": 1}


def test_pool_meta_covers_every_group_shape():
    f16, f32, f64 = torch.float16, torch.float32, torch.float64
    assert L.pool_meta(768, 96, f16) == {"G": 8, "R_PAD": 128, "RK": 128, "RC": 16, "GC": 8}
    assert L.pool_meta(4096, 512, f16)["RK"] == L.RMAX < L.pool_meta(4096, 512, f16)["R_PAD"] == 512
    assert L.pool_meta(256, 2, f32)["GC"] == 64 and L.pool_meta(256, 2, f32)["RC"] == 1  # wide groups
    assert L.pool_meta(15, 5, f64)["GC"] == 4  # g = 3: four lanes per group, one masked
    assert L.pool_meta(192, 2, f16)["GC"] == 64  # g = 96: two 64-lane steps, the second half masked
    for d, r in ((15, 5), (12, 1), (24, 24), (256, 2), (192, 2), (258, 129), (4096, 512)):
        for dt in (f16, f32, f64):
            m = L.pool_meta(d, r, dt)
            assert m["R_PAD"] == lc_kernels.padded_rank(r) >= 16 and m["RK"] % m["RC"] == 0 and m["RK"] >= 16
    assert [lc_kernels.padded_rank(v) for v in (1, 16, 17, 96, 128, 129)] == [16, 16, 32, 128, 128, 256]
    assert L.split_f32(0.7)[0] + L.split_f32(0.7)[1] == pytest.approx(0.7, rel=1e-14, abs=0)
    assert [L.n_bucket(n) for n in (1, 4096, 4097, 16384, 65536, 65537)] == [0, 0, 1, 1, 2, 3]


def test_small_batches_can_fill_a_132_sm_card():
    """N = 4096 tokens: the GPU autotune spaces hold block sizes giving >= 132 programs, and the
    params partials split the tokens so that S x column blocks >= 132 (H100/H200: 132 SMs)."""
    bf16 = torch.bfloat16
    for d in (384, 768, 1024):
        for ids in (False, True):
            for space in (L.fwd_space(bf16, d, ids, interpret=False), L.dx_space(bf16, d, ids, interpret=False)):
                assert max(-(-4096 // c.bn) for c in space) >= 132, (d, ids)
            cfg = L.partial_config(bf16, d, ids, interpret=False)
            s = L.gpu_splits(4096, 3 if ids else 1, d // 8, d, bf16, ids, sms=132)
            assert s * -(-d // cfg.bd) >= 132 and -(-4096 // s) >= 128, (d, ids, s)
    assert L.gpu_splits(262144, 1, 96, 768, bf16, False, sms=132) == 22  # 22 x 12 column blocks = 2 per SM


@pytest.mark.skipif(not ON_CPU, reason="bfloat16 is rejected only under the interpreter")
def test_bfloat16_on_interpreter_is_rejected_clearly():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    th, b = torch.randn(2, 2, 3), torch.randn(8)
    with pytest.raises(TypeError, match="bfloat16"):
        lc_kernels.connector(x, th, b, 0.5, 4, backend="triton")
    with pytest.raises(TypeError, match="interpreter.*bfloat16"):
        L.forward(x, th[None], b[None], None, 0.5, 4, 1.0)
    with pytest.raises(TypeError, match="bfloat16"):
        lc_kernels.build_weights(th, [0.5], 4, 8, dtype=torch.bfloat16, backend="triton")


def test_registration_and_auto_never_picks_interpreter(monkeypatch):
    be = backends.get("triton")
    assert be.unavailable_reason() is None and "triton" in lc_kernels.available_backends()
    assert be.priority.get("cuda") == 20 and "cpu" not in be.priority
    assert be.uses_weights and be.build_weights and be.forward_save_z and be.backward_params_z
    assert be.forward_inplace is not None
    if ON_CPU:
        assert torch.bfloat16 not in be.dtypes["cpu"]
        for dt in (torch.float16, torch.float32, torch.float64):
            assert backends.auto_backend(torch.device("cpu"), dt) != "triton"
    monkeypatch.setattr(tb, "_INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "TRITON_INTERPRET" in tb.unavailable_reason() and "CUDA" in tb.unavailable_reason()
    monkeypatch.setattr(tb, "_IMPORT_ERROR", "triton is not importable (x); install it with `pip install triton`")
    assert "pip install triton" in tb.unavailable_reason()


def test_empty_batch():
    x, th, b, ids, t, r = _make(CASES["g3_r5_K3"], D64)
    x0 = x[:0].clone().requires_grad_()
    th0 = th.clone().requires_grad_()
    y = lc_kernels.connector(x0, th0, b, t, r, backend="triton")
    assert y.shape == x0.shape
    y.sum().backward()
    assert torch.count_nonzero(th0.grad) == 0
    assert lc_kernels.build_weights(th, [], r, x.shape[1], backend="triton").shape == (0, 16, x.shape[1])


def test_weights_argument_is_checked_with_clear_errors():
    x, th, b, ids, t, r = _make(CASES["g3_r5_K3"], torch.float32)
    d = x.shape[-1]
    w = lc_kernels.build_weights(th, [t], r, d, backend="triton")[0]
    with pytest.raises(ValueError, match=r"weights must have shape \(16, 15\)"):
        lc_kernels.connector(x, th, b, t, r, backend="triton", weights=w[:8])
    with pytest.raises(TypeError, match="weights has dtype"):
        lc_kernels.connector(x, th, b, t, r, backend="triton", weights=w.double())
    with pytest.raises(ValueError, match="contiguous"):
        lc_kernels.connector(x, th, b, t, r, backend="triton", weights=w.t().contiguous().t())
    with pytest.raises(ValueError, match=r"\(T, padded_rank"):
        lc_kernels.connector(
            x,
            th[None],
            b[None],
            t,
            r,
            backend="triton",
            weights=w,
            task_ids=torch.zeros(x.shape[0], dtype=torch.long, device=DEV),
        )
    with pytest.raises(ValueError, match="ts must be in|every t in ts"):
        lc_kernels.build_weights(th, [1.5], r, d, backend="triton")
    with pytest.raises(ValueError, match="must divide"):
        lc_kernels.build_weights(th, [0.5], 4, d, backend="triton")


def test_opcheck_custom_ops():
    x = torch.randn(7, 12, dtype=D64, device=DEV)
    th4 = torch.randn(1, 2, 2, 5, dtype=D64, device=DEV)
    b2 = torch.randn(1, 12, dtype=D64, device=DEV)
    w = lc_kernels.build_weights(th4, [0.6], 3, 12, backend="triton")[0]
    dy = torch.randn_like(x)
    for weights in (None, w):
        args = (
            x.clone().requires_grad_(),
            th4.clone().requires_grad_(),
            b2.clone().requires_grad_(),
            None,
            0.6,
            3,
            0.9,
            "triton",
            weights,
        )
        torch.library.opcheck(ops._connector_op, args)
        torch.library.opcheck(ops._connector_z_op, args)
        torch.library.opcheck(ops._backward_dx_op, (dy, th4, None, 0.6, 3, 0.9, "triton", weights))
        torch.library.opcheck(ops._connector_inplace_op, (x.clone(), th4, b2, None, 0.6, 3, 0.9, "triton", weights))
    _, z = L.forward_save_z(x, th4, b2, None, 0.6, 3, 0.9)
    torch.library.opcheck(ops._backward_params_op, (x, dy, th4, None, 0.6, 3, 0.9, "triton"))
    torch.library.opcheck(ops._backward_params_z_op, (z, dy, th4, None, 0.6, 3, 0.9, "triton"))
    torch.library.opcheck(ops._build_weights_op, (th4, [0.0, 0.6], 3, 12, D64, "triton"))


def test_torch_compile_fullgraph_traces_build_weights_and_the_weighted_op():
    x, th, b, ids, t, r = _make(CASES["g8_seed_eq_rd_3d_K4"], torch.float32)
    d = x.shape[-1]
    th.requires_grad_()
    b.requires_grad_()

    def step(x, th, b):
        w = lc_kernels.build_weights(th, [0.0, t], r, d, backend="triton")
        return lc_kernels.connector(x, th, b, t, r, backend="triton", weights=w[1]).square().mean()

    cf = torch.compile(step, fullgraph=True, backend="eager")
    out = cf(x, th, b)
    gth, gb = torch.autograd.grad(out, (th, b))
    out_e = step(x, th, b)
    eth, eb = torch.autograd.grad(out_e, (th, b))
    for a, e in ((out, out_e), (gth, eth), (gb, eb)):
        assert torch.equal(a, e)


# ------------------------------------------------------------------------------------------------
# GPU only (compiled kernels: with TRITON_INTERPRET=1 they would run interpreted, slowly, and
# bfloat16 would be rejected; run them with TRITON_INTERPRET=0 on a CUDA machine)
# ------------------------------------------------------------------------------------------------

gpu_compiled = pytest.mark.skipif(ON_CPU, reason="TRITON_INTERPRET=1: set TRITON_INTERPRET=0 to test compiled kernels")


def _gpu_case(n=4096, d=768, multitask=False):
    r = d // 8
    return ((n,), d, r, r, d // 2, 2, 0.4, 3 if multitask else None)


@pytest.mark.gpu
@gpu_compiled
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("multitask", [False, True])
def test_gpu_within_twice_eager(dtype, multitask):
    _check_within_twice_eager(_gpu_case(multitask=multitask), dtype, alpha=1.0)


@pytest.mark.gpu
@gpu_compiled
@pytest.mark.parametrize("multitask", [False, True])
def test_gpu_every_autotune_point_bf16(multitask, monkeypatch):
    """Each configuration the tuner may pick (forward with and without z, dx) is correct, not only
    the one that wins on this card."""
    spaces = {}

    def take(i):
        def pick(key, configs, run):
            spaces[key[0]] = len(configs)
            return configs[min(i, len(configs) - 1)]

        return pick

    i = 0
    while i == 0 or i < max(spaces.values()):
        monkeypatch.setattr(L, "_pick", take(i))
        _check_within_twice_eager(_gpu_case(multitask=multitask), torch.bfloat16, alpha=1.0)
        i += 1
    assert set(spaces) == {"fwd", "dx"} and i >= 4


@pytest.mark.gpu
@gpu_compiled
@pytest.mark.parametrize("multitask", [False, True])
def test_gpu_float64_large(multitask):
    x, th, b, ids, t, r = _make(_gpu_case(multitask=multitask), D64, device="cuda")
    dy = torch.randn_like(x)
    got = _grads(_triton_fn, x, th, b, ids, t, r, 0.9, dy)
    exp = _grads(_ref_fn, x, th, b, ids, t, r, 0.9, dy)
    for what, a, e in zip(("y", "dx", "dtheta", "dbias"), got, exp):
        assert _rel(a, e) <= 1e-12, f"float64 {what}: relative error {_rel(a, e):.3g}"


@pytest.mark.gpu
@gpu_compiled
@pytest.mark.parametrize("d", [384, 1024, 4096])
def test_gpu_other_widths_bf16(d):
    _check_within_twice_eager(((2048,), d, d // 8, d // 8, d // 2, 2, 0.3, None), torch.bfloat16, alpha=1.0)


@pytest.mark.gpu
@gpu_compiled
def test_gpu_odd_shapes_all_dtypes():
    for case in CASES.values():
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            _check_within_twice_eager(case, dtype)


@pytest.mark.gpu
@gpu_compiled
def test_gpu_params_bitwise_deterministic_and_launch_counts():
    x, th, b, ids, t, r = _make(_gpu_case(n=65536), torch.bfloat16, device="cuda")
    dy = torch.randn_like(x)
    th32, b32 = th.float()[None].contiguous(), b.float()[None].contiguous()
    w = L.build_weights(th32, [t], r, x.shape[1], x.dtype)[0]
    _, z = L.forward_save_z(x, th32, b32, None, t, r, 1.0, weights=w)
    runs = [L.backward_params_z(z, dy, th32, None, t, r, 1.0) for _ in range(3)]
    runs.append(L.backward_params(x, dy, th32, None, t, r, 1.0))
    for other in runs[1:]:
        assert all(torch.equal(u, v) for u, v in zip(runs[0], other))
    test_launch_counts_per_op()


@pytest.mark.gpu
@gpu_compiled
def test_gpu_torch_compile_fullgraph():
    x, th, b, ids, t, r = _make(_gpu_case(n=512), torch.float16, device="cuda")
    th = th.float().requires_grad_()
    b = b.float().requires_grad_()

    def f(x, th, b):
        w = lc_kernels.build_weights(th, [t], r, x.shape[-1], dtype=x.dtype, backend="triton")[0]
        return lc_kernels.connector(x, th, b, t, r, backend="triton", weights=w).float().square().mean()

    cf = torch.compile(f, fullgraph=True)
    out = cf(x, th, b)
    gth, gb = torch.autograd.grad(out, (th, b))
    out_e = f(x, th, b)
    eth, eb = torch.autograd.grad(out_e, (th, b))
    # inductor may fuse the square/mean (and their backward) differently: rounding-level only
    for a, e in ((out, out_e), (gth, eth), (gb, eb)):
        assert _rel(a, e) <= 1e-5
