"""Truncated BPTT over any window schedule (DESIGN §3).

For each window (start s, loss steps L): run the many-to-many recursion of
eq 7.15 from max(L) down to s, injecting grad_dense only at the steps in L.
The state h_{s-1} entering the window is a constant: its gradient is dropped,
except for s = 0, where it is h0's gradient. Per-step window, TBPTT(k1, k2),
chunk and window-loss are all just window lists (``Spec.windows``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model.forward import forward
from ..model.functions import act_grad, loss_weights, step_loss_grad, target_at
from ..model.spec import Spec
from ._common import dense_backward, zero_grads


def backward(params: Mapping[str, Any], x: np.ndarray, y: np.ndarray, spec: Spec,
             lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    W, U = params["W"], params["U"]
    T, B, _ = x.shape
    tr = forward(params, x, spec)
    w = loss_weights(spec, T, B, lengths)                # (T, B): each sample's loss weight at each step
    g = zero_grads(params, x)

    for window in spec.windows(T, lengths):
        losses = set(window.losses)
        dh_next = np.zeros_like(tr.h[0])
        for t in reversed(range(window.start, max(losses) + 1)):
            dh = dh_next
            if t in losses:
                # E_t and the dense layer ŷ_t = V h_t + c
                dyhat = w[t][:, None] * step_loss_grad(spec, tr.yhat[t], target_at(spec, y, t, T))
                dh = dh + dense_backward(params, g, dyhat, tr.h[t + 1])
            # h_t = f(ĥ_t)
            dhhat = dh * act_grad(spec.activation, tr.hhat[t])
            # ĥ_t = x_t Wᵀ + h_{t-1} Uᵀ + b, with h_{s-1} held fixed
            g["W"] += dhhat.T @ x[t]
            g["U"] += dhhat.T @ tr.h[t]
            if "b" in g:
                g["b"] += dhhat.sum(axis=0)
            g["x"][t] += dhhat @ W
            dh_next = dhhat @ U
        if window.start == 0:
            g["h0"] += dh_next                           # the entering state is h0 itself
    return g
