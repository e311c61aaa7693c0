"""Model level: add_connectors on tiny random HF encoders, exactness at init, training, save/load."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from layerconnect import LayerConnectConfig, add_connectors, load_connectors, remove_connectors, save_connectors  # noqa: E402

VOCAB = 60


def _tiny(family, num_labels=3, hidden=32, layers=3):
    common = dict(vocab_size=VOCAB, num_labels=num_labels)
    if family == "bert":
        cfg = transformers.BertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=37, **common
        )
        cls = transformers.BertForSequenceClassification
    elif family == "roberta":
        cfg = transformers.RobertaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=40,
            pad_token_id=1,
            **common,
        )
        cls = transformers.RobertaForSequenceClassification
    elif family == "distilbert":
        cfg = transformers.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=2, hidden_dim=37, **common)
        cls = transformers.DistilBertForSequenceClassification
    elif family == "electra":
        cfg = transformers.ElectraConfig(
            embedding_size=16,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=37,
            **common,
        )
        cls = transformers.ElectraForSequenceClassification
    else:
        raise AssertionError(family)
    torch.manual_seed(0)
    return cls(cfg).eval()


FAMILIES = ["bert", "roberta", "distilbert", "electra"]


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return dict(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_init_is_bit_identical_then_training_changes_only_connectors_and_head(family):
    model = _tiny(family)
    batch = _batch()
    with torch.no_grad():
        base = model(**batch).logits
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    add_connectors(model, LayerConnectConfig(down_factor=4, positions="all"))
    with torch.no_grad():
        same = model(**batch).logits
    assert torch.equal(base, same), "connectors at zero init must not change the base model's output"

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"layerconnect.theta", "layerconnect.bias"} <= trainable
    assert all(n.startswith(("layerconnect.", "classifier.", "pre_classifier.")) for n in trainable), trainable

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([0, 1, 2])
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert model.layerconnect.theta.grad.abs().sum() > 0
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch).logits
    assert not torch.equal(after, base)
    for k, v in model.state_dict().items():
        if k.startswith(("layerconnect.", "classifier.", "pre_classifier.")):
            continue
        assert torch.equal(v, base_state[k]), f"frozen base parameter {k} changed"


@pytest.mark.parametrize("positions,expect", [(None, [1, 2]), ("all", [1, 2, 3]), ([0, 3], [0, 3])])
def test_trainable_parameter_count_matches_spec_formula(positions, expect):
    model = _tiny("bert")
    cfg = LayerConnectConfig(down_factor=4, num_anchors=3, seed_cols=10, positions=positions)
    add_connectors(model, cfg)
    d, r = 32, 8
    geom = model.layerconnect.geometry
    assert geom.positions == expect
    spec = 3 * r * 10 + len(expect) * d  # K·p·q + |P|·d with p = r
    head = sum(p.numel() for p in model.classifier.parameters())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == spec + head
    assert cfg.num_params(d, 3) == spec


def test_connector_positions_act_where_the_spec_says():
    """Position 0 acts on the embeddings, position L on the last layer's output."""
    model = _tiny("bert")
    captured = {}
    model.bert.encoder.layer[0].register_forward_pre_hook(
        lambda m, a, kw=None: captured.__setitem__("in0", a[0].clone()) if a else None
    )
    batch = _batch()
    with torch.no_grad():
        model(**batch)
    plain_in0 = captured["in0"]
    add_connectors(model, LayerConnectConfig(down_factor=4, positions=[0]))
    with torch.no_grad():
        model.layerconnect.bias.fill_(0.5)
        model.bert(**batch)
    assert torch.allclose(captured["in0"], plain_in0 + 0.5)
    remove_connectors(model)
    add_connectors(model, LayerConnectConfig(down_factor=4, positions=[3]))
    with torch.no_grad():
        model.layerconnect.bias.fill_(0.25)
        out2 = model.bert(**batch).last_hidden_state
        remove_connectors(model)
        plain = model.bert(**batch).last_hidden_state
    assert torch.allclose(out2, plain + 0.25)


