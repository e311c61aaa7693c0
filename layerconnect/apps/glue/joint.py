"""Joint multi-task training: several GLUE tasks, one frozen encoder, mixed batches (SPEC §6).

    layerconnect train --task sst2,rte,stsb --method layerconnect --sampling temperature --temperature 2

Every task has its own seed bank Θ_t, connector biases b_t and head (a :class:`MultiTaskModel` with
``trainable=True``). Each step draws ``batch_size`` examples: each example's task is drawn from the
sampling distribution, then the example is the next one of that task's shuffled stream (a task's
stream is reshuffled whenever it runs out). The batch runs through the encoder ONCE; each task's head
scores its rows and the loss is

    L = (1/B) Σ_t Σ_{rows n of task t} ℓ_t(n)          ℓ = cross-entropy, or squared error for STS-B

so a task's gradient is exactly the gradient its single-task model would get from those rows (scaled
by its share of the batch). Sampling (``--sampling``): ``proportional`` p_t ∝ n_t, or ``temperature``
p_t ∝ n_t^(1/T) (default, T = 2: small tasks are seen more often than their size alone would give).

A plain PyTorch loop (AdamW, linear warmup/decay, gradient clipping) rather than ``transformers.Trainer``:
Trainer's one-dataset/one-loss design does not fit per-example task sampling with per-task heads.
The options are :class:`TrainOptions`, the same as single-task training (each task gets the
``--pooling`` readout); joint runs keep the final step (no held-out selection) and score it on dev once. At the
end each task is saved as ``<output-dir>/<task>/``, a ``save_connectors`` directory that
``load_connectors`` (and ``layerconnect serve --task``) loads.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...method import LayerConnectConfig
from ...multitask import MultiTaskModel
from ...utils.io import atomic_write_json
from ...utils.paths import default_model_path
from ..text import encode_texts
from .options import SAMPLING, TrainOptions

__all__ = ["sampling_probs", "TaskSampler", "Example", "batch_loss", "train_joint", "RESULTS_FILE"]

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


@dataclass
class Example:
    """One training or evaluation row of a task."""

    task: str
    text: str
    text_pair: Optional[str]
    label: float


def _examples(task, ds) -> List[Example]:
    fields = list(task.text_fields)
    return [
        Example(
            task.name,
            ex[fields[0]],
            ex[fields[1]] if len(fields) > 1 else None,
            float(ex["label"]) if task.is_regression else int(ex["label"]),
        )
        for ex in ds
    ]


def _encode(mt: MultiTaskModel, tokenizer, rows: Sequence[Example], max_length: int) -> Dict[str, Tensor]:
    enc = encode_texts(tokenizer, [r.text for r in rows], [r.text_pair for r in rows], max_length)
    return {k: v.to(mt.device) for k, v in enc.items()}


def batch_loss(
    mt: MultiTaskModel, tokenizer, rows: Sequence[Example], max_length: int = 128
) -> Tuple[Tensor, Dict[str, int]]:
    """The mixed-batch loss (module docstring) and how many rows each task had."""
    names = mt.task_names
    ids = torch.tensor([names.index(r.task) for r in rows], dtype=torch.long)
    total, counts = None, {}
    for tau, idx, logits in mt.forward_groups(task_ids=ids, **_encode(mt, tokenizer, rows, max_length)):
        info = mt.task_info(names[tau])
        y = torch.tensor([rows[i].label for i in idx.tolist()], device=logits.device)
        if info.is_regression:
            part = torch.nn.functional.mse_loss(logits.squeeze(-1), y.to(logits.dtype), reduction="sum")
        else:
            part = torch.nn.functional.cross_entropy(logits, y.long(), reduction="sum")
        total = part if total is None else total + part
        counts[info.name] = len(idx)
    return total / len(rows), counts


@torch.no_grad()
def evaluate_task(
    mt: MultiTaskModel, tokenizer, task, rows: Sequence[Example], batch_size: int, max_length: int
) -> Dict[str, float]:
    """GLUE metrics of ``task`` on ``rows`` (single-task batches: the function is the same either way)."""
    import numpy as np

    from .metrics import compute_task_metrics

    was_training = mt.training
    mt.eval()
    preds = []
    try:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            ids = torch.full((len(chunk),), mt.task_names.index(task.name), dtype=torch.long)
            for lg in mt.row_logits(task_ids=ids, **_encode(mt, tokenizer, chunk, max_length)):
                preds.append(float(lg[0]) if task.is_regression else int(torch.argmax(lg)))
    finally:
        mt.train(was_training)
    return compute_task_metrics(task.name, np.asarray(preds), np.asarray([r.label for r in rows]))


def _setup(opts: TrainOptions, log):
    from transformers import AutoTokenizer

    from .data import load_split, subsample
    from .tasks import get_task

    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    tasks = [get_task(n) for n in opts.tasks]
    model_path = opts.model or default_model_path()
    rows = [_examples(t, subsample(load_split(t, "train", opts.data_dir), opts.train_subsample, seed=0)) for t in tasks]
    torch.manual_seed(opts.seed)
    lc_cfg = LayerConnectConfig(**opts.method_options())
    mt = MultiTaskModel(model_path, backend=lc_cfg.backend, trainable=True)
    for task in tasks:
        mt.new_task(task.name, task.num_labels, config=lc_cfg, label_names=task.label_names, readout=opts.pooling)
    mt.train()
    return tasks, model_path, rows, mt, AutoTokenizer.from_pretrained(model_path)


def _fit(opts: TrainOptions, mt, tok, rows, probs, log) -> Tuple[int, list, dict]:
    from transformers import get_linear_schedule_with_warmup

    sizes = [len(r) for r in rows]
    params = [p for p in mt.parameters() if p.requires_grad]
    steps = opts.max_steps or max(1, math.ceil(opts.resolved_epochs() * sum(sizes) / opts.batch_size))
    opt = torch.optim.AdamW(params, lr=opts.resolved_lr(), weight_decay=opts.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(opts.warmup_ratio * steps), steps)
    sampler = TaskSampler(sizes, probs, seed=opts.seed)
    history, seen = [], {r[0].task: 0 for r in rows}
    run_loss, run_n = 0.0, 0
    for step in range(1, steps + 1):
        batch = [rows[t][i] for t, i in sampler.draw(opts.batch_size)]
        loss, counts = batch_loss(mt, tok, batch, opts.max_length)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if opts.max_grad_norm and opts.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, opts.max_grad_norm)
        opt.step()
        sched.step()
        for k, v in counts.items():
            seen[k] += v
        run_loss, run_n = run_loss + float(loss.detach()), run_n + 1
        if step % max(1, opts.logging_steps) == 0 or step == steps:
            rec = {"step": step, "loss": run_loss / run_n, "lr": sched.get_last_lr()[0], "seen": dict(seen)}
            history.append(rec)
            log(json.dumps(rec))
            run_loss, run_n = 0.0, 0
    return steps, history, seen


def train_joint(opts: TrainOptions, log=None) -> dict:
    """Train all ``opts.tasks`` jointly; save one artefact per task; return the results dict."""
    from .data import load_split
    from .metrics import task_score

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.time()
    tasks, model_path, rows, mt, tok = _setup(opts, log)
    sizes = [len(r) for r in rows]
    probs = sampling_probs(sizes, opts.sampling, opts.temperature)
    log(
        f"joint training of {opts.tasks} on {model_path}: {opts.sampling} sampling p = "
        f"{[round(p, 4) for p in probs]} (train rows {sizes})"
    )
    steps, history, seen = _fit(opts, mt, tok, rows, probs, log)
    mt.eval()
    scores: Dict[str, dict] = {}
    for task in tasks:
        per = {
            split: evaluate_task(
                mt,
                tok,
                task,
                _examples(task, load_split(task, split, opts.data_dir)),
                opts.eval_batch_size,
                opts.max_length,
            )
            for split, _, _ in task.dev_splits
        }
        s = per[task.dev_splits[0][0]] if len(per) == 1 else per
        scores[task.name] = {"scores": s, "score": task_score(task.name, s)}
        log(f"{task.name}: {json.dumps(scores[task.name])}")
    out = opts.resolved_output_dir()
    joint = {
        "tasks": opts.tasks,
        "sampling": opts.sampling,
        "temperature": opts.temperature,
        "steps": steps,
        "seed": opts.seed,
        "model": model_path,
    }
    saved = {t.name: mt.save_task(t.name, os.path.join(out, t.name), extra={"joint": joint}) for t in tasks}
    results = {
        "format": "layerconnect-multitask-run/2",
        "command": opts.command(),
        "model": model_path,
        "options": {k: v for k, v in vars(opts).items() if k != "tasks"},
        "sampling_probs": dict(zip(opts.tasks, probs)),
        "train_rows": dict(zip(opts.tasks, sizes)),
        "rows_seen": seen,
        "steps": steps,
        "history": history,
        "scores": scores,
        "average": (sum(v["score"] for v in scores.values()) / len(scores)) if scores else None,
        "artefacts": saved,
        "wall_time_s": round(time.time() - t0, 2),
        "trainable_params_per_task": {
            n: mt.task_param_bytes(n) // mt.hypernet.theta.element_size() for n in opts.tasks
        },
    }
    atomic_write_json(os.path.join(out, RESULTS_FILE), results)
    return results
