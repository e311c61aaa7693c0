"""Answering text requests with a :class:`~layerconnect.multitask.MultiTaskModel`: request parsing,
tokenising (bounded), one encoder pass per batch, and the answer format.

    p = Predictor.from_pretrained(base_path, {"sst2": "runs/sst2/connectors", "stsb": "runs/stsb/connectors"})
    p.predict([{"task": "sst2", "text": "a gem of a film"},
               {"task": "stsb", "text": "A man plays.", "text_pair": "A man is playing."}])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ...method import read_connector_meta
from ...multitask import MultiTaskModel, TaskInfo
from ..text import encode_texts

__all__ = ["Request", "Predictor", "chars_per_token_bound", "usable_positions"]

# WordPiece turns a word of more than 100 characters into one [UNK]; a token therefore never covers more
# than 100 characters plus one separating space. Cutting a text to max_length * this many characters keeps
# every token truncation would keep, and bounds the tokenizer's time and memory on hostile inputs.
CHARS_PER_TOKEN_BOUND = 101


def chars_per_token_bound(max_length: int) -> int:
    return int(max_length) * CHARS_PER_TOKEN_BOUND


@dataclass
class Request:
    """One sequence to classify: ``text`` (and optional ``text_pair``) for task ``task``."""

    task: str
    text: str
    text_pair: Optional[str] = None


RequestLike = Union[Request, Mapping, Tuple, str]


def _check_text(value, what: str, k: int, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"request {k}: {what} must be a non-empty string" + (" or omitted" if optional else ""))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"request {k}: {what} is not valid Unicode (a lone surrogate?); send UTF-8 text") from None


def _to_request(item, k: int, task: Optional[str]) -> Request:
    if isinstance(item, Request):
        return item
    if isinstance(item, Mapping):
        unknown = set(item) - {"task", "text", "text_pair"}
        if unknown:
            raise ValueError(f"request {k}: unknown field(s) {sorted(unknown)}; use task, text, text_pair")
        return Request(item.get("task", task), item.get("text"), item.get("text_pair"))
    if isinstance(item, str):
        return Request(task, item)
    if isinstance(item, (tuple, list)):
        if task is not None:
            if len(item) != 2:
                raise ValueError(f"request {k}: with task= give a text or a (text, text_pair) pair")
            return Request(task, item[0], item[1])
        if len(item) == 2:
            return Request(item[1], item[0])
        if len(item) == 3:
            return Request(item[2], item[0], item[1])
        raise ValueError(f"request {k}: expected (text, task) or (text, text_pair, task)")
    raise TypeError(f"request {k}: unsupported type {type(item).__name__}")


def glue_label_names(path: str) -> Optional[List[str]]:
    """Label names of a GLUE task artefact saved without them (older artefacts), from the task table."""
    from ..glue.tasks import get_task

    extra = read_connector_meta(path).get("extra") or {}
    if extra.get("label_names") or not extra.get("task"):
        return None
    try:
        names = get_task(extra["task"]).label_names
    except ValueError:
        return None
    return list(names) if names else None


def usable_positions(config) -> Optional[int]:
    """Most tokens the encoder's position table takes (RoBERTa-style tables start after the pad id)."""
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return int(n)


class Predictor:
    """Requests in, answers out, for a :class:`MultiTaskModel` and its tokenizer."""

    def __init__(self, model: MultiTaskModel, tokenizer, max_length: int = 128):
        self.model = model
        self.tokenizer = tokenizer
        usable = usable_positions(model.encoder.config)
        self.max_length = int(max_length) if usable is None else min(int(max_length), usable)
        self.max_chars = chars_per_token_bound(self.max_length)

    @classmethod
    def from_pretrained(
        cls,
        base: str,
        tasks: Optional[Mapping[str, str]] = None,
        *,
        backend: str = "auto",
        dtype: Optional[torch.dtype] = None,
        max_length: int = 128,
    ) -> "Predictor":
        """Load the base encoder and its tokenizer from ``base``, then each task artefact."""
        from transformers import AutoTokenizer

        model = MultiTaskModel(base, backend=backend, dtype=dtype)
        for name, path in (tasks or {}).items():
            model.add_task(name, path, label_names=glue_label_names(path))
        return cls(model, AutoTokenizer.from_pretrained(base), max_length)

    def normalise_requests(
        self, inputs: Union[RequestLike, Sequence[RequestLike]], task: Optional[str] = None
    ) -> List[Request]:
        """Accepts ``Request``s, dicts ``{"task", "text", "text_pair"}``, or with ``task=``: strings and
        (text, text_pair) tuples; without ``task=``: (text, task) or (text, text_pair, task) tuples.
        Texts longer than the tokenizer could use are cut (see :data:`CHARS_PER_TOKEN_BOUND`)."""
        if isinstance(inputs, (str, Request, Mapping)) or (isinstance(inputs, tuple) and task is not None):
            inputs = [inputs]
        known = set(self.model.task_names)
        reqs = []
        for k, item in enumerate(inputs):
            r = _to_request(item, k, task)
            if r.task is None:
                raise ValueError(f"request {k}: no task given (pass task= or give each request a task)")
            if r.task not in known:
                raise KeyError(f"request {k}: unknown task {r.task!r}; this model serves {self.model.task_names}")
            _check_text(r.text, "text", k, optional=False)
            _check_text(r.text_pair, "text_pair", k, optional=True)
            pair = None if r.text_pair is None else r.text_pair[: self.max_chars]
            reqs.append(Request(r.task, r.text[: self.max_chars], pair))
        return reqs

    def encode(self, reqs: Sequence[Request]) -> dict:
        enc = encode_texts(self.tokenizer, [r.text for r in reqs], [r.text_pair for r in reqs], self.max_length)
        return {k: v.to(self.model.device) for k, v in enc.items()}

    @torch.inference_mode()
    def predict(self, inputs, task: Optional[str] = None, *, batch_size: Optional[int] = None) -> List[dict]:
        """Answer requests, mixed across tasks, in one encoder pass per ``batch_size`` chunk.

        Returns one dict per request: classification ``{"task", "label", "label_id", "score", "probs",
        "logits"}`` (``label`` is the label name when known, else the id); regression
        ``{"task", "score", "logits"}``.
        """
        reqs = self.normalise_requests(inputs, task)
        step = len(reqs) if not batch_size else int(batch_size)
        results: List[dict] = []
        for s in range(0, len(reqs), max(1, step)):
            chunk = reqs[s : s + step]
            with self.model._lock:
                names = self.model.task_names
                ids = torch.tensor([names.index(r.task) for r in chunk], dtype=torch.long)
                logits = self.model.row_logits(task_ids=ids, **self.encode(chunk))
                infos = [self.model.task_info(r.task) for r in chunk]
            results += [answer(info, lg) for info, lg in zip(infos, logits)]
        return results


def answer(info: TaskInfo, logits: Tensor) -> dict:
    """The JSON answer for one row's logits."""
    lg = logits.detach().double().cpu()
    if info.is_regression:
        return {"task": info.name, "score": float(lg[0]), "logits": lg.tolist()}
    probs = torch.softmax(lg, -1)
    k = int(torch.argmax(lg))
    label = info.label_names[k] if info.label_names else k
    return {
        "task": info.name,
        "label": label,
        "label_id": k,
        "score": float(probs[k]),
        "probs": probs.tolist(),
        "logits": lg.tolist(),
    }
