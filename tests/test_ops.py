"""The public op: validation, dispatch, torch.library registration (opcheck), torch.compile."""
import pytest
import torch

import lc_kernels
from lc_kernels import ops
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
    if backend in ("cuda",):
        pytest.skip("CUDA backend is checked in its GPU tests")
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
    for make_dy in (lambda y: torch.randn(1, y.shape[1], dtype=D64).expand_as(y),
                    lambda y: torch.randn(y.shape[1], y.shape[0], dtype=D64).t()):
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
    f = torch.compile(lambda x, th: lc_kernels.connector(x, th, b, 0.5, r, backend="auto") * 2, fullgraph=True, backend="eager")
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
