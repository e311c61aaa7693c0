"""Options of GLUE fine-tuning (``layerconnect train``) and evaluation (``layerconnect eval``).

Every default is written here once; the command line, the Python API and the docs read it from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional

from ...baselines import METHODS
from ...method.readout import READOUTS
from ...utils.options import option, to_command
from .tasks import TASK_NAMES, get_task

__all__ = [
    "TrainOptions",
    "EvalOptions",
    "DEFAULT_LR",
    "DEFAULT_EPOCHS",
    "DEFAULT_POOLING",
    "HELDOUT_MAX_ROWS",
    "HELDOUT_FRACTION",
    "SAMPLING",
    "LC_OPTION_NAMES",
    "split_tasks",
]

# LayerConnect's few generated weights want a far larger step than adapters (probes on a held-out slice
# of MRPC train: ~1e-2 against ~1e-3; 3e-2 stayed at the majority class). Other methods: 1e-3.
DEFAULT_LR: Dict[str, float] = {"layerconnect": 1e-2, "full": 2e-5}
DEFAULT_LR_OTHER = 1e-3
DEFAULT_EPOCHS = 3.0
# The readout every method gets (see layerconnect.method.readout). Chosen by measurement: the GLUE v3
# readout screen (benchmarks/GLUE_RESULTS.md, stage 1: LayerConnect and Houlsby on CoLA and MRPC, seed 42,
# held-out slice of train) gave mean held-out scores cls 53.6, trainable pooler 52.1, mean 49.8, although
# the offline MiniLM was trained with mean pooling (its pooler is untrained).
DEFAULT_POOLING = "cls"
# Model selection (epoch, and the learning rate in sweeps) uses a fixed slice of train, never dev.
HELDOUT_FRACTION = 0.10
HELDOUT_MAX_ROWS = 800
SAMPLING = ("proportional", "temperature")
LC_OPTION_NAMES = ("positions", "down_factor", "num_anchors", "alpha", "backend", "train_layernorm")

_LC = "LayerConnect options (--method layerconnect)"
_JOINT = "joint multi-task training (several comma-separated --task names)"


def split_tasks(value: str) -> List[str]:
    """``"sst2,rte"`` -> ``["sst2", "rte"]`` (canonical GLUE names); an error names a wrong one."""
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if not names:
        raise ValueError("--task must name at least one GLUE task")
    out = [get_task(n).name for n in names]
    if len(set(out)) != len(out):
        raise ValueError(f"--task lists a task twice: {out}")
    return out


def _parse_value(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


@dataclass
class TrainOptions:
    """One fine-tuning run: a GLUE task (or several, trained jointly) x a method x a seed."""

    task: str = option(
        help=f"one of {', '.join(TASK_NAMES)}; several comma-separated = joint multi-task training (LayerConnect only)",
        metavar="TASK[,TASK...]",
    )
    method: str = option("layerconnect", "the fine-tuning method", choices=METHODS)
    model: Optional[str] = option(None, "HF model name or path (default: the offline all-MiniLM-L6-v2)")
    data_dir: Optional[str] = option(
        None, "GLUE TSV folder <dir>/<TASK>/{train,dev}.tsv (default: $LAYERCONNECT_GLUE_DIR, else the hub)"
    )
    output_dir: Optional[str] = option(None, "where the run is written (default: runs/<task>-<method>-s<seed>)")
    epochs: Optional[float] = option(None, f"passes over the training rows (default {DEFAULT_EPOCHS:g})")
    max_steps: Optional[int] = option(None, "train this many optimiser steps instead of --epochs")
    lr: Optional[float] = option(
        None,
        "peak learning rate (default: "
        + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_LR.items())
        + f", {DEFAULT_LR_OTHER:g} otherwise)",
    )
    pooling: str = option(
        DEFAULT_POOLING,
        "sentence readout of the task head, trained for every method: "
        "mean (masked mean of the last hidden states), cls (first token), "
        "pooler (the model's pooler, made trainable)",
        choices=READOUTS,
    )
    heldout: Optional[int] = option(
        None,
        "rows of train held out (fixed, seed 0) to choose the epoch; dev is "
        f"scored once at the end (default: {HELDOUT_FRACTION:.0%} of train, at "
        f"most {HELDOUT_MAX_ROWS}; 0 = no selection, keep the last epoch)",
    )
    batch_size: int = option(32, "training batch size per process")
    eval_batch_size: int = option(64, "evaluation batch size")
    max_length: int = option(128, "tokenizer truncation length")
    seed: int = option(42, "seed of the head initialisation, the data order and dropout")
    train_subsample: Optional[int] = option(
        None, "train on a fixed random N rows (the same N rows whatever --seed; taken after the held-out slice)"
    )
    warmup_ratio: float = option(0.06, "linear warm-up over this fraction of the steps, then linear decay")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    save_steps: Optional[int] = option(None, "select and checkpoint every N steps (default: every epoch)")
    logging_steps: int = option(10, "log the training loss every N steps")
    threads: Optional[int] = option(None, "torch.set_num_threads (default: torch's)")
    resume: bool = option(False, "continue the run in --output-dir from its last complete checkpoint")
    overwrite: bool = option(False, "replace a finished run in --output-dir (refused without it)")
    progress: bool = option(True, "no progress bars (for logs)")
    positions: Optional[str] = option(None, "'inner' (1..L-1, default), 'all' (1..L) or e.g. '0,3,6'", group=_LC)
    down_factor: Optional[int] = option(None, "r = d / down_factor (default 8)", group=_LC)
    num_anchors: Optional[int] = option(None, "K seed grids (default 2)", group=_LC)
    alpha: Optional[float] = option(None, "connector scale (default 1.0)", group=_LC)
    backend: Optional[str] = option(None, "connector backend (default auto)", group=_LC)
    train_layernorm: bool = option(False, "also train the base model's LayerNorms", group=_LC)
    method_option: List[str] = option(
        help="extra option passed to the method, KEY=VALUE (repeatable; VALUE parsed as JSON when it can be)",
        metavar="KEY=VALUE",
        default_factory=list,
    )
    sampling: str = option(
        "temperature",
        "draw each example's task with p ∝ n (proportional) or p ∝ n^(1/T) (temperature)",
        choices=SAMPLING,
        group=_JOINT,
    )
    temperature: float = option(2.0, "T of --sampling temperature (1 = proportional, large = uniform)", group=_JOINT)

    def __post_init__(self):
        self.tasks = split_tasks(self.task)
        self.task = ",".join(self.tasks)
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("give --epochs or --max-steps, not both")
        for name in ("epochs", "max_steps", "lr", "batch_size", "eval_batch_size", "max_length", "logging_steps"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {v}")
        if self.heldout is not None and self.heldout < 0:
            raise ValueError(f"--heldout must be >= 0, got {self.heldout}")
        if self.method != "layerconnect":
            given = [k for k in LC_OPTION_NAMES if getattr(self, k) not in (None, False)]
            if given:
                raise ValueError(f"--{given[0].replace('_', '-')} only applies to --method layerconnect")
        if self.joint:
            if self.method != "layerconnect":
                raise ValueError(f"joint multi-task training supports --method layerconnect only, got {self.method}")
            unsupported = [
                flag
                for flag, given in (
                    ("--resume", self.resume),
                    ("--heldout", self.heldout is not None),
                    ("--save-steps", self.save_steps is not None),
                    ("--overwrite", self.overwrite),
                )
                if given
            ]
            if unsupported:
                raise ValueError(
                    f"{', '.join(unsupported)}: not supported by joint multi-task training (yet); "
                    "run without it, or train the tasks one at a time"
                )
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        self.method_options()  # validate KEY=VALUE now, not after the data is loaded

    @property
    def joint(self) -> bool:
        return len(self.tasks) > 1

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.method, DEFAULT_LR_OTHER)

    def resolved_epochs(self) -> float:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS

    def resolved_output_dir(self) -> str:
        return self.output_dir or f"runs/{'+'.join(self.tasks)}-{self.method}-s{self.seed}"

    def heldout_rows(self, n_train: int) -> int:
        """Rows of train held out for selection (the default: 10 % of train, at most 800)."""
        if self.heldout is not None:
            return self.heldout
        return min(HELDOUT_MAX_ROWS, int(round(HELDOUT_FRACTION * n_train)))

    def method_options(self) -> dict:
        """Options for ``baselines.apply_method`` (LayerConnectConfig fields for LayerConnect)."""
        opts = {k: getattr(self, k) for k in LC_OPTION_NAMES if getattr(self, k) not in (None, False)}
        for kv in self.method_option or []:
            if "=" not in kv:
                raise ValueError(f"--method-option {kv!r} must look like KEY=VALUE")
            k, v = kv.split("=", 1)
            opts[k.strip().replace("-", "_")] = _parse_value(v)
        return opts

    def command(self) -> str:
        """The ``layerconnect train`` command line that reproduces these options."""
        return to_command(self, "layerconnect train")


@dataclass
class EvalOptions:
    """Re-score a saved run (its best checkpoint, or one ``checkpoint-N`` folder)."""

    checkpoint: str = option(help="a run's --output-dir or one of its checkpoint-N folders")
    data_dir: Optional[str] = option(None, "GLUE TSV folder (default: the run's, else $LAYERCONNECT_GLUE_DIR)")
    split: Optional[str] = option(
        None,
        "'dev' (all dev splits), a dev split name (MNLI: matched/mismatched) "
        "or 'heldout' (the run's selection slice) (default: dev)",
    )
    model: Optional[str] = option(None, "base model path, if it moved since training")
    batch_size: Optional[int] = option(None, "evaluation batch size (default: the run's)")
    output: Optional[str] = option(None, "also write the result JSON here")
