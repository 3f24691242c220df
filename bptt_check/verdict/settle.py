"""Settling: how far a verdict can be trusted, as values the pipeline applies (DESIGN §6, §14).

Each function looks at a judged case and returns an :class:`Adjustment` — never edits notes:

- :func:`precision` (a failed case): float32 hiding in a float64 spec (the differences are within
  float32's tolerance and no named mistake explains them) passes with a note; a float32
  pre-activation within rounding of a relu kink makes the case inconclusive;
- :func:`disputes` (the oracles disagree on some elements): the eps-free Taylor remainder decides
  for the user's gradient along the disputed elements (``taylor.py``);
- :func:`coverage` (a passed case): a gradient that vanished before reaching a window's start makes
  the case inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.compare import compare
from ..model.coverage import coverage as coverage_of
from ..model.coverage import threshold
from ..model.kinks import near_kinks
from .judge import Judgement
from .precision import float32_tolerance, mixed_precision_note, unjudgeable
from .taylor import random_direction, taylor_check

if TYPE_CHECKING:
    from ..model.cases import Case

Array = np.ndarray


@dataclass
class Adjustment:
    """A change to the verdict, with its reasons."""

    status: str | None = None            # the case's new status (None: unchanged)
    lead: str | None = None              # the reason that heads the case's notes
    notes: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)      # gradients now judged right
    failed: list[str] = field(default_factory=list)      # gradients now judged wrong
    settled: bool = False                # the disputes were settled: their notes go
    diagnosis: list[dict[str, Any]] | None = None        # the named causes, when this stage found them


NONE = Adjustment()


def precision(case: Case, got: Mapping[str, Array], j: Judgement,
              diagnose: Callable[[], list[dict[str, Any]]]) -> Adjustment:
    """A failed case: float32 hiding in a float64 spec, or a float32 kink; else the named causes.

    float32 hiding in a float64 spec is decided per gradient (issue 12): a gradient that meets the
    float32 tolerance and that no named mistake explains passes with a precision note, also when
    another gradient of the case is really wrong (which then fails alone, and is diagnosed alone).
    """
    numeric = [n for n in j.failed if j.grads[n].problem is None]
    if case.spec.dtype == "float64" and numeric:
        tol32, allow32 = float32_tolerance(case, j.ref, j.lower)
        within = [n for n in numeric
                  if compare(n, got[n], j.ref[n], tol32, scale_floor=j.floor,
                             ref_error=np.asarray(j.error.get(n, 0.0)) + allow32.get(n, 0.0)).passed]
        if within:
            found = diagnose()
            explained = {g for d in found if d["code"] != "precision" and d["fit"] >= 0.9
                         for g in d.get("grads", numeric)}
            rescued = [n for n in within if n not in explained]
            if not rescued:
                return Adjustment(diagnosis=found)
            # where float32 cannot resolve a gradient at all, "within float32's tolerance" says nothing
            blind = unjudgeable(j.ref, {n: allow32.get(n, 0.0) for n in rescued})
            rescued = [n for n in rescued if n not in blind]
            notes = []
            if rescued:
                notes.append(mixed_precision_note(rescued, dict(got), max(j.grads[n].max_rel_err for n in rescued)))
            if len(rescued) == len(j.failed):
                return Adjustment(status="passed", passed=rescued, diagnosis=[], notes=notes)
            if len(rescued) + len(blind) == len(j.failed):
                return Adjustment(status="inconclusive", passed=rescued + blind, diagnosis=[], notes=notes, lead=(
                    f"precision: {', '.join('d' + n for n in blind)} {'misses' if len(blind) == 1 else 'miss'} the "
                    "float64 reference, and float32 rounding on this case is as large as the gradient itself (a "
                    "saturated or cancelling output): if your code keeps anything in float32, it cannot be "
                    "judged here"))
            # the rest is wrong: diagnosed again without the gradients that passed on precision
            return Adjustment(passed=rescued, notes=notes, diagnosis=[])
    if case.spec.dtype == "float32":
        near = near_kinks(case)
        if near:
            t, b, u = near[0]
            return Adjustment(status="inconclusive",
                              lead=f"a relu pre-activation lies within float32 rounding of 0 (ĥ at t={t}, b={b}, "
                                   f"unit {u}): a correct float32 backward may take either side of the kink")
    return NONE


def disputes(case: Case, got: Mapping[str, Array], j: Judgement, canonical: Mapping[str, Array]) -> Adjustment:
    """Where the oracles disagree, let the eps-free Taylor remainder decide for the user's gradient.

    ``canonical``: the user's gradients as canonical arrays (the Taylor check moves the canonical
    parameters), or the same as ``got`` when the backward is not adapted.
    """
    # a gradient the dtype cannot resolve on this case is not judged, by the Taylor check neither
    disputed = {k: d for k, d in j.open.items() if d.any() and k not in j.unjudged}
    masks = {k: d for k, d in disputed.items() if k in canonical and np.shape(canonical[k]) == d.shape}
    if not masks or len(masks) != len(disputed):
        return NONE
    verdicts = {}
    for k, m in masks.items():
        direction = random_direction({k: m}, seed=case.index)
        user = taylor_check(case, canonical, direction)
        if user.verdict == "refuted" and taylor_check(case, j.ref, direction).verdict != "confirmed":
            user.verdict = "unclear"          # the objective itself is not smooth there
        verdicts[k] = user
    if any(v.verdict == "unclear" for v in verdicts.values()):
        return NONE
    refuted = [k for k, v in verdicts.items() if v.verdict == "refuted"]
    notes = [f"{k}: the oracles disagree on {int(masks[k].sum())} element(s); with your gradient "
             f"{v.describe()} along them: {'wrong' if k in refuted else 'confirmed'}" for k, v in verdicts.items()]
    if refuted:
        return Adjustment(status="failed", failed=refuted, notes=notes, settled=True)
    if j.unjudged:          # the disputes are settled, but some gradient could not be judged at all
        return Adjustment(notes=notes, settled=True, lead=j.unjudged_note())
    return Adjustment(status="passed", notes=notes, settled=True)


def coverage(case: Case) -> Adjustment:
    """A passed case whose gradient vanished before a window's start proves little: inconclusive."""
    cov = coverage_of(case)
    limit = threshold(case.spec.dtype, case.T)
    if cov.value < limit and cov.window is not None:
        w = cov.window
        return Adjustment(status="inconclusive",
                          lead=f"coverage: only {cov.value:.2g} of the gradient's peak reaches the start of the "
                               f"window {w.start}..{max(w.losses)} (below {limit:g} for {case.spec.dtype}): the "
                               "gradient vanished, so the early steps were not really tested")
    return NONE
