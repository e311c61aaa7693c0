"""What a training run leaves on disk, and how it is read back.

A run directory (``--output-dir``) holds ``checkpoint-N/`` folders during training and, once
finished, the chosen model (``trainable.safetensors`` + ``run.json``), ``metrics.json``,
``log.jsonl``, ``curves.png`` and, for LayerConnect, ``connectors/`` (a ``save_connectors`` artefact).

Checkpoints hold only what was trained (``trainable.safetensors``) and the run's description
(``run.json``), written atomically; a checkpoint folder counts only once its ``COMPLETE`` marker
exists, so a crash while saving never leaves a "latest" checkpoint that cannot be loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import torch

from ...method import trained_state
from ...utils.io import atomic_write_bytes, atomic_write_json

__all__ = [
    "WEIGHTS_FILE",
    "RUN_FILE",
    "COMPLETE_FILE",
    "METRICS_FILE",
    "RUN_FORMAT",
    "save_trainable",
    "load_trainable",
    "read_run",
    "find_resume_checkpoint",
    "trainable_digest",
    "check_output_dir",
]

WEIGHTS_FILE = "trainable.safetensors"
RUN_FILE = "run.json"
COMPLETE_FILE = "COMPLETE"
METRICS_FILE = "metrics.json"
RUN_FORMAT = "layerconnect-glue-run/2"


def save_trainable(model, directory: str, run: dict) -> None:
    """``trainable.safetensors`` (only parameters with requires_grad) and ``run.json``, each atomically."""
    from safetensors.torch import save as st_save

    atomic_write_bytes(os.path.join(directory, WEIGHTS_FILE), st_save(trained_state(model)))
    atomic_write_json(os.path.join(directory, RUN_FILE), run)


def read_run(directory: str) -> dict:
    path = os.path.join(directory, RUN_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: --checkpoint must be a run's output directory or one of its checkpoint-N "
            "folders (written by `layerconnect train`)"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            run = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        got = run.get("format") if isinstance(run, dict) else type(run).__name__
        raise ValueError(f"{path} has format {got!r}, expected {RUN_FORMAT!r} (written by another version?)")
    return run


def load_trainable(model, directory: str) -> None:
    """Load ``trainable.safetensors`` onto a model rebuilt the same way; exactly its trainable set."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not a checkpoint written by `layerconnect train`")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} cannot be read as safetensors ({exc}): the checkpoint is damaged") from None
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
    bad = [n for n in set(tensors) & want if tuple(tensors[n].shape) != tuple(params[n].shape)]
    if missing or extra or bad:
        raise ValueError(
            f"{path} does not match the rebuilt model: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"shape mismatch {bad[:5]}; rebuild with the same --model/--method/--pooling/options as the run"
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
        if name.startswith("checkpoint-") and name[len("checkpoint-") :].isdigit():
            full = os.path.join(output_dir, name)
            if os.path.isfile(os.path.join(full, COMPLETE_FILE)):
                step = int(name[len("checkpoint-") :])
                if best is None or step > best[0]:
                    best = (step, full)
    return None if best is None else best[1]


def check_output_dir(output_dir: str, run: dict, resume: bool, overwrite: bool) -> Optional[str]:
    """The checkpoint to resume from (or None), after refusing to mix two runs in one directory.

    Refused: checkpoints present without ``resume``; ``resume`` onto a different run; a finished run
    (``metrics.json`` present) without ``overwrite``, even when its checkpoints were removed.
    """
    _remove_stale_temporaries(output_dir)
    existing = find_resume_checkpoint(output_dir)
    finished = os.path.isfile(os.path.join(output_dir, METRICS_FILE))
    if finished and not overwrite:
        raise ValueError(
            f"--output-dir {output_dir} holds a finished run ({METRICS_FILE}); choose another --output-dir, or "
            "pass --overwrite to replace it"
        )
    if overwrite and (finished or existing):
        _clear_run(output_dir)
        return None
    if resume:
        if existing is not None:
            prev = read_run(existing)
            diff = {k: (prev.get(k), v) for k, v in run.items() if k != "data_dir" and prev.get(k) != v}
            if diff:
                raise ValueError(
                    f"--resume: {existing} was written by a different run (saved vs now: {diff}); "
                    "use the same arguments or another --output-dir"
                )
        return existing
    if existing is not None:
        raise ValueError(
            f"--output-dir {output_dir} already holds checkpoints ({existing}); pass --resume to "
            "continue that run, --overwrite to replace it, or choose an empty --output-dir"
        )
    return None


def _remove_stale_temporaries(output_dir: str) -> None:
    """``.tmp-*`` files a killed save left in the run folder (one run writes a folder at a time)."""
    import shutil

    for root, dirs, files in os.walk(output_dir):
        for name in files + dirs:
            if name.startswith(".tmp-"):
                full = os.path.join(root, name)
                shutil.rmtree(full, ignore_errors=True) if os.path.isdir(full) else os.unlink(full)


def _clear_run(output_dir: str) -> None:
    """Remove what a run wrote (checkpoints, results, log, artefacts); other files stay."""
    import shutil

    for name in os.listdir(output_dir):
        full = os.path.join(output_dir, name)
        ours = name.startswith("checkpoint-") or name in (
            METRICS_FILE,
            RUN_FILE,
            WEIGHTS_FILE,
            "log.jsonl",
            "curves.png",
            "connectors",
            "trainer_state.json",
        )
        if ours:
            shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)


def trainable_digest(model) -> str:
    """sha256 over the trainable tensors (name, dtype, shape, bytes): equal digests = equal weights."""
    h = hashlib.sha256()
    for n, t in sorted(trained_state(model).items()):
        h.update(f"{n}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
