"""The ground truth of the LayerConnect connector (SPEC.md §2-§4), in plain PyTorch.

Everything here is autograd-native and works in float32 and float64 on any device. Every fused
backend is tested against these functions. The notation follows SPEC.md:

    z = D(x)                      down-sampling: mean over g = d/r consecutive channels
    S = sum_k h_k(t) Theta_k      depth interpolation (hat weights over K anchors)
    W = Bilinear(S -> r x d)      spatial interpolation, align-corners convention
    y = x + alpha * (z W + b)

Bilinear interpolation is separable, so ``W = A S B^T`` with ``A`` (r x p) and ``B`` (d x q) the
1-D linear-interpolation matrices; this file builds ``A`` and ``B`` explicitly because it makes the
adjoint (SPEC §4, ``dS = A^T dW B``) obvious and keeps float64 exact.

Interpolation positions are computed with integer arithmetic (``lo = (i*(p-1)) // (r-1)``,
``frac = ((i*(p-1)) % (r-1)) / (r-1)``) so every backend can reproduce the same neighbours exactly.
"""

from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "hat_weights",
    "interp_positions",
    "interp_matrix",
    "mix_anchors",
    "interpolate_seeds",
    "downsample",
    "upsample_adjoint",
    "connector",
    "connector_backward",
    "check_geometry",
]


def hat_weights(t: float, num_anchors: int) -> List[float]:
    """Depth weights ``h_k(t) = max(0, 1 - |t (K-1) - k|)`` for k < K (SPEC §3.1)."""
    if num_anchors < 1:
        raise ValueError(f"num_anchors (K) must be >= 1, got {num_anchors}")
    t = float(t)
    if not (0.0 <= t <= 1.0) or math.isnan(t):
        raise ValueError(f"t must be a float in [0, 1], got {t!r}")
    if num_anchors == 1:
        return [1.0]
    s = t * (num_anchors - 1)
    return [max(0.0, 1.0 - abs(s - k)) for k in range(num_anchors)]


def interp_positions(n_out: int, n_in: int) -> List[Tuple[int, int, float]]:
    """For each output index, ``(lo, hi, frac)``: output = (1-frac)*in[lo] + frac*in[hi].

    Align-corners convention: output ``i`` samples ``u = i (n_in-1)/(n_out-1)`` (0 if n_out == 1).
    Integer arithmetic gives the exact neighbour and fraction.
    """
    out = []
    den = n_out - 1
    for i in range(n_out):
        if den == 0 or n_in == 1:
            out.append((0, 0, 0.0))
            continue
        num = i * (n_in - 1)
        lo, rem = divmod(num, den)
        hi = min(lo + 1, n_in - 1)
        out.append((lo, hi, rem / den))
    return out


@functools.lru_cache(maxsize=128)
def _interp_matrix_f64(n_out: int, n_in: int) -> Tensor:
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i, (lo, hi, f) in enumerate(interp_positions(n_out, n_in)):
        m[i, lo] += 1.0 - f
        m[i, hi] += f
    return m


def interp_matrix(n_out: int, n_in: int, dtype=torch.float64, device=None) -> Tensor:
    """The (n_out x n_in) 1-D linear interpolation matrix of :func:`interp_positions`.

    Built once per size in float64 (cached: the Python loop would otherwise dominate small
    calls) and returned as a fresh copy, so callers may modify it.
    """
    return _interp_matrix_f64(int(n_out), int(n_in)).to(dtype=dtype, device=device, copy=True)


def check_geometry(d: int, r: int, p: int, q: int) -> None:
    """Raise a ValueError naming the argument when (d, r, p, q) is not a valid connector geometry."""
    if not isinstance(r, int) or isinstance(r, bool):
        raise TypeError(f"r must be a Python int, got {type(r).__name__}")
    if r < 1 or r > d:
        raise ValueError(f"r must be in [1, d={d}], got r={r}")
    if d % r != 0:
        raise ValueError(
            f"r={r} must divide the hidden size d={d} (down-sampling pools g=d/r channels); "
            f"pick r from the divisors of {d}, e.g. r={d // 8 if d % 8 == 0 else 1}"
        )
    if not (1 <= p <= r):
        raise ValueError(f"seed rows p={p} must be in [1, r={r}]")
    if not (1 <= q <= d):
        raise ValueError(f"seed columns q={q} must be in [1, d={d}]")


def mix_anchors(theta: Tensor, t: float) -> Tensor:
    """``S = sum_k h_k(t) Theta_k``: theta (..., K, p, q) -> (..., p, q)."""
    h = hat_weights(t, theta.shape[-3])
    s = None
    for k, w in enumerate(h):
        if w == 0.0:
            continue
        term = theta[..., k, :, :] * w
        s = term if s is None else s + term
    return s


