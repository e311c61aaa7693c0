"""The GLUE sweep's decisions (protocol v3) on made-up results: what is chosen is chosen on the held-out
selection score only (dev never), collapsed runs cannot win and extend the grid, and the gap's bootstrap
interval behaves."""

import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("glue_sweep", os.path.join(REPO, "benchmarks", "glue_sweep.py"))
gs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gs)


def _done(results, s, sel, dev, collapsed=False):
    results["runs"][s["id"]] = {
        "spec": s,
        "status": "done",
        "selection_score": sel,
        "score": dev,
        "collapsed": collapsed,
        "final_train_loss": 0.3,
        "constant_train_loss": 0.6,
        "majority_dev_score": 0.0,
        "trainable_params": 1,
        "head_params": 1,
    }


def _finish_screens(results, readout_sel, variant_sel):
    specs, chosen, _ = gs.readout_screen(results)
    for s in specs:
        _done(results, s, readout_sel[s["pooling"]], dev=100.0 - readout_sel[s["pooling"]])
    specs, chosen, _ = gs.readout_screen(results)
    vspecs, _, _ = gs.variant_screen(results, chosen)
    for s in vspecs:
        name = next(k for k, o in gs.LC_VARIANTS.items() if o == s["options"])
        if gs._done(results, s) is None:
            _done(results, s, variant_sel[name], dev=0.0)
    return chosen


def test_choices_use_the_selection_score_never_dev():
    results = {"runs": {}}
    specs, ch = gs.plan(results)
    assert ch["readout"] is None and all(s["stage"] == "screen" for s in specs)
    # dev prefers "mean" (see _finish_screens: dev = 100 - selection), selection prefers "cls"
    chosen = _finish_screens(
        results, {"mean": 50.0, "cls": 70.0, "pooler": 60.0}, {"all": 1.0, "inner": 2.0, "0..L": 9.0, "all+LN": 3.0}
    )
    assert chosen == "cls"
    specs, ch = gs.plan(results)
    assert ch["readout"] == "cls"
    # the "all" variant's runs came from the readout screen, so its held-out score is the readout screen's
    assert ch["variant"] == "all" and ch["variant_scores"]["all"] == 70.0
    grid = [s for s in specs if s["stage"] == "grid"]
    # the screen runs at the chosen readout (LayerConnect 1e-2, Houlsby 1e-3 on CoLA and MRPC) are reused
    assert len(grid) == 2 * 3 * len(gs.TASKS) - 4
    assert all(s["pooling"] == "cls" for s in grid)


def test_collapsed_runs_cannot_win_and_extend_the_grid_once():
    results = {"runs": {}}
    specs, lr = gs.grid(results, "grid", "rte", "houlsby", "mean", None)
    assert [s["lr"] for s in specs] == gs.LR_GRID["houlsby"] and lr is None
    for s, sel in zip(specs, (55.0, 70.0, 60.0)):
        _done(results, s, sel, dev=0.0, collapsed=(s["lr"] == 1e-3))
    specs, lr = gs.grid(results, "grid", "rte", "houlsby", "mean", None)
    assert lr is None and specs[-1]["lr"] == 9e-3  # 1e-3 scored best but collapsed; 3e-3, an edge, leads
    _done(results, specs[-1], 50.0, dev=0.0)
    _, lr = gs.grid(results, "grid", "rte", "houlsby", "mean", None)
    assert lr == 3e-3
    results = {"runs": {}}
    specs, _ = gs.grid(results, "grid", "rte", "houlsby", "mean", None)
    for s in specs:
        _done(results, s, 50.0, dev=0.0, collapsed=True)
    specs, lr = gs.grid(results, "grid", "rte", "houlsby", "mean", None)
    assert [s["lr"] for s in specs][-1] == pytest.approx(gs.LR_GRID["houlsby"][0] / 3) and lr is None
    _done(results, specs[-1], 40.0, dev=0.0, collapsed=False)
    _, lr = gs.grid(results, "grid", "rte", "houlsby", "mean", None)
    assert lr == pytest.approx(1e-4)


