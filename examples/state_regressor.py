"""Style 10 — no output layer: the hidden states are the prediction, and a leftover bias.

An RNN trained to make its state h_t track a target signal y_t directly (a filter, an echo-state
readout done elsewhere): E = ½ Σ_t ‖h_t − y_t‖², no V, no c. The parameter dict still carries
``by``, the bias of an output layer that was removed: nothing reads it, its gradient is zero, and
the function returns it like every other gradient. Time-major rows, weights (out, in).

    bptt-check examples/state_regressor.py:backward
"""

import numpy as np


def state_regressor_grads(params, x, y):
    """x: (T, B, D), y: (T, B, H) -> gradients (a dict)."""
    W, U, b, h0, by = (params[k] for k in ("W", "U", "b", "h0", "by"))
    T = x.shape[0]
    h = [h0]
    for t in range(T):
        h.append(np.tanh(x[t] @ W.T + h[-1] @ U.T + b))
    dW, dU, db = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    dx = np.zeros_like(x)
    dby = np.zeros_like(by)                                  # the removed head's bias takes no part
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh = (h[t + 1] - y[t]) + dh_next                     # ½‖h_t − y_t‖² and the step after
        dz = dh * (1 - h[t + 1] ** 2)
        dW += dz.T @ x[t]
        dU += dz.T @ h[t]
        db += dz.sum(axis=0)
        dx[t] = dz @ W
        dh_next = dz @ U
    return {"W": dW, "U": dU, "b": db, "h0": dh_next, "by": dby, "x": dx}


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    state_regressor_grads,
    bptt_check.Layout(absent=("V",), unused={"by": ("H",)}),
    loss="half_mse")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
