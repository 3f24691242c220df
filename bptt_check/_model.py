"""The canonical model in numpy (DESIGN §1-2), row-vector batch form.

    ĥ_t = x_t Wᵀ + h_{t-1} Uᵀ + b        W: (H, I)  U: (H, H)  b: (H,)
    h_t = f(ĥ_t)
    ŷ_t = h_t Vᵀ + c                     V: (O, H)  c: (O,)
    y_t = g(ŷ_t)

x is (T, B, I) time-major; h0 is (B, H). States are stored as an array of
length T+1 with the initial state explicit: ``h[0] = h0``, ``h[t+1] = h_t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._spec import Spec, Window

Array = np.ndarray


# ----------------------------------------------------------------- activations

def act(name: str, z: Array) -> Array:
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "relu":
        return np.where(z > 0, z, 0.0 * z)
    if name == "identity":
        return z
    raise ValueError(name)


def act_grad(name: str, z: Array) -> Array:
    """f'(z), evaluated at the pre-activation z."""
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = act("sigmoid", z)
        return s * (1.0 - s)
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "identity":
        return np.ones_like(z)
    raise ValueError(name)


def softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def output(name: str, yhat: Array) -> Array:
    if name == "softmax":
        return softmax(yhat)
    return act(name, yhat)


# ----------------------------------------------------------------- losses

def loss_scale(spec: Spec, T: int, B: int) -> float:
    """The weight of one sample's loss at one step under the spec's reduction."""
    scale = 1.0
    if spec.reduction in ("mean", "mean_batch"):
        scale /= B
    if spec.reduction in ("mean", "mean_time") and spec.mode == "many-to-many":
        scale /= T
    return scale


def step_loss(spec: Spec, yhat: Array, target: Array) -> Array:
    """E_t per sample, shape (B,), from the logits ŷ_t (B, O)."""
    if spec.loss == "cross_entropy":
        z = yhat - yhat.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        idx = np.asarray(target, dtype=np.int64)
        return -np.take_along_axis(logp, idx[:, None], axis=-1)[:, 0]
    y = output(spec.output, yhat)
    sq = ((y - target) ** 2).sum(axis=-1)
    return 0.5 * sq if spec.loss == "half_mse" else sq


def step_loss_grad(spec: Spec, yhat: Array, target: Array) -> Array:
    """dE_t/dŷ_t per sample, shape (B, O) (the gradient entering the dense layer)."""
    if spec.loss == "cross_entropy":
        p = softmax(yhat)
        idx = np.asarray(target, dtype=np.int64)
        p[np.arange(p.shape[0]), idx] -= 1.0
        return p
    y = output(spec.output, yhat)
    dy = (y - target) if spec.loss == "half_mse" else 2.0 * (y - target)
    if spec.output == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if spec.output == "identity":
        return dy
    return dy * act_grad(spec.output, yhat)


def target_at(spec: Spec, y: Array, t: int, T: int) -> Array:
    """The target of step t (many-to-one targets belong to step T-1)."""
    if spec.mode == "many-to-one":
        return y
    return y[t]


# ----------------------------------------------------------------- forward

@dataclass
class Trace:
    h: Array      # (T+1, B, H): h[0] = h0, h[t+1] = h_t
    hhat: Array   # (T, B, H)
    yhat: Array   # (T, B, O)


def forward(params: Mapping[str, Any], x: Array, spec: Spec) -> Trace:
    W, U, V, h0 = params["W"], params["U"], params["V"], params["h0"]
    b = params.get("b")
    c = params.get("c")
    T, B, _ = x.shape
    H, O = U.shape[0], V.shape[0]
    dtype = np.result_type(W, U, V, h0, x)
    h = np.empty((T + 1, B, H), dtype=dtype)
    hhat = np.empty((T, B, H), dtype=dtype)
    yhat = np.empty((T, B, O), dtype=dtype)
    h[0] = h0
    for t in range(T):
        hhat[t] = x[t] @ W.T + h[t] @ U.T
        if b is not None:
            hhat[t] += b
        h[t + 1] = act(spec.activation, hhat[t])
        yhat[t] = h[t + 1] @ V.T
        if c is not None:
            yhat[t] += c
    return Trace(h, hhat, yhat)


def window_loss(params: Mapping[str, Any], x: Array, y: Array, spec: Spec,
                windows: list[Window], entering: Array) -> float:
    """The truncated objective Σ_windows Σ_{t∈L} E_t, each window started from a fixed state.

    ``entering[s]`` is the state h_{s-1} entering a window that starts at s > 0,
    computed beforehand with the unperturbed parameters and held constant here;
    a window starting at 0 starts from ``params['h0']``.
    """
    W, U, V = params["W"], params["U"], params["V"]
    b = params.get("b")
    c = params.get("c")
    T, B, _ = x.shape
    scale = loss_scale(spec, T, B)
    total = 0.0
    for w in windows:
        hprev = params["h0"] if w.start == 0 else entering[w.start]
        last = max(w.losses)
        wanted = set(w.losses)
        for t in range(w.start, last + 1):
            z = x[t] @ W.T + hprev @ U.T
            if b is not None:
                z = z + b
            hprev = act(spec.activation, z)
            if t in wanted:
                yh = hprev @ V.T
                if c is not None:
                    yh = yh + c
                total += scale * float(step_loss(spec, yh, target_at(spec, y, t, T)).sum())
    return total


def total_loss(params: Mapping[str, Any], x: Array, y: Array, spec: Spec) -> float:
    """The (truncated) objective of the spec at these parameters."""
    T = x.shape[0]
    entering = forward(params, x, spec).h
    return window_loss(params, x, y, spec, spec.windows(T), entering)
