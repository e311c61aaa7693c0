"""Evaluate a saved run (``layerconnect eval --checkpoint DIR``): rebuild base model + method + readout,
load the trained tensors, and score dev (or the run's held-out selection slice) with the tokenisation
and batch size the run used."""

from __future__ import annotations

import os
import tempfile
from typing import Optional

from ...utils.paths import default_model_path
from .checkpoint import load_trainable, read_run
from .data import prepare_splits
from .model import build_model
from .options import EvalOptions
from .report import score_splits
from .run import HELDOUT_SEED, make_compute_metrics, tokenize
from .tasks import get_task

__all__ = ["evaluate_checkpoint", "evaluate"]


def _eval_sets(task, run: dict, data_dir: Optional[str], split: Optional[str]):
    train, held, dev = prepare_splits(
        task,
        data_dir,
        lambda n: int(run.get("heldout") or 0),
        run.get("train_subsample"),
        seed=int(run.get("data_seed", HELDOUT_SEED)),
    )
    if split == "heldout":
        if held is None:
            raise ValueError("split 'heldout': this run held out no rows of train (--heldout 0)")
        return {"heldout": held}
    if split in (None, "dev"):
        return dev
    if split not in dev:
        raise ValueError(
            f"split={split!r} is not an evaluation split of {task.name}; use 'dev', 'heldout' or one of {sorted(dev)}"
        )
    return {split: dev[split]}


def evaluate_checkpoint(
    checkpoint: str,
    data_dir: Optional[str] = None,
    split: Optional[str] = None,
    batch_size: Optional[int] = None,
    model: Optional[str] = None,
) -> dict:
    """``{"task", "method", "checkpoint", "split", "scores", "score"}`` of a run directory or checkpoint-N."""
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    run = read_run(checkpoint)
    task = get_task(run["task"])
    model_path = model or run.get("model") or default_model_path()
    rows = _eval_sets(task, run, data_dir or run.get("data_dir"), split)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    net = build_model(
        model_path, task, run["method"], run.get("method_options") or {}, int(run.get("seed", 0)), run["pooling"]
    )
    load_trainable(net, checkpoint)
    net.eval()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_eval_batch_size=batch_size or run.get("eval_batch_size", 64),
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=net,
            args=args,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=make_compute_metrics(task),
        )
        enc = {k: tokenize(v, task, tokenizer, int(run["max_length"])) for k, v in rows.items()}
        res = score_splits(trainer, enc, task)
    return {
        "task": task.name,
        "method": run["method"],
        "checkpoint": os.path.abspath(checkpoint),
        "split": "heldout" if "heldout" in rows else "dev",
        "scores": res["splits"],
        "score": res["score"],
    }


def evaluate(opts: EvalOptions) -> dict:
    """``layerconnect eval``: :func:`evaluate_checkpoint` with the options object; writes ``--output``."""
    from ...utils.io import atomic_write_json

    res = evaluate_checkpoint(
        opts.checkpoint, data_dir=opts.data_dir, split=opts.split, batch_size=opts.batch_size, model=opts.model
    )
    if opts.output:
        atomic_write_json(opts.output, res)
    return res