def interpolate_seeds(theta: Tensor, t: float, r: int, d: int) -> Tensor:
    """The connector weight ``W`` (r x d) generated from the seed bank ``theta`` (K, p, q).

    Also accepts stacked banks (T, K, p, q) -> (T, r, d).
    """
    if theta.dim() not in (3, 4):
        raise ValueError(f"theta must have shape (K, p, q) or (T, K, p, q), got {tuple(theta.shape)}")
    p, q = theta.shape[-2], theta.shape[-1]
    check_geometry(d, r, p, q)
    s = mix_anchors(theta, t)
    a = interp_matrix(r, p, dtype=theta.dtype, device=theta.device)
    b = interp_matrix(d, q, dtype=theta.dtype, device=theta.device)
    return a @ s @ b.transpose(0, 1)


def downsample(x: Tensor, r: int) -> Tensor:
    """``z = D(x)``: mean over ``g = d/r`` consecutive channels of the last dimension."""
    d = x.shape[-1]
    if not isinstance(r, int) or r < 1 or d % r != 0:
        raise ValueError(f"r={r!r} must be a positive int dividing the last dimension d={d}")
    return x.reshape(*x.shape[:-1], r, d // r).mean(dim=-1)


def upsample_adjoint(v: Tensor, d: int) -> Tensor:
    """``U``: the adjoint of :func:`downsample`; spreads each of r values over g channels, / g."""
    r = v.shape[-1]
    g = d // r
    return (v.unsqueeze(-1).expand(*v.shape, g) / g).reshape(*v.shape[:-1], d)


def _per_row(param: Tensor, task_ids: Optional[Tensor], lead: Sequence[int]) -> Tensor:
    """Select each row's task slice of a stacked parameter (T, ...) -> (*lead, ...)."""
    ids = torch.broadcast_to(task_ids, tuple(lead))
    return param[ids]


def connector(
    x: Tensor,
    theta: Tensor,
    bias: Tensor,
    t: float,
    r: int,
    alpha: float = 1.0,
    task_ids: Optional[Tensor] = None,
) -> Tensor:
    """``y = x + alpha * (D(x) W + b)`` with ``W = interpolate_seeds(theta, t, r, d)``.

    Single task: theta (K, p, q), bias (d,). Multi-task (SPEC §6): theta (T, K, p, q), bias (T, d)
    and ``task_ids`` (LongTensor broadcastable to ``x.shape[:-1]``) choosing each row's task.
    """
    d = x.shape[-1]
    w = interpolate_seeds(theta, t, r, d)
    z = downsample(x, r)
    if task_ids is None:
        if theta.dim() != 3 or bias.dim() != 1:
            raise ValueError("without task_ids, theta must be (K, p, q) and bias (d,)")
        o = z @ w + bias
    else:
        if theta.dim() != 4 or bias.dim() != 2:
            raise ValueError("with task_ids, theta must be (T, K, p, q) and bias (T, d)")
        w_rows = _per_row(w, task_ids, x.shape[:-1])  # (*lead, r, d)
        o = (z.unsqueeze(-2) @ w_rows).squeeze(-2) + _per_row(bias, task_ids, x.shape[:-1])
    return x + alpha * o


def connector_backward(
    x: Tensor,
    dy: Tensor,
    theta: Tensor,
    t: float,
    r: int,
    alpha: float = 1.0,
    task_ids: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The SPEC §4 gradients written out: returns ``(dx, dtheta, dbias)``.

    dx = dy + alpha U(dy W^T);  dW = alpha z^T dy;  db = alpha sum_n dy[n];
    dS = A^T dW B;  dTheta_k = h_k(t) dS.
    """
    d = x.shape[-1]
    p, q = theta.shape[-2], theta.shape[-1]
    kk = theta.shape[-3]
    w = interpolate_seeds(theta, t, r, d)
    z = downsample(x, r).reshape(-1, r)
    g2 = dy.reshape(-1, d)
    a = interp_matrix(r, p, dtype=theta.dtype, device=theta.device)
    b = interp_matrix(d, q, dtype=theta.dtype, device=theta.device)
    h = torch.tensor(hat_weights(t, kk), dtype=theta.dtype, device=theta.device)
    if task_ids is None:
        dx = dy + alpha * upsample_adjoint(dy @ w.transpose(0, 1), d)
        dw = alpha * (z.transpose(0, 1) @ g2)
        db = alpha * g2.sum(0)
        ds = a.transpose(0, 1) @ dw @ b
        dtheta = h[:, None, None] * ds
        return dx, dtheta, db
    ids = torch.broadcast_to(task_ids, x.shape[:-1]).reshape(-1)
    w_rows = w[ids]  # (N, r, d)
    dx = dy + alpha * upsample_adjoint((g2.unsqueeze(-2) @ w_rows.transpose(-1, -2)).squeeze(-2), d).reshape(dy.shape)
    nt = theta.shape[0]
    dtheta = torch.zeros_like(theta)
    db = torch.zeros(nt, d, dtype=theta.dtype, device=theta.device)
    for tau in range(nt):
        m = ids == tau
        dw = alpha * (z[m].transpose(0, 1) @ g2[m])
        db[tau] = alpha * g2[m].sum(0)
        dtheta[tau] = h[:, None, None] * (a.transpose(0, 1) @ dw @ b)
    return dx, dtheta, db
