"""Smoke runs of the benchmarks' code paths on tiny shapes: the JSON schema, positive timings, the
printed table, the plots, the CLI forwarding. No timing is asserted (2 shared cores are too noisy);
what is asserted is structure, and the one deterministic figure: LayerConnect's connectors save
exactly one x-sized tensor each for backward."""

import json
import math
import random

import pytest
import torch

from layerconnect.apps.bench import connector as bc
from layerconnect.apps.bench import e2e as be
from layerconnect.apps.bench import harness as H


def _positive(v):
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_harness_interleaves_and_reports_per_call_times():
    calls = []

    def make(name, cost):
        def run(i):
            calls.append((name, i))
            # a real amount of work, so the clock sees something
            torch.randn(cost, cost).sum()

        return run

    setups = []
    variants = [
        H.Variant("a", make("a", 64)),
        H.Variant("b", make("b", 96)),
        H.Variant("c", lambda st: make("c", 32)(st[1]), setup=lambda i: setups.append(i) or ("prepared", i)),
    ]
    stats = H.measure_interleaved(
        variants, device=torch.device("cpu"), n_buffers=3, warmup=1, repeats=5, min_sample_s=0.0, rng=random.Random(1)
    )
    assert set(stats) == {"a", "b", "c"}
    for st in stats.values():
        assert len(st.samples) == 5 and all(s > 0 for s in st.samples)
        assert st.min <= st.q1 <= st.median <= st.q3 <= max(st.samples)
    # every variant walked the rotated buffers in turn
    for name in "abc":
        idx = [i for n, i in calls if n == name]
        assert idx[:4] == [0, 1, 2, 0]
    assert setups[:4] == [0, 1, 2, 0]
    # the order of variants differs between repeats (shuffled), so no variant always runs last
    timed = [n for n, _ in calls[3:]]  # after the 3 warm-up calls
    rounds = [tuple(timed[k : k + 3]) for k in range(0, 15, 3)]
    assert len(set(rounds)) > 1
    with pytest.raises(ValueError, match="unique"):
        H.measure_interleaved([variants[0], variants[0]], device=torch.device("cpu"), n_buffers=1)


def test_rotation_count_exceeds_target_and_atomic_writes(tmp_path):
    assert H.rotation_count(10 << 20, 64 << 20) * (10 << 20) >= 64 << 20
    assert H.rotation_count(1 << 30, 64 << 20) == 2
    assert H.last_level_cache_bytes() > 0
    H.write_json_atomic(tmp_path / "sub" / "x.json", {"a": 1})
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.json"]  # no temporary left behind
    table = H.format_table(["name", "ms"], [["x", "1.5"], ["longer", "12.25"]])
    assert table.splitlines()[0].startswith("name") and "12.25" in table


def test_connector_bench_smoke(tmp_path, capsys):
    out = tmp_path / "c"
    rc = bc.main(
        [
            "--n",
            "256,512",
            "--d",
            "64",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--compile",
            "none",
            "--rotate-mb",
            "1",
            "--min-sample-ms",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "connector.json").read_text())
    assert res["schema"] == bc.SCHEMA
    assert (out / "connector.png").stat().st_size > 0
    for key in ("env", "config", "skipped", "checks", "results", "headline"):
        assert key in res
    assert res["env"]["torch"] == torch.__version__ and res["env"]["cpu_count"] >= 1
    assert all(c["ok"] for c in res["checks"]) and res["checks"]
    variants = {r["variant"] for r in res["results"]}
    assert {"copy", "eager-ref", "eager-cached", "op:reference"} <= variants
    assert "op:triton" not in variants  # the CPU interpreter is not timed by default
    import lc_kernels

    if "cpu" in lc_kernels.available_backends():
        assert "op:cpu" in variants
    for r in res["results"]:
        assert r["N"] in (256, 512) and r["d"] == 64 and r["r"] == 8 and r["q"] == 32
        assert r["pass"] in bc.PASSES
        for k in ("median_ms", "q1_ms", "q3_ms", "min_ms", "gbps", "x_floor"):
            assert _positive(r[k]), (k, r)
        assert r["bytes"] == bc.BYTES_FACTOR[r["pass"]] * r["N"] * r["d"] * 4
        if r["variant"] != "copy":
            assert _positive(r["speedup_vs_eager"])
        assert r["repeats"] == 2 and r["n_buffers"] >= 2
    # three passes for every connector variant, the copy floor once per shape
    assert sum(r["variant"] == "copy" for r in res["results"]) == 2
    assert sum(r["variant"] == "eager-ref" for r in res["results"]) == 6
    assert "median ms" in printed and "eager-ref" in printed and "x floor" in printed


