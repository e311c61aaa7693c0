"""Many tasks on one frozen encoder, in one batch (SPEC §6).

:class:`MultiTaskModel` holds one base encoder (a Hugging Face ``AutoModel``-style model, loaded
once) and any number of tasks. A task is what ``save_connectors`` writes: a seed bank Θ (K, p, q),
connector biases (|P|, d) and a classification/regression head. The seed banks and biases of all
tasks are stacked into one multi-task hypernetwork (Θ (T, K, p, q), b (T, |P|, d)), so a batch that
mixes sequences of many tasks still runs the encoder once, with one connector launch per position.

Heads: to reproduce exactly what ``AutoModelForSequenceClassification`` + ``load_connectors``
computes, each task keeps an instance of the artefact's own ``...ForSequenceClassification`` class
whose encoder submodule is replaced by an :class:`_EncoderSlot`: the shared encoder runs once, each
task's rows of its output are placed in the slot, and the class's own ``forward`` applies the head
(BERT: pooler output → dropout → classifier; DistilBERT: first token → pre_classifier → ReLU →
classifier; RoBERTa/ELECTRA: the ``classifier`` head module). The shell is built on the meta device
and only its head is materialised, so a task costs its artefact's numbers and nothing more.

    mt = MultiTaskModel(base_path, {"sst2": "runs/sst2", "stsb": "runs/stsb"})
    mt.predict([{"task": "sst2", "text": "a fine film"},
                {"task": "stsb", "text": "A man plays.", "text_pair": "A man is playing."}])
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

import lc_kernels

from .config import LayerConnectConfig
from .model import (
    CONNECTOR_FILE,
    LayerConnectHypernet,
    add_connectors,
    find_layers,
    read_connector_meta,
    remove_connectors,
    save_connectors,
)

__all__ = ["MultiTaskModel", "TaskInfo", "Request", "make_head_shell"]

_TASK_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


class _EncoderSlot(nn.Module):
    """Stands in for the encoder inside a task's ``...ForSequenceClassification`` shell.

    The class's ``forward`` calls its encoder and indexes the result (``outputs[0]`` or
    ``outputs[1]``); the slot returns the already-computed rows of the shared encoder's output.
    """

    def __init__(self):
        super().__init__()
        self.output = None

    def forward(self, *args, **kwargs):
        if self.output is None:
            raise RuntimeError("internal: the shared encoder output was not set before applying a task head")
        return self.output


def _sequence_classification_class(model_class: Optional[str], base_config):
    import transformers

    if model_class is None:
        mapping = transformers.AutoModelForSequenceClassification._model_mapping
        try:
            return mapping[type(base_config)]
        except KeyError:
            raise ValueError(
                f"no ...ForSequenceClassification class is known for config {type(base_config).__name__}"
            ) from None
    cls = getattr(transformers, model_class, None)
    if cls is None or not model_class.endswith("ForSequenceClassification"):
        raise ValueError(
            f"model_class={model_class!r}: a multi-task model needs task artefacts saved from a Hugging Face "
            "...ForSequenceClassification model (e.g. BertForSequenceClassification)"
        )
    if not isinstance(base_config, cls.config_class):
        raise ValueError(
            f"the task was trained with {model_class} (config {cls.config_class.__name__}) but the base encoder "
            f"has config {type(base_config).__name__}; use the base model the task was trained on"
        )
    return cls


def make_head_shell(base_config, num_labels: int, model_class: Optional[str] = None,
                    label_names: Optional[Sequence[str]] = None, init: bool = False) -> nn.Module:
    """A ``...ForSequenceClassification`` instance whose encoder is an :class:`_EncoderSlot`.

    Built on the meta device (the encoder weights are never allocated), then only the head is
    materialised on CPU: uninitialised unless ``init`` (then the class's own ``_init_weights``).
    """
    cls = _sequence_classification_class(model_class, base_config)
    cfg = copy.deepcopy(base_config)
    cfg.num_labels = int(num_labels)
    if label_names is not None:
        cfg.id2label = {i: str(n) for i, n in enumerate(label_names)}
        cfg.label2id = {str(n): i for i, n in enumerate(label_names)}
    cfg.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    with torch.device("meta"):
        shell = cls(cfg)
    setattr(shell, shell.base_model_prefix, _EncoderSlot())
    shell.to_empty(device="cpu")
    if init:
        for m in shell.modules():
            if not isinstance(m, _EncoderSlot):
                shell._init_weights(m)
    return shell


@dataclass
class TaskInfo:
    """One task served by a :class:`MultiTaskModel`."""

    name: str
    num_labels: int
    label_names: Optional[List[str]]
    path: Optional[str]
    model_class: str

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def to_dict(self) -> dict:
        return {"name": self.name, "num_labels": self.num_labels, "label_names": self.label_names,
                "kind": "regression" if self.is_regression else "classification", "path": self.path}


@dataclass
class Request:
    """One sequence to classify: ``text`` (and optional ``text_pair``) for task ``task``."""

    task: str
    text: str
    text_pair: Optional[str] = None


RequestLike = Union[Request, Mapping, Tuple, str]


def _label_names_from_meta(meta: dict) -> Optional[List[str]]:
    extra = meta.get("extra") or {}
    names = extra.get("label_names")
    if names is not None:
        return [str(n) for n in names]
    task = extra.get("task")
    if task:
        try:
            from .glue.tasks import get_task

            t = get_task(task)
        except (ImportError, ValueError):
            return None
        if t.label_names is not None:
            return list(t.label_names)
    return None


class MultiTaskModel(nn.Module):
    """One frozen encoder, many LayerConnect tasks, one encoder pass per (mixed) batch.

    Args:
        base: a model name/path for ``AutoModel.from_pretrained`` (its tokenizer is loaded too), or an
            encoder ``nn.Module`` (a ``...ForSequenceClassification`` model's encoder is taken).
        tasks: ``{name: artefact directory}`` written by ``save_connectors`` (may be empty).
        tokenizer: a tokenizer, when ``base`` is a module (needed by :meth:`predict`).
        backend: connector backend for every position ("auto" or one of ``available_backends()``).
        dtype: dtype of the encoder, heads and stacked parameters (default: the encoder's).
        max_length: tokenizer truncation length for :meth:`predict`.
        trainable: make the stacked seed banks/biases and the heads trainable (joint training).
    """

    def __init__(self, base: Union[str, nn.Module], tasks: Optional[Mapping[str, str]] = None, *,
                 tokenizer=None, backend: str = "auto", dtype: Optional[torch.dtype] = None,
                 max_length: int = 128, trainable: bool = False):
        super().__init__()
        if isinstance(base, str):
            from transformers import AutoModel, AutoTokenizer

            encoder = AutoModel.from_pretrained(base)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(base)
        elif isinstance(base, nn.Module):
            encoder = getattr(base, "base_model", base)
        else:
            raise TypeError(f"base must be a model name/path or an nn.Module, got {type(base).__name__}")
        if hasattr(encoder, "layerconnect"):
            raise ValueError("base already has LayerConnect connectors; pass the plain pre-trained encoder")
        if backend != "auto" and backend not in lc_kernels.available_backends():
            raise ValueError(f"backend={backend!r} is not available; choose 'auto' or one of {lc_kernels.available_backends()}")
        if dtype is not None:
            encoder.to(dtype)
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.backend = backend
        self.max_length = int(max_length)
        self.trainable = bool(trainable)
        self.heads = nn.ModuleDict()
        self._tasks: Dict[str, TaskInfo] = {}
        self._cfg: Optional[LayerConnectConfig] = None
        self._lock = threading.RLock()
        parts = find_layers(encoder)
        self._d, self._L = parts.hidden_size, len(parts.layers)
        fwd = inspect.signature(encoder.forward).parameters
        self._accepts = set(fwd)
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
        dt = self.dtype
        return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt

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
        return getattr(self.encoder, "layerconnect", None)

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
        """Create the connectors on first use; afterwards every task must have the same geometry."""
        cfg = dataclasses.replace(cfg, backend=self.backend, train_layernorm=False)
        geom = cfg.geometry(self._d, self._L)
        if saved_geometry is not None and geom.to_dict() != saved_geometry:
            raise ValueError(f"{where}: its saved geometry {saved_geometry} does not match its config ({geom})")
        hn = self.hypernet
        if hn is None:
            return cfg, geom
        if hn.geometry.to_dict() != geom.to_dict():
            have, new = hn.geometry.to_dict(), geom.to_dict()
            diff = {k: (have[k], new[k]) for k in have if have[k] != new[k]}
            raise ValueError(
                f"{where} has connector geometry different from the tasks already loaded "
                f"({', '.join(f'{k}: loaded {a} vs new {b}' for k, (a, b) in diff.items())}); all tasks of one "
                "MultiTaskModel must share down_factor, num_anchors, seed_rows/cols, alpha and positions"
            )
        return cfg, geom

    def _install(self, name: str, info: TaskInfo, theta: Tensor, bias: Tensor, shell: nn.Module,
                 cfg: LayerConnectConfig) -> None:
        """Append a task: stack its Θ and b under the existing ones, register its head."""
        pdt = self.param_dtype
        theta = theta.to(device=self.device, dtype=pdt)
        bias = bias.to(device=self.device, dtype=pdt)
        hn = self.hypernet
        if hn is None:
            add_connectors(self.encoder, cfg, num_tasks=1, freeze_base=False)
            hn = self.hypernet
            new_theta, new_bias = theta[None], bias[None]
            self._cfg = cfg
        else:
            new_theta = torch.cat([hn.theta.detach(), theta[None]], 0)
            new_bias = torch.cat([hn.bias.detach(), bias[None]], 0)
        self._set_stack(new_theta, new_bias)
        shell.to(device=self.device, dtype=self.dtype)
        shell.eval()
        for p in shell.parameters():
            p.requires_grad_(self.trainable)
        self.heads[name] = shell
        self._tasks[name] = info

    def _set_stack(self, theta: Tensor, bias: Tensor) -> None:
        hn = self.hypernet
        hn.theta = nn.Parameter(theta.contiguous(), requires_grad=self.trainable)
        hn.bias = nn.Parameter(bias.contiguous(), requires_grad=self.trainable)
        hn.num_tasks = int(theta.shape[0])

    def add_task(self, name: str, path: str, label_names: Optional[Sequence[str]] = None) -> TaskInfo:
        """Load a ``save_connectors`` directory as task ``name`` (no reload of the base encoder)."""
        from safetensors.torch import load_file

        with self._lock:
            self._check_name(name)
            meta = read_connector_meta(path)
            where = f"task {name!r} ({path})"
            if meta.get("num_tasks") is not None:
                raise ValueError(f"{where} is a multi-task artefact; add each task from its own single-task directory")
            saved = meta.get("geometry") or {}
            if (saved.get("d"), saved.get("L")) != (self._d, self._L):
                raise ValueError(
                    f"{where} was trained for hidden size {saved.get('d')} and {saved.get('L')} layers, but the base "
                    f"encoder has hidden size {self._d} and {self._L} layers; use the base model it was trained on"
                )
            cfg, geom = self._ensure_geometry(LayerConnectConfig.from_dict(meta["config"]), saved, where)
            tensors = load_file(os.path.join(path, CONNECTOR_FILE))
            theta, bias = tensors.pop("layerconnect.theta", None), tensors.pop("layerconnect.bias", None)
            if theta is None or bias is None:
                raise ValueError(f"{where}: {CONNECTOR_FILE} lacks layerconnect.theta / layerconnect.bias")
            if tuple(theta.shape) != (geom.K, geom.p, geom.q) or tuple(bias.shape) != (geom.num_connectors, geom.d):
                raise ValueError(
                    f"{where}: theta {tuple(theta.shape)} / bias {tuple(bias.shape)} do not match its geometry "
                    f"(K, p, q) = ({geom.K}, {geom.p}, {geom.q}), (|P|, d) = ({geom.num_connectors}, {geom.d})"
                )
            num_labels = meta.get("num_labels")
            if not isinstance(num_labels, int) or num_labels < 1:
                raise ValueError(f"{where}: layerconnect_config.json has no valid num_labels ({num_labels!r})")
            names = list(label_names) if label_names is not None else _label_names_from_meta(meta)
            if names is not None and len(names) != num_labels and num_labels > 1:
                raise ValueError(f"{where}: {len(names)} label names for {num_labels} labels")
            shell = make_head_shell(self.encoder.config, num_labels, meta.get("model_class"), names)
            want = set(shell.state_dict())
            have = set(tensors)
            if have != want:
                extra, missing = sorted(have - want), sorted(want - have)
                hint = (" (tensors of the base model: trained with train_layernorm=True? Those cannot be shared "
                        "across tasks on one encoder)" if extra else "")
                raise ValueError(
                    f"{where}: head tensors do not match {meta.get('model_class')}'s head: "
                    f"unexpected {extra}, missing {missing}{hint}"
                )
            shell.load_state_dict(tensors)
            info = TaskInfo(name, num_labels, names, os.path.abspath(path), type(shell).__name__)
            self._install(name, info, theta, bias, shell, cfg)
            return info

    def new_task(self, name: str, num_labels: int, config: Optional[LayerConnectConfig] = None,
                 label_names: Optional[Sequence[str]] = None, model_class: Optional[str] = None) -> TaskInfo:
        """Add an untrained task (Θ = 0, b = 0, a freshly initialised head), for joint training."""
        with self._lock:
            self._check_name(name)
            if self._cfg is not None and config is None:
                config = self._cfg
            cfg, geom = self._ensure_geometry(config or LayerConnectConfig(), None, f"new task {name!r}")
            shell = make_head_shell(self.encoder.config, num_labels, model_class, label_names, init=True)
            info = TaskInfo(name, int(num_labels), list(label_names) if label_names else None, None,
                            type(shell).__name__)
            self._install(name, info, torch.zeros(geom.K, geom.p, geom.q), torch.zeros(geom.num_connectors, geom.d),
                          shell, cfg)
            return info

    def remove_task(self, name: str) -> None:
        """Drop task ``name``; the others keep their parameters (their indices shift down)."""
        with self._lock:
            self.task_info(name)
            i = self.task_names.index(name)
            del self._tasks[name]
            del self.heads[name]
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
        """Write task ``name`` as a single-task ``save_connectors`` directory (loadable by
        ``load_connectors`` onto ``AutoModelForSequenceClassification.from_pretrained(base, num_labels=...)``)."""
        with self._lock:
            info = self.task_info(name)
            i = self.task_names.index(name)
            hn = self.hypernet
            shell = self.heads[name]
            single = LayerConnectHypernet(hn.geometry, backend="auto", num_tasks=None, dtype=torch.float32)
            with torch.no_grad():
                single.theta.copy_(hn.theta[i].detach().float().cpu())
                single.bias.copy_(hn.bias[i].detach().float().cpu())
            # save_connectors saves the parameters that require grad: attach the task's connectors to
            # its head shell for the duration of the call, with the head marked trainable.
            old_grad = [p.requires_grad for p in shell.parameters()]
            old_name = shell.config._name_or_path
            shell.add_module("layerconnect", single)
            shell.layerconnect_config = dataclasses.replace(self._cfg, backend="auto")
            shell.config._name_or_path = getattr(self.encoder.config, "_name_or_path", "")
            try:
                for p in shell.parameters():
                    p.requires_grad_(True)
                ex = {"task": name}
                if info.label_names is not None:
                    ex["label_names"] = list(info.label_names)
                ex.update(extra or {})
                return save_connectors(shell, path, extra=ex)
            finally:
                del shell.layerconnect
                del shell.layerconnect_config
                shell.config._name_or_path = old_name
                for p, g in zip(shell.parameters(), old_grad):
                    p.requires_grad_(g)

    # ---------------------------------------------------------------- compute
    def forward_groups(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                       task_ids: Optional[Tensor] = None, **encoder_kwargs) -> List[Tuple[int, Tensor, Tensor]]:
        """One encoder pass over a mixed batch, then each task's head on its rows.

        ``task_ids`` (B,) gives each sequence's task index (into :attr:`task_names`). Returns, for each
        task present, ``(task index, row indices (n,), logits (n, num_labels))``.
        """
        if not self._tasks:
            raise RuntimeError("no task loaded: add_task(name, path) first")
        if task_ids is None or task_ids.dim() != 1 or task_ids.shape[0] != input_ids.shape[0]:
            raise ValueError("task_ids must be a 1-D LongTensor with one task index per sequence (input_ids.shape[0])")
        with self._lock:
            names = self.task_names
            task_ids = task_ids.to(device=self.device, dtype=torch.long)
            kwargs = {k: v for k, v in encoder_kwargs.items() if k in self._accepts and v is not None}
            present, local_ids = torch.unique(task_ids, return_inverse=True)
            with self._only_tasks(present), self.hypernet.use_tasks(local_ids):
                out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            hidden = out[0]
            pooled = getattr(out, "pooler_output", None)
            groups = []
            for tau in present.tolist():
                rows = (task_ids == tau).nonzero().squeeze(1)
                shell = self.heads[names[tau]]
                shell.base_model.output = BaseModelOutputWithPooling(
                    last_hidden_state=hidden[rows], pooler_output=None if pooled is None else pooled[rows])
                try:
                    logits = shell(input_ids=input_ids[rows],
                                   attention_mask=None if attention_mask is None else attention_mask[rows]).logits
                finally:
                    shell.base_model.output = None
                groups.append((tau, rows, logits))
            return groups

    @contextmanager
    def _only_tasks(self, present: Tensor) -> Iterator[None]:
        """Run the enclosed pass with only the seed banks/biases of the tasks in the batch.

        A backend's per-call set-up (mixing each task's anchors) costs O(T), paid at every connector
        position; gathering the present tasks once per batch makes that O(tasks in the batch), which
        matters when many tasks are loaded and a batch touches few. The gather is differentiable, so
        training sends each task's gradient back to its slice of the full stack.
        """
        hn = self.hypernet
        if present.numel() == hn.num_tasks:
            yield
            return
        full = hn._parameters["theta"], hn._parameters["bias"], hn.num_tasks
        # Direct dict assignment: nn.Module.__setattr__ only accepts Parameters under a parameter name.
        hn._parameters["theta"] = full[0][present]
        hn._parameters["bias"] = full[1][present]
        hn.num_tasks = int(present.numel())
        try:
            yield
        finally:
            hn._parameters["theta"], hn._parameters["bias"], hn.num_tasks = full

    def row_logits(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                   task_ids: Optional[Tensor] = None, **encoder_kwargs) -> List[Tensor]:
        """Per-sequence logits (a list: tasks have different label counts)."""
        out: List[Optional[Tensor]] = [None] * input_ids.shape[0]
        for _, rows, logits in self.forward_groups(input_ids, attention_mask, task_ids, **encoder_kwargs):
            for j, row in enumerate(rows.tolist()):
                out[row] = logits[j]
        return out  # type: ignore[return-value]

    def normalise_requests(self, inputs: Union[RequestLike, Sequence[RequestLike]],
                           task: Optional[str] = None) -> List[Request]:
        """Accepts ``Request``s, dicts ``{"task", "text", "text_pair"}``, or with ``task=``: strings and
        (text, text_pair) tuples; without ``task=``: (text, task) or (text, text_pair, task) tuples."""
        if isinstance(inputs, (str, Request, Mapping)) or (isinstance(inputs, tuple) and task is not None):
            inputs = [inputs]
        reqs = []
        for k, item in enumerate(inputs):
            if isinstance(item, Request):
                r = item
            elif isinstance(item, Mapping):
                unknown = set(item) - {"task", "text", "text_pair"}
                if unknown:
                    raise ValueError(f"request {k}: unknown field(s) {sorted(unknown)}; use task, text, text_pair")
                r = Request(item.get("task", task), item.get("text"), item.get("text_pair"))
            elif isinstance(item, str):
                r = Request(task, item)
            elif isinstance(item, (tuple, list)):
                if task is not None:
                    if len(item) != 2:
                        raise ValueError(f"request {k}: with task= give a text or a (text, text_pair) pair")
                    r = Request(task, item[0], item[1])
                elif len(item) == 2:
                    r = Request(item[1], item[0])
                elif len(item) == 3:
                    r = Request(item[2], item[0], item[1])
                else:
                    raise ValueError(f"request {k}: expected (text, task) or (text, text_pair, task)")
            else:
                raise TypeError(f"request {k}: unsupported type {type(item).__name__}")
            if r.task is None:
                raise ValueError(f"request {k}: no task given (pass task= or give each request a task)")
            if r.task not in self._tasks:
                raise KeyError(f"request {k}: unknown task {r.task!r}; this model serves {self.task_names}")
            if not isinstance(r.text, str) or not r.text.strip():
                raise ValueError(f"request {k}: text must be a non-empty string")
            if r.text_pair is not None and (not isinstance(r.text_pair, str) or not r.text_pair.strip()):
                raise ValueError(f"request {k}: text_pair must be a non-empty string or omitted")
            reqs.append(r)
        return reqs

    def tokenize(self, reqs: Sequence[Request]) -> Dict[str, Tensor]:
        """Tokenise single texts and text pairs (two tokenizer calls at most), pad them together."""
        if self.tokenizer is None:
            raise RuntimeError("this MultiTaskModel has no tokenizer: pass tokenizer= (or a model path as base)")
        enc: List[Optional[dict]] = [None] * len(reqs)
        for paired in (False, True):
            idx = [i for i, r in enumerate(reqs) if (r.text_pair is not None) == paired]
            if not idx:
                continue
            texts = [reqs[i].text for i in idx]
            pairs = [reqs[i].text_pair for i in idx] if paired else None
            out = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
            for j, i in enumerate(idx):
                enc[i] = {k: v[j] for k, v in out.items()}
        # Pad here rather than with tokenizer.pad (which warns on fast tokenizers): pad id for the
        # tokens, 0 for the mask, the tokenizer's pad type id for segment ids, on its padding side.
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before predicting batches")
        width = max(len(e["input_ids"]) for e in enc)
        fill = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
                "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0)}
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch: Dict[str, Tensor] = {}
        for key in enc[0]:
            if key not in fill:
                continue
            rows = []
            for e in enc:
                pad = [fill[key]] * (width - len(e[key]))
                rows.append(pad + list(e[key]) if left else list(e[key]) + pad)
            batch[key] = torch.tensor(rows, dtype=torch.long)
        return batch

    @torch.inference_mode()
    def predict(self, inputs, task: Optional[str] = None, *, batch_size: Optional[int] = None) -> List[dict]:
        """Answer a list of requests, mixed across tasks, in one encoder pass per ``batch_size`` chunk.

        Returns one dict per request: classification ``{"task", "label", "label_id", "score", "probs",
        "logits"}`` (``label`` is the label name when known, else the id); regression
        ``{"task", "score", "logits"}``.
        """
        reqs = self.normalise_requests(inputs, task)
        if not reqs:
            return []
        step = len(reqs) if not batch_size else int(batch_size)
        results: List[dict] = []
        for s in range(0, len(reqs), step):
            chunk = reqs[s:s + step]
            with self._lock:
                enc = self.tokenize(chunk)
                ids = torch.tensor([self.task_names.index(r.task) for r in chunk], dtype=torch.long)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                logits = self.row_logits(task_ids=ids, **enc)
            for r, lg in zip(chunk, logits):
                results.append(self._answer(self._tasks[r.task], lg))
        return results

    @staticmethod
    def _answer(info: TaskInfo, logits: Tensor) -> dict:
        lg = logits.detach().double().cpu()
        if info.is_regression:
            return {"task": info.name, "score": float(lg[0]), "logits": lg.tolist()}
        probs = torch.softmax(lg, -1)
        k = int(torch.argmax(lg))
        label = info.label_names[k] if info.label_names else k
        return {"task": info.name, "label": label, "label_id": k, "score": float(probs[k]),
                "probs": probs.tolist(), "logits": lg.tolist()}
