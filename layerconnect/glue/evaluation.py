"""Evaluate a saved run (``layerconnect eval --checkpoint DIR``): rebuild base model + method, load
the trained tensors, score the run's evaluation split (dev, or its held-out slice) with the same
tokenisation and batch size the run used."""
from __future__ import annotations

import os
from typing import Optional

from .tasks import get_task
from .training import (load_trainable, make_compute_metrics, prepare_eval_sets, read_run, tokenize,
                       build_model, default_model_path)
from .metric.glue import task_score

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(checkpoint: str, data_dir: Optional[str] = None, split: Optional[str] = None,
                        batch_size: Optional[int] = None, model: Optional[str] = None) -> dict:
    """{"task", "split", "scores" {split: {metric: x100}}, "score"} for a run directory or checkpoint-N."""
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
    import tempfile
    import torch

    run = read_run(checkpoint)
    task = get_task(run["task"])
    model_path = model or run.get("model") or default_model_path()
    data_dir = data_dir or run.get("data_dir")
    if split is None:
        split = "heldout" if run.get("heldout") else None
    _, eval_rows = prepare_eval_sets(task, data_dir, int(run.get("heldout") or 0), run.get("train_subsample"), split)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    net = build_model(model_path, task, run["method"], run.get("method_options") or {}, int(run.get("seed", 0)))
    load_trainable(net, checkpoint)
    net.eval()
    compute = make_compute_metrics(task)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size or run.get("eval_batch_size", 64),
                                 report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                                 dataloader_num_workers=0)
        trainer = Trainer(model=net, args=args, data_collator=DataCollatorWithPadding(tokenizer),
                          compute_metrics=compute)
        scores = {}
        for name, rows in eval_rows.items():
            m = trainer.evaluate(eval_dataset=tokenize(rows, task, tokenizer, int(run["max_length"])),
                                 metric_key_prefix="eval")
            scores[name] = {k[5:]: v for k, v in m.items() if k[5:] in (*task.metrics, "score")}
    names = list(scores)
    if len(names) == 1:
        headline = scores[names[0]]["score"]
    else:
        headline = task_score(task.name, {f"{n}_{k}": v for n in names for k, v in scores[n].items()})
    return {"task": task.name, "method": run["method"], "checkpoint": os.path.abspath(checkpoint),
            "split": "heldout" if "heldout" in scores else "dev", "scores": scores, "score": headline}
