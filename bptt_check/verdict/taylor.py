"""The eps-free Taylor-remainder check (DESIGN §6).

For a direction d and a candidate gradient g,

    r(ε) = |L(θ + εd) − L(θ) − ε⟨g, d⟩|

shrinks as ε² when ⟨g, d⟩ is the true directional derivative and only as ε
when it is not. No single step size has to be right: we halve ε (ten times, and
on while higher-order terms still bend the slope) and read the order off the
slope of log r against log ε, keeping only the steps whose remainder stands
well above the rounding noise of L. The objective is
the same windowed one the oracles differentiate (each window's entering state
held fixed at its unperturbed value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..model.forward import forward, window_loss

if TYPE_CHECKING:
    from ..model.cases import Case

Array = np.ndarray

HALVINGS = 10      # at least; up to MAX_HALVINGS while higher-order terms still bend the slope
MAX_HALVINGS = 40
CONFIRMS = 1.75   # order at or above this: g is the derivative along d
REFUTES = 1.25    # order at or below this: g is wrong along d
NOISE = 1e3       # a remainder counts when above NOISE·ε_machine·(|L| + 1)


@dataclass
class Taylor:
    order: float                      # the observed order (nan when nothing stood above the noise)
    verdict: str                      # "confirmed", "refuted" or "unclear"
    eps: list[float] = field(default_factory=list)
    remainders: list[float] = field(default_factory=list)

    def describe(self) -> str:
        if self.verdict == "unclear":
            return "the Taylor remainder gave no clear order"
        if not np.isfinite(self.order):        # nothing stood above the rounding noise of L
            return "the Taylor remainder stays within the rounding noise of the loss at every step"
        return f"the Taylor remainder shrinks as ε^{self.order:.2f}"


def _objective(case: Case):
    spec = case.spec
    params = {n: np.asarray(v, dtype=np.float64) for n, v in case.params.items()}
    x = np.asarray(case.x, dtype=np.float64)
    windows = case.windows
    weights = None if case.lengths is None else case.weights
    entering = forward(params, x, spec)

    def loss(delta: Mapping[str, Array], eps: float) -> float:
        moved = {n: v + eps * delta[n] if n in delta else v for n, v in params.items()}
        xx = x + eps * delta["x"] if "x" in delta else x
        return window_loss(moved, xx, case.y, spec, windows, entering, weights)

    return params, x, loss


def taylor_check(case: Case, grads: Mapping[str, Array], direction: Mapping[str, Array]) -> Taylor:
    """The order at which the remainder of ``grads`` along ``direction`` shrinks."""
    params, x, loss = _objective(case)
    values = {**params, "x": x}
    d = {n: np.asarray(v, dtype=np.float64) for n, v in direction.items() if np.any(v)}
    if not d:
        return Taylor(float("nan"), "unclear")
    dmax = max(float(np.max(np.abs(v))) for v in d.values())
    vmax = max(float(np.max(np.abs(values[n]))) for n in d)
    eps0 = 0.05 * max(1.0, vmax) / dmax
    slope = sum(float(np.vdot(np.asarray(grads[n], dtype=np.float64), v)) for n, v in d.items())
    base = loss({}, 0.0)
    if not (np.isfinite(base) and np.isfinite(slope)):
        return Taylor(float("nan"), "unclear")
    floor = NOISE * np.finfo(np.float64).eps * (abs(base) + 1.0)
    epss, rems, signed = [], [], []
    for i in range(MAX_HALVINGS):
        e = eps0 * 0.5 ** i
        epss.append(e)
        signed.append(loss(d, e) - base - e * slope)
        rems.append(abs(signed[-1]))
        if i + 1 >= HALVINGS and (rems[-1] <= floor or _settled(rems, floor)):
            break   # in the asymptotic regime (or down in the noise): more halvings add nothing
    orders = [np.log2(rems[i] / rems[i + 1]) for i in range(len(rems) - 1)
              if rems[i] > floor and rems[i + 1] > floor]
    if not orders:
        # nothing above the noise: g matches along d to within rounding (a NaN remainder never does)
        quiet = all(r <= floor for r in rems[-3:])
        return Taylor(float("nan"), "confirmed" if quiet else "unclear", epss, rems)
    # the mean of the last four orders is the slope over the last five steps: a step where the
    # ε² and ε³ terms cancel dips one order and lifts the next, and the mean reads through it
    order = float(np.mean(orders[-4:]))
    verdict = "confirmed" if order >= CONFIRMS else "refuted" if order <= REFUTES else "unclear"
    if verdict == "unclear":
        verdict = _linear_term_verdict(epss, signed, floor)
    return Taylor(order, verdict, epss, rems)


def _linear_term_verdict(epss: list[float], signed: list[float], floor: float) -> str:
    """Where the ε² and ε³ terms of the remainder still fight, read the ε term itself.

    With R(ε) = a₁ε + a₂ε² + a₃ε³ + …, where a₁ = ⟨g* − g, d⟩ is the error of g along d,
    (4R(ε) − R(2ε)) / 2ε = a₁ − 2a₃ε² + … : it shrinks as ε² when g is right and settles at
    a₁ when it is wrong.
    """
    est = [(4 * signed[i] - signed[i - 1]) / (2 * epss[i]) for i in range(1, len(signed))
           if abs(4 * signed[i] - signed[i - 1]) > 5 * floor]
    if len(est) < 4:
        return "unclear"
    shrink = [np.log2(abs(est[i]) / abs(est[i + 1])) for i in range(len(est) - 1) if est[i + 1] != 0]
    rate = float(np.mean(shrink[-3:]))
    return "confirmed" if rate >= 1.5 else "refuted" if rate <= 0.5 else "unclear"


def _settled(rems: list[float], floor: float) -> bool:
    """The last three orders above the noise agree to within 0.1: the slope is read."""
    tail = rems[-4:]
    if len(tail) < 4 or min(tail) <= floor:
        return False
    orders = [np.log2(tail[i] / tail[i + 1]) for i in range(3)]
    return max(orders) - min(orders) < 0.1


def random_direction(masks: Mapping[str, Array], seed: int = 0) -> dict[str, Array]:
    """Rademacher signs on the True elements of each mask, zero elsewhere."""
    rng = np.random.default_rng(seed)
    return {n: np.where(m, rng.choice((-1.0, 1.0), size=m.shape), 0.0) for n, m in masks.items() if m.any()}
