"""Baselines: each method trains exactly what it claims, and our Houlsby/Pfeiffer adapters are
AdapterHub's ``double_seq_bn`` / ``seq_bn`` (same parameter count and, given the same weights, the
same outputs on every supported family)."""

import copy
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from layerconnect import LayerConnectConfig, find_layers  # noqa: E402
from layerconnect.baselines import (  # noqa: E402
    METHODS,
    apply_method,
    head_parameter_names,
    lora_target_modules,
    print_trainable_parameters,
    trainable_parameters,
)
from layerconnect.params import count_params  # noqa: E402

D, L, FFN, VOCAB = 32, 2, 37, 50  # odd FFN width on purpose
ADAPTERHUB_CONFIG = {"houlsby": "double_seq_bn", "pfeiffer": "seq_bn"}


def _tiny(family: str):
    common = dict(vocab_size=VOCAB, max_position_embeddings=24, num_labels=3)
    if family == "distilbert":
        cfg = DistilBertConfig(dim=D, n_layers=L, n_heads=2, hidden_dim=FFN, **common)
        return DistilBertForSequenceClassification(cfg).eval()
    bert_like = dict(hidden_size=D, num_hidden_layers=L, num_attention_heads=2, intermediate_size=FFN, **common)
    if family == "bert":
        return BertForSequenceClassification(BertConfig(**bert_like)).eval()
    if family == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(**bert_like)).eval()
    if family == "electra":  # embedding_size != hidden_size exercises embeddings_project
        return ElectraForSequenceClassification(ElectraConfig(embedding_size=16, **bert_like)).eval()
    raise AssertionError(family)


FAMILIES = ("bert", "roberta", "distilbert", "electra")


