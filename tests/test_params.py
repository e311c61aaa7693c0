"""Parameter counts and the ``layerconnect params`` command (offline)."""

import json

import pytest
import torch

from layerconnect import LayerConnectConfig
from layerconnect.cli import main
from layerconnect.params import (
    TABLE_METHODS,
    bert_param_counts,
    build_table,
    count_params,
    model_param_counts,
)
from layerconnect.utils.paths import default_model_path

transformers = pytest.importorskip("transformers")


def _adapter(d, m):
    down = d * m + m  # Linear(d, m)
    up = m * d + d  # Linear(m, d)
    return down + up


@pytest.mark.parametrize("d,L", [(768, 12), (1024, 24), (384, 6), (36, 5)])
def test_baseline_formulas(d, L):
    m = d // 16
    assert count_params("houlsby", d, L) == L * 2 * _adapter(d, m)
    assert count_params("pfeiffer", d, L) == L * _adapter(d, m)
    assert count_params("lora", d, L) == L * 2 * (8 * d + d * 8)  # A (8×d) and B (d×8) on query and value
    assert count_params("head", d, L) == 0
    assert count_params("houlsby", d, L, reduction_factor=8) == L * 2 * _adapter(d, d // 8)
    assert count_params("lora", d, L, lora_r=4) == L * 2 * 2 * d * 4


def test_bert_base_published_counts():
    """The figures quoted in the brief and the literature for BERT-base / BERT-large."""
    assert count_params("houlsby", 768, 12) == 1_789_056
    assert count_params("pfeiffer", 768, 12) == 894_528
    assert count_params("lora", 768, 12) == 294_912
    assert bert_param_counts(768, 12, 3072, 30522)["full"] == 109_482_240
    assert bert_param_counts(1024, 24, 4096, 30522)["full"] == 335_141_888


@pytest.mark.parametrize("d,L", [(768, 12), (1024, 24)])
def test_layerconnect_count_and_the_11_75_percent_bound(d, L):
    # SPEC §3 defaults written out: r = d/8, K = 2, p = r, q = d/2, P = {1..L-1}
    r = d // 8
    expected = 2 * r * (d // 2) + (L - 1) * d
    assert count_params("layerconnect", d, L) == expected == LayerConnectConfig().num_params(d, L)
    ratio = count_params("layerconnect", d, L) / count_params("houlsby", d, L)
    assert ratio <= 0.1175
    table = build_table(hidden=d, layers=L)
    assert table.counts["layerconnect"] == expected
    assert table.layerconnect_ratio("houlsby") == pytest.approx(100 * ratio, rel=1e-12)
    # options change the count as the formula says
    assert count_params("layerconnect", d, L, lc={"positions": "all"}) == expected + d
    assert count_params("layerconnect", d, L, lc=LayerConnectConfig(num_anchors=3)) == expected + r * (d // 2)


@pytest.mark.parametrize("pooler", [True, False])
def test_bert_layout_formula_matches_a_real_model(pooler):
    """Odd sizes so a wrong term cannot hide behind a coincidence."""
    cfg = transformers.BertConfig(
        vocab_size=53,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=41,
        max_position_embeddings=29,
        type_vocab_size=3,
    )
    model = transformers.BertModel(cfg, add_pooling_layer=pooler)
    real_full = sum(p.numel() for p in model.parameters())
    real_bias = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    got = bert_param_counts(24, 3, 41, 53, max_positions=29, type_vocab=3, pooler=pooler)
    assert got == {"full": real_full, "bitfit": real_bias}


def test_bert_layout_matches_hf_at_bert_base_and_large():
    for d, L, ffn, heads in ((768, 12, 3072, 12), (1024, 24, 4096, 16)):
        cfg = transformers.BertConfig(
            hidden_size=d, num_hidden_layers=L, intermediate_size=ffn, num_attention_heads=heads
        )
        with torch.device("meta"):  # shapes only: no memory
            model = transformers.BertForSequenceClassification(cfg)
        measured = model_param_counts(model)
        assert (measured["d"], measured["L"]) == (d, L)
        assert bert_param_counts(d, L, ffn, cfg.vocab_size) == {"full": measured["full"], "bitfit": measured["bitfit"]}
        assert build_table(preset="bert-base" if d == 768 else "bert-large").counts["full"] == measured["full"]


def test_minilm_preset_counts_the_real_checkpoint():
    cfg = transformers.AutoConfig.from_pretrained(default_model_path())
    table = build_table(preset="minilm")
    assert (table.d, table.L) == (cfg.hidden_size, cfg.num_hidden_layers)
    expected = bert_param_counts(
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.max_position_embeddings,
        cfg.type_vocab_size,
    )
    assert table.counts["full"] == expected["full"] and table.counts["bitfit"] == expected["bitfit"]
    assert table.counts["houlsby"] == count_params("houlsby", cfg.hidden_size, cfg.num_hidden_layers)
    # --model with the same directory gives the same numbers
    assert build_table(model=default_model_path()).counts == table.counts


def test_model_path_for_a_non_bert_family(tmp_path):
    cfg = transformers.DistilBertConfig(
        vocab_size=61, dim=32, n_layers=3, n_heads=2, hidden_dim=45, max_position_embeddings=31
    )
    cfg.save_pretrained(tmp_path)
    table = build_table(model=str(tmp_path))
    real = transformers.DistilBertModel(cfg)
    assert (table.d, table.L) == (32, 3)
    assert table.counts["full"] == sum(p.numel() for p in real.parameters())
    # DistilBERT: BERT layer layout, no token types, no pooler
    assert table.counts["full"] == bert_param_counts(32, 3, 45, 61, 31, type_vocab=0, pooler=False)["full"]
    assert table.counts["bitfit"] == sum(p.numel() for n, p in real.named_parameters() if n.endswith("bias"))


def _run(capsys, *argv):
    rc = main(["params", *argv])
    assert rc == 0
    return capsys.readouterr().out


def test_cli_default_is_bert_base(capsys):
    out = _run(capsys)
    assert "exclude the task head" in out and "(excl. head)" in out
    for n in (1_789_056, 894_528, 294_912, 109_482_240, LayerConnectConfig().num_params(768, 12)):
        assert f"{n:,d}" in out
    table = build_table()
    assert f"LayerConnect = {table.layerconnect_ratio('houlsby'):.2f} % of Houlsby" in out
    assert f"{table.layerconnect_ratio('pfeiffer'):.2f} % of Pfeiffer" in out
    for method in TABLE_METHODS:
        assert f"\n{method} " in out


def test_cli_geometry_flags_and_json(capsys, tmp_path):
    path = tmp_path / "sub" / "params.json"
    out = _run(
        capsys,
        "--hidden",
        "1024",
        "--layers",
        "24",
        "--intermediate",
        "4096",
        "--num-anchors",
        "3",
        "--positions",
        "all",
        "--json",
        str(path),
    )
    lc = LayerConnectConfig(num_anchors=3, positions="all").num_params(1024, 24)
    assert f"{lc:,d}" in out and f"{count_params('houlsby', 1024, 24):,d}" in out
    data = json.loads(path.read_text())
    rows = {r["method"]: r for r in data["methods"]}
    assert set(rows) == set(TABLE_METHODS) and data["head_excluded"] is True
    assert rows["layerconnect"]["params"] == lc
    assert rows["full"]["params"] == bert_param_counts(1024, 24, 4096, 30522)["full"]
    assert data["layerconnect_vs_houlsby"] == pytest.approx(100 * lc / rows["houlsby"]["params"])
    assert data["layerconnect_geometry"]["K"] == 3 and data["layerconnect_geometry"]["positions"] == list(range(1, 25))
    assert not [p for p in path.parent.iterdir() if p.name != "params.json"]  # no temp file left behind


def test_cli_explicit_positions_list(capsys):
    out = _run(capsys, "--preset", "bert-base", "--positions", "0,6,12")
    assert f"{LayerConnectConfig(positions=[0, 6, 12]).num_params(768, 12):,d}" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--hidden", "768"], "--hidden needs --layers"),
        (["--layers", "12"], "--layers needs --hidden"),
        (["--hidden", "100", "--layers", "3"], "down_factor=8 must divide"),
        (["--preset", "bert-base", "--hidden", "768"], "give only one of --model, --preset, --hidden"),
        (["--positions", "1,x"], "--positions"),
        (["--model", "/nonexistent/model-dir"], "cannot load the config"),
    ],
)
def test_cli_errors_name_the_problem(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["params", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_explains_the_table(capsys):
    with pytest.raises(SystemExit) as e:
        main(["params", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "EXCLUDE the task head" in out and "--preset" in out and "--json" in out
