"""The public op: validation, dispatch, torch.library registration (opcheck), torch.compile."""

import pytest
import torch

import lc_kernels
from lc_kernels import backends, ops
from lc_kernels import reference as ref

D64 = torch.float64


def _inputs(N=6, d=20, r=5, K=2, p=3, q=7, dtype=D64):
    return torch.randn(N, d, dtype=dtype), torch.randn(K, p, q, dtype=dtype), torch.randn(d, dtype=dtype), r


def test_available_backends_lists_reference_first():
    names = lc_kernels.available_backends()
    assert names[0] == "reference"
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("backend", lc_kernels.available_backends())
def test_opcheck_every_backend(backend):
    if "cpu" not in backends.get(backend).devices:
        pytest.skip(f"{backend} takes no CPU tensors here; it is checked in its GPU tests")
    x, th, b, r = _inputs()
    x2, th4, b2 = x.requires_grad_(), th[None].requires_grad_(), b[None].requires_grad_()
    torch.library.opcheck(ops._connector_op, (x2, th4, b2, None, 0.3, r, 0.7, backend))
    dy = torch.randn_like(x)
    torch.library.opcheck(ops._backward_dx_op, (dy, th4.detach(), None, 0.3, r, 0.7, backend))
    torch.library.opcheck(ops._backward_params_op, (x.detach(), dy, th4.detach(), None, 0.3, r, 0.7, backend))


def test_public_op_matches_reference_and_keeps_shape():
    x, th, b, r = _inputs()
    x3 = x.reshape(2, 3, 20)
    y = lc_kernels.connector(x3, th, b, 0.25, r, alpha=0.5, backend="reference")
    assert y.shape == x3.shape and y.dtype == x3.dtype
    torch.testing.assert_close(y, ref.connector(x3, th, b, 0.25, r, 0.5), rtol=1e-13, atol=1e-13)


