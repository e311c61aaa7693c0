"""lc_kernels: the LayerConnect connector op (SPEC.md §2-§5) and its backends.

    import lc_kernels
    y = lc_kernels.connector(x, theta, bias, t, r, alpha=1.0, backend="auto")
    lc_kernels.connector_(x, theta, bias, t, r)   # in place, inference only (no autograd)
    lc_kernels.available_backends()   # e.g. ["reference", "cpu", "triton"]
"""
from . import reference
from .ops import available_backends, connector, connector_, inplace_supported, resolve_backend

from ._version import __version__
__all__ = ["connector", "connector_", "inplace_supported", "available_backends", "resolve_backend", "reference",
           "__version__"]
