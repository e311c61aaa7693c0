"""The ``reference`` backend: SPEC §4 formulas in plain PyTorch (any device, float32/float64 math)."""

from __future__ import annotations

import torch

from . import reference as ref
from .backends import Backend, register


def _theta_view(theta, ids):
    # (T, K, p, q) -> (K, p, q) for the single-task path
    return theta[0] if ids is None else theta


def forward(x, theta, bias, ids, t, r, alpha):
    cdt = theta.dtype
    xc = x.to(cdt)
    if ids is None:
        y = ref.connector(xc, theta[0], bias[0], t, r, alpha)
    else:
        y = ref.connector(xc, theta, bias, t, r, alpha, task_ids=ids)
    return y.to(x.dtype)


def backward_dx(dy, theta, ids, t, r, alpha):
    cdt = theta.dtype
    d = dy.shape[-1]
    dyc = dy.to(cdt)
    w = ref.interpolate_seeds(theta, t, r, d)  # (T, r, d)
    if ids is None:
        v = dyc @ w[0].transpose(0, 1)
    else:
        v = (dyc.unsqueeze(-2) @ w[ids].transpose(-1, -2)).squeeze(-2)
    return (dyc + alpha * ref.upsample_adjoint(v, d)).to(dy.dtype)


def backward_params(x, dy, theta, ids, t, r, alpha):
    cdt = theta.dtype
    _, dtheta, db = ref.connector_backward(x.to(cdt), dy.to(cdt), _theta_view(theta, ids), t, r, alpha, task_ids=ids)
    if ids is None:
        dtheta, db = dtheta.unsqueeze(0), db.unsqueeze(0)
    return dtheta, db


_ALL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

register(
    Backend(
        name="reference",
        forward=forward,
        backward_dx=backward_dx,
        backward_params=backward_params,
        unavailable_reason=lambda: None,
        devices=("cpu", "cuda"),
        dtypes={"cpu": _ALL, "cuda": _ALL},
        priority={"cpu": 100, "cuda": 100},
    )
)
