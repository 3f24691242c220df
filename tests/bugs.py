"""Planted bugs: the truncated-window backward with one deliberate mistake each.

``mutant(bug)`` returns a backward in the canonical protocol (it takes the spec),
so the same bug can be planted in every mode and schedule. Also loadable as a
CLI TARGET, e.g. ``tests/bugs.py:du_from_t1``.
"""

from __future__ import annotations

import numpy as np

from bptt_check.model.forward import forward
from bptt_check.model.functions import act_grad, loss_scale, step_loss_grad, target_at
from bptt_check.model.spec import Truncation

BUGS = ("du_from_t1", "missing_transpose", "no_recurrent_flow", "tanh_prime_on_preactivation",
        "window_one_too_long")


def mutant(bug: str):
    assert bug in BUGS, bug

    def backward(params, x, y, spec):
        W, U, V = params["W"], params["U"], params["V"]
        T, B, _ = x.shape
        if bug == "window_one_too_long" and spec.truncation.kind == "window":
            spec = spec.replace(truncation=Truncation("window", spec.truncation.k1 + 1))
        tr = forward(params, x, spec)
        scale = loss_scale(spec, T, B)
        g = {k: np.zeros_like(v) for k, v in params.items()}
        g["x"] = np.zeros_like(x)
        for window in spec.windows(T):
            dh_next = np.zeros_like(tr.h[0])
            for t in reversed(range(window.start, max(window.losses) + 1)):
                dh = dh_next
                if t in window.losses:
                    dyhat = scale * step_loss_grad(spec, tr.yhat[t], target_at(spec, y, t, T))
                    g["V"] += dyhat.T @ tr.h[t + 1]
                    if "c" in g:
                        g["c"] += dyhat.sum(axis=0)
                    dh = dh + dyhat @ V
                if bug == "tanh_prime_on_preactivation":
                    dhhat = dh * (1.0 - tr.hhat[t] ** 2)
                else:
                    dhhat = dh * act_grad(spec.activation, tr.hhat[t])
                g["W"] += dhhat.T @ x[t]
                if not (bug == "du_from_t1" and t == 0):
                    g["U"] += dhhat.T @ tr.h[t]
                if "b" in g:
                    g["b"] += dhhat.sum(axis=0)
                g["x"][t] += dhhat @ W
                if bug == "missing_transpose":
                    dh_next = dhhat @ U.T
                elif bug == "no_recurrent_flow":
                    dh_next = np.zeros_like(dh_next) if t > window.start else dhhat @ U
                else:
                    dh_next = dhhat @ U
            if window.start == 0:
                g["h0"] += dh_next
        return g

    backward.__name__ = bug
    return backward


du_from_t1 = mutant("du_from_t1")
missing_transpose = mutant("missing_transpose")
no_recurrent_flow = mutant("no_recurrent_flow")
tanh_prime_on_preactivation = mutant("tanh_prime_on_preactivation")
window_one_too_long = mutant("window_one_too_long")
