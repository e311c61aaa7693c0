"""Many tasks on one frozen encoder, in one batch (SPEC §6): stacking and the shared forward pass.

:class:`MultiTaskModel` holds one base encoder (a Hugging Face ``AutoModel``-style model, loaded
once) and any number of tasks. A task is what ``save_connectors`` writes: a seed bank Θ (K, p, q),
connector biases (|P|, d) and a classification/regression head. The seed banks and biases of all
tasks are stacked into one multi-task hypernetwork (Θ (T, K, p, q), b (T, |P|, d)), so a batch that
mixes sequences of many tasks still runs the encoder once, with one connector launch per position.
Heads: :mod:`layerconnect.multitask.heads`. Tokenising, request parsing and answers belong to the
serving application (:mod:`layerconnect.apps.serve`).

    mt = MultiTaskModel(base_path, {"sst2": "runs/sst2/connectors", "stsb": "runs/stsb/connectors"})
    groups = mt.forward_groups(input_ids, attention_mask, task_ids=ids)
"""

from __future__ import annotations

import inspect
import re
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

import lc_kernels

from ..method import (
    LayerConnectConfig,
    LayerConnectHypernet,
    add_connectors,
    find_layers,
    get_hypernet,
    remove_connectors,
)
from .heads import TaskReadout, make_head_shell
from .loading import Loaded, TaskInfo, ensure_geometry, read_task

__all__ = ["MultiTaskModel", "TaskInfo"]

_TASK_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


