"""MultiTaskModel: a mixed batch of T tasks answers, row by row, what each single-task model answers."""

import inspect
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_multitask_common import TEXTS, make_artefact, make_base, single_task_model  # noqa: E402

import lc_kernels  # noqa: E402
from layerconnect import LayerConnectConfig  # noqa: E402
from layerconnect.apps.serve import Predictor  # noqa: E402

# (name, num_labels): two classification tasks with different label counts and a regression task
TASKS = [("sent", 2), ("nli", 3), ("sts", 1)]


@pytest.fixture(scope="module", params=["bert", "distilbert", "roberta"])
def family_setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mt_{request.param}")
    base = make_base(str(root / "base"), request.param)
    arts = {name: make_artefact(base, str(root / name), n, seed=10 + i) for i, (name, n) in enumerate(TASKS)}
    return request.param, base, arts


def _backends():
    names = lc_kernels.available_backends()
    return [b for b in names if b != "cuda"]


def _single_logits(base, art, n, text, pair, backend):
    model = single_task_model(base, art, n, backend=backend)
    tok = transformers.AutoTokenizer.from_pretrained(base)
    enc = tok(text, pair, return_tensors="pt", truncation=True, max_length=128)
    # inspect.signature, not forward.__code__.co_varnames: transformers 5 wraps forward in decorators
    # (*args, **kwargs), so the code object no longer names token_type_ids and the segment ids of a
    # text pair would be dropped from the reference, making it disagree with MultiTaskModel.
    if "token_type_ids" not in inspect.signature(model.forward).parameters:
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        return model(**enc).logits[0]


@pytest.mark.parametrize("backend", _backends())
def test_mixed_batch_equals_each_single_task_model(family_setup, backend):
    family, base, arts = family_setup
    if backend == "triton" and family != "bert":
        pytest.skip("interpreted triton is slow: one family is enough")
    p = Predictor.from_pretrained(base, arts, backend=backend, dtype=torch.float64)
    mt = p.model
    assert mt.task_names == [n for n, _ in TASKS]
    # every task appears, in an interleaved order, with single texts and pairs mixed
    reqs = [{"task": TASKS[i % 3][0], "text": t, "text_pair": p} for i, (t, p) in enumerate(TEXTS)]
    reqs.append({"task": "sts", "text": TEXTS[0][0]})  # same text, other task: must differ
    out = p.predict(reqs)
    assert len(out) == len(reqs)
    n_labels = dict(TASKS)
    for req, got in zip(reqs, out):
        want = _single_logits(
            base, arts[req["task"]], n_labels[req["task"]], req["text"], req.get("text_pair"), backend
        )
        assert got["task"] == req["task"]
        torch.testing.assert_close(torch.tensor(got["logits"], dtype=torch.float64), want, rtol=1e-9, atol=1e-10)
        if n_labels[req["task"]] == 1:
            assert got["score"] == pytest.approx(float(want[0]), rel=1e-9, abs=1e-10)
        else:
            assert got["label_id"] == int(want.argmax())
            assert got["score"] == pytest.approx(float(torch.softmax(want, -1).max()), rel=1e-9)
    # a task's answer does not depend on what else is in the batch
    alone = p.predict([reqs[0]])[0]
    torch.testing.assert_close(torch.tensor(alone["logits"]), torch.tensor(out[0]["logits"]), rtol=1e-9, atol=1e-10)


def test_one_connector_launch_per_position_whatever_the_mix(family_setup, monkeypatch):
    _, base, arts = family_setup
    p = Predictor.from_pretrained(base, arts, dtype=torch.float64)
    mt = p.model
    calls = []

    def spy_on(real):
        def spy(x, theta, bias, ids, *a):
            calls.append((x.shape[0], theta.shape[0], None if ids is None else ids.unique().numel()))
            return real(x, theta, bias, ids, *a)

        return spy

    # predict() runs without autograd: on the cpu backend the model's fast path calls prepared kernels
    # (one per position, counted below); the op path is what it replaces, checked here with it off
    from layerconnect.method import hypernet, runtime

    applied = []
    real_apply = runtime.FastPath.apply
    monkeypatch.setattr(runtime.FastPath, "apply", lambda self, i, h: applied.append(i) or real_apply(self, i, h))
    p.predict([{"task": TASKS[i % 3][0], "text": t, "text_pair": q} for i, (t, q) in enumerate(TEXTS)])
    if "cpu" in lc_kernels.available_backends():
        assert applied == list(range(mt.geometry.num_connectors))
    monkeypatch.setattr(hypernet, "fast_path", lambda hn, h: None)
    monkeypatch.setattr(lc_kernels.ops, "_connector_op", spy_on(lc_kernels.ops._connector_op))
    monkeypatch.setattr(lc_kernels.ops, "_connector_inplace_op", spy_on(lc_kernels.ops._connector_inplace_op))
    reqs = [{"task": TASKS[i % 3][0], "text": t, "text_pair": p} for i, (t, p) in enumerate(TEXTS)]
    p.predict(reqs)
    num_positions = mt.geometry.num_connectors
    assert len(calls) == num_positions, calls
    assert all(T == 3 and k == 3 for _, T, k in calls)
    # a batch that touches 2 of the 3 tasks hands the op only those 2 banks
    calls.clear()
    p.predict([r for r in reqs if r["task"] != "nli"])
    assert len(calls) == num_positions and all(T == 2 and k == 2 for _, T, k in calls), calls
    assert mt.hypernet.theta.shape[0] == 3


