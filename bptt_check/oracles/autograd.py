"""torch autograd in float64 on the same model; truncation by detaching each window's entering state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._base import OracleResult

if TYPE_CHECKING:
    from .._cases import Case


def _act(torch, name: str, z):
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "relu":
        return torch.relu(z)
    return z


def _step_loss(torch, spec, yhat, target):
    if spec.loss == "cross_entropy":
        return torch.nn.functional.cross_entropy(yhat, target, reduction="sum")
    y = torch.softmax(yhat, dim=-1) if spec.output == "softmax" else _act(torch, spec.output, yhat)
    sq = ((y - target) ** 2).sum()
    return 0.5 * sq if spec.loss == "half_mse" else sq


class AutogradOracle:
    name = "autograd"

    def gradients(self, case: Case) -> OracleResult:
        import torch

        from .._model import loss_scale

        spec = case.spec
        T, B, _ = case.x.shape
        leaves = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
                  for k, v in case.params.items()}
        x = torch.tensor(np.asarray(case.x, dtype=np.float64), requires_grad=True)
        if spec.loss == "cross_entropy":
            y = torch.tensor(np.asarray(case.y), dtype=torch.long)
        else:
            y = torch.tensor(np.asarray(case.y, dtype=np.float64))
        W, U, V = leaves["W"], leaves["U"], leaves["V"]
        b, c = leaves.get("b"), leaves.get("c")

        def cell(xt, hprev):
            z = xt @ W.T + hprev @ U.T
            return _act(torch, spec.activation, z + b if b is not None else z)

        def dense(h):
            yh = h @ V.T
            return yh + c if c is not None else yh

        # the full forward, whose states enter the windows as constants
        states = [leaves["h0"]]
        for t in range(T):
            states.append(cell(x[t], states[-1]))

        scale = loss_scale(spec, T, B)
        total = torch.zeros((), dtype=torch.float64)
        for w in spec.windows(T):
            h = leaves["h0"] if w.start == 0 else states[w.start].detach()
            wanted = set(w.losses)
            for t in range(w.start, max(wanted) + 1):
                # a window starting at 0 runs exactly the full forward: reuse its graph
                h = states[t + 1] if w.start == 0 else cell(x[t], h)
                if t in wanted:
                    target = y if spec.mode == "many-to-one" else y[t]
                    total = total + scale * _step_loss(torch, spec, dense(h), target)
        inputs = [*leaves.values(), x]
        if total.requires_grad:
            grads = torch.autograd.grad(total, inputs, allow_unused=True)
        else:  # no loss step falls in any window
            grads = (None,) * len(inputs)
        names = [*leaves.keys(), "x"]
        out = {}
        for name, inp, gr in zip(names, inputs, grads):
            out[name] = np.zeros(tuple(inp.shape)) if gr is None else gr.detach().numpy().copy()
        eps = np.finfo(np.float64).eps
        # machine precision, growing with the number of steps a gradient crosses
        err = {k: 8 * eps * T * float(np.max(np.abs(v), initial=0.0)) for k, v in out.items()}
        return OracleResult(self.name, out, err, float(total.detach()))
