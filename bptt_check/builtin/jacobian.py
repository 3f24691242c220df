"""BPTT as sums of Jacobian products, after seed 001 (eqs 3-4 and its algorithm).

Seed 001 writes s_t = h(U x_t + W s_{t-1}); in the canonical names of this
project its U is our W (input) and its W is our U (recurrent). For each loss
step τ the total derivative is

    dE_τ/dθ = ∂E_τ/∂s_τ · Σ_{k=s..τ} (Π_{j=k+1..τ} ∂s_j/∂s_{j-1}) ∂s_k/∂θ

computed as in the seed's algorithm: z <- I, then for k = τ down to s add
z ∂s_k/∂θ and update z <- z ∂s_k/∂s_{k-1}, with ∂s_k/∂s_{k-1} = diag(f'(ĥ_k)) U.
z is formed explicitly as a (B, H, H) matrix, so this is an implementation
independent of the vector recursion of the other built-ins. It supports every
window schedule: the sum over k simply starts at the window's start.
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
    H = U.shape[0]
    tr = forward(params, x, spec)
    w = loss_weights(spec, T, B, lengths)                # (T, B): each sample's loss weight at each step
    fprime = act_grad(spec.activation, tr.hhat)  # (T, B, H)
    g = zero_grads(params, x)

    for window in spec.windows(T, lengths):
        for tau in window.losses:
            # ∂E_τ/∂o_τ and the output layer o_τ = g(V s_τ + c)
            dyhat = w[tau][:, None] * step_loss_grad(spec, tr.yhat[tau], target_at(spec, y, tau, T))
            e = dense_backward(params, g, dyhat, tr.h[tau + 1])   # ∂E_τ/∂s_τ, (B, H)
            z = np.broadcast_to(np.eye(H, dtype=e.dtype), (B, H, H)).copy()   # ds_τ/ds_k, k = τ
            for k in range(tau, window.start - 1, -1):
                r = np.einsum("bh,bhk->bk", e, z) * fprime[k]    # ∂E_τ/∂ĥ_k
                # z ∂s_k/∂θ: ∂ĥ_k/∂W = x_k, ∂ĥ_k/∂U = s_{k-1}, ∂ĥ_k/∂b = 1
                g["W"] += r.T @ x[k]
                g["U"] += r.T @ tr.h[k]
                if "b" in g:
                    g["b"] += r.sum(axis=0)
                g["x"][k] += r @ W
                # z <- z ∂s_k/∂s_{k-1} = z diag(f'(ĥ_k)) U
                z = z @ (fprime[k][:, :, None] * U)
            if window.start == 0:
                g["h0"] += np.einsum("bh,bhk->bk", e, z)   # ds_τ/dh0 = z after k = 0
    return g
