"""GLUE data as ``datasets.Dataset``: from a local directory in the GLUE TSV layout, or the hub.

Local layout: ``<dir>/<TASK>/{train,dev}.tsv`` (``dev_matched``/``dev_mismatched`` for MNLI), as the
original GLUE download writes them. The files are read with quoting off (sentences hold unbalanced
``"``) and ``utf-8-sig`` (MRPC starts with a BOM). Every row must have exactly as many fields as the
header (or the fixed count for header-less CoLA); anything else is an error naming file and line.

Rows come out with the task's canonical columns (``TASKS[..].text_fields``), ``label`` (int, or
float for STS-B) and ``idx`` (row number in the file), the same shape the hub's ``nyu-mll/glue`` has.
"""

from __future__ import annotations

import csv
import os
from typing import Callable, Dict, Optional, Tuple

from .tasks import GlueTask, get_task

__all__ = [
    "GlueDataError",
    "resolve_data_dir",
    "read_glue_tsv",
    "load_split",
    "load_glue",
    "split_heldout",
    "subsample",
    "prepare_splits",
    "ENV_DATA_DIR",
]

ENV_DATA_DIR = "LAYERCONNECT_GLUE_DIR"


class GlueDataError(ValueError):
    """A GLUE file is missing or malformed; the message names the file (and line)."""


def resolve_data_dir(data_dir: Optional[str]) -> Optional[str]:
    """``--data-dir``, else ``$LAYERCONNECT_GLUE_DIR``, else None (meaning: the hub)."""
    d = data_dir or os.environ.get(ENV_DATA_DIR) or None
    if d is not None and not os.path.isdir(d):
        src = "--data-dir" if data_dir else f"${ENV_DATA_DIR}"
        raise GlueDataError(
            f"GLUE data directory {d!r} (from {src}) does not exist; point it at a folder holding "
            "<TASK>/train.tsv and <TASK>/dev.tsv"
        )
    return d


def _convert_label(task: GlueTask, raw: str, path: str, line: int):
    raw = raw.strip()
    try:
        if task.is_regression:
            return float(raw)
        if task.label_names is not None:
            return task.label_names.index(raw)
        value = int(raw)
        if not 0 <= value < task.num_labels:
            raise ValueError
        return value
    except ValueError:
        want = (
            "a number"
            if task.is_regression
            else " or ".join(repr(s) for s in (task.label_names or [str(i) for i in range(task.num_labels)]))
        )
        raise GlueDataError(
            f"{path}, line {line}: label {raw!r} is not valid for {task.name} (expected {want})"
        ) from None


def read_glue_tsv(task: GlueTask | str, path: str) -> Dict[str, list]:
    """Read one GLUE TSV file into columns ``{text fields..., "label", "idx"}``."""
    task = get_task(task) if isinstance(task, str) else task
    if not os.path.isfile(path):
        raise GlueDataError(
            f"GLUE file {path} not found for task {task.name}: expected the GLUE TSV layout "
            f"<data-dir>/{task.dir_name}/{os.path.basename(path)}"
        )
    cols: Dict[str, list] = {f: [] for f in task.text_fields}
    cols["label"] = []
    cols["idx"] = []
    try:
        return _read_rows(task, path, cols)
    except UnicodeDecodeError as exc:
        raise GlueDataError(f"{path} is not UTF-8 text ({exc}); GLUE TSV files are UTF-8") from None