def test_add_and_remove_tasks_at_run_time(family_setup, tmp_path):
    _, base, arts = family_setup
    p = Predictor.from_pretrained(base, {"sent": arts["sent"]}, dtype=torch.float64)
    mt = p.model
    encoder_id = id(mt.encoder)
    before = p.predict(TEXTS[0][0], task="sent")[0]["logits"]
    mt.add_task("sts", arts["sts"])
    mt.add_task("nli", arts["nli"])
    assert mt.task_names == ["sent", "sts", "nli"] and mt.hypernet.theta.shape[0] == 3
    mixed = p.predict([(TEXTS[0][0], "nli"), (TEXTS[0][0], "sent"), (TEXTS[1][0], TEXTS[1][1], "sts")])
    assert [m["task"] for m in mixed] == ["nli", "sent", "sts"]
    assert mixed[1]["logits"] == pytest.approx(before, rel=1e-10, abs=1e-12)
    mt.remove_task("sent")
    assert mt.task_names == ["sts", "nli"] and mt.hypernet.theta.shape[0] == 2
    again = p.predict(TEXTS[0][0], task="nli")[0]["logits"]
    assert again == pytest.approx(mixed[0]["logits"], rel=1e-10, abs=1e-12)
    with pytest.raises(KeyError, match="unknown task 'sent'"):
        p.predict("x", task="sent")
    with pytest.raises(ValueError, match="already loaded"):
        mt.add_task("nli", arts["nli"])
    mt.remove_task("sts")
    mt.remove_task("nli")
    assert not hasattr(mt.encoder, "layerconnect")  # back to the plain base
    with pytest.raises(RuntimeError, match="no task loaded"):
        mt.row_logits(torch.ones(1, 3, dtype=torch.long), task_ids=torch.zeros(1, dtype=torch.long))
    assert id(mt.encoder) == encoder_id  # never reloaded


def test_geometry_mismatch_is_a_clear_error(family_setup, tmp_path):
    _, base, arts = family_setup
    other = make_artefact(
        base,
        str(tmp_path / "other"),
        2,
        seed=5,
        config=LayerConnectConfig(down_factor=8, seed_cols=12, positions="all"),
    )
    p = Predictor.from_pretrained(base, {"sent": arts["sent"]})
    mt = p.model
    with pytest.raises(ValueError, match=r"geometry different.*r: loaded 8 vs new 4|r: loaded 8 vs new 4"):
        mt.add_task("other", other)
    assert mt.task_names == ["sent"]  # nothing half-added


def test_bad_requests_name_the_problem(family_setup):
    _, base, arts = family_setup
    p = Predictor.from_pretrained(base, arts)
    with pytest.raises(ValueError, match="non-empty"):
        p.predict("   ", task="sent")
    with pytest.raises(KeyError, match="unknown task"):
        p.predict([{"task": "nope", "text": "hi"}])
    with pytest.raises(ValueError, match="no task given"):
        p.predict(["hi"])
    with pytest.raises(ValueError, match="unknown field"):
        p.predict([{"task": "sent", "text": "hi", "label": 1}])


def test_label_names_regression_and_batch_size_chunks(family_setup, tmp_path):
    _, base, arts = family_setup
    named = make_artefact(base, str(tmp_path / "named"), 3, seed=3, label_names=["neg", "neu", "pos"])
    p = Predictor.from_pretrained(base, {"named": named, "sts": arts["sts"]}, dtype=torch.float64)
    mt = p.model
    texts = [t for t, _ in TEXTS]
    full = p.predict(texts, task="named")
    chunked = p.predict(texts, task="named", batch_size=4)
    for a, b in zip(full, chunked):
        assert a["label"] in ("neg", "neu", "pos") and a["label"] == ["neg", "neu", "pos"][a["label_id"]]
        assert b["logits"] == pytest.approx(a["logits"], rel=1e-9, abs=1e-10)
        assert sum(a["probs"]) == pytest.approx(1.0)
    reg = p.predict(texts[:2], task="sts")
    assert set(reg[0]) == {"task", "score", "logits"}
    assert [t.to_dict()["kind"] for t in mt.tasks()] == ["classification", "regression"]


def test_save_task_round_trips_through_load_connectors(family_setup, tmp_path):
    _, base, arts = family_setup
    p = Predictor.from_pretrained(base, arts, dtype=torch.float64)
    mt = p.model
    out = mt.save_task("nli", str(tmp_path / "nli_again"))
    meta = json.load(open(os.path.join(out, "layerconnect_config.json")))
    assert meta["num_labels"] == 3 and meta["num_tasks"] is None and meta["extra"]["task"] == "nli"
    a = single_task_model(base, arts["nli"], 3)
    b = single_task_model(base, out, 3)
    for (ka, va), (kb, vb) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        assert ka == kb and torch.equal(va, vb), ka
    # and the saved head is the served one (save_task must not disturb the model)
    x = p.predict(TEXTS[3][0], task="nli")[0]["logits"]
    p2 = Predictor.from_pretrained(base, {"nli": out}, dtype=torch.float64)
    assert p2.predict(TEXTS[3][0], task="nli")[0]["logits"] == pytest.approx(x, rel=1e-12, abs=1e-14)
    assert not any(p.requires_grad for p in mt.parameters())


def test_memory_per_task_is_the_artefact(family_setup):
    _, base, arts = family_setup
    p = Predictor.from_pretrained(base, arts)
    mt = p.model
    g = mt.geometry
    head = sum(p.numel() for p in mt.heads["nli"].parameters())
    assert mt.task_param_bytes("nli") == 4 * (g.K * g.p * g.q + g.num_connectors * g.d + head)
    enc = sum(p.numel() for n, p in mt.encoder.named_parameters() if not n.startswith("layerconnect."))
    assert mt.task_param_bytes("nli") < 0.2 * enc * 4
    # the stacked bank is exactly the per-task slices, nothing else
    assert mt.hypernet.theta.numel() + mt.hypernet.bias.numel() == 3 * (g.K * g.p * g.q + g.num_connectors * g.d)
