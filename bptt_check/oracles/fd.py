"""Central finite differences of the same (truncated) objective.

Every window's entering state is computed once with the unperturbed
parameters and held fixed while one element at a time is moved by ±h.
The step is scaled to the element, h = ε·max(1, |θ|) with ε = ∛(machine ε),
which balances truncation error (∝ h²) against rounding (∝ ε_m·|L|/h).
A plain loop: clear, and fast enough for the small shapes of random cases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import _model
from ._base import OracleResult

if TYPE_CHECKING:
    from .._cases import Case

EPS = float(np.cbrt(np.finfo(np.float64).eps))  # ≈ 6e-6


class FiniteDifferenceOracle:
    name = "fd"

    def __init__(self, eps: float = EPS) -> None:
        self.eps = eps

    def gradients(self, case: Case) -> OracleResult:
        spec = case.spec
        params = {k: np.array(v, dtype=np.float64) for k, v in case.params.items()}
        x = np.array(case.x, dtype=np.float64)
        T = x.shape[0]
        windows = spec.windows(T)
        entering = _model.forward(params, x, spec).h.copy()
        base = _model.window_loss(params, x, case.y, spec, windows, entering)

        def objective() -> float:
            return _model.window_loss(params, x, case.y, spec, windows, entering)

        grads: dict[str, np.ndarray] = {}
        errors: dict[str, np.ndarray | float] = {}
        targets = {**params, "x": x}
        for name, arr in targets.items():
            g = np.zeros_like(arr)
            err = np.zeros_like(arr)
            flat, gflat, eflat = arr.reshape(-1), g.reshape(-1), err.reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                h = self.eps * max(1.0, abs(old))
                flat[i] = old + h
                up = objective()
                flat[i] = old - h
                down = objective()
                flat[i] = old
                gflat[i] = (up - down) / (2 * h)
                # rounding in the two evaluations; the truncation error (∝ h²) is left to
                # the comparison's relative tolerance
                eflat[i] = 4 * np.finfo(np.float64).eps * (abs(up) + abs(down)) / (2 * h)
            grads[name] = g
            errors[name] = err
        return OracleResult(self.name, grads, errors, base)
