"""Style 11 — a word-level language model: one vocabulary in and out, its size passed as an argument.

The inputs are word ids (B, T) turned into one-hot vectors with ``np.eye(vocab_size)``, and the
softmax predicts the next word over the same vocabulary: the code is written for I = O. The
layout ties the two sizes (``tie=("I", "O")``) and passes the case's vocabulary size as the
fourth argument (``args=(..., "I")``). Batch-major rows, weights (in, out), cross-entropy summed
over time and averaged over the batch.

    bptt-check examples/word_lm_tied.py:backward
"""

import numpy as np


def lm_backward(params, ids, targets, vocab_size):
    """ids, targets: (B, T) word ids -> gradients (a dict)."""
    Wxh, Whh, bh, Why, by, h0 = (params[k] for k in ("Wxh", "Whh", "bh", "Why", "by", "h0"))
    B, T = ids.shape
    onehot = np.eye(vocab_size)[ids]                          # (B, T, vocab_size)
    h = np.zeros((B, T + 1, Whh.shape[0]))
    h[:, 0] = h0
    for t in range(T):
        h[:, t + 1] = np.tanh(onehot[:, t] @ Wxh + h[:, t] @ Whh + bh)
    logits = h[:, 1:] @ Why + by                              # (B, T, vocab_size)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    dlogits = p - np.eye(vocab_size)[targets]
    dlogits /= B
    dWhy = np.einsum("bth,btv->hv", h[:, 1:], dlogits)
    dby = dlogits.sum(axis=(0, 1))
    dWxh, dWhh, dbh = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(bh)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh = dlogits[:, t] @ Why.T + dh_next
        dz = dh * (1 - h[:, t + 1] ** 2)
        dWxh += onehot[:, t].T @ dz
        dWhh += h[:, t].T @ dz
        dbh += dz.sum(axis=0)
        dh_next = dz @ Whh.T
    return {"Wxh": dWxh, "Whh": dWhh, "bh": dbh, "Why": dWhy, "by": dby, "h0": dh_next}


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    lm_backward,
    bptt_check.Layout(names={"W": "Wxh", "U": "Whh", "b": "bh", "V": "Why", "c": "by"},
                      weights="in_out", batch="batch_major", inputs="index",
                      args=("params", "x", "y", "I"), tie=("I", "O")),
    loss="cross_entropy", output="softmax", reduction="mean_batch")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
