"""Turning texts (and optional second texts) into one padded batch; shared by serving and joint training."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["encode_texts"]


def encode_texts(
    tokenizer, texts: Sequence[str], pairs: Optional[Sequence[Optional[str]]], max_length: int
) -> Dict[str, Tensor]:
    """Tokenise single texts and text pairs (two tokenizer calls at most) and pad them into one batch.

    ``pairs[i]`` is the second text of row ``i`` or None. Padding follows the tokenizer: its pad id for
    the tokens, 0 for the mask, its pad type id for segment ids, on its padding side.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before encoding batches")
    pairs = list(pairs) if pairs is not None else [None] * len(texts)
    enc: List[Optional[dict]] = [None] * len(texts)
    for paired in (False, True):
        idx = [i for i, p in enumerate(pairs) if (p is not None) == paired]
        if not idx:
            continue
        first = [texts[i] for i in idx]
        second = [pairs[i] for i in idx] if paired else None
        out = tokenizer(first, second, truncation=True, max_length=max_length)
        for j, i in enumerate(idx):
            enc[i] = {k: v[j] for k, v in out.items()}
    width = max(len(e["input_ids"]) for e in enc)
    fill = {
        "input_ids": tokenizer.pad_token_id,
        "attention_mask": 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
    }
    left = getattr(tokenizer, "padding_side", "right") == "left"
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
