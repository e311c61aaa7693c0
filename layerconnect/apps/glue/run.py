"""One GLUE fine-tuning run (``layerconnect train``): one task x one method x one seed.

Protocol (SPEC §7): a fixed slice of train (:attr:`TrainOptions.heldout`, seed 0, never trained on)
chooses the epoch; the chosen checkpoint is then scored on dev exactly once. Nothing is selected on
dev. ``metrics.json`` records the selection score, the dev scores, the majority-class dev score and
the constant predictor's training loss beside the run's own (to see whether anything was learned),
parameter counts (method and head apart), wall time, the command line and versions.

Ctrl-C finishes the current step, saves a checkpoint and stops (a second Ctrl-C aborts); the same
command with ``--resume`` continues. Only the main process writes results under ``torchrun``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from ...utils.paths import default_model_path
from .checkpoint import RUN_FORMAT, check_output_dir, find_resume_checkpoint, trainable_digest
from .data import prepare_splits, resolve_data_dir
from .model import build_model, parameter_counts
from .options import TrainOptions
from .report import baselines_for, finish_metrics, score_splits, write_outputs
from .tasks import GlueTask, get_task
from .trainer import callbacks, make_trainer_class, training_arguments

__all__ = ["train", "run_description", "tokenize", "make_compute_metrics"]

HELDOUT_SEED = 0  # the held-out slice and the train subsample do not move with the run's seed


def run_description(opts: TrainOptions, task: GlueTask, heldout_rows: int) -> dict:
    """What ``eval`` needs to rebuild the model and data of this run, and what ``--resume`` must match."""
    return {
        "format": RUN_FORMAT,
        "task": task.name,
        "method": opts.method,
        "method_options": opts.method_options(),
        "pooling": opts.pooling,
        "model": opts.model,
        "num_labels": task.num_labels,
        "max_length": opts.max_length,
        "eval_batch_size": opts.eval_batch_size,
        "seed": opts.seed,
        "heldout": heldout_rows,
        "train_subsample": opts.train_subsample,
        "data_seed": HELDOUT_SEED,
        "data_dir": opts.data_dir,
        "optimisation": {
            "epochs": opts.resolved_epochs() if opts.max_steps is None else None,
            "max_steps": opts.max_steps,
            "lr": opts.resolved_lr(),
            "batch_size": opts.batch_size,
            "warmup_ratio": opts.warmup_ratio,
            "weight_decay": opts.weight_decay,
            "max_grad_norm": opts.max_grad_norm,
            "save_steps": opts.save_steps,
        },
    }


def tokenize(ds, task: GlueTask, tokenizer, max_length: int):
    fields = list(task.text_fields)

    def enc(batch):
        return tokenizer(*[batch[f] for f in fields], truncation=True, max_length=max_length)

    drop = [c for c in ds.column_names if c != "label"]
    return ds.map(enc, batched=True, remove_columns=drop, desc=f"tokenize {task.name}")


def make_compute_metrics(task: GlueTask):
    import numpy as np

    from .metrics import compute_task_metrics, task_score

    def compute(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = np.squeeze(logits, -1) if task.is_regression else np.argmax(logits, axis=-1)
        scores = compute_task_metrics(task.name, preds, labels)
        scores["score"] = task_score(task.name, scores)
        return scores

    return compute


@dataclass
class RunContext:
    """Everything a run works with, gathered before training starts."""

    opts: TrainOptions
    task: GlueTask
    out: str
    run: dict
    resume_ckpt: Optional[str]
    rows: Dict[str, object]  # "train", "heldout" (or None), "dev": {split: rows}
    data: Dict[str, object] = field(default_factory=dict)  # the same, tokenised
    model: Optional[torch.nn.Module] = None
    started: float = field(default_factory=time.time)


def prepare(opts: TrainOptions) -> RunContext:
    """Check the output directory, load and tokenise the data, build the model."""
    from transformers import AutoTokenizer

    task = get_task(opts.tasks[0])
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    opts.model = opts.model or default_model_path()
    opts.data_dir = resolve_data_dir(opts.data_dir)
    out = opts.resolved_output_dir()
    train_rows, held, dev = prepare_splits(
        task, opts.data_dir, opts.heldout_rows, opts.train_subsample, seed=HELDOUT_SEED
    )
    run = run_description(opts, task, 0 if held is None else len(held))
    os.makedirs(out, exist_ok=True)
    resume = check_output_dir(out, run, opts.resume, opts.overwrite)
    ctx = RunContext(opts, task, out, run, resume, {"train": train_rows, "heldout": held, "dev": dev})
    tok = AutoTokenizer.from_pretrained(opts.model)
    enc = lambda rows: tokenize(rows, task, tok, opts.max_length)  # noqa: E731
    ctx.data = {
        "train": enc(train_rows),
        "heldout": None if held is None else enc(held),
        "dev": {k: enc(v) for k, v in dev.items()},
        "tokenizer": tok,
    }
    ctx.model = build_model(opts.model, task, opts.method, opts.method_options(), opts.seed, opts.pooling)
    return ctx


def _arguments(ctx: RunContext):
    o = ctx.opts
    select = ctx.data["heldout"] is not None
    if o.save_steps is not None or o.max_steps is not None:
        every = o.save_steps or o.max_steps
        strat = {"save_strategy": "steps", "save_steps": every}
        strat.update({"eval_strategy": "steps", "eval_steps": every} if select else {"eval_strategy": "no"})
    else:
        strat = {"save_strategy": "epoch", "eval_strategy": "epoch" if select else "no"}
    return training_arguments(
        o.warmup_ratio,
        output_dir=ctx.out,
        num_train_epochs=o.resolved_epochs(),
        max_steps=o.max_steps if o.max_steps else -1,
        learning_rate=o.resolved_lr(),
        per_device_train_batch_size=o.batch_size,
        per_device_eval_batch_size=o.eval_batch_size,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        logging_steps=o.logging_steps,
        load_best_model_at_end=select,
        metric_for_best_model="score" if select else None,
        greater_is_better=True if select else None,
        save_total_limit=2,  # the latest (to resume) and the best (Trainer keeps both)
        seed=o.seed,
        data_seed=o.seed,
        dataloader_num_workers=0,
        group_by_length=False,
        report_to=[],
        disable_tqdm=not o.progress,
        use_cpu=not torch.cuda.is_available(),
        save_safetensors=True,
        **strat,
    )


def fit(ctx: RunContext):
    """Train with Ctrl-C handling; returns ``(trainer, train output or None if stopped early)``."""
    from transformers import DataCollatorWithPadding

    stop_flag = {"stop": False}
    trainer = make_trainer_class()(
        model=ctx.model,
        args=_arguments(ctx),
        train_dataset=ctx.data["train"],
        eval_dataset=ctx.data["heldout"],
        data_collator=DataCollatorWithPadding(ctx.data["tokenizer"]),
        compute_metrics=make_compute_metrics(ctx.task),
        callbacks=callbacks(os.path.join(ctx.out, "log.jsonl"), stop_flag),
    )
    trainer.run_description = ctx.run

    def on_sigint(signum, frame):
        if stop_flag["stop"]:  # second Ctrl-C: give up at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop_flag["stop"] = True
        print("\nInterrupted: finishing this step, saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    old = None
    try:
        old = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        pass
    try:
        out = trainer.train(resume_from_checkpoint=ctx.resume_ckpt)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return trainer, None if stop_flag["stop"] else out


def _check_ranks_agree(trainer, digest: str) -> None:
    """Data parallel must leave every rank with the same weights; check it rather than assume it."""
    args = trainer.args
    if args.world_size > 1 and torch.distributed.is_initialized():
        digests = [None] * args.world_size
        torch.distributed.all_gather_object(digests, digest)
        print(f"rank {args.process_index}: trainable sha256 {digest}", file=sys.stderr, flush=True)
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks disagree on the trained weights: {digests}")


def train(opts: TrainOptions, return_trainer: bool = False):
    """Run one fine-tuning (or a joint one for several tasks); returns the metrics written to
    ``metrics.json`` (``(metrics, trainer)`` with ``return_trainer``). A Ctrl-C does not raise: the
    result is then ``{"interrupted": True, "checkpoint": ...}``."""
    if opts.joint:
        from .joint import train_joint

        return train_joint(opts)
    ctx = prepare(opts)
    trainer, out = fit(ctx)
    main = trainer.is_world_process_zero()
    if out is None:
        latest = find_resume_checkpoint(ctx.out)
        if main:
            print(f"Stopped early; checkpoint {latest}. Continue with the same command plus --resume.", file=sys.stderr)
        res = {"interrupted": True, "checkpoint": latest}
        return (res, trainer) if return_trainer else res
    dev = score_splits(trainer, ctx.data["dev"], ctx.task)  # the chosen checkpoint, scored once
    digest = trainable_digest(ctx.model)
    _check_ranks_agree(trainer, digest)
    metrics = finish_metrics(ctx, trainer, out, dev, baselines_for(ctx), parameter_counts(ctx.model), digest)
    if main:
        write_outputs(ctx, trainer, metrics)
    if trainer.args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return (metrics, trainer) if return_trainer else metrics
