"""torch autograd in float64 through the one forward; truncation by holding each window's entering state fixed.

The objective is ``model.forward.objective`` run in the torch namespace: the same cell step, output
layer and losses as every other part of bptt-check, differentiated by torch. The states entering the
windows are constants (computed with the same parameters). The reference is computed whatever the
caller's grad mode (``torch.no_grad()``, ``inference_mode()`` or ``set_grad_enabled(False)`` around
the check do not turn it off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..model.forward import forward, objective
from ..model.ops import torch_ops
from .base import OracleResult

if TYPE_CHECKING:
    from ..model.cases import Case


class AutogradOracle:
    name = "autograd"

    def gradients(self, case: Case) -> OracleResult:
        import torch

        spec = case.spec
        T = case.x.shape[0]
        params = {k: np.asarray(v, dtype=np.float64) for k, v in case.params.items()}
        x64 = np.asarray(case.x, dtype=np.float64)
        states = forward(params, x64, spec).states       # the states entering the windows: constants
        ops = torch_ops()
        with torch.inference_mode(False), torch.enable_grad():
            leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
            x = torch.tensor(x64, requires_grad=True)
            if spec.loss == "cross_entropy":
                y = torch.tensor(np.asarray(case.y), dtype=torch.long)
            else:
                y = torch.tensor(np.asarray(case.y, dtype=np.float64))

            def entering(s: int) -> tuple[torch.Tensor, ...]:
                return tuple(torch.from_numpy(part[s]) for part in states)

            weights = None if case.lengths is None else case.weights
            total = objective(leaves, x, y, spec, case.windows, entering, ops=ops, weights=weights)
            inputs = [*leaves.values(), x]
            if isinstance(total, torch.Tensor) and total.requires_grad:
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
        loss = float(total.detach()) if isinstance(total, torch.Tensor) else float(total)
        return OracleResult(self.name, out, err, loss)
