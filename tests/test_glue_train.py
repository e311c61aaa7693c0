"""`layerconnect train` / `eval` end to end on a tiny random BERT and a tiny GLUE directory."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip("datasets", reason="the GLUE layer needs `datasets` (pip install -e \".[glue]\")")
pytest.importorskip("evaluate", reason="the GLUE layer needs `evaluate` (pip install -e \".[glue]\")")

from layerconnect.cli import main as cli
from layerconnect.glue import TASKS
from layerconnect.glue import training
from layerconnect.glue.training import (COMPLETE_FILE, RunConfig, WEIGHTS_FILE, build_model, load_trainable,
                                        read_run, train)

from test_glue_data import PUNCT, WORDS, write_tiny_glue

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model dir, glue dir): a 2-layer hidden-32 random BERT with a WordPiece tokenizer over WORDS."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    mdir = root / "tiny-bert"
    mdir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PUNCT
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(root / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(mdir))
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                     vocab_size=len(vocab), max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(mdir))
    gdir = root / "glue"
    write_tiny_glue(str(gdir))
    return str(mdir), str(gdir)


def _args(tiny, out, task="rte", method="layerconnect", *extra):
    mdir, gdir = tiny
    return ["train", "--task", task, "--method", method, "--model", mdir, "--data-dir", gdir, "--output-dir", str(out),
            "--batch-size", "8", "--max-length", "32", "--lr", "1e-2", "--seed", "0", "--no-progress",
            "--logging-steps", "1", *extra]


def _cfg(tiny, out, **kw):
    mdir, gdir = tiny
    base = dict(task="rte", method="layerconnect", model=mdir, data_dir=gdir, output_dir=str(out), batch_size=8,
                max_length=32, lr=1e-2, seed=0, progress=False, logging_steps=1)
    base.update(kw)
    return RunConfig(**base)


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(os.path.join(path, WEIGHTS_FILE))


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_train_then_eval_reproduces_saved_metrics(tiny, tmp_path, task, capsys):
    out = tmp_path / "run"
    assert cli(_args(tiny, out, task, "layerconnect", "--max-steps", "6", "--save-steps", "3")) == 0
    m = json.loads((out / "metrics.json").read_text())
    t = TASKS[task]
    assert set(m["scores"]) == set(t.metrics) and m["eval_split"] == "dev" and m["global_steps"] == 6
    assert all(v == v for v in m["scores"].values())  # no NaN
    assert [h["step"] for h in m["history"]] == [3, 6]
    assert m["command"].startswith(f"layerconnect train --task {task} --method layerconnect")
    assert {"torch", "transformers", "datasets"} <= set(m["versions"])
    # the checkpoint holds exactly the trainable parameters (seed bank, biases, head) and nothing else
    fresh = build_model(tiny[0], t, "layerconnect", {}, 0)
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    saved = _tensors(str(out))
    assert set(saved) == trainable and m["trainable_params"] == sum(saved[n].numel() for n in saved)
    assert saved["layerconnect.theta"].abs().sum() > 0  # moved off its zero initialisation
    ckpts = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-"))
    assert ckpts and all(os.path.isfile(out / c / COMPLETE_FILE) for c in ckpts)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3, 4, 5, 6]
    capsys.readouterr()
    assert cli(["eval", "--checkpoint", str(out), "--output", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["split"] == "dev"
    for k, v in m["scores"].items():
        assert ev["scores"]["dev"][k] == pytest.approx(v, rel=1e-6, abs=1e-6)
    # the LayerConnect artefact loads onto a fresh base and gives the same logits as the run's weights
    from layerconnect import load_connectors
    from transformers import AutoModelForSequenceClassification

    kw = {"num_labels": t.num_labels}
    a = AutoModelForSequenceClassification.from_pretrained(tiny[0], **kw)
    load_connectors(a, str(out / "connectors"))
    b = build_model(tiny[0], t, "layerconnect", {}, 123)
    load_trainable(b, str(out))
    ids = torch.randint(5, 20, (3, 9))
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(input_ids=ids).logits, b(input_ids=ids).logits, rtol=0, atol=0)


def test_two_dev_splits_mnli(tiny, tmp_path):
    out = tmp_path / "mnli"
    m = train(_cfg(tiny, out, task="mnli", max_steps=2, train_subsample=16))
    assert set(m["scores"]) == {"matched_accuracy", "mismatched_accuracy"}
    assert m["score"] == pytest.approx((m["scores"]["matched_accuracy"] + m["scores"]["mismatched_accuracy"]) / 2)
    assert cli(["eval", "--checkpoint", str(out), "--output", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["scores"]["matched"]["accuracy"] == pytest.approx(m["scores"]["matched_accuracy"], abs=1e-9)
    assert ev["scores"]["mismatched"]["accuracy"] == pytest.approx(m["scores"]["mismatched_accuracy"], abs=1e-9)
    assert ev["score"] == pytest.approx(m["score"], abs=1e-9)


def test_heldout_run_never_touches_dev(tiny, tmp_path, monkeypatch):
    from layerconnect.glue import data

    seen = []
    orig = data.read_glue_tsv
    monkeypatch.setattr(data, "read_glue_tsv", lambda task, path: seen.append(os.path.basename(path)) or orig(task, path))
    m = train(_cfg(tiny, tmp_path / "h", max_steps=2, heldout=10, train_subsample=16))
    assert seen == ["train.tsv"] and m["eval_split"] == "heldout"
    assert m["eval_sizes"] == {"heldout": 10} and m["train_size"] == 16
    assert read_run(str(tmp_path / "h"))["heldout"] == 10


def test_resume_after_interrupt_reaches_the_uninterrupted_weights(tiny, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    kw = dict(max_steps=6, save_steps=3)
    full = train(_cfg(tiny, tmp_path / "full", **kw))
    assert full["global_steps"] == 6

    class CtrlCAt(TrainerCallback):  # a real SIGINT, delivered while step 2 ends
        def on_step_end(self, args, state, control, **k):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    orig = training._callbacks
    monkeypatch.setattr(training, "_callbacks", lambda *a: [CtrlCAt()] + orig(*a))
    res = train(_cfg(tiny, tmp_path / "cut", **kw))
    assert res["interrupted"] and res["checkpoint"].endswith("checkpoint-2")
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(training, "_callbacks", orig)
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        train(_cfg(tiny, tmp_path / "cut", **kw))
    with pytest.raises(ValueError, match="different run"):
        train(_cfg(tiny, tmp_path / "cut", resume=True, max_steps=6, save_steps=3, lr=5e-3))
    resumed = train(_cfg(tiny, tmp_path / "cut", resume=True, **kw))
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_steps"] == 6
    a = _tensors(str(tmp_path / "full" / "checkpoint-6"))
    b = _tensors(str(tmp_path / "cut" / "checkpoint-6"))
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0, msg=lambda s, n=n: f"{n}: {s}")
    assert full["scores"] == resumed["scores"]


@pytest.mark.parametrize("method", training.METHODS)
def test_each_method_trains_only_what_it_claims(tiny, tmp_path, method):
    from layerconnect.baselines import trainable_parameters

    t = TASKS["rte"]
    before = {n: p.detach().clone() for n, p in build_model(tiny[0], t, method, {}, 0).named_parameters()}
    m, trainer = train(_cfg(tiny, tmp_path / method, method=method, max_steps=2, train_subsample=16,
                            lr=1e-2 if method != "full" else 1e-3), return_trainer=True)
    model = trainer.model
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    claimed = {n for n, p in after.items() if p.requires_grad}
    changed = {n for n in after if not torch.equal(after[n].detach(), before[n])}
    assert changed and changed <= claimed, f"{method} changed frozen parameters {sorted(changed - claimed)[:5]}"
    assert set(_tensors(str(tmp_path / method))) == claimed
    assert m["trainable_params"] == trainable_parameters(model) == sum(after[n].numel() for n in claimed)
    head = {n for n in claimed if "classifier" in n}
    assert head and head & changed  # every method trains the task head
    if method == "head":
        assert claimed == head
    if method == "bitfit":
        assert all(n.endswith("bias") for n in claimed - head)
    if method == "layerconnect":
        assert claimed - head == {"layerconnect.theta", "layerconnect.bias"}
    if method == "full":
        assert claimed == set(after)


def test_bad_arguments_are_named(tiny, tmp_path):
    with pytest.raises(SystemExit):
        cli(_args(tiny, tmp_path / "x", "rte", "houlsby", "--positions", "all"))
    with pytest.raises(Exception, match="does not exist"):
        train(_cfg(tiny, tmp_path / "y", data_dir=str(tmp_path / "missing")))


def test_torchrun_two_processes_agree_and_only_rank0_writes(tiny, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29617", "-m", "layerconnect.cli",
           *_args(tiny, out, "rte", "layerconnect", "--max-steps", "3")]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d): trainable sha256 ([0-9a-f]{64})", p.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["trainable_sha256"] == digests["0"]
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3]  # one writer, not two
    assert p.stdout.count('"trainable_params"') == 1  # the summary is printed by rank 0 only
    # rank 0 writes everything; the only per-rank files are Trainer's RNG states (to resume each rank exactly)
    files = {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs}
    top = {f for f in files if os.sep not in f}
    assert top == {"metrics.json", "log.jsonl", "curves.png", "run.json", WEIGHTS_FILE}
    ck = {f.split(os.sep, 1)[1] for f in files if f.startswith("checkpoint-3" + os.sep)}
    assert ck == {COMPLETE_FILE, "optimizer.pt", "scheduler.pt", "run.json", WEIGHTS_FILE, "trainer_state.json",
                  "rng_state_0.pth", "rng_state_1.pth"}
