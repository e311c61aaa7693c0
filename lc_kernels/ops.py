"""The public connector op: validation, backend choice, ``torch.library`` registration, autograd.

``connector(x, theta, bias, t, r, alpha=1.0, backend="auto", task_ids=None, weights=None)`` is the
one entry point for training and inference; ``connector_`` (same arguments) is its in-place,
inference-only twin, which writes ``y`` into ``x``'s memory (no output allocation). It normalises
its inputs (flattens leading dims, stacks single-task parameters to T=1, casts the tiny parameters to
the compute dtype) and calls the custom op ``layerconnect::connector``, whose implementation
forwards to the chosen backend. Every op has a fake (meta) implementation, so
``torch.compile(fullgraph=True)`` traces through it, and the connector's autograd formula is built
from more custom ops, so every backend's backward is fused too.

``build_weights(theta, ts, r, d, dtype)`` materialises W for every connector position at once (one
launch on ``triton``; SPEC §5 v2). Passing ``weights=build_weights(...)[l]`` to the connector lets a
backend that uses W (``triton``) skip building it; the others ignore it. When gradients of Theta or b
are needed and the backend can (``triton``), the forward also writes z = D(x) (N x r, the activation
dtype) and the params backward reads z instead of x.

Gradients (SPEC §4), with z = D(x), W = Bilinear(sum_k h_k Theta_k), upstream dy:

    y  = x + alpha (z W + b)
    dx = dy + alpha U(dy W^T)                 U = adjoint of D (spread over g channels, / g)
    dW = alpha z^T dy,  db = alpha sum_n dy[n]
    dS = Bilinear^T(dW),  dTheta_k = h_k(t) dS

Accumulation is float32 for float16/bfloat16/float32 inputs and float64 for float64 inputs.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backends as _backends
from . import reference as _ref

__all__ = [
    "connector",
    "connector_",
    "build_weights",
    "padded_rank",
    "inplace_supported",
    "available_backends",
    "resolve_backend",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def available_backends():
    """Backends this install can run (see :mod:`lc_kernels.backends`)."""
    return _backends.available_backends()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def padded_rank(r: int) -> int:
    """Rows of a prebuilt W (:func:`build_weights`): r rounded up to a power of two, at least 16."""
    r = int(r)
    return max(16, 1 << max(0, r - 1).bit_length())


def resolve_backend(backend: str, x: Tensor) -> str:
    """Turn ``"auto"`` into a concrete backend for ``x``; check an explicit one can take ``x``."""
    return _resolve(backend, x.device, x.dtype, "x", d=x.shape[-1] if x.dim() else None)


def _resolve(backend: str, device: torch.device, dtype: torch.dtype, what: str, d: Optional[int] = None) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        return _backends.auto_backend(device, dtype, d=d)
    b = _backends.get(backend)
    reason = b.unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} is not available: {reason}")
    dev = device.type
    if dev not in b.devices:
        raise ValueError(
            f"backend={backend!r} runs on {list(b.devices)} tensors but {what} is on {device}; "
            f"move {what} (.to(...)) or use backend='auto'"
        )
    if dtype not in b.dtypes.get(dev, ()):
        ok = [str(d).replace("torch.", "") for d in b.dtypes.get(dev, ())]
        raise TypeError(
            f"backend={backend!r} on {dev} supports {what} dtypes {ok}, got {dtype}; "
            f"cast {what} or pick another backend"
        )
    return backend


# ---------------------------------------------------------------------------------------------
# custom ops (normalised inputs: x (N,d), theta (T,K,p,q), bias (T,d), ids (N,) or None)
# ---------------------------------------------------------------------------------------------


def _check_ids(ids: Optional[Tensor], num_tasks: int) -> None:
    """Task ids must index the stacked bank. Checked inside the ops, so it holds for every backend and
    under ``torch.compile`` too (a custom op's body runs eagerly there); on a GPU it costs one sync."""
    if ids is None or ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num_tasks:
        raise IndexError(f"task_ids must be in [0, T={num_tasks}), got values in [{lo}, {hi}]")


def _forward(b, x, theta, bias, ids, t, r, alpha, weights):
    _check_ids(ids, theta.shape[0])
    if weights is not None and b.uses_weights:
        return b.forward(x, theta, bias, ids, t, r, alpha, weights=weights)
    return b.forward(x, theta, bias, ids, t, r, alpha)


@torch.library.custom_op("layerconnect::connector", mutates_args=())
def _connector_op(
    x: Tensor,
    theta: Tensor,
    bias: Tensor,
    ids: Optional[Tensor],
    t: float,
    r: int,
    alpha: float,
    backend: str,
    weights: Optional[Tensor] = None,
) -> Tensor:
    return _forward(_backends.get(backend), x, theta, bias, ids, t, r, alpha, weights)


@_connector_op.register_fake
def _(x, theta, bias, ids, t, r, alpha, backend, weights=None):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("layerconnect::connector_save_z", mutates_args=())
def _connector_z_op(
    x: Tensor,
    theta: Tensor,
    bias: Tensor,
    ids: Optional[Tensor],
    t: float,
    r: int,
    alpha: float,
    backend: str,
    weights: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(y, z): the training forward of backends with ``forward_save_z`` (z = D(x) for the backward)."""
    b = _backends.get(backend)
    if b.forward_save_z is None:
        raise RuntimeError(f"backend={backend!r} has no forward_save_z; call layerconnect::connector instead")
    _check_ids(ids, theta.shape[0])
    if weights is not None and b.uses_weights:
        return b.forward_save_z(x, theta, bias, ids, t, r, alpha, weights=weights)
    return b.forward_save_z(x, theta, bias, ids, t, r, alpha)


@_connector_z_op.register_fake
def _(x, theta, bias, ids, t, r, alpha, backend, weights=None):
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((x.shape[0], r))


@torch.library.custom_op("layerconnect::connector_inplace", mutates_args=("x",))
def _connector_inplace_op(
    x: Tensor,
    theta: Tensor,
    bias: Tensor,
    ids: Optional[Tensor],
    t: float,
    r: int,
    alpha: float,
    backend: str,
    weights: Optional[Tensor] = None,
) -> None:
    b = _backends.get(backend)
    if b.forward_inplace is not None:
        _check_ids(ids, theta.shape[0])
        if weights is not None and b.uses_weights:
            b.forward_inplace(x, theta, bias, ids, t, r, alpha, weights=weights)
        else:
            b.forward_inplace(x, theta, bias, ids, t, r, alpha)
    else:  # correct on every backend, just not allocation-free
        x.copy_(_forward(b, x, theta, bias, ids, t, r, alpha, weights))


@_connector_inplace_op.register_fake
def _(x, theta, bias, ids, t, r, alpha, backend, weights=None):
    return None


@torch.library.custom_op("layerconnect::connector_backward_dx", mutates_args=())
def _backward_dx_op(
    dy: Tensor,
    theta: Tensor,
    ids: Optional[Tensor],
    t: float,
    r: int,
    alpha: float,
    backend: str,
    weights: Optional[Tensor] = None,
) -> Tensor:
    b = _backends.get(backend)
    if weights is not None and b.uses_weights:
        return b.backward_dx(dy, theta, ids, t, r, alpha, weights=weights)
    return b.backward_dx(dy, theta, ids, t, r, alpha)


@_backward_dx_op.register_fake
def _(dy, theta, ids, t, r, alpha, backend, weights=None):
    return torch.empty_like(dy, memory_format=torch.contiguous_format)


@torch.library.custom_op("layerconnect::connector_backward_params", mutates_args=())
def _backward_params_op(
    x: Tensor, dy: Tensor, theta: Tensor, ids: Optional[Tensor], t: float, r: int, alpha: float, backend: str
) -> Tuple[Tensor, Tensor]:
    return _backends.get(backend).backward_params(x, dy, theta, ids, t, r, alpha)


@_backward_params_op.register_fake
def _(x, dy, theta, ids, t, r, alpha, backend):
    nt, d = theta.shape[0], x.shape[-1]
    return torch.empty_like(theta), theta.new_empty((nt, d))


@torch.library.custom_op("layerconnect::connector_backward_params_z", mutates_args=())
def _backward_params_z_op(
    z: Tensor, dy: Tensor, theta: Tensor, ids: Optional[Tensor], t: float, r: int, alpha: float, backend: str
) -> Tuple[Tensor, Tensor]:
    return _backends.get(backend).backward_params_z(z, dy, theta, ids, t, r, alpha)


@_backward_params_z_op.register_fake
def _(z, dy, theta, ids, t, r, alpha, backend):
    nt, d = theta.shape[0], dy.shape[-1]
    return torch.empty_like(theta), theta.new_empty((nt, d))


def _setup_context(ctx, inputs, output):
    x, theta, bias, ids, t, r, alpha, backend, weights = inputs
    # Only what the backward needs: x (for dTheta) when Theta or b needs a gradient, and the prebuilt
    # W if one was passed (so dx does not rebuild it); never z here (see _connector_z_op).
    ctx.need_params = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    ctx.save_for_backward(x if ctx.need_params else None, theta, ids, weights)
    ctx.meta = (t, r, alpha, backend)


def _backward(ctx, dy):
    x, theta, ids, weights = ctx.saved_tensors
    t, r, alpha, backend = ctx.meta
    dy = dy.contiguous()  # expanded (stride-0) or transposed upstream grads: one documented copy
    dx = dtheta = dbias = None
    if ctx.needs_input_grad[0]:
        dx = _backward_dx_op(dy, theta, ids, t, r, alpha, backend, weights)
    if ctx.need_params:
        dtheta, dbias = _backward_params_op(x, dy, theta, ids, t, r, alpha, backend)
    return dx, dtheta, dbias, None, None, None, None, None, None


def _setup_context_z(ctx, inputs, output):
    x, theta, bias, ids, t, r, alpha, backend, weights = inputs
    ctx.save_for_backward(output[1], theta, ids, weights)
    ctx.meta = (t, r, alpha, backend)


def _backward_z(ctx, dy, dz):
    # z is an internal by-product (never differentiated: the public op returns y only), so dz is ignored
    z, theta, ids, weights = ctx.saved_tensors
    t, r, alpha, backend = ctx.meta
    dy = dy.contiguous()
    dx = dtheta = dbias = None
    if ctx.needs_input_grad[0]:
        dx = _backward_dx_op(dy, theta, ids, t, r, alpha, backend, weights)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        dtheta, dbias = _backward_params_z_op(z, dy, theta, ids, t, r, alpha, backend)
    return dx, dtheta, dbias, None, None, None, None, None, None


_connector_z_op.register_autograd(_backward_z, setup_context=_setup_context_z)


@torch.library.custom_op("layerconnect::build_weights", mutates_args=())
def _build_weights_op(theta: Tensor, ts: List[float], r: int, d: int, dtype: torch.dtype, backend: str) -> Tensor:
    b = _backends.get(backend)
    if b.build_weights is not None:
        return b.build_weights(theta, list(ts), r, d, dtype)
    # plain torch math from the reference (backends that do not use W still get a correct cache)
    nt = theta.shape[0]
    w = theta.new_zeros((len(ts), nt, padded_rank(r), d), dtype=dtype)
    for pos, t in enumerate(ts):
        w[pos, :, :r] = _ref.interpolate_seeds(theta, t, r, d).to(dtype)
    return w


@_build_weights_op.register_fake
def _(theta, ts, r, d, dtype, backend):
    return theta.new_empty((len(ts), theta.shape[0], padded_rank(r), d), dtype=dtype)


_connector_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------


def _check_float(name: str, v: Tensor) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16/bfloat16/float32/float64, got {v.dtype}")


def connector(
    x: Tensor,
    theta: Tensor,
    bias: Tensor,
    t: float,
    r: int,
    alpha: float = 1.0,
    backend: str = "auto",
    task_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
) -> Tensor:
    """The LayerConnect connector ``y = x + alpha (D(x) W + b)`` (SPEC §2), differentiable.

    Args:
        x: hidden states (..., d), float16/bfloat16/float32/float64.
        theta: seed bank (K, p, q); or stacked (T, K, p, q) with ``task_ids``.
        bias: connector bias (d,); or stacked (T, d) with ``task_ids``.
        t: depth coordinate of this connector in [0, 1].
        r: rank of the connector, must divide d.
        alpha: fixed output scale.
        backend: one of :func:`available_backends` or ``"auto"``.
        task_ids: LongTensor broadcastable to ``x.shape[:-1]`` (multi-task, SPEC §6).
        weights: optional prebuilt W of this connector, ``build_weights(theta, ts, r, d, dtype=x.dtype)[l]``
            (shape ``(padded_rank(r), d)``, or ``(T, padded_rank(r), d)`` with ``task_ids``). Backends that
            use W (``triton``) then skip building it; the others ignore it. The caller guarantees that it
            was built from the current ``theta`` at this ``t``: only its shape, dtype and device are
            checked. It receives no gradient (Theta's gradient flows through ``theta``).

    Returns ``y`` with the shape and dtype of ``x``.
    """
    x2, theta4, bias2, ids, t, r, alpha, name = _prepare(x, theta, bias, t, r, alpha, backend, task_ids)
    w = _prepare_weights(weights, x2, theta4, r, task_ids is None)
    b = _backends.get(name)
    if b.forward_save_z is not None and torch.is_grad_enabled() and (theta.requires_grad or bias.requires_grad):
        y, _ = _connector_z_op(x2, theta4, bias2, ids, t, r, alpha, name, w)  # saves z, not x
    else:
        y = _connector_op(x2, theta4, bias2, ids, t, r, alpha, name, w)
    return y.reshape(x.shape)


def _prepare_weights(weights, x2, theta4, r, single_task):
    """Check a prebuilt W cheaply (shape, dtype, device, layout) and give it the (T, r_pad, d) form."""
    if weights is None:
        return None
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor or None, got {type(weights).__name__}")
    d, rp, nt = x2.shape[-1], padded_rank(r), theta4.shape[0]
    want = (rp, d) if single_task else (nt, rp, d)
    if tuple(weights.shape) != want:
        raise ValueError(
            f"weights must have shape {want} ({'' if single_task else 'T, '}padded_rank(r)={rp}, d={d}), got "
            f"{tuple(weights.shape)}; pass lc_kernels.build_weights(theta, ts, r, d, dtype=x.dtype)[l] for this "
            f"connector's position l"
        )
    if weights.dtype != x2.dtype:
        raise TypeError(f"weights has dtype {weights.dtype} but x has {x2.dtype}; build it with dtype=x.dtype")
    if weights.device != x2.device:
        raise ValueError(f"weights is on {weights.device} but x is on {x2.device}; build it on x's device")
    if not weights.is_contiguous():
        raise ValueError("weights must be contiguous: index build_weights(...) as W[l], do not slice its rows")
    return weights.unsqueeze(0) if single_task else weights


def build_weights(
    theta: Tensor,
    ts: Sequence[float],
    r: int,
    d: int,
    dtype: Optional[torch.dtype] = None,
    backend: str = "auto",
) -> Tensor:
    """W for every connector position at once (SPEC §3, §5 v2): a cache to pass as ``connector(...,
    weights=W[l])``.

    Args:
        theta: seed bank (K, p, q), or stacked (T, K, p, q) for multi-task models.
        ts: the depth coordinate of each connector position, in order (P = len(ts)).
        r, d: rank and hidden size of the connectors.
        dtype: the activation dtype (W is stored in it); default ``theta.dtype``.
        backend: as for :func:`connector` (chosen for ``theta``'s device and ``dtype``); ``triton``
            builds all positions in one launch, the others use the reference's torch math.

    Returns W of shape (P, padded_rank(r), d), or (P, T, padded_rank(r), d) for a stacked theta, in
    ``dtype``, contiguous (so ``W[l]`` is contiguous), rows >= r zero. It is NOT differentiable: it is
    a detached cache, computed from ``theta``'s current values; gradients reach Theta through the
    connector's own ``theta`` argument. Rebuild it whenever Theta changes (every training step).
    """
    _check_float("theta", theta)
    if theta.dim() not in (3, 4):
        raise ValueError(f"theta must have shape (K, p, q) or (T, K, p, q), got {tuple(theta.shape)}")
    dtype = theta.dtype if dtype is None else dtype
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float16/bfloat16/float32/float64, got {dtype}")
    if isinstance(ts, Tensor):
        raise TypeError("ts must be a sequence of Python floats (one depth coordinate per position), not a tensor")
    ts = [float(t) for t in ts]
    for t in ts:
        if not (0.0 <= t <= 1.0):
            raise ValueError(f"every t in ts must be in [0, 1], got {t}")
    if isinstance(r, bool) or not isinstance(r, int) or isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"r and d must be Python ints, got {type(r).__name__} and {type(d).__name__}")
    _ref.check_geometry(d, r, theta.shape[-2], theta.shape[-1])
    name = _resolve(backend, theta.device, dtype, "the weights")
    theta4 = (theta if theta.dim() == 4 else theta.unsqueeze(0)).detach().to(compute_dtype(dtype)).contiguous()
    w = _build_weights_op(theta4, ts, r, d, dtype, name)
    return w if theta.dim() == 4 else w.squeeze(1)


def _prepare(x, theta, bias, t, r, alpha, backend, task_ids):
    """Validate and normalise the public arguments: (x (N, d), theta (T,K,p,q), bias (T,d), ids, t, r,
    alpha, backend name)."""
    _check_float("x", x)
    _check_float("theta", theta)
    _check_float("bias", bias)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (..., d)")
    d = x.shape[-1]
    if isinstance(t, Tensor):
        raise TypeError("t must be a Python float in [0, 1], not a tensor")
    t = float(t)
    if not (0.0 <= t <= 1.0):
        raise ValueError(f"t must be in [0, 1], got {t}")
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"r must be a Python int, got {type(r).__name__}")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite float, got {alpha}")
    if theta.dim() in (3, 4) and theta.shape[-3] < 1:
        raise ValueError(f"theta must hold at least one anchor (K >= 1), got shape {tuple(theta.shape)}")
    if task_ids is None:
        if theta.dim() != 3:
            raise ValueError(
                f"theta must have shape (K, p, q), got {tuple(theta.shape)}"
                + ("; stacked (T, K, p, q) banks need task_ids=" if theta.dim() == 4 else "")
            )
        if bias.shape != (d,):
            raise ValueError(f"bias must have shape (d,) = ({d},), got {tuple(bias.shape)}")
        theta4, bias2 = theta.unsqueeze(0), bias.unsqueeze(0)
    else:
        if theta.dim() != 4:
            raise ValueError(f"with task_ids, theta must have shape (T, K, p, q), got {tuple(theta.shape)}")
        nt = theta.shape[0]
        if bias.shape != (nt, d):
            raise ValueError(f"with task_ids, bias must have shape (T, d) = ({nt}, {d}), got {tuple(bias.shape)}")
        if not isinstance(task_ids, Tensor) or task_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("task_ids must be an int64 (or int32) tensor of task indices")
        theta4, bias2 = theta, bias
    for pname, v in (("theta", theta), ("bias", bias)):
        mixed_ok = x.dtype in (torch.float16, torch.bfloat16) and v.dtype == torch.float32
        if v.dtype != x.dtype and not mixed_ok:
            raise TypeError(
                f"{pname} has dtype {v.dtype} but x has {x.dtype}; give them one dtype "
                f"(float32 {pname} is also accepted with float16/bfloat16 x)"
            )
    _ref.check_geometry(d, r, theta4.shape[-2], theta4.shape[-1])
    for name, v in (("theta", theta), ("bias", bias)):
        if v.device != x.device:
            raise ValueError(f"{name} is on {v.device} but x is on {x.device}; move them to one device")
    name = resolve_backend(backend, x)

    cdt = compute_dtype(x.dtype)
    theta4 = theta4.to(cdt).contiguous()
    bias2 = bias2.to(cdt).contiguous()
    lead = x.shape[:-1]
    x2 = x.reshape(-1, d)
    if x2.stride(-1) != 1 or not x2.is_contiguous():
        x2 = x2.contiguous()
    ids = None
    if task_ids is not None:
        if task_ids.device != x.device:
            raise ValueError(f"task_ids is on {task_ids.device} but x is on {x.device}")
        try:
            ids = torch.broadcast_to(task_ids, lead).reshape(-1).to(torch.int64).contiguous()
        except RuntimeError as exc:
            raise ValueError(
                f"task_ids of shape {tuple(task_ids.shape)} does not broadcast to x.shape[:-1] = {tuple(lead)}"
            ) from exc
        # the range of the ids is checked inside the op (every backend, compiled or not): _check_ids
    return x2, theta4, bias2, ids, t, r, alpha, name


def inplace_supported(x: Tensor, backend: str = "auto") -> bool:
    """Whether :func:`connector_` writes into ``x`` without a temporary on this backend (else it copies)."""
    try:
        name = resolve_backend(backend, x)
    except (RuntimeError, ValueError, TypeError):
        return False
    return _backends.get(name).forward_inplace is not None and x.is_contiguous()


def connector_(
    x: Tensor,
    theta: Tensor,
    bias: Tensor,
    t: float,
    r: int,
    alpha: float = 1.0,
    backend: str = "auto",
    task_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
) -> Tensor:
    """In-place :func:`connector` for inference: ``x <- x + alpha (D(x) W + b)``; returns ``x``.

    Same arguments (``weights`` included) and checks as :func:`connector`. It saves allocating (and
    first-touching) a new
    ``x``-sized output per connector, which measured about one point of BERT-base latency on CPU
    (11 connectors, batch 32 x 128 tokens). There is no backward: call it under ``torch.no_grad()`` or
    ``torch.inference_mode()``. ``x`` must be contiguous. Backends without a true in-place kernel
    (see :func:`inplace_supported`) compute ``y`` and copy it into ``x``, which is correct but not faster.
    """
    if torch.is_grad_enabled() and any(isinstance(v, Tensor) and v.requires_grad for v in (x, theta, bias)):
        raise RuntimeError(
            "connector_ overwrites x and has no backward; run it under torch.no_grad() or "
            "torch.inference_mode(), or use lc_kernels.connector for training"
        )
    if not isinstance(x, Tensor) or not x.is_contiguous():
        raise ValueError(
            "connector_ writes y into x's memory, so x must be a contiguous tensor; "
            "use lc_kernels.connector (out of place) or pass x.contiguous()"
        )
    x2, theta4, bias2, ids, t, r, alpha, name = _prepare(x, theta, bias, t, r, alpha, backend, task_ids)
    w = _prepare_weights(weights, x2, theta4, r, task_ids is None)
    _connector_inplace_op(x2, theta4, bias2, ids, t, r, alpha, name, w)  # x2 is a view of x (x is contiguous)
    return x
