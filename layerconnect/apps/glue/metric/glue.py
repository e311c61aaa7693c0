"""GLUE metric as a local ``evaluate`` module (works offline).

    import evaluate
    metric = evaluate.load("<path to this file or its folder>", "mrpc")
    metric.compute(predictions=[1, 0, 1], references=[1, 1, 1])   # {"f1": ..., "accuracy": ...}

The metrics themselves (SPEC §7; x100, degenerate inputs scored 0) and the GLUE average are in
`layerconnect.apps.glue.metrics`; this file wraps them for ``evaluate``. The ``layerconnect`` package must be
importable where this module is loaded.
"""

from __future__ import annotations

import datasets
import evaluate

from layerconnect.apps.glue.metrics import compute_task_metrics, glue_average, task_score
from layerconnect.apps.glue.tasks import TASKS

__all__ = ["Glue", "compute_task_metrics", "task_score", "glue_average"]

_DESCRIPTION = "GLUE dev-set metrics (x100) for the nine GLUE tasks; config_name is the task."
_CITATION = """@inproceedings{wang2018glue, title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for
Natural Language Understanding}, author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix
and Levy, Omer and Bowman, Samuel R.}, booktitle={BlackboxNLP}, year={2018}}"""
_KWARGS = """
Args:
    predictions: class ids (int) for classification tasks; scores (float) for stsb.
    references: gold class ids / gold scores, same length.
Returns: a dict of the task's metrics, each x100 (see SPEC §7).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise KeyError(f"config_name={self.config_name!r} is not a GLUE task; use one of {list(TASKS)}")
        dtype = "float32" if TASKS[self.config_name].is_regression else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return compute_task_metrics(self.config_name, predictions, references)