def _inputs(batch=3, seq=7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0  # padding in one row, so masks flow through the hooked layers
    return dict(input_ids=ids, attention_mask=mask)


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _head_names(model):
    return set(head_parameter_names(model))


# ----------------------------------------------------------------------------------------------
# what each method trains
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "bitfit", "head", "full", "layerconnect"])
def test_method_trains_only_what_it_claims(family, method):
    base = _tiny(family)
    model = apply_method(copy.deepcopy(base), method)
    names = _trainable_names(model)
    head = _head_names(model)
    assert head, "every sequence classifier has a trainable head"
    assert head <= names
    base_prefix = base.base_model_prefix + "."
    assert all(n.startswith(("classifier.", "pre_classifier.")) for n in head), head
    others = names - head
    if method == "head":
        assert others == set()
    elif method == "full":
        assert names == {n for n, _ in model.named_parameters()}
    elif method == "bitfit":
        expected = {n for n, _ in model.named_parameters() if n.startswith(base_prefix) and n.endswith(".bias")}
        assert others == expected and expected
    elif method in ("houlsby", "pfeiffer"):
        sites = (".mh_adapter.", ".output_adapter.") if method == "houlsby" else (".output_adapter.",)
        assert others and all(any(s in n for s in sites) for n in others), others
        assert {n for n, _ in model.named_parameters() if any(s in n for s in sites)} == others
        if method == "pfeiffer":
            assert not any(".mh_adapter." in n for n, _ in model.named_parameters())
    elif method == "layerconnect":
        assert others == {"layerconnect.theta", "layerconnect.bias"}
    # the analytic count of layerconnect.params is what the model really trains (head excluded)
    assert trainable_parameters(model, include_head=False) == count_params(method, D, L, model=base)
    head_numel = sum(p.numel() for n, p in model.named_parameters() if n in head)
    assert trainable_parameters(model) == trainable_parameters(model, include_head=False) + head_numel
    # the frozen base is really frozen: its parameters are untouched by a training step
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    if method in ("houlsby", "pfeiffer"):  # give the up-projections a gradient path worth seeing
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".up." in n:
                    p.normal_(0, 0.1)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(**_inputs(), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if n not in names:
            assert torch.equal(p, before[n]), f"{method}: frozen {n} changed"
            assert p.grad is None, f"{method}: frozen {n} received a gradient"
    changed = [n for n in names if not torch.equal(dict(model.named_parameters())[n], before[n])]
    assert changed, f"{method}: no trainable parameter moved"


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_lora_and_head(family):
    pytest.importorskip("peft")
    base = _tiny(family)
    model = apply_method(copy.deepcopy(base), "lora")
    names = _trainable_names(model)
    head = _head_names(model)
    # peft keeps a frozen copy of the head (original_module) next to the trained one
    frozen_copy = {n for n in head if ".original_module." in n}
    assert frozen_copy and not (frozen_copy & names)
    assert head - frozen_copy <= names and all(".modules_to_save." in n for n in head - frozen_copy)
    lora = names - head
    assert lora and all(".lora_A." in n or ".lora_B." in n for n in lora), sorted(lora)
    targets = lora_target_modules(base)
    assert targets == (["q_lin", "v_lin"] if family == "distilbert" else ["query", "value"])
    assert all(any(f".{t}." in n for t in targets) for n in lora)
    assert trainable_parameters(model, include_head=False) == count_params("lora", D, L) == L * 2 * 8 * 2 * D
    # still called like the HF model; LoRA's B starts at zero, so at init it computes the base model
    x = _inputs()
    with torch.no_grad():
        got, want = model(**x).logits, base(**x).logits
    assert got.shape == want.shape == (3, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_adapter_options(method):
    model = apply_method(_tiny("roberta"), method, reduction_factor=4, non_linearity="gelu")
    assert trainable_parameters(model, include_head=False) == count_params(method, D, L, reduction_factor=4)
    adapter = find_layers(model).layers[0].output_adapter
    assert adapter.down.out_features == D // 4 and isinstance(adapter.act, torch.nn.GELU)


def test_distilbert_head_includes_pre_classifier():
    model = apply_method(_tiny("distilbert"), "head")
    assert {n.split(".")[0] for n in _trainable_names(model)} == {"pre_classifier", "classifier"}


def test_bert_pooler_stays_frozen():
    model = apply_method(_tiny("bert"), "houlsby")
    pooler = [p for n, p in model.named_parameters() if ".pooler." in n]
    assert pooler and not any(p.requires_grad for p in pooler)


def test_layerconnect_options_reach_the_config():
    model = apply_method(_tiny("bert"), "layerconnect", num_anchors=3, positions="all")
    assert model.layerconnect.config == LayerConnectConfig(num_anchors=3, positions="all")
    assert trainable_parameters(model, include_head=False) == LayerConnectConfig(
        num_anchors=3, positions="all"
    ).num_params(D, L)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="method='adapter'.*houlsby"):
        apply_method(_tiny("bert"), "adapter")
    with pytest.raises(TypeError, match="reduction"):
        apply_method(_tiny("bert"), "houlsby", reducton_factor=8)
    with pytest.raises(TypeError, match="ForSequenceClassification"):
        apply_method(_tiny("bert").bert, "head")
    model = apply_method(_tiny("bert"), "houlsby")
    trained = _trainable_names(model)
    with pytest.raises(ValueError, match="already has bottleneck adapters"):
        apply_method(model, "pfeiffer")
    assert _trainable_names(model) == trained  # a refused call changes nothing
    assert set(METHODS) == {"layerconnect", "houlsby", "pfeiffer", "lora", "bitfit", "head", "full"}


def test_print_trainable_parameters(capsys):
    model = apply_method(_tiny("bert"), "pfeiffer")
    line = print_trainable_parameters(model)
    assert capsys.readouterr().out.strip() == line
    t = trainable_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    assert line == f"trainable params: {t:,d} || all params: {total:,d} || trainable%: {100 * t / total:.4f}"


# ----------------------------------------------------------------------------------------------
# bottleneck adapters: initialisation and equivalence with AdapterHub
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_adapters_are_identity_with_zero_up_projection_and_near_identity_at_init(method):
    base = _tiny("bert")
    model = apply_method(copy.deepcopy(base), method).eval()
    x = _inputs()
    with torch.no_grad():
        want = base(**x).logits
        near = model(**x).logits
        for n, p in model.named_parameters():
            if ".up." in n:
                p.zero_()
        exact = model(**x).logits
    # W_up = 0, b_up = 0: the adapter adds exactly zero, so the model is the base model to the bit
    assert torch.equal(exact, want)
    # AdapterHub's "bert" init (N(0, 0.02), zero bias) perturbs the output only slightly ...
    assert (near - want).abs().max() < 0.05 * want.abs().max()
    # ... but does perturb it (W_up is not zero-initialised)
    assert not torch.equal(near, want)


def test_adapter_init_statistics_match_adapterhub_bert_init():
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    model = apply_method(BertForSequenceClassification(cfg), "houlsby")
    for name in ("mh_adapter", "output_adapter"):
        adapter = getattr(model.bert.encoder.layer[0], name)
        assert adapter.down.weight.shape == (16, 256) and adapter.up.weight.shape == (256, 16)
        for lin in (adapter.down, adapter.up):
            assert torch.count_nonzero(lin.bias) == 0
            std = lin.weight.std().item()
            assert 0.018 < std < 0.022, std  # N(0, 0.02) on 4096 samples
            assert abs(lin.weight.mean().item()) < 0.002


def test_deepcopy_keeps_each_copy_on_its_own_adapters():
    model = apply_method(_tiny("bert"), "pfeiffer").eval()
    clone = copy.deepcopy(model)
    x = _inputs()
    with torch.no_grad():
        before = model(**x).logits
        for layer in find_layers(clone).layers:
            layer.output_adapter.up.weight.normal_(0, 1.0)
        assert torch.equal(model(**x).logits, before)  # the original's hooks still use its own adapters
        assert not torch.allclose(clone(**x).logits, before)


REQUIRE_ADAPTERS = os.environ.get("LC_REQUIRE_ADAPTERS") == "1"  # CI's second environment: skip = failure


def _adapterhub_model(base, method):
    if REQUIRE_ADAPTERS:
        import adapters
    else:
        adapters = pytest.importorskip("adapters")
    try:
        from adapters.methods.bottleneck import BottleneckLayer

        model = copy.deepcopy(base)
        adapters.init(model)
        model.add_adapter("x", config=ADAPTERHUB_CONFIG[method])
        model.set_active_adapters("x")
    except Exception as e:  # pragma: no cover - depends on the installed adapters/transformers pair
        if REQUIRE_ADAPTERS:
            raise
        pytest.skip(
            f"adapters {getattr(adapters, '__version__', '?')} does not work with transformers "
            f"{transformers.__version__}: {type(e).__name__}: {e}"
        )
    return model.eval(), BottleneckLayer


def _adapterhub_sites(model, bottleneck_cls):
    """{(layer index, "mh_adapter"|"output_adapter"): AdapterHub Adapter module}"""
    out = {}
    for i, layer in enumerate(find_layers(model).layers):
        for m in layer.modules():
            if isinstance(m, bottleneck_cls) and "x" in m.adapters:
                out[(i, m.location_key)] = m.adapters["x"]
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_same_parameter_count_as_adapterhub(family, method):
    base = _tiny(family)
    hub, bottleneck_cls = _adapterhub_model(base, method)
    hub_sites = _adapterhub_sites(hub, bottleneck_cls)
    hub_count = sum(p.numel() for a in hub_sites.values() for p in a.parameters())
    ours = apply_method(copy.deepcopy(base), method)
    assert trainable_parameters(ours, include_head=False) == hub_count == count_params(method, D, L)
    expected_sites = {"houlsby": {"mh_adapter", "output_adapter"}, "pfeiffer": {"output_adapter"}}[method]
    assert {k for _, k in hub_sites} == expected_sites and len(hub_sites) == L * len(expected_sites)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_same_outputs_as_adapterhub_given_the_same_weights(family, method):
    """A strong placement check: large random adapter weights, copied across, float64, eval mode."""
    base = _tiny(family).double()
    hub, bottleneck_cls = _adapterhub_model(base, method)
    hub.double()  # AdapterHub creates its adapters in the default dtype
    hub_sites = _adapterhub_sites(hub, bottleneck_cls)
    ours = apply_method(copy.deepcopy(base), method).eval()
    layers = find_layers(ours).layers
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for (i, key), hub_adapter in hub_sites.items():
            mine = getattr(layers[i], key)
            pairs = ((hub_adapter.adapter_down[0], mine.down), (hub_adapter.adapter_up, mine.up))
            for src, dst in pairs:
                for name in ("weight", "bias"):
                    value = torch.randn(getattr(src, name).shape, generator=g, dtype=torch.float64) * 0.3
                    getattr(src, name).copy_(value)
                    getattr(dst, name).copy_(value)
    x = _inputs()
    with torch.no_grad():
        got, want, plain = ours(**x).logits, hub(**x).logits, base(**x).logits
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert (got - plain).abs().max() > 1e-3  # the adapters do change the output: the check has teeth
    # training mode: the same dropout draws in the same order, so the adapter must sit after the
    # sub-layer's dropout exactly as in AdapterHub (before it, the masks would hit other values)
    ours.train(), hub.train()
    with torch.no_grad():
        torch.manual_seed(5)
        got = ours(**x).logits
        torch.manual_seed(5)
        want = hub(**x).logits
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