def test_an_edge_winner_extends_the_grid_once_beyond_that_edge():
    for scores, added, chosen in [
        ((70.0, 60.0, 50.0), 1e-4, 1e-4),  # the lowest LR wins: a third of it is added, and wins
        ((50.0, 60.0, 70.0), 9e-3, 3e-3),  # the highest wins: three times it is added, and loses
        ((60.0, 70.0, 50.0), None, 1e-3),  # the middle wins: nothing is added
    ]:
        results = {"runs": {}}
        specs, _ = gs.grid(results, "grid", "rte", "houlsby", "cls", None)
        for s, sel in zip(specs, scores):
            _done(results, s, sel, dev=0.0)
        specs, lr = gs.grid(results, "grid", "rte", "houlsby", "cls", None)
        if added is None:
            assert len(specs) == 3 and lr == chosen
            continue
        assert [s["lr"] for s in specs[3:]] == [added] and lr is None  # exact: the id reads lr0.0001 / lr0.009
        assert specs[3]["id"] == f"rte-houlsby-lr{added:g}-cls-s42"
        _done(results, specs[3], 75.0 if chosen == added else 40.0, dev=0.0)
        specs, lr = gs.grid(results, "grid", "rte", "houlsby", "cls", None)
        assert len(specs) == 4 and lr == chosen  # once: a winning extension is not extended again


def test_a_held_out_tie_goes_to_the_lower_final_training_loss():
    for losses, chosen in [((0.5, 0.4, 0.3), 3e-3), ((0.3, 0.2, 0.4), 1e-3)]:
        results = {"runs": {}}
        specs, _ = gs.grid(results, "grid", "rte", "houlsby", "cls", None)
        for s, sel, loss in zip(specs, (60.0, 70.0, 70.0), losses):
            _done(results, s, sel, dev=0.0)
            results["runs"][s["id"]]["final_train_loss"] = loss
        specs, lr = gs.grid(results, "grid", "rte", "houlsby", "cls", None)
        if chosen == 3e-3:  # the tie is won by the top edge, so the edge rule adds 9e-3 first
            assert lr is None and specs[-1]["lr"] == 9e-3
            _done(results, specs[-1], 50.0, dev=0.0)
            specs, lr = gs.grid(results, "grid", "rte", "houlsby", "cls", None)
        else:
            assert len(specs) == 3
        assert lr == chosen


def test_bootstrap_interval():
    a = {"x": [60.0, 62.0, 61.0], "y": [70.0, 71.0, 69.0]}
    b = {"x": [58.0, 59.0, 60.0], "y": [72.0, 73.0, 71.0]}
    gap, ci = gs.bootstrap_gap(a, b)
    assert gap == pytest.approx(((61 - 59) + (70 - 72)) / 2)
    assert ci[0] < gap < ci[1] and ci[1] - ci[0] < 4
    gap1, ci1 = gs.bootstrap_gap({"x": [60.0]}, {"x": [58.0, 59.0]})
    assert gap1 == pytest.approx(1.5) and ci1 is None


def test_commands_are_reproducible_and_relative():
    s = gs.spec("grid", "cola", "layerconnect", 1e-2, options=gs.LC_VARIANTS["all+LN"])
    argv = gs.train_argv(s, os.path.join("..", "shared", "glue"), os.path.join("runs", "x"), 1)
    assert argv[:4] == ["layerconnect", "train", "--task", "cola"] and "--train-layernorm" in argv
    assert "--epochs" in argv and argv[argv.index("--epochs") + 1] == str(gs.EPOCHS["cola"])
    assert not any(a.startswith("/") for a in argv)


