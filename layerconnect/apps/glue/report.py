"""What a finished GLUE run reports: dev scores of the chosen checkpoint, the selection record, trivial
baselines to read them against, and the files (``metrics.json``, ``curves.png``, ``connectors/``)."""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from typing import Dict, List

import numpy as np

from ...utils.io import atomic_write_json, save_figure_atomic
from ...utils.versions import package_versions
from .checkpoint import METRICS_FILE
from .metrics import compute_task_metrics, task_score
from .tasks import GlueTask

__all__ = ["score_splits", "baselines_for", "finish_metrics", "write_outputs", "plot_curves"]


def score_splits(trainer, datasets: Dict[str, object], task: GlueTask) -> Dict[str, object]:
    """``{"scores": {split: {metric: x100}}, "score": headline}`` of the trainer's current model."""
    per = {}
    for name, ds in datasets.items():
        m = trainer.evaluate(eval_dataset=ds, metric_key_prefix="dev")
        per[name] = {k[len("dev_") :]: v for k, v in m.items() if k[len("dev_") :] in (*task.metrics, "score")}
    if len(per) == 1:
        (only,) = per.values()
        return {"scores": {k: only[k] for k in task.metrics}, "score": only["score"], "splits": per}
    flat = {f"{n}_{k}": v for n, s in per.items() for k, v in s.items() if k != "score"}
    return {"scores": flat, "score": task_score(task.name, flat), "splits": per}


def baselines_for(ctx) -> dict:
    """The majority class (train's most frequent label, or its mean score) on dev, and the training loss
    of the best constant predictor (label entropy in nats; label variance for regression)."""
    task = ctx.task
    labels = np.asarray(ctx.rows["train"]["label"], dtype=np.float64)
    if task.is_regression:
        const, constant_loss = float(labels.mean()), float(labels.var())
    else:
        counts = Counter(int(v) for v in labels)
        const = counts.most_common(1)[0][0]
        p = np.array(list(counts.values()), dtype=np.float64) / len(labels)
        constant_loss = float(-(p * np.log(p)).sum())
    dev = {}
    for name, rows in ctx.rows["dev"].items():
        ref = np.asarray(rows["label"])
        dev[name] = task_score(task.name, compute_task_metrics(task.name, np.full(len(ref), const), ref))
    score = float(np.mean(list(dev.values())))
    return {"majority_dev_score": score, "majority_prediction": const, "constant_train_loss": constant_loss}


def _loss_summary(history: List[dict], epochs: float) -> dict:
    """Mean training loss over the last epoch's logged steps (the whole run when shorter than an epoch)."""
    losses = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
    if not losses:
        return {"final_train_loss": None}
    last_epoch = max(0.0, losses[-1][0] - 1.0) if epochs >= 1 else 0.0
    tail = [v for e, v in losses if e > last_epoch] or [losses[-1][1]]
    return {"final_train_loss": float(np.mean(tail))}


def finish_metrics(ctx, trainer, out, dev: dict, base: dict, counts: dict, digest: str) -> dict:
    o, st = ctx.opts, trainer.state
    hist = st.log_history
    sel = [{"step": h["step"], "epoch": h.get("epoch"), "score": h["eval_score"]} for h in hist if "eval_score" in h]
    loss = _loss_summary(hist, o.resolved_epochs())
    ratio = None
    if loss["final_train_loss"] is not None and base["constant_train_loss"] > 0:
        ratio = loss["final_train_loss"] / base["constant_train_loss"]
    return {
        "task": ctx.task.name,
        "method": o.method,
        "method_options": o.method_options(),
        "pooling": o.pooling,
        "model": o.model,
        "seed": o.seed,
        "eval_split": "dev",
        "scores": dev["scores"],
        "score": dev["score"],
        "dev": dev["splits"],
        "majority_dev_score": base["majority_dev_score"],
        "selection": {
            "split": "heldout" if sel else None,
            "rows": ctx.run["heldout"],
            "score": st.best_metric if sel else None,
            "best_step": st.best_global_step if sel else None,
            "history": sel,
        },
        "train_size": len(ctx.rows["train"]),
        "dev_sizes": {k: len(v) for k, v in ctx.rows["dev"].items()},
        **loss,
        "constant_train_loss": base["constant_train_loss"],
        "loss_ratio_to_constant": ratio,
        "trainable_params": counts["method"],
        "head_params": counts["head"],
        "trainable_params_with_head": counts["total_trainable"],
        "total_params": counts["total"],
        "trainable_sha256": digest,
        "global_steps": st.global_step,
        "best_checkpoint": st.best_model_checkpoint,
        "train_runtime_s": out.metrics.get("train_runtime"),
        "wall_time_s": time.time() - ctx.started,
        "resumed_from": ctx.resume_ckpt,
        "world_size": trainer.args.world_size,
        "lr": o.resolved_lr(),
        "epochs": o.resolved_epochs(),
        "hyperparameters": ctx.run["optimisation"],
        "command": o.command(),
        "argv": sys.argv,
        "versions": package_versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_outputs(ctx, trainer, metrics: dict) -> None:
    """The chosen model (trainable tensors + run.json), the LayerConnect artefact, metrics.json, curves.png."""
    trainer.save_model(ctx.out)
    if ctx.opts.method == "layerconnect":
        from ...method import save_connectors

        extra = {"task": ctx.task.name, "label_names": list(ctx.task.label_names or []) or None}
        save_connectors(ctx.model, os.path.join(ctx.out, "connectors"), extra=extra)
    atomic_write_json(os.path.join(ctx.out, METRICS_FILE), metrics)
    try:
        plot_curves(
            trainer.state.log_history,
            os.path.join(ctx.out, "curves.png"),
            f"{ctx.task.name} / {ctx.opts.method} / lr {ctx.opts.resolved_lr():g} / seed {ctx.opts.seed}",
            metrics,
        )
    except Exception as e:  # noqa: BLE001 - a plot must never cost a finished run
        print(f"warning: could not draw curves.png: {e}", file=sys.stderr)


def plot_curves(history: List[dict], path: str, title: str, metrics: dict) -> None:
    """Training loss (with the constant predictor's) and the held-out selection score per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    ev = [(h["step"], h["eval_score"]) for h in history if "eval_score" in h]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    if loss:
        a.plot(*zip(*loss), lw=1, label="run")
    c = metrics.get("constant_train_loss")
    if c is not None and math.isfinite(c):
        a.axhline(c, ls="--", color="grey", lw=1, label="constant predictor")
    a.set_xlabel("step"), a.set_ylabel("train loss"), a.set_title("training loss"), a.legend(fontsize=7)
    if ev:
        b.plot(*zip(*ev), marker="o", label="held-out (selection)")
    b.axhline(metrics["score"], color="C2", lw=1, label=f"dev, chosen checkpoint ({metrics['score']:.1f})")
    b.axhline(metrics["majority_dev_score"], ls="--", color="grey", lw=1, label="dev, majority class")
    b.set_xlabel("step"), b.set_ylabel("score (x100)"), b.set_title("scores"), b.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        save_figure_atomic(fig, path, dpi=100)
    finally:
        plt.close(fig)
