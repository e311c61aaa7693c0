"""The ground truth itself: SPEC §2-§4 formulas against independent PyTorch computations."""

import pytest
import torch
import torch.nn.functional as F

from lc_kernels import reference as ref

D64 = torch.float64


def _rand(*shape, dtype=D64):
    return torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize(
    "K,p,q,r,d",
    [(1, 4, 8, 4, 16), (2, 3, 5, 6, 24), (3, 6, 24, 6, 24), (2, 1, 1, 5, 20), (3, 2, 7, 5, 20), (2, 5, 20, 5, 20)],
)
@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_interpolate_seeds_matches_torch_bilinear(K, p, q, r, d, t):
    theta = _rand(K, p, q)
    w = ref.interpolate_seeds(theta, t, r, d)
    # independent depth mix: hat weights evaluated directly from the SPEC formula
    s = sum(max(0.0, 1 - abs(t * (K - 1) - k)) * theta[k] for k in range(K)) if K > 1 else theta[0]
    expect = F.interpolate(s[None, None], size=(r, d), mode="bilinear", align_corners=True)[0, 0]
    torch.testing.assert_close(w, expect, rtol=1e-12, atol=1e-12)


def test_identity_interpolation_when_grid_is_full_size():
    theta = _rand(1, 5, 20)
    assert torch.equal(ref.interpolate_seeds(theta, 0.5, 5, 20), theta[0])


def test_hat_weights_partition_of_unity_and_two_nonzeros():
    for K in (1, 2, 3, 5):
        for t in torch.linspace(0, 1, 17).tolist():
            h = ref.hat_weights(t, K)
            assert abs(sum(h) - 1.0) < 1e-15
            assert sum(1 for v in h if v > 0) <= 2
    assert ref.hat_weights(0.5, 3) == [0.0, 1.0, 0.0]


def test_downsample_is_average_pooling():
    x = _rand(3, 4, 24)
    expect = F.avg_pool1d(x.reshape(-1, 1, 24), kernel_size=4).reshape(3, 4, 6)
    torch.testing.assert_close(ref.downsample(x, 6), expect, rtol=1e-14, atol=1e-14)


def test_upsample_adjoint_is_adjoint_of_downsample():
    x, v = _rand(7, 24), _rand(7, 8)
    lhs = (ref.downsample(x, 8) * v).sum()
    rhs = (x * ref.upsample_adjoint(v, 24)).sum()
    assert abs(lhs - rhs) < 1e-12


@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("grid", ["full", "small"])
@pytest.mark.parametrize("t", [0.0, 0.4, 1.0])
def test_gradcheck_reference_connector(K, grid, t):
    d, r = 20, 5
    p, q = (r, d) if grid == "full" else (3, 7)
    x = _rand(2, 3, d).requires_grad_()
    theta = _rand(K, p, q).requires_grad_()
    b = _rand(d).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, th, b: ref.connector(x, th, b, t, r, alpha=0.7), (x, theta, b))


@pytest.mark.parametrize(
    "K,p,q,r,d,t", [(1, 4, 8, 4, 16, 0.0), (2, 3, 7, 5, 20, 0.3), (3, 6, 12, 6, 36, 1.0), (3, 2, 5, 12, 36, 0.61)]
)
def test_written_out_gradients_match_autograd(K, p, q, r, d, t):
    x = _rand(5, d, dtype=D64).requires_grad_()
    theta = _rand(K, p, q).requires_grad_()
    b = _rand(d).requires_grad_()
    dy = _rand(5, d)
    y = ref.connector(x, theta, b, t, r, alpha=1.3)
    gx, gth, gb = torch.autograd.grad(y, (x, theta, b), dy)
    dx, dth, db = ref.connector_backward(x.detach(), dy, theta.detach(), t, r, alpha=1.3)
    for got, want in ((dx, gx), (dth, gth), (db, gb)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_multitask_rows_equal_single_task():
    T, K, p, q, r, d = 3, 2, 3, 8, 4, 16
    theta, bias = _rand(T, K, p, q), _rand(T, d)
    x = _rand(4, 5, d)
    ids = torch.tensor([2, 0, 1, 2])
    y = ref.connector(x, theta, bias, 0.25, r, 0.9, task_ids=ids[:, None])
    for i in range(4):
        yi = ref.connector(x[i], theta[ids[i]], bias[ids[i]], 0.25, r, 0.9)
        torch.testing.assert_close(y[i], yi, rtol=0, atol=1e-13)
    dy = _rand(4, 5, d)
    dx, dth, db = ref.connector_backward(x, dy, theta, 0.25, r, 0.9, task_ids=ids[:, None])
    xg = x.clone().requires_grad_()
    thg, bg = theta.clone().requires_grad_(), bias.clone().requires_grad_()
    gx, gth, gb = torch.autograd.grad(
        ref.connector(xg, thg, bg, 0.25, r, 0.9, task_ids=ids[:, None]), (xg, thg, bg), dy
    )
    for got, want in ((dx, gx), (dth, gth), (db, gb)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_geometry_errors_name_the_argument():
    with pytest.raises(ValueError, match="r=7 must divide"):
        ref.interpolate_seeds(_rand(2, 3, 4), 0.5, 7, 20)
    with pytest.raises(ValueError, match="seed rows p"):
        ref.interpolate_seeds(_rand(2, 6, 4), 0.5, 5, 20)
    with pytest.raises(ValueError, match="t must be"):
        ref.hat_weights(1.5, 2)
