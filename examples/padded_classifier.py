"""Style 8 — a sequence classifier over a padded batch, the way a sentiment model is written.

Sentences have different lengths: x is a batch-major (N, T, D) array padded to the longest one,
``lengths`` (N,) says how many steps of each row are real. The class scores are read from each
sentence's own last state h[n, lengths[n]] (not from h[:, T], which for a short sentence is a
state computed on padding). Softmax cross-entropy, mean over the batch. Weights are (in, out).

    bptt-check examples/padded_classifier.py:backward
"""

import numpy as np


def classifier_backward(params, x, y, lengths):
    """x: (N, T, D) padded, y: (N,) class ids, lengths: (N,) -> gradients (a dict)."""
    Wx, Wh, b, Wy, by, h0 = (params[k] for k in ("Wx", "Wh", "b", "Wy", "by", "h0"))
    N, T, _ = x.shape
    rows = np.arange(N)
    # forward: every row runs T steps; only the first lengths[n] of row n count
    h = np.zeros((N, T + 1, Wh.shape[0]))
    h[:, 0] = h0
    for t in range(T):
        h[:, t + 1] = np.tanh(x[:, t] @ Wx + h[:, t] @ Wh + b)
    last = lengths                                            # h[n, lengths[n]]: the last real state
    scores = h[rows, last] @ Wy + by                          # (N, C)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    # backward
    dscores = p.copy()
    dscores[rows, y] -= 1
    dscores /= N
    dWy = h[rows, last].T @ dscores
    dby = dscores.sum(axis=0)
    dh_last = dscores @ Wy.T                                  # reaches row n at its own last step
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dx = np.zeros_like(x)
    dh = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh[last == t + 1] += dh_last[last == t + 1]
        draw = dh * (1 - h[:, t + 1] ** 2)                    # through tanh
        dWx += x[:, t].T @ draw
        dWh += h[:, t].T @ draw
        db += draw.sum(axis=0)
        dx[:, t] = draw @ Wx.T
        dh = draw @ Wh.T
    return {"Wx": dWx, "Wh": dWh, "b": db, "Wy": dWy, "by": dby, "h0": dh, "x": dx}


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    classifier_backward,
    bptt_check.Layout(names={"W": "Wx", "U": "Wh", "V": "Wy", "c": "by"},
                      weights="in_out", batch="batch_major", lengths="lengths"),
    mode="many-to-one", loss="cross_entropy", output="softmax", reduction="mean")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
