"""Precision policy: float32 backwards against a float64 reference, and float32 hiding in a float64 spec.

- A float32 backward is judged at ``TOLERANCES["float32"]`` over T steps plus a multiple of
  the rounding error this very case incurs in float32 (its reference recomputed in float32):
  a correct one passes, with a note saying how it was judged; a wrong formula is off by O(1)
  and still fails. A gradient whose float32 rounding on this case is as large as the
  gradient itself cannot be judged in float32 at all (a saturated output, say): it is left
  unjudged and the case is inconclusive.
- A float64 spec whose gradients miss the float64 tolerance but meet the float32 one, with no
  named mistake explaining the difference, stores or computes something in float32 (states
  kept in a float32 array, say): it passes with a precision note rather than failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.backprop import rounding_estimate
from ..model.tolerance import U32, Tolerance, tolerance_for

if TYPE_CHECKING:
    from ..model.cases import Case

UNJUDGEABLE = 0.5   # allowed rounding at or above this share of the gradient's scale: not judged


def rounding_allowance(case: Case, ref: dict[str, np.ndarray], tol: Tolerance,
                       lower: Callable[..., dict[str, Any]] | None = None) -> dict[str, float]:
    """Per gradient, the absolute error allowed for rounding on this case (0 where the dtype needs none).

    ``ref`` is what the backward returns; ``lower`` maps canonical gradients to that (an adapter's
    layout: a shared h0, a clip), so that the recomputed reference is compared like for like.
    """
    if not tol.rounding:
        return {}
    est = rounding_estimate(case, ref, lower=lower)
    return {n: tol.rounding * e for n, e in est.items()}


def unjudgeable(ref: dict[str, np.ndarray], allowance: dict[str, float]) -> list[str]:
    """Gradients whose float32 rounding on this case is comparable to the gradient itself."""
    out = []
    for n, a in allowance.items():
        scale = float(np.max(np.abs(ref[n]), initial=0.0))
        if a > 0 and a >= UNJUDGEABLE * scale:
            out.append(n)
    return out


def float32_note(T: int, tol: Tolerance) -> str:
    return (f"precision: float32 backward judged against a float64 reference at rtol = atol = "
            f"{tol.rtol:.2g} (64·u per step over T = {T} steps, u = {U32:.3g}) plus {tol.rounding:g}× this "
            "case's own float32 rounding (its reference recomputed in float32)")


def float32_tolerance(case: Case, ref: dict[str, np.ndarray], lower: Callable[..., dict[str, Any]] | None = None
                      ) -> tuple[Tolerance, dict[str, float]]:
    """The float32 tolerance for this case and its rounding allowance per gradient."""
    tol = tolerance_for("float32", case.T)
    return tol, rounding_allowance(case, ref, tol, lower)


def mixed_precision_note(names: list[str], got: dict[str, np.ndarray], worst: float) -> str:
    dtypes = sorted({str(np.asarray(got[n]).dtype) for n in names if n in got})
    low = [d for d in dtypes if d in ("float32", "float16", "bfloat16")]
    why = (f"your backward returned {', '.join(low)} arrays" if low
           else "something in your backward or its forward computes or stores in float32")
    return (f"precision: {', '.join('d' + n for n in names)} match the float64 reference only to float32 "
            f"precision (max rel err {worst:.2g}): {why}; judged with the float32 tolerance, and no named "
            "mistake explains the difference")
