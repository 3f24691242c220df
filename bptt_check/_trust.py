"""How far a verdict can be trusted (issue 6): the glue between ``check_case`` and the trust modules.

- ``judging_aids``: the float32 rounding allowance, the relu kink elements, the gradients
  float32 cannot resolve on this case;
- ``second_look`` (a failed case): float32 hiding in a float64 spec, float32 kinks, else the
  named diagnosis (``_diagnosis``);
- ``settle_disputes`` (the oracles disagree): the eps-free Taylor remainder (``_taylor``);
- ``check_coverage`` (a passed case): a vanished gradient makes it inconclusive (``_coverage``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._compare import Tolerance, compare

if TYPE_CHECKING:
    from ._call import Backward
    from ._cases import Case
    from ._check import CaseResult
    from ._compare import GradResult


def judging_aids(case: Case, ref: dict[str, np.ndarray], tol: Tolerance,
                 notes: list[str]) -> tuple[dict[str, float], dict[str, np.ndarray], set[str]]:
    """Rounding allowance per gradient, kink masks, and gradients too fine for the dtype."""
    from ._kinks import kink_elements
    from ._precision import float32_note, rounding_allowance, unjudgeable

    allowance = rounding_allowance(case, ref, tol)
    if allowance:
        notes.append(float32_note(case.T, tol))
    return allowance, kink_elements(case), set(unjudgeable(ref, allowance))


def exclusion_notes(kinks: dict[str, np.ndarray], unjudged: set[str], grads: dict[str, GradResult]) -> list[str]:
    out = []
    kinked = {k: int(m.sum()) for k, m in kinks.items() if m.any() and k in grads}
    if kinked:
        out.append("relu kinks: " + ", ".join(f"d{k} ({n})" for k, n in kinked.items())
                   + " element(s) whose finite-difference step straddles a kink are "
                   "non-differentiable there and were not judged")
    if unjudged:
        out.append(f"precision: float32 rounding on this case is as large as {', '.join(sorted(unjudged))} "
                   "itself (a saturated or cancelling output): not judged")
    return out


def second_look(backward: Backward, case: Case, got: dict[str, np.ndarray], ref: Any, result: CaseResult,
                tol: Any, floor: float, repeat: dict[str, np.ndarray] | None = None) -> None:
    """A failed case: float32 hiding in a float64 spec, float32 kinks, else name the cause."""
    from ._kinks import near_kinks
    from ._precision import float32_tolerance, mixed_precision_note

    failed = result.failed_grads
    numeric = all(result.grads[n].problem is None for n in failed)
    if case.spec.dtype == "float64" and numeric:
        tol32, allow32 = float32_tolerance(case, ref.grads)
        within = all(compare(n, got[n], ref.grads[n], tol32, scale_floor=floor,
                             ref_error=np.asarray(ref.error.get(n, 0.0)) + allow32.get(n, 0.0)).passed
                     for n in failed)
        if within:
            result.diagnosis = attach_diagnosis(backward, case, got, ref.grads, result, tol, floor, repeat)
            named = [d for d in result.diagnosis if d["code"] != "precision" and d["fit"] >= 0.9]
            if not named:
                worst = max(result.grads[n].max_rel_err for n in failed)
                for n in failed:
                    result.grads[n].passed = True
                result.status = "passed"
                result.diagnosis = []
                result.notes.append(mixed_precision_note(failed, got, worst))
            return
    if case.spec.dtype == "float32" and near_kinks(case):
        t, b, j = near_kinks(case)[0]
        result.status = "inconclusive"
        result.notes.insert(0, f"a relu pre-activation lies within float32 rounding of 0 (ĥ at t={t}, b={b}, "
                               f"unit {j}): a correct float32 backward may take either side of the kink")
        return
    result.diagnosis = attach_diagnosis(backward, case, got, ref.grads, result, tol, floor, repeat)


def settle_disputes(backward: Backward, case: Case, got: dict[str, np.ndarray], ref: Any, result: CaseResult,
                     tol: Any, floor: float, disputes: dict[str, np.ndarray],
                     repeat: dict[str, np.ndarray] | None = None) -> None:
    """Where the oracles disagree, let the eps-free Taylor remainder decide for the user's gradient."""
    from ._taylor import random_direction, taylor_check

    masks = {k: d for k, d in disputes.items() if d.any() and k in got and np.shape(got[k]) == d.shape}
    if len(masks) != sum(1 for d in disputes.values() if d.any()):
        return
    verdicts = {}
    for k, m in masks.items():
        direction = random_direction({k: m}, seed=case.index)
        user = taylor_check(case, got, direction)
        if user.verdict == "refuted" and taylor_check(case, ref.grads, direction).verdict != "confirmed":
            user.verdict = "unclear"          # the objective itself is not smooth there
        verdicts[k] = user
    if any(v.verdict == "unclear" for v in verdicts.values()):
        return
    refuted = [k for k, v in verdicts.items() if v.verdict == "refuted"]
    result.notes.pop(0)
    result.notes[:] = [n for n in result.notes if not n.endswith("where the oracles disagree were not judged")]
    for k, v in verdicts.items():
        result.notes.append(f"{k}: the oracles disagree on {int(masks[k].sum())} element(s); with your gradient "
                            f"{v.describe()} along them: {'wrong' if k in refuted else 'confirmed'}")
    if refuted:
        for k in refuted:
            result.grads[k].passed = False
        result.status = "failed"
        result.diagnosis = attach_diagnosis(backward, case, got, ref.grads, result, tol, floor, repeat)
    else:
        result.status = "passed"


