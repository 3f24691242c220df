"""Precision policy: how well a gradient can be known on a case, in the dtype the backward computes in.

- A float32 backward is judged at ``TOLERANCES["float32"]`` over T steps plus a multiple of
  the rounding error this very case incurs in float32 (its reference recomputed in float32):
  a correct one passes, with a note saying how it was judged; a wrong formula is off by O(1)
  and still fails. A gradient whose float32 rounding on this case is as large as the
  gradient itself cannot be judged in float32 at all (a saturated output, say): it is left
  unjudged and the case is inconclusive.
- A float64 backward gets the same rule at float64's own rounding, where it matters: a gradient
  that misses the float64 tolerance is judged again with ``ROUNDING`` times this case's float64
  rounding — how far a float64 evaluation of the textbook formulas lies from the same formulas in
  extended precision (``np.longdouble``) and from the reference (issue 12: a saturated sigmoid's
  1 − y, a saturated softmax's p − onehot cancel; a correct float64 backward is then off by 1e-6
  or by all of a gradient of scale 1e-30, and so is the reference). A gradient that float64 cannot
  resolve on the case (the rounding is as large as the gradient) is not judged.
- A float64 spec whose gradients miss the float64 tolerance but meet the float32 one, with no
  named mistake explaining the difference, stores or computes something in float32 (states
  kept in a float32 array, say): those gradients pass with a precision note rather than failing.

Every estimate is lowered through the backward's layout (``lower``: a declared clip, a shared
h0, a second bias), so it is compared with the reference the backward is actually judged
against (issue 12: an unclipped recompute against a clipped reference let a wrong gradient pass).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.backprop import RIGHT, rounding_estimate, variant_grads
from ..model.cell import cell_of
from ..model.forward import forward
from ..model.tolerance import U32, Tolerance, tolerance_for

if TYPE_CHECKING:
    from ..model.cases import Case

Lower = Callable[..., dict[str, Any]]     # (case, canonical arrays) -> what the backward returns
UNJUDGEABLE = 0.5   # allowed rounding at or above this share of the gradient's scale: not judged
# a float64 backward that misses the float64 tolerance is allowed this multiple of the case's own
# float64 rounding (the same margin as float32's: another operation order rounds differently)
ROUNDING = 64.0
# extended precision is worth using only where it carries more digits than float64
EXTENDED = np.longdouble if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else None
NUMPY_CELLS = ("rnn", "lstm", "gru")     # the built-in cells, written in numpy: they compute in any dtype


def rounding_allowance(case: Case, ref: Mapping[str, np.ndarray], tol: Tolerance, lower: Lower | None = None
                       ) -> dict[str, float]:
    """Per gradient, the absolute error allowed for float32 rounding on this case (none where the dtype
    needs none): ``tol.rounding`` × |the reference recomputed in float32 − the reference|."""
    if not tol.rounding:
        return {}
    est = rounding_estimate(case, ref, np.float32, lower=lower)
    return {n: tol.rounding * e for n, e in est.items()}


def float64_allowance(case: Case, ref: Mapping[str, np.ndarray], lower: Lower | None = None
                      ) -> dict[str, float]:
    """Per gradient, the absolute error allowed for float64 rounding on this case: ``ROUNDING`` ×
    :func:`float64_rounding`."""
    return {n: ROUNDING * e for n, e in float64_rounding(case, ref, lower).items()}


def float64_rounding(case: Case, ref: Mapping[str, np.ndarray], lower: Lower | None = None) -> dict[str, float]:
    """Per gradient, how well float64 determines it on this case: the larger of |float64 − extended
    precision| (the textbook formulas) and |float64 − the reference| (max over the elements)."""
    est = rounding_estimate(case, ref, np.float64, lower=lower)
    ext = _extended(case, lower)
    if ext is not None:
        within = rounding_estimate(case, {n: v for n, v in ext.items() if n in ref}, np.float64, lower=lower)
        est = {n: max(e, within.get(n, 0.0)) for n, e in est.items()}
    return est


def _extended(case: Case, lower: Lower | None) -> dict[str, np.ndarray] | None:
    """The right gradients in extended precision, lowered; None where the platform has no extended type, a
    relu takes another branch in it, or the cell cannot compute in it (a cell of your own, written in torch)."""
    if EXTENDED is None or cell_of(case.spec).name not in NUMPY_CELLS or not _same_branches(case):
        return None
    ext = variant_grads(case, RIGHT, dtype=EXTENDED)
    return dict(lower(case, ext)) if lower is not None else ext


def _same_branches(case: Case) -> bool:
    """Whether every relu takes the same branch in float64 and in extended precision: a pre-activation within
    float64 rounding of 0 (a kink, left unjudged where it matters) would make the two differ by a whole
    step's contribution, which is no measure of rounding."""
    if case.spec.activation != "relu" or EXTENDED is None:
        return True
    signs = []
    for dtype in (np.float64, EXTENDED):
        params = {n: np.asarray(v, dtype=dtype) for n, v in case.params.items()}
        tr = forward(params, np.asarray(case.x, dtype=dtype), case.spec)
        signs.append([np.asarray(p) > 0 for t in range(tr.T) for p in tr.cell.pre_activations(tr.cache[t])])
    return all(np.array_equal(a, b) for a, b in zip(*signs))


def unjudgeable(ref: Mapping[str, np.ndarray], allowance: Mapping[str, float]) -> list[str]:
    """Gradients whose rounding on this case is comparable to the gradient itself."""
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


def float64_note(names: list[str], relative: Mapping[str, float]) -> str:
    worst = max(relative.values(), default=0.0)
    return (f"precision: {', '.join('d' + n for n in names)} {'is' if len(names) == 1 else 'are'} known on this "
            f"case only to {worst:.2g} of {'its' if len(names) == 1 else 'their'} scale in float64 (a saturated "
            "output or softmax cancels: the gradient evaluated in float64 and in extended precision, or by the "
            f"reference, differs that much); judged with {ROUNDING:g}× that rounding")


def float32_tolerance(case: Case, ref: Mapping[str, np.ndarray], lower: Lower | None = None
                      ) -> tuple[Tolerance, dict[str, float]]:
    """The float32 tolerance for this case and its rounding allowance per gradient."""
    tol = tolerance_for("float32", case.T)
    return tol, rounding_allowance(case, ref, tol, lower)


def mixed_precision_note(names: list[str], got: Mapping[str, np.ndarray], worst: float) -> str:
    dtypes = sorted({str(np.asarray(got[n]).dtype) for n in names if n in got})
    low = [d for d in dtypes if d in ("float32", "float16", "bfloat16")]
    why = (f"your backward returned {', '.join(low)} arrays" if low
           else "something in your backward or its forward computes or stores in float32")
    return (f"precision: {', '.join('d' + n for n in names)} match the float64 reference only to float32 "
            f"precision (max rel err {worst:.2g}): {why}; judged with the float32 tolerance, and no named "
            "mistake explains the difference")