def test_save_load_roundtrip_reproduces_logits(tmp_path):
    model = _tiny("bert")
    add_connectors(model, LayerConnectConfig(down_factor=4, num_anchors=3))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    batch = _batch()
    with torch.no_grad():
        want = model(**batch).logits
    save_connectors(model, str(tmp_path / "task"))
    assert not list(tmp_path.joinpath("task").glob(".tmp-*"))
    fresh = _tiny("bert")
    load_connectors(fresh, str(tmp_path / "task"))
    with torch.no_grad():
        got = fresh(**batch).logits
    assert torch.equal(got, want)
    # only trained tensors are stored: a few thousand numbers, not the base model
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "task" / "connectors.safetensors"))
    assert set(stored) == {"layerconnect.theta", "layerconnect.bias", "classifier.weight", "classifier.bias"}


def test_load_onto_other_geometry_is_a_clear_error(tmp_path):
    model = _tiny("bert")
    add_connectors(model, LayerConnectConfig(down_factor=4))
    save_connectors(model, str(tmp_path / "t"))
    with pytest.raises(ValueError, match="hidden size 32 and 3 layers"):
        load_connectors(_tiny("bert", hidden=48), str(tmp_path / "t"))
    with pytest.raises(ValueError, match="hidden size 32 and 3 layers"):
        load_connectors(_tiny("bert", layers=2), str(tmp_path / "t"))
    other_head = _tiny("bert", num_labels=5)
    with pytest.raises(ValueError, match="classifier.weight: saved shape"):
        load_connectors(other_head, str(tmp_path / "t"))


def test_config_errors_name_the_argument():
    model = _tiny("bert")
    with pytest.raises(ValueError, match="down_factor=5 must divide the hidden size d=32"):
        add_connectors(model, LayerConnectConfig(down_factor=5))
    with pytest.raises(ValueError, match=r"positions \[7\] are out of range"):
        add_connectors(model, LayerConnectConfig(down_factor=4, positions=[1, 7]))
    with pytest.raises(ValueError, match="seed_rows"):
        add_connectors(model, LayerConnectConfig(down_factor=4, seed_rows=9))
    with pytest.raises(ValueError, match="num_anchors must be a positive int"):
        LayerConnectConfig(num_anchors=0)


def test_unsupported_architecture_names_the_class_and_the_option():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    with pytest.raises(ValueError, match="Odd.*layers="):
        add_connectors(Odd(), LayerConnectConfig())


def test_torch_compile_fullgraph_model_with_connectors():
    model = _tiny("bert")
    add_connectors(model, LayerConnectConfig(down_factor=4))
    with torch.no_grad():
        model.layerconnect.theta.normal_()
    batch = _batch()
    with torch.no_grad():
        want = model(**batch).logits
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        got = compiled(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_compiled_model_next_to_a_compiled_base_with_shared_weights():
    """The documented recipe (README): connectors are forward hooks, which dynamo does not guard by default;
    a LayerConnect model sharing its base's weight tensors with an already compiled bare model needs
    ``skip_nnmodule_hook_guards = False`` to get its own graph."""
    import copy

    import torch._dynamo.config as dcfg

    base = _tiny("bert").bert.eval()
    memo = {id(t): t for t in list(base.parameters()) + list(base.buffers())}
    lc = add_connectors(
        copy.deepcopy(base, memo), LayerConnectConfig(down_factor=4, positions="all"), freeze_base=False
    )
    with torch.no_grad():
        lc.layerconnect.bias.normal_()
    ids = _batch()["input_ids"]
    old = dcfg.skip_nnmodule_hook_guards
    try:
        torch._dynamo.reset()
        dcfg.skip_nnmodule_hook_guards = False
        with torch.no_grad():
            torch.compile(base, fullgraph=True)(input_ids=ids)
            got = torch.compile(lc, fullgraph=True)(input_ids=ids).last_hidden_state
            want = lc(input_ids=ids).last_hidden_state
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    finally:
        dcfg.skip_nnmodule_hook_guards = old
        torch._dynamo.reset()
