"""GLUE fine-tuning and evaluation for LayerConnect and the baseline methods.

    from layerconnect.glue import TASKS, load_glue, glue_average, train, RunConfig, evaluate_checkpoint
"""
from .data import GlueDataError, load_glue, load_split, read_glue_tsv, resolve_data_dir
from .metric import METRIC_PATH
from .metric.glue import compute_task_metrics, glue_average, task_score
from .tasks import TASK_NAMES, TASKS, GlueTask, get_task


def __getattr__(name):  # training pulls in transformers; import it only when asked
    if name in ("train", "RunConfig", "METHODS"):
        from . import training

        return getattr(training, name)
    if name == "evaluate_checkpoint":
        from .evaluation import evaluate_checkpoint

        return evaluate_checkpoint
    raise AttributeError(name)


__all__ = ["TASKS", "TASK_NAMES", "GlueTask", "get_task", "GlueDataError", "load_glue", "load_split",
           "read_glue_tsv", "resolve_data_dir", "METRIC_PATH", "compute_task_metrics", "glue_average",
           "task_score", "train", "RunConfig", "METHODS", "evaluate_checkpoint"]
