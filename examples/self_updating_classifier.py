"""Style 4 — a many-to-one sequence classifier that trains itself.

``train_step`` reads a batch of sequences, predicts one class per sequence from
the last hidden state, backpropagates through time and updates its own weights
in place with SGD. It returns nothing: bptt-check captures the gradient from the
update (with the learning rate set to 1, ``old - new`` is the gradient).

    bptt-check examples/self_updating_classifier.py:backward
"""

import numpy as np


class SequenceClassifier:
    def __init__(self, n_in, n_hidden, n_classes, lr=0.05, seed=0):
        rng = np.random.default_rng(seed)
        self.W_in = rng.normal(0, 0.3, (n_hidden, n_in))
        self.W_rec = rng.normal(0, 0.3, (n_hidden, n_hidden))
        self.b_rec = np.zeros(n_hidden)
        self.W_out = rng.normal(0, 0.3, (n_classes, n_hidden))
        self.b_out = np.zeros(n_classes)
        self.lr = lr

    def train_step(self, xs, labels):
        """xs: (B, T, n_in), labels: (B,) class ids; mean cross-entropy over the batch."""
        B, T, _ = xs.shape
        hs = [np.zeros((B, self.W_rec.shape[0]))]
        for t in range(T):
            hs.append(np.tanh(xs[:, t] @ self.W_in.T + hs[-1] @ self.W_rec.T + self.b_rec))
        logits = hs[-1] @ self.W_out.T + self.b_out
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dlogits = p
        dlogits[np.arange(B), labels] -= 1
        dlogits /= B
        dW_out, db_out = dlogits.T @ hs[-1], dlogits.sum(axis=0)
        dW_in, dW_rec, db_rec = np.zeros_like(self.W_in), np.zeros_like(self.W_rec), np.zeros_like(self.b_rec)
        dh = dlogits @ self.W_out                            # only the last step has a loss
        for t in reversed(range(T)):
            draw = dh * (1 - hs[t + 1] ** 2)
            dW_in += draw.T @ xs[:, t]
            dW_rec += draw.T @ hs[t]
            db_rec += draw.sum(axis=0)
            dh = draw @ self.W_rec
        for param, grad in ((self.W_in, dW_in), (self.W_rec, dW_rec), (self.b_rec, db_rec),
                            (self.W_out, dW_out), (self.b_out, db_out)):
            param -= self.lr * grad                          # in place


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt_module(
    lambda n: SequenceClassifier(n["I"], n["H"], n["O"]), step="train_step", lr="lr",
    layout=bptt_check.Layout(names={"W": "W_in", "U": "W_rec", "b": "b_rec", "V": "W_out", "c": "b_out"},
                             batch="batch_major", h0="zero"),
    mode="many-to-one", loss="cross_entropy", output="softmax", reduction="mean_batch")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
