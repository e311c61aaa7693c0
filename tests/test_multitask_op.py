"""The task-indexed connector (SPEC §6) on every available CPU backend: values against the
float64 reference row by row, and gradcheck of x, the stacked Θ and the stacked biases."""

import pytest
import torch

import lc_kernels
from lc_kernels import backends
from lc_kernels import reference as ref

# backends that take CPU tensors here (triton only under the interpreter)
CPU_BACKENDS = [b for b in lc_kernels.available_backends() if "cpu" in backends.get(b).devices]


def _problem(T=3, N=7, d=12, r=4, K=3, p=3, q=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, d, generator=g, dtype=dtype)
    theta = torch.randn(T, K, p, q, generator=g, dtype=dtype)
    bias = torch.randn(T, d, generator=g, dtype=dtype)
    # odd mix: task 1 appears once, task T-1 several times, not sorted
    ids = torch.tensor([2, 0, 1, 2, 0, 2, 0][:N]) % T
    return x, theta, bias, ids, r


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_row_uses_its_own_task(backend):
    x, theta, bias, ids, r = _problem()
    y = lc_kernels.connector(x, theta, bias, 0.3, r, 0.7, backend=backend, task_ids=ids)
    for n in range(x.shape[0]):
        want = ref.connector(x[n : n + 1], theta[ids[n]], bias[ids[n]], 0.3, r, 0.7)
        torch.testing.assert_close(y[n : n + 1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_task_gradients_accumulate_only_their_rows(backend):
    x, theta, bias, ids, r = _problem()
    theta.requires_grad_(True)
    bias.requires_grad_(True)
    dy = torch.randn_like(x)
    lc_kernels.connector(x, theta, bias, 0.8, r, 1.3, backend=backend, task_ids=ids).backward(dy)
    for tau in range(theta.shape[0]):
        m = ids == tau
        _, dth, db = ref.connector_backward(x[m], dy[m], theta[tau].detach(), 0.8, r, 1.3)
        torch.testing.assert_close(theta.grad[tau], dth, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bias.grad[tau], db, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_task_indexed_op(backend):
    x, theta, bias, ids, r = _problem(T=2, N=5, d=8, r=4, K=2, p=2, q=3)
    args = tuple(v.clone().requires_grad_(True) for v in (x, theta, bias))
    assert torch.autograd.gradcheck(
        lambda a, b, c: lc_kernels.connector(a, b, c, 0.6, r, 1.1, backend=backend, task_ids=ids), args
    )
    # an unused task (index 2 of 3 with ids in {0,1}) must get exactly zero gradient
    th3 = torch.cat([theta, torch.randn(1, *theta.shape[1:], dtype=theta.dtype)]).requires_grad_(True)
    b3 = torch.cat([bias, torch.randn(1, bias.shape[1], dtype=bias.dtype)]).requires_grad_(True)
    lc_kernels.connector(x, th3, b3, 0.6, r, 1.1, backend=backend, task_ids=ids).sum().backward()
    assert torch.equal(th3.grad[2], torch.zeros_like(th3.grad[2]))
    assert torch.equal(b3.grad[2], torch.zeros_like(b3.grad[2]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_sequence_ids_broadcast_over_tokens(backend):
    """What the model does: ids of shape (B, 1) against hidden states (B, S, d)."""
    g = torch.Generator().manual_seed(3)
    B, S, d, r = 3, 5, 12, 6
    x = torch.randn(B, S, d, generator=g, dtype=torch.float64)
    theta = torch.randn(4, 2, 3, 7, generator=g, dtype=torch.float64)
    bias = torch.randn(4, d, generator=g, dtype=torch.float64)
    ids = torch.tensor([3, 0, 3]).view(B, 1)
    y = lc_kernels.connector(x, theta, bias, 1.0, r, backend=backend, task_ids=ids)
    for b in range(B):
        torch.testing.assert_close(
            y[b], ref.connector(x[b], theta[ids[b, 0]], bias[ids[b, 0]], 1.0, r), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_prebuilt_stacked_weights(backend):
    """build_weights on a stacked bank gives (P, T, r_pad, d); W[l] drives the task-indexed op."""
    x, theta, bias, ids, r = _problem()
    ts = [0.0, 0.3, 1.0]
    w = lc_kernels.build_weights(theta, ts, r, x.shape[1], backend=backend)
    assert w.shape == (3, theta.shape[0], lc_kernels.padded_rank(r), x.shape[1])
    for tau in range(theta.shape[0]):
        torch.testing.assert_close(
            w[1, tau, :r], ref.interpolate_seeds(theta[tau], 0.3, r, x.shape[1]), rtol=1e-13, atol=1e-13
        )
    th = theta.clone().requires_grad_(True)
    y = lc_kernels.connector(x, th, bias, 0.3, r, 0.7, backend=backend, task_ids=ids, weights=w[1])
    y.backward(torch.ones_like(y))
    thr = theta.clone().requires_grad_(True)
    yr = ref.connector(x, thr, bias, 0.3, r, 0.7, task_ids=ids)
    yr.backward(torch.ones_like(yr))
    torch.testing.assert_close(y, yr.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(th.grad, thr.grad, rtol=1e-12, atol=1e-12)
