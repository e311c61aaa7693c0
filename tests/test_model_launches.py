"""Launch audit of a whole LayerConnect model on the Triton backend (issues 13 and 15): a forward pass
issues one W-build launch (none while Θ is unchanged) plus one token launch per connector; a training
step adds at most three backward launches per connector. Runs under the Triton interpreter on CPU."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import lc_kernels  # noqa: E402
from layerconnect import LayerConnectConfig, add_connectors  # noqa: E402

pytestmark = pytest.mark.skipif("triton" not in lc_kernels.available_backends(), reason="needs triton")


def _model(num_tasks=None):
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, vocab_size=50, num_labels=2
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    add_connectors(model, LayerConnectConfig(down_factor=4, positions="all", backend="triton"), num_tasks=num_tasks)
    with torch.no_grad():
        model.layerconnect.theta.normal_(0, 0.3)
        model.layerconnect.bias.normal_(0, 0.3)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 50, (2, 5), generator=g)}


def test_forward_and_training_step_launches():
    from lc_kernels.triton import count_launches

    model = _model().eval()
    n_conn = model.layerconnect.geometry.num_connectors
    batch = _batch()
    with torch.no_grad(), count_launches() as first:
        want = model(**batch).logits
    assert first == {"build_weights_kernel": 1, "connector_fwd_kernel": n_conn}
    with torch.no_grad(), count_launches() as again:
        got = model(**batch).logits
    assert again == {"connector_fwd_kernel": n_conn}, "W must be reused while theta is unchanged"
    assert torch.equal(got, want)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with count_launches() as fwd:
        loss = model(**batch, labels=torch.tensor([0, 1])).loss
    with count_launches() as bwd:
        loss.backward()
    assert sum(fwd.values()) <= 1 + n_conn and fwd["connector_fwd_kernel"] == n_conn
    assert sum(bwd.values()) <= 3 * n_conn, bwd
    assert model.layerconnect.theta.grad.abs().sum() > 0
    opt.step()  # theta changes (version bump): the next forward builds W again, once
    with torch.no_grad(), count_launches() as after:
        model.eval()(**batch)
    assert after == {"build_weights_kernel": 1, "connector_fwd_kernel": n_conn}


def test_prebuilt_weights_path_matches_the_reference_backend():
    model = _model(num_tasks=3).eval()
    hn = model.layerconnect
    batch = _batch()
    with torch.no_grad(), hn.use_tasks(torch.tensor([1, 0]), torch.tensor([0, 2])):  # subset: tasks 0 and 2
        got = model(**batch).logits
    hn.backend = "reference"
    hn._backend_for.clear()
    with torch.no_grad(), hn.use_tasks(torch.tensor([2, 0])):
        want = model(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
