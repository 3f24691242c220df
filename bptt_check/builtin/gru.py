"""GRU BPTT over any window schedule, written out by hand, in the convention the spec declares.

Forward, per step (row vectors; the rows of W, U, b and bu are the gates stacked (r, z, n)):

    r = σ(x_t W_rᵀ + b_r + h_{t−1} U_rᵀ + bu_r)     z = σ(x_t W_zᵀ + b_z + h_{t−1} U_zᵀ + bu_z)
    reset after (torch, ``gru``):            n = tanh(x_t W_nᵀ + b_n + r ⊙ (h_{t−1} U_nᵀ + bu_n))
    reset before (``gru:reset=before``):     n = tanh(x_t W_nᵀ + b_n + (r ⊙ h_{t−1}) U_nᵀ + bu_n)
    z multiplies h (torch, ``gru``):         h_t = z ⊙ h_{t−1} + (1 − z) ⊙ n
    z multiplies n (``gru:z=n``):            h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n

Backward through one step, with dh the gradient arriving at h_t (z multiplying h):

    dn = dh ⊙ (1 − z)    dz = dh ⊙ (h_{t−1} − n)    dh_{t−1} = dh ⊙ z      (from h_t)
    da_n = dn ⊙ (1 − n²)                                                    (n = tanh(a_n))
    reset after:  with m = h_{t−1} U_nᵀ + bu_n,  da_r = da_n ⊙ m ⊙ r(1 − r),  dm = da_n ⊙ r
                  dgh = [da_r, da_z, dm]:  dU += dghᵀ h_{t−1},  dbu += Σ dgh,  dh_{t−1} += dgh U
    reset before: with d(r⊙h) = da_n U_n,  da_r = d(r⊙h) ⊙ h_{t−1} ⊙ r(1 − r),  dh_{t−1} += d(r⊙h) ⊙ r
                  dU_{r,z} += [da_r, da_z]ᵀ h_{t−1},  dU_n += da_nᵀ (r ⊙ h_{t−1}),  dbu += Σ [da_r, da_z, da_n]
                  dh_{t−1} += [da_r, da_z] U_{r,z}
    dgx = [da_r, da_z, da_n]:  dW += dgxᵀ x_t,  db += Σ dgx,  dx_t = dgx W         (da_z = dz ⊙ z(1 − z))

Every window (DESIGN §3) runs this from its last loss step down to its start; the state entering a
window is a constant — except for a window starting at 0, where its gradient is dh0.
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
    options = spec.cell.partition(":")[2]
    z_on_n = "z=n" in options
    reset_before = "reset=before" in options
    tr = forward(params, x, spec)
    h = tr.states[0]                                      # (T+1, B, H): h[0] = h0
    a, m = tr.cache                                       # pre-activations of (r, z, n); what r multiplies
    w = loss_weights(spec, T, B, lengths)                # (T, B): each sample's loss weight at each step
    g = zero_grads(params, x)

    for window in spec.windows(T, lengths):
        losses = set(window.losses)
        dh_next = np.zeros_like(h[0])
        for t in reversed(range(window.start, max(losses) + 1)):
            dh = dh_next
            if t in losses:
                # E_t and the dense layer ŷ_t = h_t Vᵀ + c
                dyhat = w[t][:, None] * step_loss_grad(spec, tr.yhat[t], target_at(spec, y, t, T))
                dh = dh + dense_backward(params, g, dyhat, h[t + 1])
            # the gates of step t
            r = act("sigmoid", a[t][:, :H])
            zg = act("sigmoid", a[t][:, H:2 * H])
            n = np.tanh(a[t][:, 2 * H:])
            # h_t from h_{t−1} and n, mixed by z
            if z_on_n:
                dn, dzg, dh_prev = dh * zg, dh * (n - h[t]), dh * (1.0 - zg)
            else:
                dn, dzg, dh_prev = dh * (1.0 - zg), dh * (h[t] - n), dh * zg
            # n = tanh(a_n)
            dan = dn * (1.0 - n ** 2)
            daz = dzg * zg * (1.0 - zg)
            if reset_before:
                # a_n = x W_nᵀ + b_n + (r ⊙ h_{t−1}) U_nᵀ + bu_n
                drh = dan @ U[2 * H:]
                dar = drh * h[t] * r * (1.0 - r)
                dh_prev += drh * r
                drz = np.concatenate([dar, daz], axis=1)
                g["U"][:2 * H] += drz.T @ h[t]
                g["U"][2 * H:] += dan.T @ (r * h[t])
                dbu = np.concatenate([dar, daz, dan], axis=1)
                dh_prev += drz @ U[:2 * H]
            else:
                # a_n = x W_nᵀ + b_n + r ⊙ m,  m = h_{t−1} U_nᵀ + bu_n
                dar = dan * m[t] * r * (1.0 - r)
                dgh = np.concatenate([dar, daz, dan * r], axis=1)
                g["U"] += dgh.T @ h[t]
                dbu = dgh
                dh_prev += dgh @ U
            # the input side: x W_{r,z,n}ᵀ + b
            dgx = np.concatenate([dar, daz, dan], axis=1)
            g["W"] += dgx.T @ x[t]
            if "b" in g:
                g["b"] += dgx.sum(axis=0)
                g["bu"] += dbu.sum(axis=0)
            g["x"][t] += dgx @ W
            dh_next = dh_prev
        if window.start == 0:
            g["h0"] += dh_next                            # the entering state is h0 itself
    return g
