"""GLUE metrics on plain arrays (numpy only; no ``datasets``/``evaluate`` needed).

Per SPEC §7: CoLA Matthews correlation; SST-2, QNLI, RTE, WNLI, MNLI (each dev split) accuracy;
MRPC and QQP F1 (positive class 1) and accuracy; STS-B Pearson and Spearman. Scores are returned
x100, the way GLUE tables report them. Degenerate inputs (a constant prediction, one class only)
give 0 for MCC/correlations instead of NaN, as scikit-learn's ``zero_division`` convention does:
a NaN would freeze best-checkpoint selection, which compares scores with ``>``.

``glue_average(scores_by_task)`` is the leaderboard average: the mean over tasks of each task's
headline, where a task with two metrics (MRPC, QQP, STS-B) counts the mean of the two and MNLI the
mean of matched and mismatched accuracy. The ``evaluate`` wrapper is :mod:`.metric.glue`.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping

import numpy as np

from .tasks import get_task

__all__ = ["compute_task_metrics", "task_score", "glue_average"]


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    return float((pred == ref).mean())


def _confusion(pred: np.ndarray, ref: np.ndarray):
    tp = int(((pred == 1) & (ref == 1)).sum())
    tn = int(((pred == 0) & (ref == 0)).sum())
    fp = int(((pred == 1) & (ref == 0)).sum())
    fn = int(((pred == 0) & (ref == 1)).sum())
    return tp, tn, fp, fn


def f1_binary(pred: np.ndarray, ref: np.ndarray) -> float:
    tp, _, fp, fn = _confusion(pred, ref)
    den = 2 * tp + fp + fn
    return 2 * tp / den if den else 0.0


def matthews(pred: np.ndarray, ref: np.ndarray) -> float:
    tp, tn, fp, fn = _confusion(pred, ref)
    den = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (as Spearman's rho needs)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(_average_ranks(np.asarray(a, np.float64)), _average_ranks(np.asarray(b, np.float64)))


_FUNCS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews_correlation": matthews,
    "pearson": pearson,
    "spearmanr": spearman,
}


def compute_task_metrics(task: str, predictions, references) -> Dict[str, float]:
    """The task's metrics (x100) on plain arrays; what ``Glue._compute`` returns."""
    t = get_task(task)
    pred = np.asarray(predictions)
    ref = np.asarray(references)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions {pred.shape} and references {ref.shape} must have the same length")
    if len(pred) == 0:
        raise ValueError("predictions is empty")
    if not t.is_regression:
        pred, ref = pred.astype(np.int64), ref.astype(np.int64)
    return {m: 100.0 * float(_FUNCS[m](pred, ref)) for m in t.metrics}


def task_score(task: str, scores: Mapping[str, float]) -> float:
    """A task's GLUE headline from its metric dict: the mean of its headline metrics.

    Multi-dev-split tasks (MNLI) may pass ``{"matched_accuracy": .., "mismatched_accuracy": ..}``
    (or nested ``{"matched": {...}, "mismatched": {...}}``); the headline is then the mean over splits.
    """
    t = get_task(task)
    if all(k in scores for k in t.headline):
        return float(np.mean([float(scores[k]) for k in t.headline]))
    vals = []
    for split, _, _ in t.dev_splits:
        sub = scores.get(split)
        for k in t.headline:
            if isinstance(sub, Mapping) and k in sub:
                vals.append(float(sub[k]))
            elif f"{split}_{k}" in scores:
                vals.append(float(scores[f"{split}_{k}"]))
    if len(vals) != len(t.dev_splits) * len(t.headline):
        raise KeyError(f"scores for {t.name} need {list(t.headline)} (got {sorted(scores)})")
    return float(np.mean(vals))


def glue_average(scores_by_task: Mapping[str, Mapping[str, float]]) -> float:
    """Leaderboard-style average over the tasks given (see module docstring)."""
    if not scores_by_task:
        raise ValueError("scores_by_task is empty")
    return float(np.mean([task_score(task, s) for task, s in scores_by_task.items()]))
