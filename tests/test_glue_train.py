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

pytest.importorskip("datasets", reason='the GLUE layer needs `datasets` (pip install -e ".[glue]")')

from test_glue_data import PUNCT, WORDS, write_tiny_glue  # noqa: E402

from layerconnect.apps.glue import TASKS  # noqa: E402
from layerconnect.apps.glue import run as glue_run  # noqa: E402
from layerconnect.apps.glue.checkpoint import COMPLETE_FILE, WEIGHTS_FILE, load_trainable, read_run  # noqa: E402
from layerconnect.apps.glue.model import build_model  # noqa: E402
from layerconnect.apps.glue.options import DEFAULT_POOLING, TrainOptions  # noqa: E402
from layerconnect.apps.glue.run import train  # noqa: E402
from layerconnect.baselines import METHODS  # noqa: E402
from layerconnect.cli import main as cli  # noqa: E402

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
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=len(vocab),
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(str(mdir))
    gdir = root / "glue"
    write_tiny_glue(str(gdir))
    return str(mdir), str(gdir)


def _args(tiny, out, task="rte", method="layerconnect", *extra):
    mdir, gdir = tiny
    return [
        "train",
        "--task",
        task,
        "--method",
        method,
        "--model",
        mdir,
        "--data-dir",
        gdir,
        "--output-dir",
        str(out),
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--lr",
        "1e-2",
        "--seed",
        "0",
        "--no-progress",
        "--logging-steps",
        "1",
        *extra,
    ]


def _cfg(tiny, out, **kw):
    mdir, gdir = tiny
    base = dict(
        task="rte",
        method="layerconnect",
        model=mdir,
        data_dir=gdir,
        output_dir=str(out),
        batch_size=8,
        max_length=32,
        lr=1e-2,
        seed=0,
        progress=False,
        logging_steps=1,
    )
    base.update(kw)
    return TrainOptions(**base)


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
    assert m["selection"]["split"] == "heldout" and m["selection"]["rows"] == 4  # 10 % of 40 train rows
    assert [h["step"] for h in m["selection"]["history"]] == [3, 6] and m["selection"]["best_step"] in (3, 6)
    assert m["command"].startswith(f"layerconnect train --task {task} --model")
    assert "--max-steps 6" in m["command"] and "--method" not in m["command"]  # defaults are not repeated
    assert {"torch", "transformers", "datasets"} <= set(m["versions"])
    assert m["majority_dev_score"] >= 0 and m["constant_train_loss"] > 0 and m["final_train_loss"] > 0
    # the checkpoint holds exactly the trainable parameters (seed bank, biases, head) and nothing else
    fresh = build_model(tiny[0], t, "layerconnect", {}, 0, DEFAULT_POOLING)
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    saved = _tensors(str(out))
    assert set(saved) == trainable and m["trainable_params_with_head"] == sum(saved[n].numel() for n in saved)
    head = sum(saved[n].numel() for n in saved if n.startswith("classifier."))
    assert m["head_params"] == head and m["trainable_params"] == m["trainable_params_with_head"] - head
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
    from transformers import AutoModelForSequenceClassification

    from layerconnect import load_connectors

    kw = {"num_labels": t.num_labels}
    a = AutoModelForSequenceClassification.from_pretrained(tiny[0], **kw)
    load_connectors(a, str(out / "connectors"))
    b = build_model(tiny[0], t, "layerconnect", {}, 123, DEFAULT_POOLING)
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


def test_selection_uses_heldout_rows_and_dev_is_scored_once_at_the_end(tiny, tmp_path, monkeypatch):
    """Every evaluation during training runs on the held-out slice of train; dev is evaluated exactly once,
    after training, on the checkpoint the held-out score chose."""
    evaluated = []
    orig_make = glue_run.make_trainer_class

    def spying_class():
        cls = orig_make()

        class Spy(cls):
            def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
                ds = eval_dataset if eval_dataset is not None else self.eval_dataset
                evaluated.append((metric_key_prefix, len(ds), self.state.global_step, self.state.best_global_step))
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

        return Spy

    monkeypatch.setattr(glue_run, "make_trainer_class", spying_class)
    m = train(_cfg(tiny, tmp_path / "h", max_steps=4, save_steps=2, heldout=10, train_subsample=16))
    during = [e for e in evaluated if e[0] == "eval"]
    dev = [e for e in evaluated if e[0] == "dev"]
    assert [e[1] for e in during] == [10, 10] and [e[2] for e in during] == [2, 4]
    assert len(dev) == 1 and dev[0][1] == 16 and dev[0][2] == 4  # once, after the last step
    assert m["selection"]["rows"] == 10 and m["train_size"] == 16 and m["dev_sizes"] == {"dev": 16}
    assert m["best_checkpoint"].endswith(f"checkpoint-{m['selection']['best_step']}")
    assert read_run(str(tmp_path / "h"))["heldout"] == 10
    # without a held-out slice nothing is selected: the last step is scored on dev, still once
    evaluated.clear()
    m0 = train(_cfg(tiny, tmp_path / "h0", max_steps=2, heldout=0, train_subsample=16))
    assert [e[0] for e in evaluated] == ["dev"] and m0["selection"]["split"] is None


