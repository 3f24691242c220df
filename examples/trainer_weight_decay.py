"""Style 12 — a trainer object: nested layers, shared arrays, global-norm clipping, weight decay.

The model is split into a ``cell`` and a ``head``; the trainer keeps a list of the very same arrays
(``self.params``) and updates them in place through it. Its step clips the gradients to a global
norm of at most ``max_norm`` and applies SGD with weight decay, p ← p − lr·(g + wd·p). Nothing
returns a gradient: the adapter writes each case's values into the arrays the object already
holds (so the list and the layers keep sharing them), inverts the update with ``update=`` and
expects the clipped reference (``clip_norm=``).

    bptt-check examples/trainer_weight_decay.py:backward
"""

import numpy as np


class Cell:
    def __init__(self, I, H):  # noqa: E741
        self.W, self.U, self.b = np.zeros((H, I)), np.zeros((H, H)), np.zeros(H)


class Head:
    def __init__(self, H, O):  # noqa: E741
        self.V, self.c = np.zeros((O, H)), np.zeros(O)


class Trainer:
    def __init__(self, sizes, lr=0.05, weight_decay=1e-3, max_norm=10.0):
        self.cell, self.head = Cell(sizes["I"], sizes["H"]), Head(sizes["H"], sizes["O"])
        self.h0 = np.zeros((sizes["B"], sizes["H"]))
        self.params = [self.cell.W, self.cell.U, self.cell.b, self.head.V, self.head.c, self.h0]
        self.lr, self.weight_decay, self.max_norm = lr, weight_decay, max_norm

    def loss_and_grads(self, x, y):
        """x: (T, B, I), y: (T, B, O) -> (½ Σ ‖ŷ − y‖², gradients in the order of self.params)."""
        W, U, b = self.cell.W, self.cell.U, self.cell.b
        V, c = self.head.V, self.head.c
        T = x.shape[0]
        h = [self.h0]
        for t in range(T):
            h.append(np.tanh(x[t] @ W.T + h[-1] @ U.T + b))
        err = [h[t + 1] @ V.T + c - y[t] for t in range(T)]
        loss = 0.5 * sum(float((e ** 2).sum()) for e in err)
        dW, dU, db, dV, dc = (np.zeros_like(a) for a in (W, U, b, V, c))
        dh_next = np.zeros_like(self.h0)
        for t in reversed(range(T)):
            dV += err[t].T @ h[t + 1]
            dc += err[t].sum(axis=0)
            dz = (err[t] @ V + dh_next) * (1 - h[t + 1] ** 2)
            dW += dz.T @ x[t]
            dU += dz.T @ h[t]
            db += dz.sum(axis=0)
            dh_next = dz @ U
        return loss, [dW, dU, db, dV, dc, dh_next]

    def train_step(self, x, y):
        loss, grads = self.loss_and_grads(x, y)
        norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads))
        scale = min(1.0, self.max_norm / norm)                   # clip to a global norm of max_norm
        for p, g in zip(self.params, grads):
            p -= self.lr * (scale * g + self.weight_decay * p)   # in place: the layers see it too
        return loss


# --- plug in
import bptt_check  # noqa: E402

backward = bptt_check.adapt_module(
    Trainer, step="train_step",
    layout=bptt_check.Layout(names={"W": "cell.W", "U": "cell.U", "b": "cell.b", "V": "head.V", "c": "head.c"},
                             returns="loss", clip_norm=10.0),
    update=lambda old, new, lr: (old - new) / lr - 1e-3 * old,   # the inverse of the step's update
    loss="half_mse")
# --- end plug in

if __name__ == "__main__":
    print(bptt_check.check(backward, cases=20).summary())
