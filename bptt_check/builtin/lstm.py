"""LSTM BPTT over any window schedule, written out by hand (torch's ``nn.LSTM`` conventions).

Forward, per step (row vectors; the rows of W, U and b are the gates stacked (i, f, g, o)):

    z_t = x_t Wᵀ + h_{t−1} Uᵀ + b
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c_t = f ⊙ c_{t−1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Backward through one step, with dh and dc the gradients arriving at h_t and c_t:

    do = dh ⊙ tanh(c_t)                       (from h_t = o ⊙ tanh(c_t))
    dc += dh ⊙ o ⊙ (1 − tanh²(c_t))
    di = dc ⊙ g   dg = dc ⊙ i   df = dc ⊙ c_{t−1}   dc_{t−1} = dc ⊙ f      (from c_t)
    dz = [di ⊙ i(1 − i), df ⊙ f(1 − f), dg ⊙ (1 − g²), do ⊙ o(1 − o)]      (σ' = s(1 − s), tanh' = 1 − g²)
    dW += dzᵀ x_t   dU += dzᵀ h_{t−1}   db += Σ_batch dz   dx_t = dz W   dh_{t−1} = dz U

Every window (DESIGN §3) runs this from its last loss step down to its start; the state (h, c)
entering a window is a constant, so its gradient is dropped — except for a window starting at 0,
where it is (dh0, dc0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model.forward import forward
from ..model.functions import act, loss_weights, step_loss_grad, target_at
from ..model.spec import Spec
from ._common import dense_backward, zero_grads


def backward(params: Mapping[str, Any], x: np.ndarray, y: np.ndarray, spec: Spec,
             lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    W, U = params["W"], params["U"]
    T, B, _ = x.shape
    H = U.shape[1]
    tr = forward(params, x, spec)
    h, c = tr.states                                      # (T+1, B, H): h[0] = h0, c[0] = c0
    z = tr.cache                                          # (T, B, 4H): the gates' pre-activations
    w = loss_weights(spec, T, B, lengths)                # (T, B): each sample's loss weight at each step
    g = zero_grads(params, x)

    for window in spec.windows(T, lengths):
        losses = set(window.losses)
        dh_next = np.zeros_like(h[0])
        dc_next = np.zeros_like(c[0])
        for t in reversed(range(window.start, max(losses) + 1)):
            dh, dc = dh_next, dc_next
            if t in losses:
                # E_t and the dense layer ŷ_t = h_t Vᵀ + c
                dyhat = w[t][:, None] * step_loss_grad(spec, tr.yhat[t], target_at(spec, y, t, T))
                dh = dh + dense_backward(params, g, dyhat, h[t + 1])
            # the gates of step t
            i = act("sigmoid", z[t][:, :H])
            f = act("sigmoid", z[t][:, H:2 * H])
            gg = np.tanh(z[t][:, 2 * H:3 * H])
            o = act("sigmoid", z[t][:, 3 * H:])
            # h_t = o ⊙ tanh(c_t)
            tc = np.tanh(c[t + 1])
            do = dh * tc
            dc = dc + dh * o * (1.0 - tc ** 2)
            # c_t = f ⊙ c_{t−1} + i ⊙ g
            di, dgg, df = dc * gg, dc * i, dc * c[t]
            dc_next = dc * f
            # z_t = x_t Wᵀ + h_{t−1} Uᵀ + b
            dz = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dgg * (1.0 - gg ** 2), do * o * (1.0 - o)],
                                axis=1)
            g["W"] += dz.T @ x[t]
            g["U"] += dz.T @ h[t]
            if "b" in g:
                g["b"] += dz.sum(axis=0)
            g["x"][t] += dz @ W
            dh_next = dz @ U
        if window.start == 0:
            g["h0"] += dh_next                            # the entering state is (h0, c0) itself
            g["c0"] += dc_next
    return g
