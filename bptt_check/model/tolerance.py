"""Tolerances as data keyed by dtype, and the one tolerance test (DESIGN §6).

Element-wise a gradient g matches a reference r where

    |g − r| <= atol·scale + rtol·|r| + error                                (:func:`allowed`)

``scale`` is the gradient's own magnitude (max |r|), floored by a fraction of the case's largest
gradient (:func:`floor_of`) so an all-zero reference still has a meaningful absolute tolerance;
``error`` is what else is allowed: the oracles' own error estimates, a float32 rounding allowance.
Tolerances are relative to scale because exploding and vanishing gradients are expected over long
sequences. Every comparison in bptt-check — a gradient against the reference, two oracles, a
prefix re-run, two calls of the same backward, a projection on random directions — goes through
:func:`allowed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float  # relative to the gradient's own scale
    # rtol and atol are per step: a backward over T steps gets (T + 1) times them
    per_step: bool = False
    # plus this multiple of the case's own rounding error in the dtype (the reference
    # recomputed in that dtype; see backprop.rounding_estimate), per gradient
    rounding: float = 0.0

    def at(self, T: int) -> Tolerance:
        """The tolerance for a sequence of T steps."""
        if not self.per_step:
            return self
        return Tolerance(self.rtol * (T + 1), self.atol * (T + 1), rounding=self.rounding)


# float32 unit roundoff u = 2^-24 ≈ 6e-8
U32 = float(np.finfo(np.float32).eps) / 2
TINY = float(np.finfo(np.float64).tiny)
# the backward under test, by its dtype, against a float64 reference.
# float32 (issue 6): rounding accumulates over the T steps of the recursion, so the bound is
# 64·u per step, plus 64 times the rounding error this very case incurs when its reference is
# recomputed in float32 (cancellation in a saturated output or a softmax can make that much
# larger than u). Measured on 1,500 random float32 cases (T up to 12, both float32 built-ins):
# the largest error was 1.9% of this bound; a wrong formula is off by O(1).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-7, atol=1e-9),
    "float32": Tolerance(rtol=64 * U32, atol=64 * U32, per_step=True, rounding=64.0),
}
# two float64 oracles against each other when finite differences are involved (~1e-8..1e-10 error)
ORACLE_TOLERANCE = Tolerance(rtol=1e-5, atol=1e-6)
# two exact oracles (autograd, the complex step) against each other
EXACT_TOLERANCE = TOLERANCES["float64"]
# an all-zero reference is compared at this fraction of the case's largest gradient
ZERO_FLOOR = 1e-3


def tolerance_for(dtype: str, T: int | None = None) -> Tolerance:
    """The tolerance for a backward computing in ``dtype`` (over T steps, when given)."""
    tol = TOLERANCES.get(str(dtype), TOLERANCES["float32"])
    return tol.at(T) if T is not None else tol


def magnitude(a: Any) -> float:
    """max |a| over the finite elements (0 for an empty array): a non-finite element says nothing of scale."""
    v = np.abs(np.asarray(a, dtype=np.float64))
    return float(np.max(v, initial=0.0, where=np.isfinite(v)))


def floor_of(grads: Iterable[Any]) -> float:
    """The floor of every gradient's scale in a case: ``ZERO_FLOOR`` × its largest gradient."""
    return ZERO_FLOOR * max((magnitude(g) for g in grads), default=0.0)


def scale_of(ref: Any, floor: float = 0.0) -> float:
    """A gradient's scale: max |r|, at least ``floor`` (and never 0)."""
    return max(magnitude(ref), floor, TINY)


def allowed(ref: Any, tol: Tolerance, scale: float, error: Any = 0.0) -> np.ndarray:
    """The largest |g − r| each element may show: atol·scale + rtol·|r| + error."""
    r = np.asarray(ref, dtype=np.float64)
    return tol.atol * scale + tol.rtol * np.abs(r) + np.asarray(error, dtype=np.float64)


def within(got: Any, ref: Any, tol: Tolerance, scale: float, error: Any = 0.0) -> np.ndarray:
    """Element-wise: does g match r?"""
    g = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    return np.abs(g - r) <= allowed(r, tol, scale, error)
