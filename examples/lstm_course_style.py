"""Style 6 — an LSTM as course assignments write it: batch-major, (in, out) weights, gates (i, f, o, g).

Inputs x are (N, T, D); Wx is (D, 4H), Wh (H, 4H), b (4H,), applied as ``x @ Wx + h @ Wh + b``, and the
four gates are stacked in the order input, forget, output, block input (i, f, o, g) — not torch's
(i, f, g, o). The initial cell state is zero (not passed); h0 (N, H) is. The loss is softmax
cross-entropy over a vocabulary, summed over time and averaged over the batch. The step functions
are separate, as in the assignment; the backward returns a tuple.

    bptt-check examples/lstm_course_style.py:backward
"""

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b                              # (N, 4H): gates i, f, o, g
    i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    tc = np.tanh(next_c)
    do = dnext_h * tc
    dc = dnext_c + dnext_h * o * (1 - tc ** 2)
    di, df, dg = dc * g, dc * prev_c, dc * i
    dprev_c = dc * f
    da = np.hstack([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g ** 2)])
    return da @ Wx.T, da @ Wh.T, dprev_c, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def loss_and_grads(x, y, h0, Wx, Wh, b, Wy, by):
    """x: (N, T, D), y: (N, T) word ids -> loss and (dx, dh0, dWx, dWh, db, dWy, dby)."""
    N, T, _ = x.shape
    h, c = h0, np.zeros_like(h0)
    hs, caches = [], []
    for t in range(T):
        h, c, cache = lstm_step_forward(x[:, t], h, c, Wx, Wh, b)
        hs.append(h)
        caches.append(cache)
    hs = np.stack(hs, axis=1)                                 # (N, T, H)
    scores = hs @ Wy + by                                     # (N, T, V)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    n, t_ = np.meshgrid(np.arange(N), np.arange(T), indexing="ij")
    loss = -log_probs[n, t_, y].sum() / N
    dscores = np.exp(log_probs)
    dscores[n, t_, y] -= 1
    dscores /= N
    dWy = np.einsum("nth,ntv->hv", hs, dscores)
    dby = dscores.sum(axis=(0, 1))
    dhs = dscores @ Wy.T
    dx = np.zeros_like(x)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dh, dc = np.zeros_like(h0), np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dh, dc, dWx_t, dWh_t, db_t = lstm_step_backward(dhs[:, t] + dh, dc, caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return loss, dx, dh, dWx, dWh, db, dWy, dby                # dh is now dh0


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    loss_and_grads,
    bptt_check.Layout(names={"W": "Wx", "U": "Wh", "V": "Wy", "c": "by"}, weights="in_out", batch="batch_major",
                      gates="ifog", c0="zero", inputs="dense",
                      args=("x", "y", "h0", "Wx", "Wh", "b", "Wy", "by"),
                      returns=("loss", "dx", "dh0", "dWx", "dWh", "db", "dWy", "dby")),
    cell="lstm", loss="cross_entropy", output="softmax", reduction="mean_batch")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
