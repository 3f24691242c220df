"""Style 3 — a word-level RNN language model with truncated backpropagation.

Inputs are word ids (no one-hot matrix is built: ``U[:, word]`` picks a column),
there are no biases, the state starts at zero, and — as in seed 001 — the input
matrix is called U and the recurrent one W. Each step's loss is propagated back
at most TRUNCATE steps. The gradients come back as a list [dU, dV, dW].

    bptt-check examples/word_ids_truncated.py:backward
"""

import numpy as np

TRUNCATE = 3


def bptt(params, words, targets):
    """words, targets: (T,) ids. Returns [dU, dV, dW] for s_t = tanh(U x_t + W s_{t-1}), o_t = softmax(V s_t)."""
    U, V, W = params["U"], params["V"], params["W"]
    T, H = len(words), W.shape[0]
    s = np.zeros((T + 1, H))                       # s[-1] (the last row) stays the zero initial state
    o = np.zeros((T, V.shape[0]))
    for t in range(T):
        s[t] = np.tanh(U[:, words[t]] + W @ s[t - 1])
        z = V @ s[t]
        o[t] = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    dU, dV, dW = np.zeros_like(U), np.zeros_like(V), np.zeros_like(W)
    delta_o = o.copy()
    delta_o[np.arange(T), targets] -= 1            # d(cross-entropy)/d(logits), every step
    for t in reversed(range(T)):
        dV += np.outer(delta_o[t], s[t])
        delta = (V.T @ delta_o[t]) * (1 - s[t] ** 2)
        for k in range(t, max(0, t - TRUNCATE) - 1, -1):   # back through steps t, t-1, ..., t-TRUNCATE
            dW += np.outer(delta, s[k - 1])
            dU[:, words[k]] += delta
            delta = (W.T @ delta) * (1 - s[k - 1] ** 2)
    return [dU, dV, dW]


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    bptt,
    bptt_check.Layout(names={"W": "U", "U": "W"},          # canonical W (input) is your U, and back
                      batch=None, inputs="index", absent=("b", "c"), h0="zero",
                      returns=("dU", "dV", "dW")),
    loss="cross_entropy", output="softmax", truncation=f"window:{TRUNCATE}")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