def _read_rows(task: GlueTask, path: str, cols: Dict[str, list]) -> Dict[str, list]:
    with open(path, "r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.tsv_header:
            header = next(reader, None)
            if header is None:
                raise GlueDataError(f"{path} is empty: expected a header line for {task.name}")
            header = [h.strip() for h in header]
            missing = [c for c in (*task.tsv_text, task.tsv_label) if c not in header]
            if missing:
                raise GlueDataError(
                    f"{path}, line 1: header lacks column(s) {missing} for {task.name}; header is {header}"
                )
            n_fields = len(header)
            text_pos = [header.index(c) for c in task.tsv_text]
            # MNLI's gold_label is the last column; index() finds the (only) one by name
            label_pos = header.index(task.tsv_label)
        else:
            n_fields = task.tsv_columns
            text_pos = list(task.tsv_text)
            label_pos = task.tsv_label
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a trailing blank line
            if len(row) != n_fields:
                raise GlueDataError(
                    f"{path}, line {line}: {len(row)} tab-separated fields, expected {n_fields} for {task.name}"
                )
            for f, p in zip(task.text_fields, text_pos):
                cols[f].append(row[p])
            cols["label"].append(_convert_label(task, row[label_pos], path, line))
            cols["idx"].append(len(cols["idx"]))
    if not cols["idx"]:
        raise GlueDataError(f"{path} holds no data rows for {task.name}")
    return cols


def _from_columns(task: GlueTask, cols: Dict[str, list]):
    import datasets

    feats = {f: datasets.Value("string") for f in task.text_fields}
    feats["label"] = datasets.Value("float32" if task.is_regression else "int64")
    feats["idx"] = datasets.Value("int64")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def load_split(task: GlueTask | str, split: str, data_dir: Optional[str] = None):
    """One split ("train", or a dev split name from ``task.dev_splits``, e.g. "dev", "matched")."""
    task = get_task(task) if isinstance(task, str) else task
    files = {"train": ("train", "train")}
    files.update({name: (stem, hub) for name, stem, hub in task.dev_splits})
    if split not in files:
        raise ValueError(f"split={split!r} is not a split of {task.name}; choose one of {sorted(files)}")
    stem, hub_split = files[split]
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None:
        return _from_columns(task, read_glue_tsv(task, os.path.join(data_dir, task.dir_name, f"{stem}.tsv")))
    import datasets

    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.hub_config, split=hub_split)
    except Exception as e:  # offline or no hub: say what to do instead
        raise GlueDataError(
            f"no local GLUE directory given and the hub copy of {task.name} could not be loaded ({e}); "
            f"pass --data-dir DIR or set ${ENV_DATA_DIR} to a folder in the GLUE TSV layout"
        ) from e
    return ds


def load_glue(task: GlueTask | str, data_dir: Optional[str] = None) -> Tuple[object, Dict[str, object]]:
    """(train, {dev split name: dataset})."""
    task = get_task(task) if isinstance(task, str) else task
    train = load_split(task, "train", data_dir)
    devs = {name: load_split(task, name, data_dir) for name, _, _ in task.dev_splits}
    return train, devs


def split_heldout(train, n: int, seed: int = 0):
    """(rest, heldout): a fixed slice of ``n`` train rows for model selection without touching dev.

    The slice depends on ``seed`` only (not on the run's seed), so every run of an LR search sees the
    same held-out rows.
    """
    if n <= 0:
        return train, None
    if n >= len(train):
        raise ValueError(f"--heldout {n} must be smaller than the train set ({len(train)} rows)")
    perm = train.shuffle(seed=seed).flatten_indices()
    return perm.select(range(n, len(perm))), perm.select(range(n))


def subsample(ds, n: Optional[int], seed: int = 0):
    """A fixed random subset of ``n`` rows (all rows if ``n`` is None or not smaller)."""
    if not n or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n)).flatten_indices()


def prepare_splits(
    task: GlueTask,
    data_dir: Optional[str],
    heldout_rows: Callable[[int], int],
    train_subsample: Optional[int],
    seed: int = 0,
):
    """``(train, heldout or None, {dev split: rows})`` of a run.

    ``heldout_rows(n_train)`` says how many train rows to hold out for model selection (a fixed slice,
    ``seed``); the optional subsample is drawn from the rest, so it never overlaps the held-out rows.
    """
    train = load_split(task, "train", data_dir)
    rest, held = split_heldout(train, int(heldout_rows(len(train))), seed=seed)
    train = subsample(rest, train_subsample, seed=seed)
    dev = {name: load_split(task, name, data_dir) for name, _, _ in task.dev_splits}
    return train, held, dev
