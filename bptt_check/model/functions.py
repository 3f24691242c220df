"""Activations, output functions and per-step losses (DESIGN §1-2), written once for every namespace.

``act``, ``output``, ``softmax`` and ``step_loss`` take an ``ops`` namespace (numpy by default;
complex numpy for the complex step; torch for autograd). ``act_grad`` and ``step_loss_grad`` are the
numpy derivatives the one reverse recursion (``backprop``) and the built-in backwards use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .ops import NUMPY

if TYPE_CHECKING:
    from .spec import Spec

Array = np.ndarray


def act(name: str, z: Any, ops: Any = NUMPY) -> Any:
    """f(z) for the hidden activation ``name``."""
    if name == "tanh":
        return ops.tanh(z)
    if name == "sigmoid":
        return ops.sigmoid(z)
    if name == "relu":
        return ops.relu(z)
    if name == "identity":
        return z
    raise ValueError(name)


def act_grad(name: str, z: Array) -> Array:
    """f'(z), evaluated at the pre-activation z (numpy)."""
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


def softmax(z: Any, ops: Any = NUMPY) -> Any:
    e = ops.exp(z - ops.shift(z))
    return e / ops.sum(e, -1, keepdims=True)


def output(name: str, yhat: Any, ops: Any = NUMPY) -> Any:
    """y = g(ŷ)."""
    if name == "softmax":
        return softmax(yhat, ops)
    return act(name, yhat, ops)


def loss_scale(spec: Spec, T: int, B: int) -> float:
    """The weight of one sample's loss at one step under the spec's reduction (full-length sequences)."""
    scale = 1.0
    if spec.reduction in ("mean", "mean_batch"):
        scale /= B
    if spec.reduction in ("mean", "mean_time") and spec.mode == "many-to-many":
        scale /= T
    return scale


def loss_weights(spec: Spec, T: int, B: int, lengths: Any = None) -> Array:
    """The weight of each sample's loss at each step, (T, B): 0 where no loss exists.

    Full-length sequences: the spec's reduction everywhere (many-to-one: at the last step). A padded
    batch (``lengths``, DESIGN §12): sequence b has losses at t < ℓ_b (many-to-many) or at ℓ_b − 1
    (many-to-one); ``mean`` divides by the number of losses that exist (Σ ℓ_b: the token mean),
    ``mean_time`` each sequence by its own length, ``mean_batch`` by B.
    """
    w = np.zeros((T, B))
    if lengths is None:
        if spec.mode == "many-to-many":
            w[:] = loss_scale(spec, T, B)
        else:
            w[T - 1] = loss_scale(spec, T, B)
        return w
    n = np.asarray(lengths, dtype=np.int64)
    t = np.arange(T)[:, None]
    if spec.mode == "many-to-one":
        w[:] = (t == n[None, :] - 1) * (1.0 / B if spec.reduction in ("mean", "mean_batch") else 1.0)
        return w
    present = (t < n[None, :]).astype(float)
    if spec.reduction == "mean":
        return present / max(int(n.sum()), 1)
    if spec.reduction == "mean_time":
        return present / n[None, :]
    return present / B if spec.reduction == "mean_batch" else present

def softplus(z: Any, ops: Any = NUMPY) -> Any:
    """log(1 + e^z) without overflow: a real constant shift, exact for complex z too."""
    m = ops.positive_part(z)
    return m + ops.log(ops.exp(-m) + ops.exp(z - m))


def step_loss(spec: Spec, yhat: Any, target: Any, ops: Any = NUMPY) -> Any:
    """E_t per sample, shape (..., B), from the logits ŷ_t (..., B, O)."""
    if spec.loss == "cross_entropy":
        z = yhat - ops.shift(yhat)
        return ops.log(ops.sum(ops.exp(z), -1)) - ops.pick(z, target)
    if spec.loss == "bce":
        # −[Y log σ(ŷ) + (1 − Y) log(1 − σ(ŷ))] = softplus(ŷ) − Y ŷ, summed over the outputs
        return ops.sum(softplus(yhat, ops) - target * yhat, -1)
    y = output(spec.output, yhat, ops)
    sq = ops.sum((y - target) ** 2, -1)
    return 0.5 * sq if spec.loss == "half_mse" else sq


def step_loss_grad(spec: Spec, yhat: Array, target: Array) -> Array:
    """dE_t/dŷ_t per sample, shape (B, O) (the gradient entering the dense layer)."""
    if spec.loss == "cross_entropy":
        p = softmax(yhat)
        idx = np.asarray(target, dtype=np.int64)
        p[np.arange(p.shape[0]), idx] -= 1.0
        return p
    if spec.loss == "bce":
        return act("sigmoid", yhat) - target
    y = output(spec.output, yhat)
    dy = (y - target) if spec.loss == "half_mse" else 2.0 * (y - target)
    if spec.output == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if spec.output == "identity":
        return dy
    return dy * act_grad(spec.output, yhat)


def target_at(spec: Spec, y: Any, t: int, T: int) -> Any:
    """The target of step t (many-to-one targets belong to step T-1)."""
    if spec.mode == "many-to-one":
        return y
    return y[t]


def targets_at(spec: Spec, y: Any, steps: list[int]) -> Any:
    """The targets of ``steps``, stacked (len(steps), B, ...) (numpy or torch ``y``)."""
    if spec.mode == "many-to-one":
        return y[None][[0] * len(steps)]
    return y[list(steps)]