def test_connector_bench_refuses_a_bad_grid():
    with pytest.raises(SystemExit, match="--d"):
        bc.main(["--d", "60", "--n", "256", "--compile", "none", "--no-progress"])
    with pytest.raises(SystemExit, match="--max-n"):
        bc.main(["--n", "4096", "--max-n", "1024", "--no-progress"])


def test_e2e_bench_smoke(tmp_path, capsys):
    out = tmp_path / "e"
    rc = be.main(
        [
            "--models",
            "minilm",
            "--batch",
            "1",
            "--seq",
            "16",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "e2e.json").read_text())
    assert res["schema"] == be.SCHEMA
    assert (out / "e2e.png").stat().st_size > 0
    variants = [r["variant"] for r in res["results"]]
    assert {"base", "houlsby", "pfeiffer", "lora", "lora-merged", "lc:reference"} <= set(variants)
    assert "lc:triton" not in variants
    for r in res["results"]:
        assert _positive(r["median_ms"]) and _positive(r["seq_per_s"]) and r["repeats"] == 2
        assert math.isfinite(r["overhead_pct"])
        if r["variant"] == "base":
            assert r["overhead_pct"] == 0.0 and r["trainable_params"] == 0
        else:
            assert r["trainable_params"] > 0
    # every method is active: its logits differ from the base model's (random non-zero parameters)
    assert res["checks"] and all(c["active"] for c in res["checks"])
    assert "overhead vs base" in printed


def test_e2e_memory_smoke(tmp_path, capsys):
    # one spawned process per method: keep the list short
    out = tmp_path / "m"
    rc = be.main(
        [
            "--memory-only",
            "--memory-shape",
            "minilm,2,16",
            "--methods",
            "houlsby,layerconnect",
            "--backends",
            "reference",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "e2e.json").read_text())
    assert res["schema"] == be.SCHEMA and res["results"] == []
    mem = res["memory"]
    rows = {r["variant"]: r for r in mem["rows"]}
    assert set(rows) == {"base", "houlsby", "lc:reference"}
    for r in rows.values():
        assert r["peak_step_bytes"] > 0 and r["saved_bytes_grad_to_embeddings"] > 0
    # the fused op keeps only x per connector for backward: exactly one x-sized tensor each
    for k, r in rows.items():
        if k.startswith("lc:"):
            assert r["extra_saved_x_tensors_per_connector"] == pytest.approx(1.0, abs=1e-9)
    assert (
        rows["houlsby"]["extra_saved_grad_to_emb_bytes_vs_base"]
        > rows["lc:reference"]["extra_saved_grad_to_emb_bytes_vs_base"]
    )
    assert "training-step memory" in printed


def test_cli_forwards_and_rejects_options_of_the_other_benchmark(tmp_path, capsys):
    from layerconnect.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--e2e", "--max-n", "1024"])
    assert "--max-n: an option of the connector benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--memory"])
    assert "--memory: an option of the end-to-end benchmark" in capsys.readouterr().err
    rc = main(
        [
            "bench",
            "--n",
            "256",
            "--d",
            "64",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--compile",
            "none",
            "--rotate-mb",
            "1",
            "--min-sample-ms",
            "0",
            "--no-progress",
            "--no-plot",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "connector.json").read_text())["schema"] == bc.SCHEMA
    assert not (tmp_path / "connector.png").exists()