def test_gradcheck_public_op_reference():
    x, th, b, r = _inputs(N=4)
    args = (x.requires_grad_(), th.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(lambda *a: lc_kernels.connector(*a, 0.6, r, 1.1, backend="reference"), args)


def test_expanded_and_noncontiguous_upstream_grads():
    x, th, b, r = _inputs(N=5)
    for make_dy in (
        lambda y: torch.randn(1, y.shape[1], dtype=D64).expand_as(y),
        lambda y: torch.randn(y.shape[1], y.shape[0], dtype=D64).t(),
    ):
        xs = [x.clone().requires_grad_(), th.clone().requires_grad_(), b.clone().requires_grad_()]
        y = lc_kernels.connector(*xs, 0.5, r, backend="auto")
        dy = make_dy(y)
        g = torch.autograd.grad(y, xs, dy)
        xr = [v.detach().clone().requires_grad_() for v in xs]
        gr = torch.autograd.grad(ref.connector(*xr, 0.5, r), xr, dy.contiguous())
        for a, e in zip(g, gr):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_no_grad_saves_nothing_and_matches():
    x, th, b, r = _inputs()
    th.requires_grad_()
    with torch.no_grad():
        y = lc_kernels.connector(x, th, b, 0.5, r)
    assert y.grad_fn is None
    torch.testing.assert_close(y, ref.connector(x, th.detach(), b, 0.5, r), rtol=1e-12, atol=1e-12)


def test_torch_compile_fullgraph():
    x, th, b, r = _inputs(dtype=torch.float32)
    th.requires_grad_()
    f = torch.compile(
        lambda x, th: lc_kernels.connector(x, th, b, 0.5, r, backend="auto") * 2, fullgraph=True, backend="eager"
    )
    y = f(x, th)
    y.sum().backward()
    torch.testing.assert_close(y, 2 * ref.connector(x, th.detach(), b, 0.5, r), rtol=1e-5, atol=1e-5)
    assert th.grad is not None and torch.isfinite(th.grad).all()


def test_bad_inputs_name_the_argument():
    x, th, b, r = _inputs()
    with pytest.raises(ValueError, match="r=3 must divide"):
        lc_kernels.connector(x, th, b, 0.5, 3)
    with pytest.raises(ValueError, match="bias must have shape"):
        lc_kernels.connector(torch.randn(6, 25, dtype=D64), th, b, 0.5, 5)
    with pytest.raises(TypeError, match="theta has dtype"):
        lc_kernels.connector(x.float(), th, b.float(), 0.5, r)
    with pytest.raises(ValueError, match="t must be in"):
        lc_kernels.connector(x, th, b, 1.5, r)
    with pytest.raises(ValueError, match="backend='nope'"):
        lc_kernels.connector(x, th, b, 0.5, r, backend="nope")
    with pytest.raises(TypeError, match="x must be"):
        lc_kernels.connector(x.long(), th, b, 0.5, r)
    with pytest.raises(ValueError, match="task_ids"):
        lc_kernels.connector(x, th[None], b[None], 0.5, r)
    with pytest.raises(IndexError, match="task_ids must be in"):
        lc_kernels.connector(x, th[None], b[None], 0.5, r, task_ids=torch.full((6,), 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        lc_kernels.connector(x, th[None], b[None], 0.5, r, task_ids=torch.zeros(4, dtype=torch.long))


def test_mixed_precision_params_accepted_for_half_inputs():
    x, th, b, r = _inputs(dtype=torch.float32)
    y = lc_kernels.connector(x.half(), th, b, 0.5, r, backend="reference")
    assert y.dtype == torch.float16
    exact = ref.connector(x.half().double(), th.double(), b.double(), 0.5, r)
    assert (y.double() - exact).abs().max() < 1e-2 * exact.abs().max()


# ---------------------------------------------------------------------------------------------
# build_weights and the prebuilt-W argument (SPEC §5 v2)
# ---------------------------------------------------------------------------------------------

# backends that take CPU tensors here (triton only under the interpreter)
CPU_BACKENDS = [b for b in lc_kernels.available_backends() if "cpu" in backends.get(b).devices]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_build_weights_every_backend_matches_reference_and_is_a_detached_cache(backend):
    th = torch.randn(3, 4, 9, dtype=D64, requires_grad=True)
    ts = [0.0, 0.25, 0.5, 1.0]
    w = lc_kernels.build_weights(th, ts, 6, 18, backend=backend)
    assert w.shape == (4, 16, 18) and w.dtype == D64 and w.is_contiguous() and not w.requires_grad
    assert torch.count_nonzero(w[:, 6:]) == 0
    for pos, t in enumerate(ts):
        torch.testing.assert_close(w[pos, :6], ref.interpolate_seeds(th.detach(), t, 6, 18), rtol=1e-13, atol=1e-13)
    w32 = lc_kernels.build_weights(
        th.float(), ts, 6, 18, dtype=torch.float16, backend=backend if backend != "cpu" else "reference"
    )
    assert w32.dtype == torch.float16 and w32.shape == (4, 16, 18)


def test_build_weights_checks_its_arguments():
    th = torch.randn(3, 4, 9, dtype=D64)
    with pytest.raises(ValueError, match="every t in ts"):
        lc_kernels.build_weights(th, [0.2, -0.1], 6, 18)
    with pytest.raises(TypeError, match="ts must be a sequence"):
        lc_kernels.build_weights(th, torch.tensor([0.2]), 6, 18)
    with pytest.raises(ValueError, match="r=4 must divide"):
        lc_kernels.build_weights(th, [0.2], 4, 18)
    with pytest.raises(ValueError, match=r"theta must have shape \(K, p, q\)"):
        lc_kernels.build_weights(th[0], [0.2], 6, 18)
    with pytest.raises(TypeError, match="dtype must be"):
        lc_kernels.build_weights(th, [0.2], 6, 18, dtype=torch.int32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_prebuilt_weights_are_used_or_ignored_consistently(backend):
    x, th, b, r = _inputs(N=9, d=20, r=5, K=3, p=4, q=8)
    ts = [0.0, 0.4, 1.0]
    w = lc_kernels.build_weights(th, ts, r, 20, backend=backend)
    xs, ths, bs = (v.clone().requires_grad_() for v in (x, th, b))
    y = lc_kernels.connector(xs, ths, bs, ts[1], r, 0.8, backend=backend, weights=w[1])
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (xs, ths, bs), dy)
    xr, thr, br = (v.clone().requires_grad_() for v in (x, th, b))
    yr = ref.connector(xr, thr, br, ts[1], r, 0.8)
    gr = torch.autograd.grad(yr, (xr, thr, br), dy)
    for a, e in zip((y, *g), (yr, *gr)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        xi = x.clone()
        lc_kernels.connector_(xi, th, b, ts[1], r, 0.8, backend=backend, weights=w[1])
    torch.testing.assert_close(xi, yr.detach(), rtol=1e-12, atol=1e-12)


def test_prebuilt_weights_are_checked_cheaply_with_clear_errors():
    x, th, b, r = _inputs()
    w = lc_kernels.build_weights(th, [0.5], r, 20, backend="reference")[0]
    with pytest.raises(ValueError, match=r"weights must have shape \(16, 20\)"):
        lc_kernels.connector(x, th, b, 0.5, r, weights=w[:5])
    with pytest.raises(TypeError, match="weights has dtype"):
        lc_kernels.connector(x, th, b, 0.5, r, weights=w.float())
    with pytest.raises(ValueError, match="contiguous"):
        lc_kernels.connector(x, th, b, 0.5, r, weights=torch.zeros(20, 16, dtype=D64).t())
    with pytest.raises(TypeError, match="weights must be a torch.Tensor"):
        lc_kernels.connector(x, th, b, 0.5, r, weights=[[0.0]])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck_weights_ops_every_backend(backend):
    x, th, b, r = _inputs()
    th4, b2 = th[None], b[None]
    w = lc_kernels.build_weights(th, [0.3], r, 20, backend=backend)
    torch.library.opcheck(ops._build_weights_op, (th4, [0.0, 0.3], r, 20, D64, backend))
    args = (x.requires_grad_(), th4.requires_grad_(), b2.requires_grad_(), None, 0.3, r, 0.7, backend, w)
    torch.library.opcheck(ops._connector_op, args)
    dy = torch.randn_like(x)
    torch.library.opcheck(ops._backward_dx_op, (dy, th4.detach(), None, 0.3, r, 0.7, backend, w))


def test_torch_compile_fullgraph_with_build_weights():
    x, th, b, r = _inputs(dtype=torch.float32)
    th.requires_grad_()

    def f(x, th):
        w = lc_kernels.build_weights(th, [0.0, 0.5], r, 20)
        return lc_kernels.connector(x, th, b, 0.5, r, weights=w[1]) * 2

    y = torch.compile(f, fullgraph=True, backend="eager")(x, th)
    y.sum().backward()
    torch.testing.assert_close(y, 2 * ref.connector(x, th.detach(), b, 0.5, r), rtol=1e-5, atol=1e-5)
    th_e = th.detach().clone().requires_grad_()
    (2 * ref.connector(x, th_e, b, 0.5, r)).sum().backward()
    torch.testing.assert_close(th.grad, th_e.grad, rtol=1e-5, atol=1e-5)
