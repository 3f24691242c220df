"""Style 13 — one gradient only: the exercise asks for dL/dWhh, and the function returns just that.

A function written to answer one question — the recurrent matrix's gradient, summed over time
from t = 0 — returns a bare array. ``Layout(returns="dWhh")`` says so: dWhh is checked, and the
gradients it does not return are "not returned", not missing. Many-to-many, squared error summed
over steps and batch, time-major rows, weights (out, in).

    bptt-check examples/recurrent_grad_only.py:backward
"""

import numpy as np


def grad_Whh(params, x, y):
    """x: (T, B, D), y: (T, B, O) -> dL/dWhh only."""
    Wxh, Whh, bh, Why, by, h0 = (params[k] for k in ("Wxh", "Whh", "bh", "Why", "by", "h0"))
    T = x.shape[0]
    h = [h0]
    for t in range(T):
        h.append(np.tanh(x[t] @ Wxh.T + h[-1] @ Whh.T + bh))
    dWhh = np.zeros_like(Whh)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh = (h[t + 1] @ Why.T + by - y[t]) @ Why + dh_next   # ½‖ŷ_t − y_t‖² through ŷ_t = Why h_t + by
        dz = dh * (1 - h[t + 1] ** 2)
        dWhh += dz.T @ h[t]                                    # from t = 0: h[0] is h0
        dh_next = dz @ Whh
    return dWhh


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    grad_Whh,
    bptt_check.Layout(names={"W": "Wxh", "U": "Whh", "b": "bh", "V": "Why", "c": "by"}, returns="dWhh"),
    loss="half_mse")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
