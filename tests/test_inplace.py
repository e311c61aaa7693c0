"""The in-place inference path: lc_kernels.connector_ and the model's use of it.

``connector_`` must compute exactly what ``connector`` computes (the cpu backend runs the same kernel
with out = x, so the results are bit-identical; other backends copy), write into x's own memory,
refuse autograd and non-contiguous x, and the model must take it only when no gradient is needed.
"""

import pytest
import torch

import lc_kernels
from lc_kernels import _ext, backends
from lc_kernels import reference as ref

transformers = pytest.importorskip("transformers")

from layerconnect import LayerConnectConfig, add_connectors  # noqa: E402

HAVE_CPU = backends.get("cpu").unavailable_reason() is None
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="cpu backend (lc_kernels._C) not built")


def _params(d, r, K, p, q, T=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = () if T is None else (T,)
    theta = torch.randn(*lead, K, p, q, generator=g, dtype=dtype) * 0.3
    bias = torch.randn(*lead, d, generator=g, dtype=dtype) * 0.3
    return theta, bias


# (lead shape, d, r, K, p, q): odd row counts across the 64-row block boundary, 3-D x, p < r and p = r
SHAPES = [((131,), 48, 6, 2, 4, 20), ((3, 43), 96, 12, 3, 12, 48), ((1,), 16, 2, 1, 2, 16)]


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_inplace_is_bit_identical_to_out_of_place_and_writes_into_x(shape, dtype):
    lead, d, r, K, p, q = shape
    theta, bias = _params(d, r, K, p, q, dtype=dtype)
    x = torch.randn(*lead, d, dtype=dtype, generator=torch.Generator().manual_seed(2))
    expect = lc_kernels.connector(x, theta, bias, 0.37, r, 0.8, "cpu")
    truth = ref.connector(x.double(), theta.double(), bias.double(), 0.37, r, 0.8)
    xi = x.clone()
    ptr = xi.data_ptr()
    with torch.no_grad():
        out = lc_kernels.connector_(xi, theta, bias, 0.37, r, 0.8, "cpu")
    assert out is xi and xi.data_ptr() == ptr
    assert torch.equal(xi, expect), "in place must run the very same kernel as out of place"
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert (xi.double() - truth).abs().max().item() <= tol * truth.abs().max().item()


@needs_cpu
def test_cpu_inplace_multitask_under_inference_mode():
    d, r, K, p, q, T = 64, 8, 2, 8, 32, 3
    theta, bias = _params(d, r, K, p, q, T=T)
    x = torch.randn(5, 13, d, dtype=torch.float64)
    ids = torch.tensor([2, 0, 1, 2, 0]).view(5, 1)
    expect = ref.connector(x, theta, bias, 0.5, r, 1.0, task_ids=ids)
    with torch.inference_mode():
        xi = x.clone()
        lc_kernels.connector_(xi, theta, bias, 0.5, r, 1.0, "cpu", task_ids=ids)
    assert (xi - expect).abs().max().item() <= 1e-12 * expect.abs().max().item()


def test_fallback_backend_copies_into_x():
    d, r, K, p, q = 24, 4, 2, 3, 10
    theta, bias = _params(d, r, K, p, q)
    x = torch.randn(7, d, dtype=torch.float64)
    expect = ref.connector(x, theta, bias, 1.0, r, 1.0)
    assert not lc_kernels.inplace_supported(x, "reference")
    xi = x.clone()
    with torch.no_grad():
        out = lc_kernels.connector_(xi, theta, bias, 1.0, r, 1.0, "reference")
    assert out is xi
    assert torch.allclose(xi, expect, rtol=0, atol=1e-13)


def test_inplace_refuses_autograd_and_noncontiguous_x():
    d, r, K, p, q = 24, 4, 2, 3, 10
    theta, bias = _params(d, r, K, p, q)
    theta.requires_grad_(True)
    x = torch.randn(7, d, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="no_grad"):
        lc_kernels.connector_(x.clone(), theta, bias, 0.5, r)
    with torch.no_grad():
        with pytest.raises(ValueError, match="contiguous"):
            lc_kernels.connector_(torch.randn(d, 7, dtype=torch.float64).t(), theta, bias, 0.5, r)


@needs_cpu
def test_cpu_kernel_rejects_partial_overlap_of_out_and_x():
    d, r, K, p, q = 32, 4, 2, 4, 16
    theta, bias = _params(d, r, K, p, q)
    buf = torch.randn(20, d, dtype=torch.float64)
    x, out = buf[:10], buf[5:15]
    with pytest.raises(RuntimeError, match="overlaps x"):
        _ext.load().forward_cpu(x, theta.unsqueeze(0), bias.unsqueeze(0), None, 0.5, r, 1.0, out=out)


@needs_cpu
def test_inplace_supported_reports_the_cpu_kernel():
    assert lc_kernels.inplace_supported(torch.zeros(4, 8), "cpu")
    assert lc_kernels.inplace_supported(torch.zeros(4, 8), "auto")
    assert not lc_kernels.inplace_supported(torch.zeros(8, 4).t(), "cpu")  # not contiguous
    assert not lc_kernels.inplace_supported(torch.zeros(4, 8, dtype=torch.float16), "cpu")  # no such kernel


def _tiny_bert(inplace):
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, num_labels=2
    )
    torch.manual_seed(0)
    m = transformers.BertForSequenceClassification(cfg).eval()
    add_connectors(m, LayerConnectConfig(down_factor=4, positions="all", inplace_inference=inplace))
    with torch.no_grad():
        m.layerconnect.theta.normal_(0, 0.5)
        m.layerconnect.bias.normal_(0, 0.5)
    return m