class MultiTaskModel(nn.Module):
    """One frozen encoder, many LayerConnect tasks, one encoder pass per (mixed) batch.

    Args:
        base: a model name/path for ``AutoModel.from_pretrained``, or an encoder ``nn.Module`` (a
            ``...ForSequenceClassification`` model's encoder is taken).
        tasks: ``{name: artefact directory}`` written by ``save_connectors`` (may be empty).
        backend: connector backend for every position ("auto" or one of ``available_backends()``).
        dtype: dtype of the encoder, heads and stacked parameters (default: the encoder's).
        trainable: make the stacked seed banks/biases and the heads trainable (joint training).
    """

    def __init__(
        self,
        base: Union[str, nn.Module],
        tasks: Optional[Mapping[str, str]] = None,
        *,
        backend: str = "auto",
        dtype: Optional[torch.dtype] = None,
        trainable: bool = False,
    ):
        super().__init__()
        if isinstance(base, str):
            from transformers import AutoModel

            encoder = AutoModel.from_pretrained(base)
        elif isinstance(base, nn.Module):
            encoder = getattr(base, "base_model", base)
        else:
            raise TypeError(f"base must be a model name/path or an nn.Module, got {type(base).__name__}")
        if get_hypernet(encoder) is not None:
            raise ValueError("base already has LayerConnect connectors; pass the plain pre-trained encoder")
        if backend != "auto" and backend not in lc_kernels.available_backends():
            raise ValueError(
                f"backend={backend!r} is not available; choose 'auto' or one of {lc_kernels.available_backends()}"
            )
        if dtype is not None:
            encoder.to(dtype)
        encoder.eval()
        encoder.requires_grad_(False)
        self.encoder = encoder
        self.backend = backend
        self.trainable = bool(trainable)
        self.heads = nn.ModuleDict()
        self.readouts = nn.ModuleDict()
        self._tasks: Dict[str, TaskInfo] = {}
        self._cfg: Optional[LayerConnectConfig] = None
        self._lock = threading.RLock()
        parts = find_layers(encoder)
        self._d, self._L = parts.hidden_size, len(parts.layers)
        self._accepts = set(inspect.signature(encoder.forward).parameters)
        for name, path in (tasks or {}).items():
            self.add_task(name, path)

    # ---------------------------------------------------------------- task table
    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def param_dtype(self) -> torch.dtype:
        # the op takes float32 parameters with half activations, else the activations' dtype
        return torch.float32 if self.dtype in (torch.float16, torch.bfloat16) else self.dtype

    @property
    def task_names(self) -> List[str]:
        """Task names in stacking order: task ``i`` uses ``theta[i]``, ``bias[i]``."""
        return list(self._tasks)

    def tasks(self) -> List[TaskInfo]:
        return list(self._tasks.values())

    def task_info(self, name: str) -> TaskInfo:
        if name not in self._tasks:
            raise KeyError(f"unknown task {name!r}; this model serves {self.task_names}")
        return self._tasks[name]

    @property
    def hypernet(self) -> Optional[LayerConnectHypernet]:
        return get_hypernet(self.encoder)

    @property
    def geometry(self):
        hn = self.hypernet
        return None if hn is None else hn.geometry

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not _TASK_NAME.match(name):
            raise ValueError(f"task name {name!r} must be non-empty letters, digits, '_' or '-'")
        if name in self._tasks:
            raise ValueError(f"task {name!r} is already loaded; remove_task({name!r}) first to replace it")

    def _ensure_geometry(self, cfg: LayerConnectConfig, saved_geometry: Optional[dict], where: str):
        """The task's config resolved here; every task of one model must share its geometry."""
        return ensure_geometry(self, cfg, saved_geometry, where)

    def _install(self, loaded: Loaded) -> None:
        """Append a task: stack its Θ and b under the existing ones, register its head."""
        pdt = self.param_dtype
        theta = loaded.theta.to(device=self.device, dtype=pdt)
        bias = loaded.bias.to(device=self.device, dtype=pdt)
        hn = self.hypernet
        if hn is None:
            add_connectors(self.encoder, loaded.cfg, num_tasks=1, freeze_base=False)
            self._cfg = loaded.cfg
            new_theta, new_bias = theta[None], bias[None]
        else:
            new_theta = torch.cat([hn.theta.detach(), theta[None]], 0)
            new_bias = torch.cat([hn.bias.detach(), bias[None]], 0)
        self._set_stack(new_theta, new_bias)
        name = loaded.info.name
        for part, table in ((loaded.shell, self.heads), (loaded.readout, self.readouts)):
            if part is None:
                continue
            part.to(device=self.device, dtype=self.dtype)
            part.eval()
            part.requires_grad_(self.trainable)
            table[name] = part
        self._tasks[name] = loaded.info

    def _set_stack(self, theta: Tensor, bias: Tensor) -> None:
        hn = self.hypernet
        hn.theta = nn.Parameter(theta.contiguous(), requires_grad=self.trainable)
        hn.bias = nn.Parameter(bias.contiguous(), requires_grad=self.trainable)
        hn.num_tasks = int(theta.shape[0])

    def add_task(self, name: str, path: str, label_names: Optional[Sequence[str]] = None) -> TaskInfo:
        """Load a ``save_connectors`` directory as task ``name`` (no reload of the base encoder)."""
        with self._lock:
            self._check_name(name)
            loaded = read_task(self, name, path, label_names)
            self._install(loaded)
            return loaded.info

    def new_task(
        self,
        name: str,
        num_labels: int,
        config: Optional[LayerConnectConfig] = None,
        label_names: Optional[Sequence[str]] = None,
        model_class: Optional[str] = None,
        readout: Optional[str] = None,
    ) -> TaskInfo:
        """Add an untrained task (Θ = 0, b = 0, a freshly initialised head), for joint training.

        ``readout`` (mean, cls, pooler) gives the task its own readout; None reads the encoder's pooler."""
        with self._lock:
            self._check_name(name)
            config = config or self._cfg or LayerConnectConfig()
            cfg, geom = self._ensure_geometry(config, None, f"new task {name!r}")
            shell = make_head_shell(self.encoder.config, num_labels, model_class, label_names, init=True)
            head = None if readout is None else TaskReadout(readout, self._d)
            info = TaskInfo(
                name, int(num_labels), list(label_names) if label_names else None, None, type(shell).__name__, readout
            )
            self._install(
                Loaded(
                    cfg,
                    torch.zeros(geom.K, geom.p, geom.q),
                    torch.zeros(geom.num_connectors, geom.d),
                    shell,
                    head,
                    info,
                )
            )
            return info

    def remove_task(self, name: str) -> None:
        """Drop task ``name``; the others keep their parameters (their indices shift down)."""
        with self._lock:
            self.task_info(name)
            i = self.task_names.index(name)
            del self._tasks[name]
            del self.heads[name]
            if name in self.readouts:
                del self.readouts[name]
            if not self._tasks:
                remove_connectors(self.encoder)  # the next task may bring another geometry
                self._cfg = None
                return
            hn = self.hypernet
            keep = [j for j in range(hn.num_tasks) if j != i]
            self._set_stack(hn.theta.detach()[keep], hn.bias.detach()[keep])

    def task_param_bytes(self, name: str) -> int:
        """Bytes this task adds in memory: its slice of the stacked Θ and b, plus its head."""
        with self._lock:
            self.task_info(name)
            hn = self.hypernet
            i = self.task_names.index(name)
        own = hn.theta[i].numel() * hn.theta.element_size() + hn.bias[i].numel() * hn.bias.element_size()
        return own + sum(p.numel() * p.element_size() for p in self.heads[name].parameters())

    def save_task(self, name: str, path: str, extra: Optional[dict] = None) -> str:
        """Write task ``name`` as a single-task ``save_connectors`` directory."""
        from .export import export_task

        with self._lock:
            return export_task(self, name, path, extra)

    # ---------------------------------------------------------------- compute
    def forward_groups(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        task_ids: Optional[Tensor] = None,
        **encoder_kwargs,
    ) -> List[Tuple[int, Tensor, Tensor]]:
        """One encoder pass over a mixed batch, then each task's head on its rows.

        ``task_ids`` (B,) gives each sequence's task index (into :attr:`task_names`). Returns, for each
        task present, ``(task index, row indices (n,), logits (n, num_labels))``.
        """
        from .export import apply_heads

        if not self._tasks:
            raise RuntimeError("no task loaded: add_task(name, path) first")
        if task_ids is None or task_ids.dim() != 1 or task_ids.shape[0] != input_ids.shape[0]:
            raise ValueError("task_ids must be a 1-D LongTensor with one task index per sequence (input_ids.shape[0])")
        with self._lock:
            task_ids = task_ids.to(device=self.device, dtype=torch.long)
            kwargs = {k: v for k, v in encoder_kwargs.items() if k in self._accepts and v is not None}
            present, local_ids = torch.unique(task_ids, return_inverse=True)
            subset = None if present.numel() == self.hypernet.num_tasks else present
            with self.hypernet.use_tasks(local_ids, subset):
                out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return apply_heads(self, out, input_ids, attention_mask, task_ids, present)

    def row_logits(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        task_ids: Optional[Tensor] = None,
        **encoder_kwargs,
    ) -> List[Tensor]:
        """Per-sequence logits (a list: tasks have different label counts)."""
        out: List[Optional[Tensor]] = [None] * input_ids.shape[0]
        for _, rows, logits in self.forward_groups(input_ids, attention_mask, task_ids, **encoder_kwargs):
            for j, row in enumerate(rows.tolist()):
                out[row] = logits[j]
        return out  # type: ignore[return-value]
