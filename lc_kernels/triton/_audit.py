"""Counting kernel launches (no triton import here, so the audit hook exists wherever the package does)."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Iterator, List

_LOCK = threading.Lock()
_ACTIVE: List[Counter] = []


@contextlib.contextmanager
def count_launches() -> Iterator[Counter]:
    """Count the Triton kernel launches of this backend during the block, by kernel name.

        with lc_kernels.triton.count_launches() as launches:
            y = model(**batch)
        assert launches["connector_fwd_kernel"] == n_connectors

    Counted in the launchers (one per logical launch; autotuning's benchmark runs on a GPU, which
    happen once per shape bucket, are not counted). Blocks may nest; each sees every launch inside it.
    """
    c: Counter = Counter()
    with _LOCK:
        _ACTIVE.append(c)
    try:
        yield c
    finally:
        with _LOCK:
            _ACTIVE.remove(c)


def record(name: str) -> None:
    if _ACTIVE:
        with _LOCK:
            for c in _ACTIVE:
                c[name] += 1