def test_finished_run_is_not_overwritten_without_asking(tiny, tmp_path):
    out = tmp_path / "done"
    first = train(_cfg(tiny, out, max_steps=2))
    for d in os.listdir(out):
        if d.startswith("checkpoint-"):
            shutil.rmtree(out / d)  # a finished run whose checkpoints were cleaned up
    with pytest.raises(ValueError, match="holds a finished run.*--overwrite"):
        train(_cfg(tiny, out, max_steps=2, lr=5e-3))
    assert json.loads((out / "metrics.json").read_text())["trainable_sha256"] == first["trainable_sha256"]
    again = train(_cfg(tiny, out, max_steps=3, lr=5e-3, overwrite=True))
    assert again["global_steps"] == 3
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines() if "loss" in json.loads(x)]
    assert steps == [1, 2, 3]  # the log holds the new run only


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_readouts_are_head_parameters_and_round_trip(tiny, tmp_path, pooling):
    from transformers import AutoModelForSequenceClassification

    from layerconnect import load_connectors
    from layerconnect.method.readout import readout_kind

    out = tmp_path / pooling
    m = train(_cfg(tiny, out, max_steps=2, pooling=pooling))
    pooler = 32 * 32 + 32 if pooling == "pooler" else 0
    assert m["pooling"] == pooling and m["head_params"] == 32 * 2 + 2 + pooler
    assert m["trainable_params"] == m["trainable_params_with_head"] - m["head_params"]
    meta = json.loads((out / "connectors" / "layerconnect_config.json").read_text())
    assert meta["readout"] == pooling
    a = AutoModelForSequenceClassification.from_pretrained(tiny[0], num_labels=2)
    load_connectors(a, str(out / "connectors"))
    assert readout_kind(a) == pooling
    b = build_model(tiny[0], TASKS["rte"], "layerconnect", {}, 7, pooling)
    load_trainable(b, str(out))
    ids = torch.randint(5, 20, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding must not enter the mean
    a.eval(), b.eval()
    with torch.no_grad():
        la, lb = a(input_ids=ids, attention_mask=mask).logits, b(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(la, lb, rtol=0, atol=0)
        if pooling == "mean":  # the masked row equals the same row without its padding
            short = b(input_ids=ids[:1, :6], attention_mask=mask[:1, :6]).logits
            torch.testing.assert_close(short, lb[:1], rtol=1e-5, atol=1e-6)


def test_resume_after_interrupt_reaches_the_uninterrupted_weights(tiny, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    kw = dict(max_steps=6, save_steps=3)
    full = train(_cfg(tiny, tmp_path / "full", **kw))
    assert full["global_steps"] == 6

    class CtrlCAt(TrainerCallback):  # a real SIGINT, delivered while step 2 ends
        def on_step_end(self, args, state, control, **k):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    orig = glue_run.callbacks
    monkeypatch.setattr(glue_run, "callbacks", lambda *a: [CtrlCAt()] + orig(*a))
    res = train(_cfg(tiny, tmp_path / "cut", **kw))
    assert res["interrupted"] and res["checkpoint"].endswith("checkpoint-2")
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(glue_run, "callbacks", orig)
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        train(_cfg(tiny, tmp_path / "cut", **kw))
    stale = tmp_path / "cut" / "checkpoint-2" / ".tmp-killed-save.safetensors"  # what a kill -9 mid-save leaves
    stale.write_bytes(b"half a file")
    with pytest.raises(ValueError, match="different run"):
        train(_cfg(tiny, tmp_path / "cut", resume=True, max_steps=6, save_steps=3, lr=5e-3))
    resumed = train(_cfg(tiny, tmp_path / "cut", resume=True, **kw))
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_steps"] == 6
    assert not stale.exists(), "a killed save's temporary file was left behind"
    a = _tensors(str(tmp_path / "full" / "checkpoint-6"))
    b = _tensors(str(tmp_path / "cut" / "checkpoint-6"))
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0, msg=lambda s, n=n: f"{n}: {s}")
    assert full["scores"] == resumed["scores"]
    logged = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    keys = [(r["step"], tuple(sorted(k for k in r if k not in ("step", "epoch", "time")))) for r in logged]
    assert len(keys) == len(set(keys)), "a resumed run logged a step twice"


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_only_what_it_claims(tiny, tmp_path, method):
    from layerconnect.baselines import trainable_parameters

    t = TASKS["rte"]
    before = {
        n: p.detach().clone() for n, p in build_model(tiny[0], t, method, {}, 0, DEFAULT_POOLING).named_parameters()
    }
    m, trainer = train(
        _cfg(
            tiny,
            tmp_path / method,
            method=method,
            max_steps=2,
            train_subsample=16,
            lr=1e-2 if method != "full" else 1e-3,
        ),
        return_trainer=True,
    )
    model = trainer.model
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    claimed = {n for n, p in after.items() if p.requires_grad}
    changed = {n for n in after if not torch.equal(after[n].detach(), before[n])}
    assert changed and changed <= claimed, f"{method} changed frozen parameters {sorted(changed - claimed)[:5]}"
    assert set(_tensors(str(tmp_path / method))) == claimed
    assert m["trainable_params_with_head"] == trainable_parameters(model) == sum(after[n].numel() for n in claimed)
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
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_port",
        "29617",
        "-m",
        "layerconnect.cli",
        *_args(tiny, out, "rte", "layerconnect", "--max-steps", "3"),
    ]
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
    assert ck == {
        COMPLETE_FILE,
        "optimizer.pt",
        "scheduler.pt",
        "run.json",
        WEIGHTS_FILE,
        "trainer_state.json",
        "rng_state_0.pth",
        "rng_state_1.pth",
    }
