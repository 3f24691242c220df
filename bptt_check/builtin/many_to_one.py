"""Many-to-one BPTT, after seed 000 (eqs 7.6-7.9), plus the dense layer (dV, dc).

The loss sits at the last step only: dh_{T-1} = grad_dense, and for t < T-1
dh_t = dh_{t+1} f'(ĥ_{t+1}) U  (eq 7.6, row vectors). Seed 000 sums dU from
t = 1 because its initial state is zero; here h0 is not, so every sum runs
from t = 0 and h0 gets its own gradient.
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
    require(spec, mode="many-to-one", name="many_to_one")
    W, U, V = params["W"], params["U"], params["V"]
    T, B, _ = x.shape
    tr = forward(params, x, spec)
    g = zero_grads(params, x)

    # loss at the last step: dE/dŷ_{T-1}
    dyhat = loss_scale(spec, T, B) * step_loss_grad(spec, tr.yhat[T - 1], y)
    # dense layer ŷ = V h + c
    g["V"] += dyhat.T @ tr.h[T]
    if "c" in g:
        g["c"] += dyhat.sum(axis=0)
    dh = dyhat @ V                                       # grad_dense (eq 7.4)
    for t in reversed(range(T)):
        # h_t = f(ĥ_t)
        dhhat = dh * act_grad(spec.activation, tr.hhat[t])
        # ĥ_t = x_t Wᵀ + h_{t-1} Uᵀ + b
        g["W"] += dhhat.T @ x[t]                         # eq 7.7
        g["U"] += dhhat.T @ tr.h[t]                      # eq 7.8, tr.h[t] is h_{t-1}
        if "b" in g:
            g["b"] += dhhat.sum(axis=0)                  # eq 7.9
        g["x"][t] += dhhat @ W
        dh = dhhat @ U                                   # eq 7.6: dh_{t-1}
    g["h0"] += dh
    return g
