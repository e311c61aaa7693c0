"""The backend registry: one place that knows which implementations of the connector exist.

A backend computes the three SPEC §5 operations on *normalised* inputs:

    x      (N, d)        contiguous, float16/bfloat16/float32/float64
    theta  (T, K, p, q)  contiguous, compute dtype (float64 if x is float64, else float32)
    bias   (T, d)        contiguous, compute dtype
    ids    (N,) int64 contiguous, or None (then T == 1)
    t: float in [0, 1], r: int with d % r == 0, alpha: float

    forward(x, theta, bias, ids, t, r, alpha)            -> y (N, d), dtype of x
    backward_dx(dy, theta, ids, t, r, alpha)             -> dx (N, d), dtype of dy
    backward_params(x, dy, theta, ids, t, r, alpha)      -> (dtheta (T,K,p,q), dbias (T,d)), compute dtype

Optional capabilities (fields that default to "absent", so a backend that predates them stays valid):

    build_weights(theta, ts, r, d, dtype)                -> W (P, T, r_pad, d) for P = len(ts) positions
    uses_weights = True: forward, backward_dx and forward_inplace take ``weights=`` (this position's
        W, (T, r_pad, d), dtype of x) and then skip building W; without it they build W themselves
    forward_save_z(x, theta, bias, ids, t, r, alpha, weights=None) -> (y, z (N, r) in x's dtype)
    backward_params_z(z, dy, theta, ids, t, r, alpha)    -> as backward_params, from the saved z

The public op (``lc_kernels.ops``) does all validation and normalisation, so backends may assume
the above. Where a backend lacks a capability the op falls back: W is built with
``lc_kernels.reference`` math, ``weights`` is ignored, and x (not z) is saved for the backward. A
backend registers itself with :func:`register`; ``available()`` says whether it can run
in this process and ``why_unavailable()`` why not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch


@dataclass
class Backend:
    name: str
    forward: Callable
    backward_dx: Callable
    backward_params: Callable
    #: returns None when usable, else a human-readable reason
    unavailable_reason: Callable[[], Optional[str]]
    #: device types whose tensors this backend accepts ("cpu", "cuda")
    devices: Tuple[str, ...]
    #: dtypes of x the backend accepts on each device type
    dtypes: Dict[str, Tuple[torch.dtype, ...]] = field(default_factory=dict)
    #: preference for backend="auto" on each device type (lower is preferred)
    priority: Dict[str, int] = field(default_factory=dict)
    #: optional forward writing y into x's own memory (same arguments as ``forward``; returns x).
    #: Only for backends whose kernel reads every row before writing it; others fall back to a copy.
    forward_inplace: Optional[Callable] = None
    #: optional: W for many connector positions in one call (see the module docstring)
    build_weights: Optional[Callable] = None
    #: forward, backward_dx and forward_inplace accept ``weights=`` (a prebuilt W of this position)
    uses_weights: bool = False
    #: optional forward that also returns z = D(x) for the params backward (training saves z, not x)
    forward_save_z: Optional[Callable] = None
    #: optional params backward from the saved z (required when forward_save_z is given)
    backward_params_z: Optional[Callable] = None

    def available(self) -> bool:
        return self.unavailable_reason() is None


_REGISTRY: Dict[str, Backend] = {}


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def get(name: str) -> Backend:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"backend={name!r} is not a known backend; choose one of {sorted(_REGISTRY)} or 'auto'")
    return _REGISTRY[name]


def all_backends() -> Dict[str, Backend]:
    _load_all()
    return dict(_REGISTRY)


_LOADED = False


def _load_all() -> None:
    """Import every backend module once; each registers itself (even when it cannot run)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import _reference_backend  # noqa: F401

    for mod in ("_cpu_backend", "_cuda_backend", "triton"):
        try:
            __import__(f"{__package__}.{mod}")
        except ImportError as exc:  # a backend module itself failing to import is a bug: say so
            import warnings

            warnings.warn(f"lc_kernels: backend module {mod} failed to import: {exc}", stacklevel=2)
    # Ask each backend once now whether it can run: the answer loads the compiled extension and is cached,
    # so a later first call inside torch.compile (which cannot import or call into pybind) only reads it.
    for b in _REGISTRY.values():
        b.unavailable_reason()


def available_backends() -> List[str]:
    """Names of the backends this install can run, e.g. ``["reference", "cpu", "triton"]``."""
    _load_all()
    order = ["reference", "cpu", "triton", "cuda"]
    names = [n for n, b in _REGISTRY.items() if b.available()]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def auto_backend(device: torch.device, dtype: torch.dtype, d: Optional[int] = None) -> str:
    """The preferred available backend for tensors on ``device`` of ``dtype`` (hidden size ``d``).

    On GPUs the faster of the usable backends by the figures recorded in
    :mod:`lc_kernels._gpu_choice` for this kind of device, this dtype and this d (any d when d is
    None); where no figure decides, and on other devices, the backends' priority order."""
    _load_all()
    dev = device.type
    usable = []
    for b in _REGISTRY.values():
        if dev not in b.devices or not b.available():
            continue
        if dtype not in b.dtypes.get(dev, ()):
            continue
        prio = b.priority.get(dev)
        if prio is None:
            continue
        usable.append((prio, b.name))
    if not usable:
        return "reference"
    usable.sort()
    if dev == "cuda" and len(usable) > 1:
        from . import _gpu_choice

        pick = _gpu_choice.choose(_gpu_choice.describe(device), dtype, d, [name for _, name in usable])
        if pick is not None:
            return pick
    return usable[0][1]
