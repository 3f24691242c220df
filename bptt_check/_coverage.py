"""Coverage: does the gradient still reach the start of every window? (DESIGN §6)

A case whose gradient vanished before reaching the early steps proves little
about them: a dropped t = 0 term or a wrong recurrent flow would change the
user's numbers by less than the tolerance. For every window (start s, loss
steps L) we back-propagate the window's own loss in float64 and measure

    coverage_w = ‖∂L_w/∂h_{s−1}‖ / max_{s ≤ t ≤ max L} ‖∂L_w/∂h_t‖

(h_{s−1} is the state entering the window, h0 when s = 0). The case's coverage
is the smallest over its windows. Below ``threshold(dtype, T)`` a case that
would have passed is *inconclusive*: its early steps were not really tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import _model
from ._spec import Window

if TYPE_CHECKING:
    from ._cases import Case

# below this multiple of the relative tolerance the backward is judged with (see
# _compare.TOLERANCES: 1e-7 for float64, 64·u·(T+1) for float32), the gradient reaching a
# window's start is "vanished": what it carries would hardly show above the tolerance
COVERAGE_FACTOR = 10.0


@dataclass(frozen=True)
class Coverage:
    value: float               # the smallest coverage over the windows (1.0: nothing to cover)
    window: Window | None      # the window where it is smallest


def coverage(case: Case) -> Coverage:
    """The case's coverage, computed on the reference model in float64."""
    spec = case.spec
    params = {n: np.asarray(v, dtype=np.float64) for n, v in case.params.items()}
    x = np.asarray(case.x, dtype=np.float64)
    y = case.y if spec.loss == "cross_entropy" else np.asarray(case.y, dtype=np.float64)
    T, B, _ = x.shape
    tr = _model.forward(params, x, spec)
    scale = _model.loss_scale(spec, T, B)
    U, V = params["U"], params["V"]
    best = Coverage(1.0, None)
    for w in spec.windows(T):
        losses = set(w.losses)
        dh_next = np.zeros_like(tr.h[0])
        peak = 0.0
        for t in reversed(range(w.start, max(losses) + 1)):
            dh = dh_next
            if t in losses:
                dyhat = scale * _model.step_loss_grad(spec, tr.yhat[t], _model.target_at(spec, y, t, T))
                dh = dh + dyhat @ V
            peak = max(peak, float(np.linalg.norm(dh)))
            dh_next = (dh * _model.act_grad(spec.activation, tr.hhat[t])) @ U
        entering = float(np.linalg.norm(dh_next))
        value = entering / peak if peak > 0 else 0.0
        if value < best.value:
            best = Coverage(value, w)
    return best


def threshold(dtype: str, T: int) -> float:
    """The smallest coverage a case in ``dtype`` over T steps needs to count as tested."""
    from ._compare import tolerance_for

    return COVERAGE_FACTOR * tolerance_for(dtype, T).rtol