def test_report_draws_every_stage_and_estimates_time_left(tmp_path):
    import json

    results = {"runs": {}, "sweep_commands": []}
    _finish_screens(
        results, {"mean": 50.0, "cls": 70.0, "pooler": 60.0}, {"all": 1.0, "inner": 2.0, "0..L": 9.0, "all+LN": 3.0}
    )
    for _ in range(3):  # the grids (middle LRs win: no edge extension), then the seeds they unlock
        specs, _ = gs.plan(results)
        for s in specs:
            small_grid = s["stage"] == "ablations" and s["method"] == "houlsby" and s["seed"] == 42
            if gs._done(results, s) is None and (s["stage"] in ("grid", "seeds") or small_grid):
                _done(results, s, sel=float(s["lr"] == gs.LR_GRID[s["method"]][1]), dev=0.0)
    for r in results["runs"].values():  # dev: Houlsby one point above LayerConnect on every task and seed
        r.update(train_size=1000, wall_time_s=100.0 * r["spec"]["epochs"])
        r["score"] = 60.0 + (r["spec"]["method"] == "houlsby")
    assert gs.protocol_size() == len(gs.plan(results)[0]) + sum(len(gs.LR_GRID[m]) for m in gs.BASELINES) * len(
        gs.TASKS
    ) - sum(1 for s in gs.plan(results)[0] if s["stage"] == "baselines")
    hours = gs.remaining_hours(results, jobs=2)
    pending = [s for s in gs.plan(results)[0] if gs._done(results, s) is None]
    assert pending and hours == pytest.approx(sum(0.1 * 1000 * s["epochs"] for s in pending) / 2 / 3600)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    out, fig = tmp_path / "r.md", tmp_path / "r.png"
    assert gs.main(["report", "--results", str(path), "--out", str(out), "--figure", str(fig)]) == 0
    text = out.read_text()
    assert "![screens" in text and "(r.png)" in text and "LayerConnect − Houlsby" in text
    assert "## Stage 3" in text and "| houlsby lr 0.003 | rte |" in text
    assert (
        "## Ablations" in text and "| LayerConnect q=d, lr" in text and "| Houlsby, bottleneck 2, lr 0.0003 |" in text
    )
    stage5 = text.split("## Stage 5")[1]
    assert "| head lr 0.001 | sst2 | (not run yet) |" in stage5 and "| full lr 0.0001 | mrpc |" in stage5
    assert stage5.index("| head lr") < stage5.index("| bitfit lr") < stage5.index("| full lr")
    assert "LayerNorms stay frozen" in text and "all+LN 1 (100.0 % of Houlsby's)" in text
    assert "-1.00 points; 95 % bootstrap interval [-1.00, -1.00]. Our goal is met" in text.replace("−", "-")
    assert fig.stat().st_size > 10_000
    assert "**Status:** " in text and "Status: complete" not in text
    while pending := [s for s in gs.plan(results)[0] if gs._done(results, s) is None]:  # the baselines' grids
        for s in pending:
            _done(results, s, sel=float(s["lr"] == gs.LR_GRID[s["method"]][1]), dev=50.0)
    path.write_text(json.dumps(results))
    assert gs.main(["report", "--results", str(path), "--out", str(out), "--figure", str(fig)]) == 0
    text = out.read_text()
    assert f"**Status: complete.** All {gs.protocol_size()} runs are finished. " in text
    assert "### Quality against size" in text and "| full | 1 / 2 | 100.0 | 50.0 | -10.0 | no |" in text


def test_houlsby_grid_waits_for_the_readout_only():
    results = {"runs": {}}
    specs, _, _ = gs.readout_screen(results)
    for s in specs:
        _done(results, s, {"mean": 50.0, "cls": 70.0, "pooler": 60.0}[s["pooling"]], dev=0.0)
    specs, ch = gs.plan(results)
    assert ch["readout"] == "cls" and ch["variant"] is None
    stages = [s["stage"] for s in specs]
    assert stages.index("grid") > max(i for i, st in enumerate(stages) if st == "screen")  # screens go first
    grid = [s for s in specs if s["stage"] == "grid"]
    assert {s["method"] for s in grid} == {"houlsby"} and all(s["pooling"] == "cls" for s in grid)
    # the readout screen's Houlsby runs at lr 1e-3 are grid runs too, listed once
    assert len(grid) == 3 * len(gs.TASKS) - 2 and len({s["id"] for s in specs}) == len(specs)


