"""Reading a task artefact for a :class:`~layerconnect.multitask.MultiTaskModel`, checked before
anything is installed."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from torch import Tensor, nn

from ..method import CONNECTOR_FILE, LayerConnectConfig, read_connector_meta
from .heads import TaskReadout, make_head_shell, split_readout_tensors

__all__ = ["TaskInfo", "Loaded", "read_task", "ensure_geometry"]


@dataclass
class TaskInfo:
    """One task of a :class:`MultiTaskModel`."""

    name: str
    num_labels: int
    label_names: Optional[List[str]]
    path: Optional[str]
    model_class: str
    readout: Optional[str] = None

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_labels": self.num_labels,
            "label_names": self.label_names,
            "kind": "regression" if self.is_regression else "classification",
            "path": self.path,
        }


@dataclass
class Loaded:
    """A task artefact read and checked, ready to install."""

    cfg: LayerConnectConfig
    theta: Tensor
    bias: Tensor
    shell: nn.Module
    readout: Optional[TaskReadout]
    info: TaskInfo


def _label_names(meta: dict, given: Optional[Sequence[str]], num_labels: int, where: str) -> Optional[List[str]]:
    extra = meta.get("extra") or {}
    names = list(given) if given is not None else extra.get("label_names")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != num_labels and num_labels > 1:
            raise ValueError(f"{where}: {len(names)} label names for {num_labels} labels")
    return names


def read_task(model, name: str, path: str, label_names: Optional[Sequence[str]]) -> Loaded:
    """Read and check an artefact without changing the model."""
    from safetensors.torch import load_file

    meta = read_connector_meta(path)
    where = f"task {name!r} ({path})"
    if meta.get("num_tasks") is not None:
        raise ValueError(f"{where} is a multi-task artefact; add each task from its own single-task directory")
    saved = meta["geometry"]
    if (saved.get("d"), saved.get("L")) != (model._d, model._L):
        raise ValueError(
            f"{where} was trained for hidden size {saved.get('d')} and {saved.get('L')} layers, but the base "
            f"encoder has hidden size {model._d} and {model._L} layers; use the base model it was trained on"
        )
    cfg, geom = model._ensure_geometry(LayerConnectConfig.from_dict(meta["config"]), saved, where)
    tensors = load_file(os.path.join(path, CONNECTOR_FILE))
    theta, bias = tensors.pop("layerconnect.theta", None), tensors.pop("layerconnect.bias", None)
    if theta is None or bias is None:
        raise ValueError(f"{where}: {CONNECTOR_FILE} lacks layerconnect.theta / layerconnect.bias")
    if tuple(theta.shape) != (geom.K, geom.p, geom.q) or tuple(bias.shape) != (geom.num_connectors, geom.d):
        raise ValueError(
            f"{where}: theta {tuple(theta.shape)} / bias {tuple(bias.shape)} do not match its "
            f"geometry (K, p, q) = ({geom.K}, {geom.p}, {geom.q}), (|P|, d) = "
            f"({geom.num_connectors}, {geom.d})"
        )
    num_labels = meta.get("num_labels")
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"{where}: layerconnect_config.json has no valid num_labels ({num_labels!r})")
    names = _label_names(meta, label_names, num_labels, where)
    shell = make_head_shell(model.encoder.config, num_labels, meta.get("model_class"), names)
    readout = _read_readout(model, meta.get("readout"), tensors, shell, where)
    have, want = set(tensors), set(shell.state_dict())
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        hint = (
            " (tensors of the base model: trained with train_layernorm=True? Those cannot be shared "
            "across tasks on one encoder)"
            if extra
            else ""
        )
        raise ValueError(
            f"{where}: head tensors do not match {meta.get('model_class')}'s head: "
            f"unexpected {extra}, missing {missing}{hint}"
        )
    shell.load_state_dict(tensors)
    info = TaskInfo(
        name, num_labels, names, os.path.abspath(path), type(shell).__name__, None if readout is None else readout.kind
    )
    return Loaded(cfg, theta, bias, shell, readout, info)


def _read_readout(
    model, kind: Optional[str], tensors: Dict[str, Tensor], shell: nn.Module, where: str
) -> Optional[TaskReadout]:
    if kind not in ("mean", "cls", "pooler"):
        return None  # the model's own (frozen) pooler: the shared encoder computes it
    readout = TaskReadout(kind, model._d)
    own = split_readout_tensors(tensors, shell.base_model_prefix)
    if kind == "pooler":
        try:
            readout.load_state_dict(own)
        except RuntimeError as exc:
            raise ValueError(f"{where}: its trained pooler tensors do not fit ({exc})") from None
    return readout


def ensure_geometry(mt, cfg: LayerConnectConfig, saved_geometry: Optional[dict], where: str):
    """The task's config resolved here; every task of one model must share its geometry."""
    cfg = dataclasses.replace(cfg, backend=mt.backend, train_layernorm=False)
    geom = cfg.geometry(mt._d, mt._L)
    if saved_geometry is not None and geom.to_dict() != saved_geometry:
        raise ValueError(f"{where}: its saved geometry {saved_geometry} does not match its config ({geom})")
    hn = mt.hypernet
    if hn is not None and hn.geometry.to_dict() != geom.to_dict():
        have, new = hn.geometry.to_dict(), geom.to_dict()
        diff = ", ".join(f"{k}: loaded {have[k]} vs new {new[k]}" for k in have if have[k] != new[k])
        raise ValueError(
            f"{where} has connector geometry different from the tasks already loaded ({diff}); all tasks of "
            "one MultiTaskModel must share down_factor, num_anchors, seed_rows/cols, alpha and positions"
        )
    return cfg, geom
