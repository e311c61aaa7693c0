"""GLUE fine-tuning and evaluation for LayerConnect and the baseline methods.

    from layerconnect.apps.glue import TASKS, TrainOptions, train, evaluate_checkpoint

Importing this package is cheap (the task table and the options); training, data loading and the
``evaluate`` metric module pull in ``transformers``/``datasets``/``evaluate`` only when used.
"""

from .metrics import compute_task_metrics, glue_average, task_score
from .options import EvalOptions, TrainOptions
from .tasks import TASK_NAMES, TASKS, GlueTask, get_task


def __getattr__(name):  # the heavy parts load on first use
    if name == "train":
        from .run import train

        return train
    if name in ("evaluate_checkpoint", "evaluate"):
        from . import evaluation

        return getattr(evaluation, name)
    if name in ("load_glue", "load_split", "read_glue_tsv", "resolve_data_dir", "GlueDataError"):
        from . import data

        return getattr(data, name)
    if name == "METRIC_PATH":
        from .metric import METRIC_PATH

        return METRIC_PATH
    raise AttributeError(name)


__all__ = [
    "TASKS",
    "TASK_NAMES",
    "GlueTask",
    "get_task",
    "compute_task_metrics",
    "glue_average",
    "task_score",
    "TrainOptions",
    "EvalOptions",
    "train",
    "evaluate_checkpoint",
    "evaluate",
    "load_glue",
    "load_split",
    "read_glue_tsv",
    "resolve_data_dir",
    "GlueDataError",
    "METRIC_PATH",
]