def test_ablations_follow_the_choices_and_stay_out_of_the_main_scores():
    results = {"runs": {}}
    _finish_screens(
        results, {"mean": 50.0, "cls": 70.0, "pooler": 60.0}, {"all": 1.0, "inner": 2.0, "0..L": 9.0, "all+LN": 3.0}
    )
    specs, ch = gs.plan(results)
    assert ch["variant"] == "all"
    # before LayerConnect's LRs are chosen only the small adapter's grid (it needs the readout only) is planned
    assert {s["method"] for s in specs if s["stage"] == "ablations"} == {"houlsby"}
    for _ in range(2):  # the grid, then its edge extension
        for s in specs:
            if s["stage"] == "grid" and gs._done(results, s) is None:
                _done(results, s, sel=s["lr"] * 1e5, dev=50.0)  # the highest LR wins, over the screens too
        specs, ch = gs.plan(results)
    stages = [s["stage"] for s in specs]
    abl = [s for s in specs if s["stage"] == "ablations"]
    assert max(i for i, x in enumerate(stages) if x == "seeds") < stages.index("ablations")
    assert max(i for i, x in enumerate(stages) if x == "ablations") < stages.index("baselines")
    lc = [s for s in abl if s["method"] == "layerconnect"]
    assert {s["task"] for s in abl} == set(gs.SCREEN_TASKS) and len(abl) == 12
    assert all(s["lr"] == 9e-2 and s["pooling"] == "cls" for s in lc)  # 3e-2 won its grid: 9e-2 was added
    assert [s["options"] for s in lc[:3]] == [
        {"positions": "all", "seed_cols": 384},
        {"positions": "all", "num_anchors": 6},
        {"positions": "all", "down_factor": 4},
    ]
    argv = gs.train_argv(lc[0], "data", "out", None)
    assert argv[argv.index("--method-option") + 1] == "seed_cols=384" and "--seed-cols" not in argv
    argv = gs.train_argv(lc[1], "data", "out", None)
    assert argv[argv.index("--num-anchors") + 1] == "6" and "--method-option" not in argv
    small = [s for s in abl if s["method"] == "houlsby"]
    assert [s["lr"] for s in small[:3]] == gs.LR_GRID["houlsby"] and small[0]["options"] == {"reduction_factor": 192}
    for s in small:
        _done(results, s, sel=99.0, dev=99.0)
    _, ch = gs.plan(results)
    assert ch["lr"][("cola", "houlsby")] == 9e-3
    assert gs._main_scores(results, ch, "houlsby")["cola"] == [50.0]  # the small adapter's 99 stays out


def test_parameter_column_uses_the_chosen_readout_and_a_two_class_head():
    results = {"runs": {}}
    ch = {"readout": "cls", "variant": "0..L"}
    rows = [  # (task, pooling, trainable, with head): the pooler run comes first and must not be read
        ("cola", "pooler", 226080, 226080 + 148610),
        ("stsb", "cls", 226080, 226080 + 385),
        ("mrpc", "cls", 226080, 226080 + 770),
    ]
    for task, pooling, n, with_head in rows:
        s = gs.spec("screen", task, "houlsby", 1e-3, seed=42, pooling=pooling)
        _done(results, s, sel=1.0, dev=1.0)
        results["runs"][s["id"]].update(
            trainable_params=n, head_params=with_head - n, trainable_params_with_head=with_head
        )
    assert gs._params_cell(results, ch, "houlsby") == "226,080 / 226,850"
    assert gs._params_cell(results, ch, "layerconnect") == "—"


def test_a_run_that_ignores_the_stop_signal_is_killed_and_counts_as_interrupted(tmp_path):
    import signal
    import subprocess
    import sys
    import types

    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"up"  # the handler is in place before the signal
    s = gs.spec("grid", "rte", "houlsby", 1e-3, pooling="cls")
    job = types.SimpleNamespace(
        s=s, proc=proc, t0=0.0, out=str(tmp_path / s["id"]), shown="x", log=open(tmp_path / "log", "a")
    )
    proc.send_signal(signal.SIGINT)
    gs._stop(job, grace_s=1.0)
    assert proc.returncode is not None and job.killed
    results = {"runs": {}}
    gs._finish(job, results, types.SimpleNamespace(results=str(tmp_path / "r.json")))
    rec = results["runs"][s["id"]]
    assert rec["status"] == "interrupted" and rec["attempts"] == 0  # not a failure: retried without limit


def test_a_run_starts_only_if_it_is_expected_to_end_before_the_stop():
    def rec(task, method, secs):
        return {"spec": {"task": task, "method": method}, "status": "done", "last_attempt_s": secs}

    results = {
        "runs": {
            "a": rec("mrpc", "layerconnect", 2000.0),
            "b": rec("mrpc", "layerconnect", 3000.0),
            "c": rec("mrpc", "layerconnect", 9000.0),
            "d": rec("mrpc", "houlsby", 100.0),
            "e": {"spec": {"task": "cola", "method": "houlsby"}, "status": "interrupted", "last_attempt_s": 50.0},
        }
    }
    lc = {"task": "mrpc", "method": "layerconnect"}
    assert gs.expected_s(results, lc) == pytest.approx(1.1 * 3000.0)  # the median, not the mean
    assert gs.expected_s(results, {"task": "mrpc", "method": "lora"}) == pytest.approx(1.1 * 2500.0)  # task only
    assert gs.expected_s(results, {"task": "cola", "method": "houlsby"}) is None  # unfinished runs do not count
    assert gs.fits(results, lc, now=0.0, deadline=3301.0)
    assert not gs.fits(results, lc, now=0.0, deadline=3299.0)
    assert gs.fits(results, lc, now=0.0, deadline=None)
    assert gs.fits(results, {"task": "cola", "method": "houlsby"}, now=0.0, deadline=1.0)  # unknown: it fits


