"""Style 7 — a GRU written against torch's ``nn.GRU`` conventions, one step at a time.

Weights as torch stores them: weight_ih (3H, D), weight_hh (3H, H), bias_ih and bias_hh (3H,), the gates
stacked (r, z, n); the reset gate multiplies the recurrent term *with* its bias,
n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn)), and h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}. Time-major x
(T, N, D), a learned h0, a squared error on a linear read-out at every step.

    bptt-check examples/gru_torch_conventions.py:backward
"""

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def gru_grads(params, x, y):
    w_ih, w_hh, b_ih, b_hh = params["weight_ih"], params["weight_hh"], params["bias_ih"], params["bias_hh"]
    w_out, b_out, h0 = params["w_out"], params["b_out"], params["h0"]
    T = x.shape[0]
    H = w_hh.shape[1]
    hs, steps = [h0], []
    for t in range(T):                                        # forward, keeping what the backward needs
        gi = x[t] @ w_ih.T + b_ih
        gh = hs[-1] @ w_hh.T + b_hh
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        hs.append((1 - z) * n + z * hs[-1])
        steps.append((r, z, n, gh[:, 2 * H:]))
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        r, z, n, hn = steps[t]
        dyhat = hs[t + 1] @ w_out.T + b_out - y[t]           # ½‖ŷ − y‖²
        grads["w_out"] += dyhat.T @ hs[t + 1]
        grads["b_out"] += dyhat.sum(axis=0)
        dh = dyhat @ w_out + dh_next
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (hs[t] - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        dgi = np.hstack([dr, dz, dn])
        dgh = np.hstack([dr, dz, dn * r])
        grads["weight_ih"] += dgi.T @ x[t]
        grads["weight_hh"] += dgh.T @ hs[t]
        grads["bias_ih"] += dgi.sum(axis=0)
        grads["bias_hh"] += dgh.sum(axis=0)
        dx[t] = dgi @ w_ih
        dh_next = dh * z + dgh @ w_hh
    grads["h0"] = dh_next
    grads["x"] = dx
    return grads


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    gru_grads,
    bptt_check.Layout(names={"W": "weight_ih", "U": "weight_hh", "b": "bias_ih", "bu": "bias_hh",
                             "V": "w_out", "c": "b_out"}),
    cell="gru")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
