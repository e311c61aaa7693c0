"""``transformers.Trainer`` set up for a GLUE run: checkpoints holding only what was trained, a JSONL
log, Ctrl-C handling, and arguments that work on transformers 4.x and 5.x.

Why Trainer: resume (optimizer, scheduler, RNG and data position), data-parallel under ``torchrun``,
gradient clipping, warm-up and best-checkpoint selection are its job, not ours.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import torch

from ...utils.io import atomic_write_bytes
from .checkpoint import COMPLETE_FILE, load_trainable, save_trainable

__all__ = ["make_trainer_class", "callbacks", "training_arguments"]

# Arguments that transformers 5.x removed and whose 4.x value here is what 5.x always does.
_DROPPABLE_IF_ABSENT = {"group_by_length": False, "save_safetensors": True}


def training_arguments(ratio: float, **kwargs):
    """``TrainingArguments(**kwargs)`` with linear warm-up over ``ratio`` of the steps, on transformers
    4.x (``warmup_ratio``) and 5.x (a float ``warmup_steps`` < 1 is a ratio; some 4.x fields gone)."""
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "warmup_ratio" in fields:
        kwargs["warmup_ratio"] = ratio
    else:
        kwargs["warmup_steps"] = float(ratio)
    for name, value in _DROPPABLE_IF_ABSENT.items():
        if name not in fields and kwargs.get(name, value) == value:
            kwargs.pop(name, None)
    return TrainingArguments(**kwargs)


def make_trainer_class():
    from transformers import Trainer

    class GlueTrainer(Trainer):
        """Trainer whose checkpoints hold only the trainable parameters (see ``checkpoint``)."""

        run_description: dict = {}

        def _save(self, output_dir: Optional[str] = None, state_dict=None):
            save_trainable(self.model, output_dir or self.args.output_dir, self.run_description)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            load_trainable(model if model is not None else self.model, resume_from_checkpoint)

        def _load_best_model(self):
            load_trainable(self.model, self.state.best_model_checkpoint)

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
                atomic_write_bytes(os.path.join(folder, COMPLETE_FILE), b"ok\n")

    return GlueTrainer


def callbacks(log_path: str, stop_flag: dict):
    """A JSONL log (one line per logged step; a resumed run does not repeat the step it resumed at) and
    the Ctrl-C handler's stop: the step in flight ends, then a checkpoint is saved and training stops."""
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def __init__(self):
            self.last_step = _last_logged_step(log_path)

        def on_log(self, args, state, control, logs=None, **kw):
            if not (state.is_world_process_zero and logs):
                return
            key = (state.global_step, tuple(sorted(logs)))
            if key == self.last_step:
                return
            self.last_step = key
            rec = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec, default=float) + "\n")

    class StopOnInterrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stop = stop_flag["stop"]
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # ranks may see the signal at different steps; agree on it, or one rank would stop while the
                # others wait in the next all-reduce forever
                dev = (
                    torch.device("cuda", torch.cuda.current_device())
                    if torch.distributed.get_backend() == "nccl"
                    else torch.device("cpu")
                )
                t = torch.tensor([1 if stop else 0], device=dev)
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
                stop = stop_flag["stop"] = bool(t.item())
            if stop:
                control.should_save = True
                control.should_training_stop = True
            return control

    return [JsonlLog(), StopOnInterrupt()]


def _last_logged_step(log_path: str):
    """(step, keys) of the last record in an existing log, so a resumed run does not write it twice."""
    if not os.path.isfile(log_path):
        return None
    last = None
    with open(log_path) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            last = (rec.get("step"), tuple(sorted(k for k in rec if k not in ("step", "epoch", "time"))))
    return last
