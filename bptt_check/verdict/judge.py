"""Judging: every gradient the backward returned against the reference, element-wise (DESIGN §6).

The tolerance is the dtype's over the case's T steps (:func:`~bptt_check.model.tolerance.tolerance_for`),
plus the reference's own error estimate, plus — for a float32 backward — a multiple of the rounding
this very case incurs in float32. Elements that prove nothing are not judged: where the oracles
disagree with each other (``disputed``), where a finite-difference step straddles a relu kink
(``kinks``), and whole gradients that float32 cannot resolve on this case (``unjudged``). What was
left out is said, as data (:class:`Judgement`), for the later stages to settle or report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.compare import GradResult, compare
from ..model.kinks import kink_elements
from ..model.names import describe, ordered
from ..model.tolerance import Tolerance, floor_of, tolerance_for
from .precision import ROUNDING, Lower, float32_note, float64_allowance, float64_note, rounding_allowance, unjudgeable

if TYPE_CHECKING:
    from ..model.cases import Case

Array = np.ndarray


@dataclass
class Judgement:
    """Every gradient judged, and what could not be."""

    grads: dict[str, GradResult]
    ref: dict[str, Array]
    error: dict[str, Any]
    tol: Tolerance
    floor: float
    allowance: dict[str, float] = field(default_factory=dict)
    kinks: dict[str, Array] = field(default_factory=dict)
    open: dict[str, Array] = field(default_factory=dict)     # disputed by the oracles, not at a kink
    unjudged: set[str] = field(default_factory=set)
    precision_note: str | None = None                        # how a float32 backward was judged
    dispute_notes: list[str] = field(default_factory=list)   # per gradient: elements left unjudged
    # canonical gradients -> what the backward returns (its layout's clip, shared h0, second bias)
    lower: Lower | None = None
    dtype: str = "float64"

    @property
    def failed(self) -> list[str]:
        return [k for k, g in self.grads.items() if not g.passed]

    @property
    def disputed(self) -> bool:
        """Some element that matters is in dispute between the oracles."""
        return any(m.any() for m in self.open.values())

    def kink_note(self) -> str | None:
        kinked = {k: int(m.sum()) for k, m in self.kinks.items() if m.any() and k in self.grads}
        if not kinked:
            return None
        return ("relu kinks: " + ", ".join(f"d{k} ({n})" for k, n in kinked.items())
                + " element(s) whose finite-difference step straddles a kink are non-differentiable there and "
                "were not judged")

    def unjudged_note(self) -> str | None:
        if not self.unjudged:
            return None
        return (f"precision: {self.dtype} rounding on this case is as large as {describe(self.unjudged)} "
                "itself (a saturated or cancelling output): not judged")

    def error_of(self, name: str) -> Any:
        """What is allowed besides the tolerance: the reference's error and the rounding allowance."""
        return np.asarray(self.error.get(name, 0.0)) + self.allowance.get(name, 0.0)


def judge(case: Case, got: Mapping[str, Array], ref: Mapping[str, Array], error: Mapping[str, Any],
          disputed: Mapping[str, Array] | None = None, *, kinks: Mapping[str, Array] | None = None,
          lower: Lower | None = None) -> Judgement:
    """Judge every gradient in ``ref`` that the backward returned (``x`` only if it did).

    ``disputed``: elements where the oracles disagree; ``kinks``: elements at a relu kink (computed
    here when not given); ``lower``: canonical gradients -> what the backward returns (the rounding
    estimates are lowered with it, as the reference was).
    """
    tol = tolerance_for(case.spec.dtype, case.T)
    j = Judgement({}, dict(ref), dict(error), tol, floor_of(ref.values()), lower=lower, dtype=case.spec.dtype)
    j.allowance = rounding_allowance(case, dict(ref), tol, lower)
    if j.allowance:
        j.precision_note = float32_note(case.T, tol)
    j.unjudged = set(unjudgeable(dict(ref), j.allowance))
    found = kink_elements(case) if kinks is None else kinks
    for name in ordered(ref):
        if name not in got and name not in case.params:
            continue   # dL/dx is optional in the protocol, as is an unused parameter's (zero) gradient
        shape = np.shape(ref[name])
        kink = np.asarray(found.get(name, np.zeros(shape, dtype=bool)))
        if kink.shape != shape:
            kink = np.zeros(shape, dtype=bool)
        j.kinks[name] = kink
        # an element where the reference is not finite (an overflow) proves nothing, like a dispute
        broken = ~np.isfinite(np.asarray(ref[name], dtype=np.float64))
        j.open[name] = (np.asarray((disputed or {}).get(name, np.zeros(shape, dtype=bool))) | broken) & ~kink
        j.grads[name] = _one(j, name, got)
    missed = [n for n in j.failed if j.grads[n].problem is None]
    if missed and not tol.rounding:
        # float64: judged again at this case's own float64 rounding (a saturated output cancels)
        extra = float64_allowance(case, {n: ref[n] for n in missed}, lower)
        extra = {n: a for n, a in extra.items() if a > 0}
        for n in extra:
            j.allowance[n] = extra[n]
        j.unjudged |= set(unjudgeable({n: ref[n] for n in extra}, extra))
        rescued = []
        for n in extra:
            g = _one(j, n, got)
            if g.passed:
                j.grads[n] = g
                if n not in j.unjudged:
                    rescued.append(n)
        if rescued:
            scale = {n: max(float(np.max(np.abs(ref[n]), initial=0.0)), 1e-300) for n in rescued}
            j.precision_note = float64_note(rescued, {n: extra[n] / ROUNDING / scale[n] for n in rescued})
    return j


def _one(j: Judgement, name: str, got: Mapping[str, Array]) -> GradResult:
    """One gradient against the reference, left unjudged where it proves nothing."""
    err = j.error_of(name)
    g = compare(name, got.get(name), j.ref[name], j.tol, ref_error=err, scale_floor=j.floor)
    excluded = j.kinks[name] | j.open[name]
    if not g.passed and g.problem is None and (excluded.any() or name in j.unjudged):
        # re-judge on the elements where the oracles agree and the objective is differentiable
        if name in j.unjudged or _passes_outside(got[name], j.ref[name], j.tol, err, j.floor, excluded):
            g.passed = True
            if j.open[name].any():
                note = (f"{name}: {int(j.open[name].sum())} element(s) where the oracles disagree were not judged")
                if note not in j.dispute_notes:
                    j.dispute_notes.append(note)
    return g


def _passes_outside(got: Array, ref: Array, tol: Tolerance, ref_error: Any, floor: float, excluded: Array) -> bool:
    keep = ~excluded
    if not keep.any():
        return True
    r = compare("masked", got[keep], ref[keep], tol,
                ref_error=np.broadcast_to(np.asarray(ref_error, dtype=float), ref.shape)[keep],
                scale_floor=max(floor, float(np.max(np.abs(ref), initial=0.0))))
    return r.passed
