"""Many-to-many BPTT, after seed 002 (eq 7.15).

    dh_t = grad_dense_t                                 t = T-1
    dh_t = grad_dense_t + dh_{t+1} f'(ĥ_{t+1}) U        t < T-1   (row vectors)

dW, dU, db as in eqs 7.7-7.9 with this dh, summed over every step from t = 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model.forward import forward
from ..model.functions import act_grad, loss_scale, step_loss_grad
from ..model.spec import Spec
from ._common import require, zero_grads


def backward(params: Mapping[str, Any], x: np.ndarray, y: np.ndarray, spec: Spec) -> dict[str, np.ndarray]:
    require(spec, mode="many-to-many", name="many_to_many")
    W, U, V = params["W"], params["U"], params["V"]
    T, B, _ = x.shape
    tr = forward(params, x, spec)
    scale = loss_scale(spec, T, B)
    g = zero_grads(params, x)

    dh_next = np.zeros_like(tr.h[0])                     # dh_{t+1} f'(ĥ_{t+1}) U, zero after the last step
    for t in reversed(range(T)):
        # E_t and the dense layer ŷ_t = V h_t + c
        dyhat = scale * step_loss_grad(spec, tr.yhat[t], y[t])
        g["V"] += dyhat.T @ tr.h[t + 1]
        if "c" in g:
            g["c"] += dyhat.sum(axis=0)
        dh = dyhat @ V + dh_next                         # eq 7.15
        # h_t = f(ĥ_t)
        dhhat = dh * act_grad(spec.activation, tr.hhat[t])
        # ĥ_t = x_t Wᵀ + h_{t-1} Uᵀ + b
        g["W"] += dhhat.T @ x[t]
        g["U"] += dhhat.T @ tr.h[t]
        if "b" in g:
            g["b"] += dhhat.sum(axis=0)
        g["x"][t] += dhhat @ W
        dh_next = dhhat @ U
    g["h0"] += dh_next
    return g