def test_time_estimates_scale_a_methods_first_run_on_a_task_and_ignore_resumed_runs():
    def rec(task, method, secs, resumed=False, size=1000):
        cmd = "layerconnect train --task " + task + (" --resume" if resumed else "")
        return {
            "spec": {"task": task, "method": method, "epochs": 1},
            "status": "done",
            "last_attempt_s": secs,
            "wall_time_s": secs,
            "train_size": size,
            "command": cmd,
        }

    results = {
        "runs": {
            "a": rec("cola", "houlsby", 1000.0),
            "b": rec("cola", "full", 2000.0),
            "c": rec("cola", "full", 2500.0),
            "d": rec("cola", "full", 50.0, resumed=True),  # its last attempt only: must not count
            "e": rec("mrpc", "houlsby", 600.0),
        }
    }
    # full fine-tuning on cola: the median of its whole runs (with the resumed run's 50 s it would be 2000)
    assert gs.expected_s(results, {"task": "cola", "method": "full"}) == pytest.approx(1.1 * 2250.0)
    results["runs"]["b"]["last_attempt_s"] = results["runs"]["b"]["wall_time_s"] = 3000.0
    # cola: houlsby 1000, full 3000 and 2500 -> task median 2500, full's median 2750: factor 1.1
    assert gs.expected_s(results, {"task": "mrpc", "method": "full"}) == pytest.approx(1.1 * 600.0 * 1.1)
    assert gs.expected_s(results, {"task": "mrpc", "method": "lora"}) == pytest.approx(1.1 * 600.0)  # no factor
    del results["runs"]["a"], results["runs"]["b"], results["runs"]["c"]
    assert gs.expected_s(results, {"task": "cola", "method": "full"}) is None  # only a resumed run: unknown
    results["runs"].update(a=rec("cola", "houlsby", 1000.0), b=rec("cola", "full", 3000.0))
    results["runs"]["c"] = rec("cola", "full", 2500.0)
    mrpc_full = {"id": "mrpc-full", "task": "mrpc", "method": "full", "epochs": 1}
    hours = gs.remaining_hours(results, jobs=1, specs=[mrpc_full])  # runs not planned yet cost the same
    assert hours == pytest.approx(600.0 / 1000 * 1.1 * 1000 * gs.protocol_size() / 3600)  # as expected_s


def test_a_sweep_refuses_to_continue_on_other_code():
    results = {"runs": {"a": {"status": "done", "source_commit": "abc123"}, "b": {"status": "failed"}}}
    gs.check_same_code(results, "abc123")  # same code: fine
    with pytest.raises(SystemExit, match="snapshot --commit abc123"):
        gs.check_same_code(results, "def456")
    with pytest.raises(SystemExit, match="ran code abc123"):
        gs.check_same_code(results, "working tree")
    gs.check_same_code({"runs": {"b": {"status": "interrupted", "source_commit": "x"}}}, "y")  # nothing finished


def test_snapshot_of_an_unknown_commit_names_the_argument_and_keeps_the_old_copy(tmp_path):
    old = tmp_path / "src" / "SOURCE_COMMIT"
    old.parent.mkdir()
    old.write_text("abc123\n")
    with pytest.raises(SystemExit, match="--commit no-such-rev: not a commit"):
        gs.main(["snapshot", "--commit", "no-such-rev", "--source", str(tmp_path / "src")])
    assert old.read_text() == "abc123\n"


