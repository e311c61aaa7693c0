"""lc_kernels: the LayerConnect connector op (SPEC.md §2-§5) and its backends.

import lc_kernels
y = lc_kernels.connector(x, theta, bias, t, r, alpha=1.0, backend="auto")
lc_kernels.connector_(x, theta, bias, t, r)   # in place, inference only (no autograd)
W = lc_kernels.build_weights(theta, ts, r, d, dtype=x.dtype)   # W of every position, one launch
y = lc_kernels.connector(x, theta, bias, ts[l], r, weights=W[l])
lc_kernels.available_backends()   # e.g. ["reference", "cpu", "triton"]
"""

from . import reference
from ._version import __version__
from .backends import _load_all
from .ops import (
    available_backends,
    build_weights,
    connector,
    connector_,
    inplace_supported,
    padded_rank,
    resolve_backend,
)

# Register every backend now, not on the first call: a first call inside torch.compile cannot import.
_load_all()

__all__ = [
    "connector",
    "connector_",
    "build_weights",
    "padded_rank",
    "inplace_supported",
    "available_backends",
    "resolve_backend",
    "reference",
    "__version__",
]
