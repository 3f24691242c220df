"""Coverage: does the gradient still reach the start of every window? (DESIGN §6)

A case whose gradient vanished before reaching the early steps proves little
about them: a dropped t = 0 term or a wrong recurrent flow would change the
user's numbers by less than the tolerance. For every window (start s, loss
steps L) we back-propagate the window's own loss in float64 (the one reverse
recursion, ``backprop``) and measure

    coverage_w = ‖∂L_w/∂state_{s−1}‖ / max_{s ≤ t ≤ max L} ‖∂L_w/∂state_t‖

(state_{s−1} is the state entering the window, the initial state when s = 0). The case's
coverage is the smallest over its windows. Below ``threshold(dtype, T)`` a case that
would have passed is *inconclusive*: its early steps were not really tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backprop import backprop
from .forward import forward
from .functions import loss_weights
from .spec import Spec, Window
from .tolerance import tolerance_for

# below this multiple of the relative tolerance the backward is judged with (see
# tolerance.TOLERANCES: 1e-7 for float64, 64·u·(T+1) for float32), the gradient reaching a
# window's start is "vanished": what it carries would hardly show above the tolerance
COVERAGE_FACTOR = 10.0


@dataclass(frozen=True)
class Coverage:
    value: float               # the smallest coverage over the windows (1.0: nothing to cover)
    window: Window | None      # the window where it is smallest


def coverage_of(params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec, lengths: Any = None) -> Coverage:
    """The coverage of a case's arrays, computed on the reference model in float64."""
    p = {n: np.asarray(v, dtype=np.float64) for n, v in params.items()}
    x = np.asarray(x, dtype=np.float64)
    y = y if spec.loss == "cross_entropy" else np.asarray(y, dtype=np.float64)
    tr = forward(p, x, spec)
    norms: dict[str, float] = {}

    def visit(w: Window, t: int, dstate: tuple[np.ndarray, ...], contrib: Any) -> None:
        norm = float(np.sqrt(sum(float(np.vdot(d, d)) for d in dstate)))
        if contrib is None:
            norms["entering"] = norm
        else:
            norms["peak"] = max(norms["peak"], norm)

    best = Coverage(1.0, None)
    weights = loss_weights(spec, x.shape[0], x.shape[1], lengths)
    for w in spec.windows(x.shape[0], lengths):
        norms.update(peak=0.0, entering=0.0)
        backprop(tr, y, spec, windows=[w], weights=weights, visit=visit, accumulate=False)
        value = norms["entering"] / norms["peak"] if norms["peak"] > 0 else 0.0
        if value < best.value:
            best = Coverage(value, w)
    return best


def coverage(case: Any) -> Coverage:
    """The coverage of a :class:`~bptt_check.model.cases.Case`."""
    return coverage_of(case.params, case.x, case.y, case.spec, case.lengths)


def threshold(dtype: str, T: int) -> float:
    """The smallest coverage a case in ``dtype`` over T steps needs to count as tested."""
    return COVERAGE_FACTOR * tolerance_for(dtype, T).rtol


def covered(params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec, lengths: Any = None) -> bool:
    return coverage_of(params, x, y, spec, lengths).value >= threshold(spec.dtype, int(np.shape(x)[0]))
