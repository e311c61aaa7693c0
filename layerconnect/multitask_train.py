"""Joint multi-task training: several GLUE tasks, one frozen encoder, mixed batches (SPEC §6).

    layerconnect train --task sst2,rte,stsb --method layerconnect --sampling temperature --temperature 2
    python -m layerconnect.multitask_train --task sst2,rte,stsb ...        (same flags, standalone)

Every task has its own seed bank Θ_t, connector biases b_t and head (a :class:`MultiTaskModel` with
``trainable=True``). Each step draws ``batch_size`` examples: each example's task is drawn from the
sampling distribution, then the example is the next one of that task's shuffled stream (a task's
stream is reshuffled whenever it runs out). The batch runs through the encoder ONCE; each task's head
scores its rows and the loss is

    L = (1/B) Σ_t Σ_{rows n of task t} ℓ_t(n)          ℓ = cross-entropy, or squared error for STS-B

so a task's gradient is exactly the gradient its single-task model would get from those rows (scaled
by its share of the batch). Sampling (``--sampling``):

    proportional   p_t ∝ n_t                (n_t = training rows of task t)
    temperature    p_t ∝ n_t^(1/T)          (default, T = 2: small tasks are seen more often than
                                             their size alone would give; T = 1 is proportional,
                                             T → ∞ uniform)

A plain PyTorch loop (AdamW, linear warmup/decay, gradient clipping) rather than ``transformers.Trainer``:
Trainer's one-dataset/one-loss design does not fit per-example task sampling with per-task heads.
At the end each task is evaluated on its dev split(s) and saved as ``<output-dir>/<task>/``, a
``save_connectors`` directory that ``load_connectors`` (and ``layerconnect serve --task``) loads.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._io import atomic_write_json

from .config import LayerConnectConfig
from .multitask import MultiTaskModel, Request

__all__ = ["MultiTaskRunConfig", "sampling_probs", "TaskSampler", "batch_loss", "train_multitask",
           "run_multitask", "add_multitask_arguments", "task_argument", "main", "SAMPLING"]

SAMPLING = ("proportional", "temperature")
RESULTS_FILE = "multitask_results.json"


def sampling_probs(sizes: Sequence[int], sampling: str = "temperature", temperature: float = 2.0) -> List[float]:
    """Task probabilities: proportional ``n_t / Σ n`` or temperature ``n_t^(1/T) / Σ n^(1/T)``."""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling={sampling!r}: choose one of {SAMPLING}")
    if not sizes or any(int(n) < 1 for n in sizes):
        raise ValueError(f"every task needs at least one training row, got sizes {list(sizes)}")
    if sampling == "proportional":
        w = [float(n) for n in sizes]
    else:
        if not temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {temperature}")
        w = [float(n) ** (1.0 / temperature) for n in sizes]
    s = sum(w)
    return [x / s for x in w]


class TaskSampler:
    """Draws (task index, row index) pairs: the task from ``probs``, the row from that task's stream
    (a seeded permutation, reshuffled when exhausted) so every row is seen before any repeats."""

    def __init__(self, sizes: Sequence[int], probs: Sequence[float], seed: int = 0):
        self.sizes = [int(n) for n in sizes]
        self.probs = torch.tensor(probs, dtype=torch.float64)
        self.gen = torch.Generator().manual_seed(int(seed))
        self._perm = [torch.randperm(n, generator=self.gen) for n in self.sizes]
        self._pos = [0] * len(self.sizes)

    def _next_row(self, t: int) -> int:
        if self._pos[t] == self.sizes[t]:
            self._perm[t] = torch.randperm(self.sizes[t], generator=self.gen)
            self._pos[t] = 0
        row = int(self._perm[t][self._pos[t]])
        self._pos[t] += 1
        return row

    def draw(self, batch_size: int) -> List[Tuple[int, int]]:
        tasks = torch.multinomial(self.probs, batch_size, replacement=True, generator=self.gen).tolist()
        return [(t, self._next_row(t)) for t in tasks]


def batch_loss(mt: MultiTaskModel, reqs: Sequence[Request], labels: Sequence[float]) -> Tuple[Tensor, Dict[str, int]]:
    """The mixed-batch loss (module docstring) and how many rows each task had."""
    enc = mt.tokenize(reqs)
    enc = {k: v.to(mt.device) for k, v in enc.items()}
    names = mt.task_names
    ids = torch.tensor([names.index(r.task) for r in reqs], dtype=torch.long)
    total = None
    counts: Dict[str, int] = {}
    for tau, rows, logits in mt.forward_groups(task_ids=ids, **enc):
        info = mt.task_info(names[tau])
        y = torch.tensor([labels[i] for i in rows.tolist()], device=logits.device)
        if info.is_regression:
            part = torch.nn.functional.mse_loss(logits.squeeze(-1), y.to(logits.dtype), reduction="sum")
        else:
            part = torch.nn.functional.cross_entropy(logits, y.long(), reduction="sum")
        total = part if total is None else total + part
        counts[info.name] = len(rows)
    return total / len(reqs), counts


@dataclass
class MultiTaskRunConfig:
    tasks: List[str]
    model: Optional[str] = None
    data_dir: Optional[str] = None
    output_dir: str = "runs/multitask"
    epochs: float = 3.0
    max_steps: int = -1
    lr: float = 1e-3
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 128
    seed: int = 42
    sampling: str = "temperature"
    temperature: float = 2.0
    train_subsample: Optional[int] = None
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    threads: Optional[int] = None
    evaluate: bool = True
    connector: Dict[str, object] = field(default_factory=dict)  # LayerConnectConfig fields

    def __post_init__(self):
        if len(self.tasks) < 1:
            raise ValueError("give at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"--task lists a task twice: {self.tasks}")
        if self.sampling not in SAMPLING:
            raise ValueError(f"--sampling {self.sampling!r}: choose one of {SAMPLING}")


def _rows(task, ds) -> Tuple[List[Request], List[float]]:
    fields = list(task.text_fields)
    reqs, labels = [], []
    for ex in ds:
        pair = ex[fields[1]] if len(fields) > 1 else None
        reqs.append(Request(task.name, ex[fields[0]], pair))
        labels.append(float(ex["label"]) if task.is_regression else int(ex["label"]))
    return reqs, labels


@torch.no_grad()
def evaluate_task(mt: MultiTaskModel, task, reqs: Sequence[Request], labels: Sequence[float],
                  batch_size: int) -> Dict[str, float]:
    """GLUE metrics of ``task`` on ``reqs`` (single-task batches: the function is the same either way)."""
    import numpy as np

    from .glue.metric.glue import compute_task_metrics

    was_training = mt.training
    mt.eval()
    preds = []
    try:
        for s in range(0, len(reqs), batch_size):
            chunk = reqs[s:s + batch_size]
            enc = {k: v.to(mt.device) for k, v in mt.tokenize(chunk).items()}
            ids = torch.full((len(chunk),), mt.task_names.index(task.name), dtype=torch.long)
            for lg in mt.row_logits(task_ids=ids, **enc):
                preds.append(float(lg[0]) if task.is_regression else int(torch.argmax(lg)))
    finally:
        mt.train(was_training)
    return compute_task_metrics(task.name, np.asarray(preds), np.asarray(labels))


def _atomic_json(path: str, obj) -> None:
    atomic_write_json(path, obj)


def train_multitask(cfg: MultiTaskRunConfig, log=print) -> dict:
    """Train all ``cfg.tasks`` jointly; save one artefact per task; return the results dict."""
    from transformers import get_linear_schedule_with_warmup

    from .glue.data import load_split, subsample
    from .glue.metric.glue import task_score
    from .glue.tasks import get_task
    from .glue.training import default_model_path

    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    tasks = [get_task(n) for n in cfg.tasks]
    model_path = cfg.model or default_model_path()
    train_rows = []
    for task in tasks:
        ds = subsample(load_split(task, "train", cfg.data_dir), cfg.train_subsample, seed=0)
        train_rows.append(_rows(task, ds))
    sizes = [len(r[0]) for r in train_rows]
    probs = sampling_probs(sizes, cfg.sampling, cfg.temperature)

    torch.manual_seed(cfg.seed)
    lc_cfg = LayerConnectConfig(**cfg.connector)
    mt = MultiTaskModel(model_path, backend=lc_cfg.backend, max_length=cfg.max_length, trainable=True)
    for task in tasks:
        mt.new_task(task.name, task.num_labels, config=lc_cfg, label_names=task.label_names)
    mt.train()
    params = [p for p in mt.parameters() if p.requires_grad]
    steps = cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else \
        max(1, math.ceil(cfg.epochs * sum(sizes) / cfg.batch_size))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    sampler = TaskSampler(sizes, probs, seed=cfg.seed)
    log(f"joint training of {[t.name for t in tasks]} on {model_path}: {steps} steps of {cfg.batch_size}, "
        f"{cfg.sampling} sampling p = {[round(p, 4) for p in probs]} (train rows {sizes})")

    history, seen = [], {t.name: 0 for t in tasks}
    run_loss, run_n = 0.0, 0
    for step in range(1, steps + 1):
        draw = sampler.draw(cfg.batch_size)
        reqs = [train_rows[t][0][i] for t, i in draw]
        labels = [train_rows[t][1][i] for t, i in draw]
        loss, counts = batch_loss(mt, reqs, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        for k, v in counts.items():
            seen[k] += v
        run_loss += float(loss.detach())
        run_n += 1
        if step % max(1, cfg.logging_steps) == 0 or step == steps:
            rec = {"step": step, "loss": run_loss / run_n, "lr": sched.get_last_lr()[0], "seen": dict(seen)}
            history.append(rec)
            log(json.dumps(rec))
            run_loss, run_n = 0.0, 0

    mt.eval()
    scores: Dict[str, dict] = {}
    if cfg.evaluate:
        for task in tasks:
            per_split = {}
            for split, _, _ in task.dev_splits:
                reqs, labels = _rows(task, load_split(task, split, cfg.data_dir))
                per_split[split] = evaluate_task(mt, task, reqs, labels, cfg.eval_batch_size)
            s = per_split[task.dev_splits[0][0]] if len(per_split) == 1 else per_split
            scores[task.name] = {"scores": s, "score": task_score(task.name, s)}
            log(f"{task.name}: {json.dumps(scores[task.name])}")

    run = {k: v for k, v in asdict(cfg).items()}
    saved = {}
    for task in tasks:
        path = os.path.join(cfg.output_dir, task.name)
        mt.save_task(task.name, path, extra={"joint": {"tasks": cfg.tasks, "sampling": cfg.sampling,
                                                       "temperature": cfg.temperature, "steps": steps,
                                                       "seed": cfg.seed, "model": model_path}})
        saved[task.name] = path
    results = {
        "format": "layerconnect-multitask-run/1",
        "config": run,
        "model": model_path,
        "sampling_probs": dict(zip(cfg.tasks, probs)),
        "train_rows": dict(zip(cfg.tasks, sizes)),
        "rows_seen": seen,
        "steps": steps,
        "history": history,
        "scores": scores,
        "average": (sum(v["score"] for v in scores.values()) / len(scores)) if scores else None,
        "artefacts": saved,
        "trainable_params_per_task": {n: mt.task_param_bytes(n) // mt.hypernet.theta.element_size()
                                      for n in cfg.tasks},
        "wall_time_s": round(time.time() - t0, 2),
    }
    _atomic_json(os.path.join(cfg.output_dir, RESULTS_FILE), results)
    return results


# ---------------------------------------------------------------------------------------------
# command line


def add_multitask_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags joint training adds to ``layerconnect train`` (``--sampling``, ``--temperature``)."""
    # default None (resolved in run_multitask) so single-task runs do not record these flags
    parser.add_argument("--sampling", choices=SAMPLING, default=None,
                        help="multi-task only: draw each example's task with p ∝ n (proportional) or "
                             "p ∝ n^(1/T) (temperature, default)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="T of --sampling temperature (default 2; 1 = proportional, large = uniform)")


def task_argument(value: str) -> str:
    """argparse ``type`` for ``--task``: one GLUE task or several comma-separated, canonical names."""
    try:
        return ",".join(split_tasks(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_tasks(value: str) -> List[str]:
    """``"sst2,rte"`` -> ``["sst2", "rte"]`` (canonical GLUE names)."""
    from .glue.tasks import get_task

    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if not names:
        raise ValueError("--task must name at least one GLUE task")
    return [get_task(n).name for n in names]


def run_multitask(args) -> int:
    """Entry point for ``layerconnect train --task a,b,c``: takes the train sub-command's namespace."""
    method = getattr(args, "method", "layerconnect")
    if method != "layerconnect":
        print(f"error: joint multi-task training (--task a,b,...) supports --method layerconnect only, "
              f"got {method!r}", file=sys.stderr)
        return 2
    unsupported = [flag for flag, given in (("--resume", getattr(args, "resume", False)),
                                            ("--heldout", getattr(args, "heldout", 0)),
                                            ("--method-option", getattr(args, "method_option", None)),
                                            ("--save-steps", getattr(args, "save_steps", None)))
                   if given]
    if unsupported:
        print(f"error: {', '.join(unsupported)} not supported by joint multi-task training (yet); "
              "run without it, or train the tasks one at a time", file=sys.stderr)
        return 2
    tasks = split_tasks(args.task) if isinstance(args.task, str) else list(args.task)
    connector = {k: getattr(args, k) for k in ("positions", "down_factor", "num_anchors", "alpha", "backend")
                 if getattr(args, k, None) is not None}
    max_steps = getattr(args, "max_steps", None)
    epochs = getattr(args, "epochs", None)
    seed = getattr(args, "seed", 42)
    cfg = MultiTaskRunConfig(
        tasks=tasks, model=getattr(args, "model", None), data_dir=getattr(args, "data_dir", None),
        output_dir=getattr(args, "output_dir", None) or f"runs/{'+'.join(tasks)}-layerconnect-s{seed}",
        epochs=3.0 if epochs is None else float(epochs), max_steps=-1 if max_steps is None else int(max_steps),
        lr=getattr(args, "lr", None) or 1e-3, batch_size=getattr(args, "batch_size", 32),
        eval_batch_size=getattr(args, "eval_batch_size", 64), max_length=getattr(args, "max_length", 128),
        seed=seed, sampling=getattr(args, "sampling", None) or "temperature",
        temperature=2.0 if getattr(args, "temperature", None) is None else float(args.temperature), train_subsample=getattr(args, "train_subsample", None),
        warmup_ratio=getattr(args, "warmup_ratio", 0.06), weight_decay=getattr(args, "weight_decay", 0.0),
        max_grad_norm=getattr(args, "max_grad_norm", 1.0), logging_steps=getattr(args, "logging_steps", 10),
        threads=getattr(args, "threads", None), evaluate=not getattr(args, "no_eval", False), connector=connector,
    )
    res = train_multitask(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({"tasks": tasks, "scores": res["scores"], "average": res["average"],
                      "artefacts": res["artefacts"], "wall_time_s": res["wall_time_s"]}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m layerconnect.multitask_train",
                                description="Joint LayerConnect training of several GLUE tasks on one frozen encoder.")
    p.add_argument("--task", required=True, type=task_argument, help="comma-separated GLUE tasks, e.g. sst2,rte,stsb")
    p.add_argument("--method", default="layerconnect", choices=["layerconnect"])
    p.add_argument("--model", default=None, help="HF name or path (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None, help="GLUE TSV folder (default: $LAYERCONNECT_GLUE_DIR, else the hub)")
    p.add_argument("--output-dir", default=None, help="default: runs/<a+b+c>-layerconnect-s<seed>")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=float, default=None, help="passes over the tasks' summed rows (default 3)")
    g.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="default 1e-3")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train-subsample", type=int, default=None, help="at most N fixed random rows per task")
    p.add_argument("--warmup-ratio", type=float, default=0.06)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-eval", action="store_true", help="skip the dev-set evaluation at the end")
    lc = p.add_argument_group("LayerConnect options")
    lc.add_argument("--positions", default=None)
    lc.add_argument("--down-factor", type=int, default=None)
    lc.add_argument("--num-anchors", type=int, default=None)
    lc.add_argument("--alpha", type=float, default=None)
    lc.add_argument("--backend", default=None)
    add_multitask_arguments(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    return run_multitask(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
