"""The GLUE task table: the one place that knows each task's files, columns, labels and metrics.

Everything else (TSV reader, hub loader, metric module, trainer, sweep) asks this table; nothing
else spells a GLUE column name or a label string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["GlueTask", "TASKS", "get_task", "TASK_NAMES"]


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    ``text_fields`` are the canonical column names (those of the hub's ``nyu-mll/glue``);
    ``tsv_text`` / ``tsv_label`` name the same columns in the original GLUE TSV files (header name,
    or a column index for header-less CoLA). ``label_names`` maps label strings (RTE/QNLI/MNLI) to
    ids in the hub's order; ``None`` means the TSV already holds integer ids (or a float score
    for STS-B). ``metrics`` are the keys the metric module returns; ``headline`` the ones whose
    mean is the task's GLUE score (SPEC §7).
    """

    name: str
    dir_name: str
    text_fields: Tuple[str, ...]
    num_labels: int
    metrics: Tuple[str, ...]
    headline: Tuple[str, ...]
    tsv_text: Tuple[object, ...]
    tsv_label: object
    tsv_header: bool = True
    tsv_columns: Optional[int] = None  # exact field count for header-less files
    label_names: Optional[Tuple[str, ...]] = None
    # split name -> (TSV file stem, hub split name)
    dev_splits: Tuple[Tuple[str, str, str], ...] = (("dev", "dev", "validation"),)
    hub_name: Optional[str] = None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def hub_config(self) -> str:
        return self.hub_name or self.name


_BIN = ("0", "1")
_ENT2 = ("entailment", "not_entailment")

TASKS: Dict[str, GlueTask] = {
    t.name: t
    for t in [
        # CoLA TSVs have no header: source, label, original label mark, sentence.
        GlueTask(
            "cola",
            "CoLA",
            ("sentence",),
            2,
            ("matthews_correlation",),
            ("matthews_correlation",),
            tsv_text=(3,),
            tsv_label=1,
            tsv_header=False,
            tsv_columns=4,
        ),
        GlueTask(
            "sst2", "SST-2", ("sentence",), 2, ("accuracy",), ("accuracy",), tsv_text=("sentence",), tsv_label="label"
        ),
        GlueTask(
            "mrpc",
            "MRPC",
            ("sentence1", "sentence2"),
            2,
            ("f1", "accuracy"),
            ("f1", "accuracy"),
            tsv_text=("#1 String", "#2 String"),
            tsv_label="Quality",
        ),
        GlueTask(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            1,
            ("pearson", "spearmanr"),
            ("pearson", "spearmanr"),
            tsv_text=("sentence1", "sentence2"),
            tsv_label="score",
        ),
        GlueTask(
            "qqp",
            "QQP",
            ("question1", "question2"),
            2,
            ("accuracy", "f1"),
            ("accuracy", "f1"),
            tsv_text=("question1", "question2"),
            tsv_label="is_duplicate",
        ),
        # MNLI: dev is two files; the label is the last column (gold_label) in train and dev alike.
        GlueTask(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            3,
            ("accuracy",),
            ("accuracy",),
            tsv_text=("sentence1", "sentence2"),
            tsv_label="gold_label",
            label_names=("entailment", "neutral", "contradiction"),
            dev_splits=(
                ("matched", "dev_matched", "validation_matched"),
                ("mismatched", "dev_mismatched", "validation_mismatched"),
            ),
        ),
        GlueTask(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            2,
            ("accuracy",),
            ("accuracy",),
            tsv_text=("question", "sentence"),
            tsv_label="label",
            label_names=_ENT2,
        ),
        GlueTask(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            2,
            ("accuracy",),
            ("accuracy",),
            tsv_text=("sentence1", "sentence2"),
            tsv_label="label",
            label_names=_ENT2,
        ),
        GlueTask(
            "wnli",
            "WNLI",
            ("sentence1", "sentence2"),
            2,
            ("accuracy",),
            ("accuracy",),
            tsv_text=("sentence1", "sentence2"),
            tsv_label="label",
        ),
    ]
}

TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> GlueTask:
    key = str(name).lower().replace("-", "")
    if key not in TASKS:
        raise ValueError(f"task={name!r} is not a GLUE task; choose one of {', '.join(TASK_NAMES)}")
    return TASKS[key]
