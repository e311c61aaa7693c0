"""The local GLUE `evaluate` module against metrics computed by hand from their definitions."""

import math
import os
import random

import pytest

pytest.importorskip("evaluate", reason='the GLUE layer needs `evaluate` (pip install -e ".[glue]")')
pytest.importorskip("datasets", reason='the GLUE layer needs `datasets` (pip install -e ".[glue]")')

import evaluate  # noqa: E402

from layerconnect.apps.glue import METRIC_PATH, TASKS, glue_average, task_score


def _load(task, folder=False):
    return evaluate.load(os.path.dirname(METRIC_PATH) if folder else METRIC_PATH, task)


def _counts(pred, ref):
    tp = sum(1 for p, r in zip(pred, ref) if p == 1 and r == 1)
    tn = sum(1 for p, r in zip(pred, ref) if p == 0 and r == 0)
    fp = sum(1 for p, r in zip(pred, ref) if p == 1 and r == 0)
    fn = sum(1 for p, r in zip(pred, ref) if p == 0 and r == 1)
    return tp, tn, fp, fn


def _rand_binary(n, seed):
    rng = random.Random(seed)
    ref = [rng.randint(0, 1) for _ in range(n)]
    pred = [r if rng.random() < 0.7 else 1 - r for r in ref]
    return pred, ref


def _pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def _ranks(xs):
    # average rank of ties, by brute force: rank = 1 + #smaller + (#equal - 1) / 2
    return [1 + sum(y < x for y in xs) + (sum(y == x for y in xs) - 1) / 2 for x in xs]


@pytest.mark.parametrize("folder", [False, True])
def test_cola_mcc_by_hand(folder):
    pred, ref = _rand_binary(57, 1)
    tp, tn, fp, fn = _counts(pred, ref)
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    out = _load("cola", folder).compute(predictions=pred, references=ref)
    assert out == {"matthews_correlation": pytest.approx(100 * mcc, rel=1e-12)}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy_by_hand(task):
    pred, ref = _rand_binary(61, 2)
    tp, tn, fp, fn = _counts(pred, ref)
    prec, rec = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * prec * rec / (prec + rec)
    acc = (tp + tn) / len(ref)
    out = _load(task).compute(predictions=pred, references=ref)
    assert out == {"f1": pytest.approx(100 * f1, rel=1e-12), "accuracy": pytest.approx(100 * acc, rel=1e-12)}


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "wnli", "mnli"])
def test_accuracy_tasks(task):
    rng = random.Random(3)
    k = TASKS[task].num_labels
    ref = [rng.randrange(k) for _ in range(43)]
    pred = [rng.randrange(k) for _ in range(43)]
    out = _load(task).compute(predictions=pred, references=ref)
    assert out == {"accuracy": pytest.approx(100 * sum(p == r for p, r in zip(pred, ref)) / 43, rel=1e-12)}


def test_stsb_pearson_spearman_by_hand_with_ties():
    rng = random.Random(4)
    ref = [round(rng.uniform(0, 5), 1) for _ in range(37)]
    pred = [round(r + rng.gauss(0, 1), 1) for r in ref]
    pred[3] = pred[5] = pred[7]  # force ties: Spearman must use average ranks
    ref[1] = ref[2]
    out = _load("stsb").compute(predictions=pred, references=ref)
    # the module sees float32 features; compute the hand values on the same float32-rounded inputs
    import numpy as np

    p32 = [float(x) for x in np.asarray(pred, np.float32)]
    r32 = [float(x) for x in np.asarray(ref, np.float32)]
    assert out["pearson"] == pytest.approx(100 * _pearson(p32, r32), rel=1e-9)
    assert out["spearmanr"] == pytest.approx(100 * _pearson(_ranks(p32), _ranks(r32)), rel=1e-9)
    from scipy.stats import spearmanr  # an independent implementation, as a second opinion

    assert out["spearmanr"] == pytest.approx(100 * spearmanr(p32, r32).statistic, rel=1e-9)


def test_degenerate_inputs_give_zero_not_nan():
    # a constant classifier: MCC's and Pearson's denominators vanish; NaN would freeze model selection
    assert _load("cola").compute(predictions=[1] * 6, references=[0, 1, 0, 1, 1, 0]) == {"matthews_correlation": 0.0}
    out = _load("stsb").compute(predictions=[2.0] * 5, references=[0.0, 1.0, 2.0, 3.0, 4.0])
    assert out == {"pearson": 0.0, "spearmanr": 0.0}


def test_bad_config_and_lengths():
    with pytest.raises(Exception, match="not a GLUE task"):
        _load("squad")
    with pytest.raises(ValueError):
        _load("rte").compute(predictions=[0, 1], references=[0])


def test_glue_average_leaderboard_convention():
    scores = {
        "cola": {"matthews_correlation": 50.0},
        "sst2": {"accuracy": 90.0},
        "mrpc": {"f1": 88.0, "accuracy": 84.0},
        "stsb": {"pearson": 86.0, "spearmanr": 85.0},
        "qqp": {"accuracy": 89.0, "f1": 86.0},
        "mnli": {"matched_accuracy": 82.0, "mismatched_accuracy": 83.0},
        "qnli": {"accuracy": 88.0},
        "rte": {"accuracy": 65.0},
        "wnli": {"accuracy": 56.0},
    }
    want = (50 + 90 + (88 + 84) / 2 + (86 + 85) / 2 + (89 + 86) / 2 + (82 + 83) / 2 + 88 + 65 + 56) / 9
    assert glue_average(scores) == pytest.approx(want, rel=1e-12)
    assert task_score("mnli", {"matched": {"accuracy": 80.0}, "mismatched": {"accuracy": 81.0}}) == 80.5
    assert glue_average({"mrpc": {"f1": 88.0, "accuracy": 84.0}}) == 86.0
    with pytest.raises(KeyError, match="need"):
        glue_average({"mrpc": {"f1": 88.0}})
