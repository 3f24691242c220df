"""Style 9 — a multi-label tagger over a padded batch with a mask, binary cross-entropy per tag.

Each step of each sequence gets O independent yes/no tags: σ(scores) against targets in [0, 1],
binary cross-entropy summed over the tags and averaged over the real tokens (the mask's sum).
Time-major row vectors, weights (out, in); ``mask`` (T, B) is 1.0 on real steps, 0.0 on padding.

    bptt-check examples/masked_tagger.py:backward
"""

import numpy as np


def sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def tagger_loss_and_grads(params, x, y, mask):
    """x: (T, B, D) padded, y: (T, B, O) tag probabilities, mask: (T, B) -> (loss, grads)."""
    W, U, b, V, c, h0 = (params[k] for k in ("W", "U", "b", "V", "c", "h0"))
    T, B, _ = x.shape
    n_tokens = mask.sum()
    h = [h0]
    for t in range(T):
        h.append(np.tanh(x[t] @ W.T + h[-1] @ U.T + b))
    h = np.stack(h)                                          # (T+1, B, H), h[0] = h0
    scores = h[1:] @ V.T + c                                 # (T, B, O)
    bce = np.logaddexp(0, scores) - y * scores               # −[y log σ + (1 − y) log(1 − σ)]
    loss = (bce.sum(axis=-1) * mask).sum() / n_tokens
    dscores = (sigmoid(scores) - y) * mask[..., None] / n_tokens   # padded steps carry no loss
    dV = np.einsum("tbo,tbh->oh", dscores, h[1:])
    dc = dscores.sum(axis=(0, 1))
    dW, dU, db = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    dx = np.zeros_like(x)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh = dscores[t] @ V + dh_next
        dz = dh * (1 - h[t + 1] ** 2)
        dW += dz.T @ x[t]
        dU += dz.T @ h[t]
        db += dz.sum(axis=0)
        dx[t] = dz @ W
        dh_next = dz @ U
    return loss, {"W": dW, "U": dU, "b": db, "V": dV, "c": dc, "h0": dh_next, "x": dx}


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt(
    tagger_loss_and_grads,
    bptt_check.Layout(mask="mask", returns=("loss", "grads")),
    loss="bce", output="sigmoid", reduction="mean")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