@needs_cpu
def test_model_takes_the_inplace_path_only_without_autograd_and_logits_are_unchanged():
    ids = torch.randint(3, 50, (3, 11), generator=torch.Generator().manual_seed(1))
    on, off = _tiny_bert(True), _tiny_bert(False)
    with torch.inference_mode():
        l_on = on(input_ids=ids).logits
        l_off = off(input_ids=ids).logits
    with torch.no_grad():
        l_nograd = on(input_ids=ids).logits
    l_grad = on(input_ids=ids).logits  # autograd on: the functional op
    assert torch.equal(l_on, l_off) and torch.equal(l_nograd, l_off)
    assert torch.equal(l_grad.detach(), l_off)
    # which path: connect() returns its input tensor itself only when it went in place
    h = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert on.layerconnect.connect(0, h) is h
        assert off.layerconnect.connect(0, h) is not h
    h2 = torch.randn(2, 5, 32)
    before = h2.clone()
    y = on.layerconnect.connect(0, h2)  # grad enabled and theta requires grad: never in place
    assert y is not h2 and torch.equal(h2, before) and y.requires_grad
    view = torch.randn(4, 5, 32)[1:3]  # a view of a bigger tensor: never overwritten
    with torch.no_grad():
        assert on.layerconnect.connect(0, view) is not view


def test_config_flag_is_validated_and_round_trips():
    with pytest.raises(TypeError, match="inplace_inference"):
        LayerConnectConfig(inplace_inference="yes")
    c = LayerConnectConfig(inplace_inference=False)
    assert LayerConnectConfig.from_dict(c.to_dict()).inplace_inference is False
    assert LayerConnectConfig.from_dict({}).inplace_inference is True


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if HAVE_CPU else []))
def test_inplace_custom_op_passes_opcheck(backend):
    d, r, K, p, q = 24, 4, 2, 3, 10
    theta, bias = _params(d, r, K, p, q)
    x = torch.randn(9, d, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.layerconnect.connector_inplace.default,
        (x, theta.unsqueeze(0), bias.unsqueeze(0), None, 0.5, r, 1.0, backend),
    )