def check_coverage(case: Case, result: CaseResult) -> None:
    from ._coverage import coverage, threshold

    cov = coverage(case)
    limit = threshold(case.spec.dtype, case.T)
    if cov.value < limit and cov.window is not None:
        w = cov.window
        result.status = "inconclusive"
        result.notes.insert(0, f"coverage: only {cov.value:.2g} of the gradient's peak reaches the start of the "
                               f"window {w.start}..{max(w.losses)} (below {limit:g} for {case.spec.dtype}): the "
                               "gradient vanished, so the early steps were not really tested")


def attach_diagnosis(backward: Backward, case: Case, got: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                     result: CaseResult, tol: Any, floor: float,
                     repeat: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    from ._diagnosis import diagnose
    from ._precision import rounding_allowance

    try:
        found = diagnose(case, got, ref, result.grads, tol, scale_floor=floor, backward=backward, repeat=repeat,
                         allowance=rounding_allowance(case, ref, tol))
    except Exception as exc:  # a diagnosis must never hide the verdict itself
        result.notes.append(f"diagnosis failed ({type(exc).__name__}: {exc}); the verdict stands")
        return []
    return [f.to_dict() for f in found]


# the shape hints of ``_call`` that name a cause of the diagnosis (the shape itself is the evidence)
_SHAPE_CAUSES = (("transposed", "transposed"), ("sum over the batch", "batch_not_summed"))


def error_diagnosis(case: Case, got: dict[str, np.ndarray] | None, ref: Any, result: CaseResult, tol: Any,
                    repeat: dict[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """Causes for a backward whose result could not be judged as it stands (status ``error``).

    A shape finding whose hint names a layout mistake (a transposed weight, a gradient per sequence)
    gets that code with fit 1; two calls that disagree get ``stale_accumulation`` when the second
    grew by the true gradient, or doubled.
    """
    err = result.error or {}
    if err.get("kind") == "shape":
        for needle, code in _SHAPE_CAUSES:
            if needle in err.get("message", ""):
                return [{"code": code, "fit": 1.0, "message": err["message"]}]
        return []
    if err.get("kind") == "nondeterministic" and got and repeat:
        from ._diagnosis import stale_diagnosis

        try:
            return [f.to_dict() for f in stale_diagnosis(case, got, ref.grads, result.grads, tol, repeat)]
        except Exception as exc:  # a diagnosis must never hide the finding itself
            result.notes.append(f"diagnosis failed ({type(exc).__name__}: {exc}); the finding stands")
    return []
