"""Style 2 — a batched RNN in the row-vector, batch-major convention of many course assignments.

Inputs x are (N, T, D); weights are stored (in, out) and applied as ``x @ Wx``;
the initial state h0 (N, H) is learned. The loss is softmax cross-entropy summed
over time and averaged over the batch. A forward function computes the loss and
a cache; the backward returns its gradients as a tuple, dx first.

    bptt-check examples/batch_major_inout.py:backward
"""

import numpy as np


def rnn_forward(params, x, y):
    """x: (N, T, D), y: (N, T) class ids -> (loss, cache)."""
    Wx, Wh, b, Wy, by, h0 = (params[k] for k in ("Wx", "Wh", "b", "Wy", "by", "h0"))
    N, T, _ = x.shape
    hs = [h0]
    for t in range(T):
        hs.append(np.tanh(x[:, t] @ Wx + hs[-1] @ Wh + b))
    h = np.stack(hs, axis=1)                                  # (N, T+1, H), h[:, 0] = h0
    scores = h[:, 1:] @ Wy + by                               # (N, T, C)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    n, t = np.meshgrid(np.arange(N), np.arange(T), indexing="ij")
    loss = -log_probs[n, t, y].sum() / N                      # summed over time, mean over the batch
    return loss, (h, log_probs, n, t)


def rnn_backward(params, x, y):
    Wx, Wh, Wy = params["Wx"], params["Wh"], params["Wy"]
    loss, (h, log_probs, n, t) = rnn_forward(params, x, y)
    N, T, _ = x.shape
    dscores = np.exp(log_probs)
    dscores[n, t, y] -= 1
    dscores /= N
    dWy = np.einsum("nth,ntc->hc", h[:, 1:], dscores)
    dby = dscores.sum(axis=(0, 1))
    dh_out = dscores @ Wy.T                                   # (N, T, H) from the output layer
    dx, dWx, dWh = np.zeros_like(x), np.zeros_like(Wx), np.zeros_like(Wh)
    db = np.zeros(Wh.shape[0])
    dprev = np.zeros_like(h[:, 0])
    for s in reversed(range(T)):
        draw = (dh_out[:, s] + dprev) * (1 - h[:, s + 1] ** 2)  # through tanh
        dx[:, s] = draw @ Wx.T
        dWx += x[:, s].T @ draw
        dWh += h[:, s].T @ draw
        db += draw.sum(axis=0)
        dprev = draw @ Wh.T
    return dx, dprev, dWx, dWh, db, dWy, dby                  # dprev is now dh0


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    rnn_backward,
    bptt_check.Layout(names={"W": "Wx", "U": "Wh", "V": "Wy", "c": "by"},
                      weights="in_out", batch="batch_major",
                      returns=("dx", "dh0", "dWx", "dWh", "db", "dWy", "dby")),
    forward=rnn_forward,
    loss="cross_entropy", output="softmax", reduction="mean_batch")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
