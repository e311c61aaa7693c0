"""The connectors' fast inference path (issue 15): decided once per forward, prepared CPU kernels called
directly, cached while the seed bank is unchanged -- and always the same function as the op."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_model import _batch, _tiny  # noqa: E402

import lc_kernels  # noqa: E402
from layerconnect import LayerConnectConfig, add_connectors  # noqa: E402

pytestmark = pytest.mark.skipif("cpu" not in lc_kernels.available_backends(), reason="needs the cpu extension")


def _model(dtype=torch.float32, num_tasks=None, inplace=True):
    model = _tiny("bert").to(dtype)
    cfg = LayerConnectConfig(down_factor=4, positions="all", inplace_inference=inplace)
    add_connectors(model, cfg, num_tasks=num_tasks)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in (model.layerconnect.theta, model.layerconnect.bias):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return model.eval()


def _op_only(monkeypatch):
    """Force the op path (what the model computed before the fast path existed)."""
    from layerconnect.method import hypernet

    monkeypatch.setattr(hypernet, "fast_path", lambda hn, h: None)


def _count_op_calls(monkeypatch):
    calls = []
    for name in ("connector", "connector_"):
        real = getattr(lc_kernels, name)
        monkeypatch.setattr(lc_kernels, name, lambda *a, _r=real, **k: calls.append(1) or _r(*a, **k))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inplace", [True, False])
def test_fast_path_is_bitwise_the_op_path(monkeypatch, dtype, inplace):
    model = _model(dtype, inplace=inplace)
    batch = _batch()
    calls = _count_op_calls(monkeypatch)
    with torch.inference_mode():
        fast = model(**batch).logits
    assert not calls, "the op ran although the fast path applies"
    assert model.layerconnect._fast is not None
    _op_only(monkeypatch)
    with torch.inference_mode():
        slow = model(**batch).logits
    assert len(calls) == model.layerconnect.geometry.num_connectors
    assert torch.equal(fast, slow)


def test_cache_follows_the_seed_bank(monkeypatch):
    model = _model()
    hn = model.layerconnect
    batch = _batch()
    with torch.no_grad():
        a = model(**batch).logits
        plans = hn._plan_cache[1]
        assert torch.equal(model(**batch).logits, a) and hn._plan_cache[1] is plans  # reused, not rebuilt
        hn.theta.mul_(-2.0)  # what an optimiser step does: in place, bumping the version counter
        b = model(**batch).logits
        assert hn._plan_cache[1] is not plans and not torch.equal(a, b)
        hn.bias.add_(0.25)
        c = model(**batch).logits
    _op_only(monkeypatch)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, c)


def test_training_and_compiling_take_the_op(monkeypatch):
    model = _model()
    calls = _count_op_calls(monkeypatch)
    model.train()
    model(**_batch()).logits.sum().backward()
    assert len(calls) == model.layerconnect.geometry.num_connectors and model.layerconnect._fast is None
    assert model.layerconnect.theta.grad is not None and model.layerconnect.theta.grad.abs().sum() > 0


def test_multitask_subset_uses_global_ids(monkeypatch):
    model = _model(num_tasks=3)
    hn = model.layerconnect
    batch = _batch()
    local = torch.tensor([1, 0, 1])  # two of the three tasks present: subset [0, 2]
    subset = torch.tensor([0, 2])
    with torch.inference_mode(), hn.use_tasks(local, subset):
        fast = model(**batch).logits
    assert hn._fast is not None
    _op_only(monkeypatch)
    with torch.inference_mode(), hn.use_tasks(local, subset):
        slow = model(**batch).logits
    assert torch.equal(fast, slow)
    with torch.inference_mode(), hn.use_tasks(torch.tensor([2, 0, 2])):
        full = model(**batch).logits
    torch.testing.assert_close(full, slow, rtol=0, atol=0)


def test_plan_checks_its_inputs():
    from lc_kernels import _ext

    mod = _ext.load()
    theta, bias = torch.zeros(1, 2, 4, 8), torch.zeros(1, 16)
    plan = mod.cpu_forward_plan(theta, bias, 0.5, 4, 1.0)
    with pytest.raises(RuntimeError, match="must have d=16"):
        plan.forward(torch.zeros(3, 8))
    with pytest.raises(RuntimeError, match="dtype"):
        plan.forward(torch.zeros(3, 16, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="ids=None means a single task"):
        mod.cpu_forward_plan(torch.zeros(2, 2, 4, 8), torch.zeros(2, 16), 0.5, 4, 1.0).forward(torch.zeros(3, 16))
    with pytest.raises(RuntimeError, match="must divide"):
        mod.cpu_forward_plan(theta, bias, 0.5, 5, 1.0)
    x = torch.randn(5, 16, dtype=torch.float64)
    th, b = torch.randn(1, 2, 4, 8, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
    y = torch.full_like(x, float("nan"))  # out= poisoned: every element must be written
    mod.cpu_forward_plan(th, b, 0.3, 4, 2.0).forward(x, None, y)
    want = lc_kernels.reference.connector(x, th[0], b[0], 0.3, 4, 2.0)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
