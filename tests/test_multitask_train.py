"""Joint multi-task training on tiny GLUE-layout data: sampling, the mixed-batch loss's gradients
against single-task models, and artefacts that load_connectors / MultiTaskModel / serve can load."""

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_multitask_common import make_artefact, make_base, single_task_model  # noqa: E402

from layerconnect import load_connectors  # noqa: E402
from layerconnect.apps.glue.joint import Example, TaskSampler, batch_loss, sampling_probs, train_joint  # noqa: E402
from layerconnect.apps.glue.options import DEFAULT_POOLING, TrainOptions  # noqa: E402
from layerconnect.apps.serve import Predictor  # noqa: E402
from layerconnect.cli import main  # noqa: E402
from layerconnect.multitask import MultiTaskModel  # noqa: E402

WORDS = "good bad fine awful great dull bright grim warm cold fun sad".split()


def _write(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\t".join(header) + "\n")
        for r in rows:
            fh.write("\t".join(str(v) for v in r) + "\n")


def make_glue(root, n_train=(24, 10, 14), n_dev=6):
    g = torch.Generator().manual_seed(0)

    def sent(k):
        idx = torch.randint(0, len(WORDS), (k,), generator=g).tolist()
        return " ".join(WORDS[i] for i in idx)

    for split, n in (("train", n_train), ("dev", (n_dev,) * 3)):
        _write(f"{root}/SST-2/{split}.tsv", ["sentence", "label"], [(sent(4), i % 2) for i in range(n[0])])
        _write(
            f"{root}/RTE/{split}.tsv",
            ["index", "sentence1", "sentence2", "label"],
            [(i, sent(5), sent(3), ["entailment", "not_entailment"][i % 2]) for i in range(n[1])],
        )
        _write(
            f"{root}/STS-B/{split}.tsv",
            ["index", "sentence1", "sentence2", "score"],
            [(i, sent(4), sent(4), f"{(i * 0.37) % 5:.3f}") for i in range(n[2])],
        )
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtt")
    return make_base(str(root / "base")), make_glue(str(root / "glue"))


def test_sampling_probabilities():
    sizes = [100, 400, 25]
    prop = sampling_probs(sizes, "proportional")
    assert prop == pytest.approx([n / 525 for n in sizes])
    assert sampling_probs(sizes, "temperature", 1.0) == pytest.approx(prop)
    t2 = sampling_probs(sizes, "temperature", 2.0)
    assert t2 == pytest.approx([10 / 35, 20 / 35, 5 / 35])
    assert sampling_probs(sizes, "temperature", 1e9) == pytest.approx([1 / 3] * 3, abs=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sampling_probs(sizes, "temperature", 0.0)
    with pytest.raises(ValueError, match="sampling="):
        sampling_probs(sizes, "uniform")
    with pytest.raises(ValueError, match="at least one training row"):
        sampling_probs([3, 0])


def test_sampler_follows_probs_and_covers_each_task_before_repeating():
    sizes, probs = [5, 50, 13], [0.2, 0.5, 0.3]
    s = TaskSampler(sizes, probs, seed=3)
    draws = s.draw(6000)
    counts = [sum(1 for t, _ in draws if t == k) for k in range(3)]
    for c, p in zip(counts, probs):  # binomial sd <= ~39 draws: 5 sd is a generous bound
        assert abs(c - 6000 * p) < 200, counts
    first = [i for t, i in draws if t == 0][:5]
    assert sorted(first) == list(range(5))  # a full pass over task 0's rows before any repeat


@pytest.mark.parametrize("absent", [None, "rte"])
def test_mixed_batch_gradients_equal_single_task_gradients(env, tmp_path, absent):
    """d L / d(task t's parameters) from one mixed batch = gradient of the single-task model on
    task t's rows (loss summed over them, divided by the whole batch size). With a task absent from
    the batch (the model then gathers only the present tasks' banks) that task's gradient is zero."""
    base, _ = env
    specs = [("sst2", 2), ("rte", 2), ("stsb", 1)]
    arts = {n: make_artefact(base, str(tmp_path / n), k, seed=20 + i) for i, (n, k) in enumerate(specs)}
    mt = MultiTaskModel(base, arts, dtype=torch.float64, trainable=True)
    mt.eval()  # dropout off on both sides
    reqs = [
        Example("rte", "good dull", "fun", 1),
        Example("sst2", "great", None, 0),
        Example("stsb", "cold warm", "sad", 2.5),
        Example("sst2", "awful grim dull", None, 1),
        Example("stsb", "fine", "fine fun", 4.0),
        Example("rte", "warm", "cold", 0),
    ]
    reqs = [r for r in reqs if r.task != absent]
    labels = [r.label for r in reqs]
    tok = transformers.AutoTokenizer.from_pretrained(base)
    loss, counts = batch_loss(mt, tok, reqs)
    assert counts == {n: 2 for n, _ in specs if n != absent}
    loss.backward()
    assert mt.hypernet.theta.shape[0] == 3  # the full stack is back after the pass
    for ti, (name, k) in enumerate(specs):
        single = single_task_model(base, arts[name], k)
        single.layerconnect.theta.requires_grad_(True)
        rows = [j for j, r in enumerate(reqs) if r.task == name]
        if not rows:
            assert torch.equal(mt.hypernet.theta.grad[ti], torch.zeros_like(mt.hypernet.theta.grad[ti]))
            assert torch.equal(mt.hypernet.bias.grad[ti], torch.zeros_like(mt.hypernet.bias.grad[ti]))
            assert all(p.grad is None for p in mt.heads[name].parameters())
            continue
        total = 0
        for j in rows:  # one row at a time: padding-free reference
            enc = tok(reqs[j].text, reqs[j].text_pair, return_tensors="pt")
            lg = single(**enc).logits
            if k == 1:
                total = total + (lg[0, 0] - labels[j]) ** 2
            else:
                total = total + torch.nn.functional.cross_entropy(lg, torch.tensor([labels[j]]), reduction="sum")
        (total / len(reqs)).backward()
        hn = mt.hypernet
        torch.testing.assert_close(hn.theta.grad[ti], single.layerconnect.theta.grad, rtol=1e-8, atol=1e-11)
        torch.testing.assert_close(hn.bias.grad[ti], single.layerconnect.bias.grad, rtol=1e-8, atol=1e-11)
        head_mt = dict(mt.heads[name].named_parameters())
        for pname, p in single.named_parameters():
            if pname in head_mt:
                torch.testing.assert_close(head_mt[pname].grad, p.grad, rtol=1e-8, atol=1e-11)


def test_joint_training_saves_loadable_artefacts(env, tmp_path):
    base, data = env
    out = str(tmp_path / "run")
    opts = TrainOptions(
        task="sst2,rte,stsb",
        model=base,
        data_dir=data,
        output_dir=out,
        max_steps=6,
        batch_size=8,
        lr=5e-2,
        sampling="proportional",
        logging_steps=2,
        down_factor=4,
        positions="all",
    )
    logs = []
    res = train_joint(opts, log=logs.append)
    assert res["steps"] == 6 and sum(res["rows_seen"].values()) == 48
    assert res["sampling_probs"] == pytest.approx({"sst2": 24 / 48, "rte": 10 / 48, "stsb": 14 / 48})
    assert set(res["scores"]) == {"sst2", "rte", "stsb"}
    assert set(res["scores"]["stsb"]["scores"]) == {"pearson", "spearmanr"}
    on_disk = json.load(open(os.path.join(out, "multitask_results.json")))
    assert on_disk["artefacts"] == res["artefacts"]

    pred = Predictor.from_pretrained(base, res["artefacts"], dtype=torch.float64)
    mt = pred.model
    assert mt.task_info("rte").label_names == ["entailment", "not_entailment"]
    for name, k in (("sst2", 2), ("rte", 2), ("stsb", 1)):
        model = transformers.AutoModelForSequenceClassification.from_pretrained(base, num_labels=k)
        load_connectors(model, res["artefacts"][name])
        assert model.layerconnect.theta.abs().sum() > 0, f"{name}: seed bank never trained"
        model = model.double().eval()
        tok = transformers.AutoTokenizer.from_pretrained(base)
        text, pair = ("good fun", None) if name == "sst2" else ("good fun", "warm")
        with torch.no_grad():
            want = model(**tok(text, pair, return_tensors="pt")).logits[0]
        got = pred.predict([{"task": name, "text": text, "text_pair": pair}])[0]["logits"]
        assert got == pytest.approx(want.tolist(), rel=1e-9, abs=1e-10)
    # different tasks learned different connectors
    assert not torch.equal(mt.hypernet.theta[0], mt.hypernet.theta[1])


def test_command_line_entry_point(env, tmp_path, capsys):
    base, data = env
    out = str(tmp_path / "cli")
    rc = main(
        [
            "train",
            "--task",
            "sst2,STS-B",
            "--model",
            base,
            "--data-dir",
            data,
            "--output-dir",
            out,
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--down-factor",
            "4",
            "--sampling",
            "temperature",
            "--temperature",
            "3",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["scores"]) == {"sst2", "stsb"}
    for name in ("sst2", "stsb"):
        meta = json.load(open(os.path.join(out, name, "layerconnect_config.json")))
        assert meta["extra"]["joint"]["sampling"] == "temperature" and meta["geometry"]["r"] == 8
        assert meta["extra"]["joint"]["temperature"] == 3.0 and meta["readout"] == DEFAULT_POOLING


def test_layerconnect_train_dispatches_several_tasks_to_joint_training(env, tmp_path, capsys):
    from layerconnect.cli import main as cli_main

    base, data = env
    out = str(tmp_path / "via_train")
    rc = cli_main(
        [
            "train",
            "--task",
            "rte,sst2",
            "--method",
            "layerconnect",
            "--model",
            base,
            "--data-dir",
            data,
            "--output-dir",
            out,
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--down-factor",
            "4",
            "--sampling",
            "proportional",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["scores"]) == {"rte", "sst2"}
    res = json.load(open(os.path.join(out, "multitask_results.json")))
    assert res["options"]["sampling"] == "proportional" and res["steps"] == 2
    assert res["command"].startswith("layerconnect train --task rte,sst2")
    with pytest.raises(SystemExit) as e:  # joint training is LayerConnect-only: a usage error
        cli_main(
            [
                "train",
                "--task",
                "rte,sst2",
                "--method",
                "lora",
                "--model",
                base,
                "--data-dir",
                data,
                "--output-dir",
                out,
                "--max-steps",
                "1",
            ]
        )
    assert e.value.code == 2 and "supports --method layerconnect only" in capsys.readouterr().err
