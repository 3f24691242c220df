"""Style 1 — a character-level RNN written with column vectors.

One sequence at a time (no batch axis), weights stored (out, in) and applied as
``W @ x``, inputs one-hot column vectors, softmax cross-entropy summed over time.
The hidden state is carried from one chunk of text to the next, so the function
takes it as an argument and returns no gradient for it; every gradient is
clipped to ±5 before it is returned.

    python examples/charrnn_column.py                 # check it from Python
    bptt-check examples/charrnn_column.py:backward    # or from the command line
"""

import numpy as np


def loss_and_grads(p, xs, targets, h_prev):
    """xs: (T, vocab, 1) one-hot columns, targets: (T,) next-character ids, h_prev: (H, 1)."""
    Wxh, Whh, Why, bh, by = p["Wxh"], p["Whh"], p["Why"], p["bh"], p["by"]
    hs, probs, loss = {-1: h_prev}, {}, 0.0
    for t in range(len(xs)):
        hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)         # hidden state, (H, 1)
        logits = Why @ hs[t] + by
        e = np.exp(logits - logits.max())
        probs[t] = e / e.sum()                                      # softmax over the vocabulary
        loss -= np.log(probs[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dh_next = np.zeros_like(h_prev)
    for t in reversed(range(len(xs))):
        dlogits = probs[t].copy()
        dlogits[targets[t]] -= 1                                    # softmax + cross-entropy
        dWhy += dlogits @ hs[t].T
        dby += dlogits
        dh = Why.T @ dlogits + dh_next                              # from the output and from step t+1
        draw = (1 - hs[t] ** 2) * dh                                # through tanh
        dbh += draw
        dWxh += draw @ xs[t].T
        dWhh += draw @ hs[t - 1].T
        dh_next = Whh.T @ draw
    for d in (dWxh, dWhh, dWhy, dbh, dby):
        np.clip(d, -5, 5, out=d)                                    # against exploding gradients
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(xs) - 1]


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    loss_and_grads,
    bptt_check.Layout(
        names={"W": "Wxh", "U": "Whh", "V": "Why", "b": "bh", "c": "by", "h0": "h_prev"},
        vectors="column", batch=None, inputs="one_hot", h0="given", clip=5.0,
        args=("params", "x", "y", "h_prev"),
        returns=("loss", "dWxh", "dWhh", "dWhy", "dbh", "dby", None)),
    loss="cross_entropy", output="softmax", reduction="sum")
# --- end plug in

if __name__ == "__main__":
    report = bptt_check.check(backward, cases=20)
    for case in report.cases:
        print(case.summary())
    print(report.summary())