def test_ablation_report_keeps_its_table_columns_and_says_what_each_change_does(tmp_path):
    import json
    import re

    results = {"runs": {}, "sweep_commands": []}
    _finish_screens(
        results, {"mean": 50.0, "cls": 70.0, "pooler": 60.0}, {"all": 1.0, "inner": 2.0, "0..L": 9.0, "all+LN": 3.0}
    )
    for _ in range(2):  # the grid (middle LR wins), then the seeds and ablations it unlocks
        specs, ch = gs.plan(results)
        for s in specs:
            if gs._done(results, s) is None and s["stage"] == "grid":
                _done(results, s, sel=10.0 * (s["lr"] == gs.LR_GRID[s["method"]][1]), dev=20.0)
    specs, ch = gs.plan(results)
    abl = [s for s in specs if s["stage"] == "ablations"]
    lc = {gs._ablation_name(s, ch): s for s in abl if s["method"] == "layerconnect" and s["task"] == "cola"}
    # LayerConnect's chosen CoLA run is the readout screen's (held-out 70, dev 30): see _finish_screens
    _done(results, lc["K=|P|"], sel=73.0, dev=28.5)
    small = [s for s in abl if s["method"] == "houlsby" and s["task"] == "cola"]
    for s, sel in zip(small, (60.0, 72.0, 90.0)):  # the highest held-out score collapsed: it cannot be chosen
        _done(results, s, sel=sel, dev=25.0, collapsed=sel == 90.0)
    results["runs"][small[0]["id"]]["score"] = 99.0  # a better dev score never chooses either
    path, out = tmp_path / "r.json", tmp_path / "r.md"
    path.write_text(json.dumps(results))
    assert gs.main(["report", "--results", str(path), "--out", str(out), "--figure", str(tmp_path / "f.png")]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| LayerConnect K=")]
    # five cells, as in the header: the bars in the name are escaped
    assert rows and all(len(re.findall(r"(?<!\\)\|", line)) == 6 for line in rows)
    assert r"| LayerConnect K=\|P\|, lr 0.01 | cola | 73.0 | 28.5 | 1 |" in text
    line = next(x for x in text.splitlines() if x.startswith("cola, held-out / dev"))
    assert "K=|P| +3.0 / -1.5" in line.replace("−", "-")
    assert (
        "Houlsby at bottleneck 2 (lr 0.001) +2.0 / -5.0" in line.replace("−", "-")
        and "Houlsby (chosen) +0.0 / +0.0" in line
    )
    assert "q=d" not in line  # not run yet: nothing said


def test_report_never_prints_minus_zero():
    assert gs._one_decimal(-1e-12) == "0.0" and gs._one_decimal(-0.06) == "-0.1" and gs._one_decimal(2.04) == "2.0"


def test_verdict_places_the_interval_against_the_claim_and_names_the_tasks():
    b = {t: [60.0, 60.0, 60.0] for t in gs.TASKS}
    close = {t: [59.5, 59.5, 59.5] for t in gs.TASKS}
    assert gs.verdict(close, b, (-0.9, -0.1)).startswith("Our goal is met:")
    assert gs.verdict(close, b, (-2.0, -0.1)).startswith("The paper's claim holds:")
    assert gs.verdict(close, b, (-3.0, -0.1)).startswith("Undecided:")
    far = dict(close, cola=[50.0, 50.0, 50.0])
    text = gs.verdict(far, b, (-5.7, -3.9))
    assert text.startswith("The paper's claim does not hold here:")
    assert "largest loss first): cola -10.0, " in text.replace("−", "-")
    # a task with fewer seeds than planned, or a missing task, makes it provisional
    short = dict(far, rte=[40.0, 41.0])
    assert gs.verdict(short, b, (-5.7, -3.9)).startswith("The paper's claim does not hold here so far")
    assert gs.verdict({"cola": [1.0, 2.0, 3.0]}, b, None).startswith("No verdict yet so far")


def _complete_until_baselines(results, share, lead, dev_lead=None):
    """Finish every run before stage 5: middle LRs win their grids; LayerConnect's screen-task runs score
    held-out 70 / dev 30 at seed 42 and ±2 at seeds 43-44, the full adapter the same at seed 42 (the readout
    screen's run) and 10 more at seeds 43-44 (a lead of 20/3 on average), each LayerConnect
    ablation ``share[name]`` more, the small adapter ``lead`` more (±1 over its seeds; on dev ``dev_lead``
    more, when given)."""
    dev_lead = lead if dev_lead is None else dev_lead
    offset = {42: 0.0, 43: -2.0, 44: 2.0}
    while True:
        specs, ch = gs.plan(results)
        todo = [s for s in specs if s["stage"] != "baselines" and gs._done(results, s) is None]
        if not todo:
            return ch
        for s in todo:
            if s["stage"] == "grid" and s["seed"] == 42:
                sel = 10.0 * (s["lr"] == gs.LR_GRID[s["method"]][1])
                if s["options"] == gs.SMALL_HOULSBY:
                    sel = 0.0
                _done(results, s, sel=sel, dev=20.0)
            elif s["stage"] == "seeds":
                up = 10.0 if s["method"] == "houlsby" else 0.0
                _done(results, s, sel=70.0 + up + offset[s["seed"]], dev=30.0 + up + offset[s["seed"]])
            elif s["method"] == "layerconnect":
                x = share[gs._ablation_name(s, ch)]
                _done(results, s, sel=70.0 + x, dev=30.0 + x)
            elif s["seed"] == 42:  # the small adapter's grid: its middle LR wins
                x, y = (lead, dev_lead) if s["lr"] == gs.LR_GRID["houlsby"][1] else (-50.0, -50.0)
                _done(results, s, sel=70.0 + x, dev=30.0 + y)
            else:
                e = offset[s["seed"]] / 2
                _done(results, s, sel=70.0 + lead + e, dev=30.0 + dev_lead + e)


@pytest.mark.parametrize(
    "share, lead, dev_lead, expected",
    [
        ({"q=d": -1, "K=|P|": 1, "r=d/4": -3}, 6.0, 6.0, "So the gap is not the price of the hypernetwork's sharing"),
        ({"q=d": -1, "K=|P|": 5, "r=d/4": -3}, 6.0, 6.0, "sharing: K=|P| gains +5.0 held-out"),
        ({"q=d": -1, "K=|P|": 1, "r=d/4": -3}, 0.0, 0.0, "Neither the sharing nor the connector's form"),
        ({"q=d": -1, "K=|P|": 1, "r=d/4": -3}, 6.0, 1.0, "clear only on held-out data"),
    ],
)
def test_the_ablation_reading_waits_for_the_small_adapters_seeds_and_follows_the_numbers(
    share, lead, dev_lead, expected
):
    results = {"runs": {}}
    _finish_screens(
        results, {"mean": 50.0, "cls": 70.0, "pooler": 60.0}, {"all": 1.0, "inner": 2.0, "0..L": 9.0, "all+LN": 3.0}
    )
    ch = _complete_until_baselines(results, share, lead, dev_lead)
    small = [s for s in gs.ablations(results, ch) if s["options"] == gs.SMALL_HOULSBY]
    # the grid's three LRs at seed 42, then seeds 43 and 44 at the LR it chose, per screen task
    assert sorted((s["task"], s["seed"]) for s in small if s["seed"] != 42) == [
        ("cola", 43),
        ("cola", 44),
        ("mrpc", 43),
        ("mrpc", 44),
    ]
    assert all(s["lr"] == gs.LR_GRID["houlsby"][1] for s in small if s["seed"] != 42)
    text = gs.ablation_reading(results, ch)
    # seed noise of a two-task mean of run differences: sqrt(2 * 2 * var) / 2 with var = 4 -> 2.0
    assert "q=d -1.0 / -1.0, K=|P| " in text and "differ by ±2.0 / ±2.0" in text
    assert expected in text
    if lead == dev_lead == 6.0 and share["K=|P|"] < 4:
        assert "held-out +6.0 [" in text and "its dev lead is 90 % of the full adapter's" in text
    if dev_lead == 1.0:  # +1 on dev of the full adapter's 20/3: most of the lead is its budget
        assert "dev +1.0 [" in text and "On dev its lead is +1.0 of the full adapter's +6.7" in text
        assert text.endswith("not settled at these seeds.")
    # a missing seed of the small adapter withholds the reading
    del results["runs"][next(s["id"] for s in small if s["seed"] == 44)]
    assert gs.ablation_reading(results, ch) is None


def test_a_chosen_cell_whose_whole_grid_collapsed_is_marked_in_the_headline():
    ch = {"readout": "cls", "variant": "all", "lr": {}}
    results = {"runs": {}}
    for task, collapsed in (("rte", True), ("mrpc", False)):
        specs, _ = gs.grid(results, "baselines", task, "head", "cls", None)
        for s in specs:
            _done(results, s, sel=s["lr"] * 1000, dev=50.0, collapsed=collapsed)
        specs, ch["lr"][(task, "head")] = gs.grid(results, "baselines", task, "head", "cls", None)
        for s in specs:  # the collapse rule's extension (rte) or the edge rule's (mrpc)
            if gs._done(results, s) is None:
                _done(results, s, sel=0.0, dev=50.0, collapsed=collapsed)
        _, ch["lr"][(task, "head")] = gs.grid(results, "baselines", task, "head", "cls", None)
    assert gs._chosen_collapsed(results, ch, "head", "rte") and not gs._chosen_collapsed(results, ch, "head", "mrpc")
    lines = []
    gs._main_tables(lines.append, results, ch)
    row = next(x for x in lines if x.startswith("| head |"))
    assert row.count("(collapsed)") == 1 and "50.0 (collapsed) | 50.0 |" in row  # rte, then mrpc
    assert any(x.startswith("(collapsed): every LR") for x in lines)
    results["runs"] = {k: r for k, r in results["runs"].items() if r["spec"]["task"] != "rte"}
    lines = []
    gs._main_tables(lines.append, results, ch)
    assert not any(x.startswith("(collapsed)") for x in lines)  # no marked cell, no footnote


def test_quality_against_size_finds_the_front_and_waits_for_every_task():
    ch = {"readout": "cls", "variant": "all", "lr": {}}
    results = {"runs": {}}
    # method: (trainable params, dev score per task, seeds). bitfit is larger and worse than layerconnect;
    # lora is larger and better (front); pfeiffer is larger than lora and worse (dominated by lora)
    table = {
        "layerconnect": (100, 60.0, (42, 43)),
        "bitfit": (150, 58.0, (42,)),
        "lora": (400, 62.0, (42,)),
        "pfeiffer": (500, 61.0, (42,)),
        "houlsby": (1000, 64.0, (42, 43)),
    }
    for m, (n, score, seeds) in table.items():
        for t in gs.TASKS:
            ch["lr"][(t, m)] = 1e-3
            for seed in seeds:
                opts = gs.LC_VARIANTS["all"] if m == "layerconnect" else None
                s = gs.spec("grid", t, m, 1e-3, seed=seed, pooling="cls", options=opts)
                _done(
                    results, s, sel=1.0, dev=score + (seed - 42) * (2.0 if (t, m) == ("cola", "layerconnect") else 0.0)
                )
                results["runs"][s["id"]].update(trainable_params=n, head_params=10)
    rows = gs.quality_vs_size(results, ch)
    assert [(m, nh, by) for m, _, nh, _, by in rows] == [
        ("layerconnect", 110, None),
        ("bitfit", 160, "layerconnect"),
        ("lora", 410, None),
        ("pfeiffer", 510, "lora"),
        ("houlsby", 1010, None),
    ]
    assert rows[0][3] == pytest.approx(60.0 + 1.0 / len(gs.TASKS))  # cola's seeds: 60 and 62
    # one seed's average strays by sqrt(var of cola's two seeds) / tasks = sqrt(2) / 5
    assert gs._one_seed_sd(results, ch, "layerconnect") == pytest.approx(2**0.5 / len(gs.TASKS))
    assert gs._one_seed_sd(results, ch, "bitfit") is None  # one seed: no spread to measure
    lines = []
    gs._size_table(lines.append, results, ch)
    text = "\n".join(lines)
    assert "| bitfit | 150 / 160 | 15.0 | 58.0 | -2.2 | no |" in text
    assert "| layerconnect | 100 / 110 | 10.0 | 60.2 | — | yes |" in text
    assert "bitfit is dominated by layerconnect. pfeiffer is dominated by lora." in text
    assert "layerconnect 0.3, houlsby 0.0 points" in text
    # a method missing a task is left out, not averaged over fewer tasks
    results["runs"] = {
        k: r
        for k, r in results["runs"].items()
        if r["spec"]["id"] != gs.spec("grid", "rte", "lora", 1e-3, seed=42, pooling="cls")["id"]
    }
    assert [x[0] for x in gs.quality_vs_size(results, ch)] == ["layerconnect", "bitfit", "pfeiffer", "houlsby"]
    assert gs.quality_vs_size(results, ch)[2][4] is None  # pfeiffer is on the front without lora
