"""Comparing a gradient with a reference (DESIGN §6); tolerances as data keyed by dtype.

Element-wise  |g - r| <= atol·scale + rtol·|r| + oracle_error,
where scale is the gradient's own magnitude (max |r|, floored by a fraction of
the case's largest gradient so an all-zero reference still has a meaningful
absolute tolerance). Tolerances are relative to scale because exploding and
vanishing gradients are expected over long sequences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float  # relative to the gradient's own scale
    # rtol and atol are per step: a backward over T steps gets (T + 1) times them
    per_step: bool = False
    # plus this multiple of the case's own rounding error in the dtype (the reference
    # recomputed in that dtype; see _variants.rounding_estimate), per gradient
    rounding: float = 0.0

    def at(self, T: int) -> Tolerance:
        """The tolerance for a sequence of T steps."""
        if not self.per_step:
            return self
        return Tolerance(self.rtol * (T + 1), self.atol * (T + 1), rounding=self.rounding)


# float32 unit roundoff u = 2^-24 ≈ 6e-8
U32 = float(np.finfo(np.float32).eps) / 2
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
# two float64 oracles against each other (finite differences carry ~1e-8..1e-10 error)
ORACLE_TOLERANCE = Tolerance(rtol=1e-5, atol=1e-6)
# an all-zero reference is compared at this fraction of the case's largest gradient
ZERO_FLOOR = 1e-3


def tolerance_for(dtype: str, T: int | None = None) -> Tolerance:
    """The tolerance for a backward computing in ``dtype`` (over T steps, when given)."""
    tol = TOLERANCES.get(str(dtype), TOLERANCES["float32"])
    return tol.at(T) if T is not None else tol


@dataclass
class GradResult:
    """The comparison of one gradient (W, U, b, V, c, h0 or x) with its reference."""

    name: str
    passed: bool
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    worst_index: list[int] = field(default_factory=list)
    mismatched: int = 0
    size: int = 0
    scale: float = 0.0
    norm_rel_err: float = 0.0
    cosine: float = 1.0
    ratio: float = 1.0
    atol: float = 0.0
    rtol: float = 0.0
    problem: str | None = None   # missing, shape, non-finite: why no comparison was possible
    # the worst <= 10 elements of a wrong gradient: {index, yours, reference, abs, rel, bad}
    worst: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = _finite(v)
        d["worst"] = [{k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()}
                      for row in self.worst]
        return d


def _finite(v: float) -> float | None:
    """JSON has no nan/inf: nan becomes null, an infinity the largest double."""
    if np.isfinite(v):
        return v
    return None if np.isnan(v) else (1e308 if v > 0 else -1e308)


WORST_ROWS = 10


def worst_elements(got: np.ndarray, ref: np.ndarray, allowed: np.ndarray, atol: float,
                   rows: int = WORST_ROWS) -> list[dict[str, Any]]:
    """The ``rows`` elements furthest beyond their tolerance, worst first."""
    diff = np.abs(got - ref)
    score = (diff / allowed).reshape(-1)
    n = min(rows, score.size)
    if n == 0:
        return []
    top = np.argpartition(-score, n - 1)[:n] if score.size > n else np.arange(score.size)
    top = top[np.argsort(-score[top], kind="stable")]
    out = []
    for flat in top:
        idx = np.unravel_index(int(flat), ref.shape)
        r, g, d = float(ref[idx]), float(got[idx]), float(diff[idx])
        out.append({"index": [int(i) for i in idx], "yours": g, "reference": r, "abs": d,
                    "rel": d / max(abs(r), atol), "bad": bool(score[flat] > 1.0)})
    return out


def compare(name: str, got: np.ndarray | None, ref: np.ndarray, tol: Tolerance, *,
            ref_error: np.ndarray | float = 0.0, scale_floor: float = 0.0) -> GradResult:
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref), initial=0.0))
    if got is None:
        return GradResult(name, False, size=int(ref.size), scale=scale,
                          problem=f"missing: the backward returned no gradient for {name!r}")
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape:
        hint = ""
        if got.ndim == 2 and got.shape[::-1] == ref.shape:
            hint = " (transposed?)"
        elif got.size == ref.size:
            hint = " (same size, different layout?)"
        return GradResult(name, False, size=int(ref.size), scale=scale,
                          problem=f"shape: expected {ref.shape}, got {got.shape}{hint}")
    finite = np.isfinite(got)
    if not finite.all():
        bad = np.argwhere(~finite)
        return GradResult(name, False, size=int(ref.size), scale=scale,
                          mismatched=int(bad.shape[0]), worst_index=[int(i) for i in bad[0]],
                          problem=f"non-finite: {bad.shape[0]} of {ref.size} elements are nan/inf, "
                                  f"first at {tuple(int(i) for i in bad[0])}")
    atol = tol.atol * max(scale, scale_floor, np.finfo(np.float64).tiny)
    allowed = atol + tol.rtol * np.abs(ref) + np.asarray(ref_error, dtype=np.float64)
    diff = np.abs(got - ref)
    bad = diff > allowed
    rel = diff / np.maximum(np.abs(ref), atol)
    if diff.size:
        worst = np.unravel_index(int(np.argmax(diff / allowed)), diff.shape)
    else:
        worst = ()
    rnorm = float(np.linalg.norm(ref))
    gnorm = float(np.linalg.norm(got))
    dnorm = float(np.linalg.norm(got - ref))
    dot = float(np.vdot(got, ref))
    cosine = dot / (rnorm * gnorm) if rnorm > 0 and gnorm > 0 else (1.0 if rnorm == gnorm else 0.0)
    ratio = dot / (rnorm * rnorm) if rnorm > 0 else (1.0 if gnorm == 0 else float("inf"))
    passed = not bool(bad.any())
    return GradResult(
        name=name,
        passed=passed,
        max_abs_err=float(diff.max(initial=0.0)),
        max_rel_err=float(rel.max(initial=0.0)),
        worst_index=[int(i) for i in worst],
        mismatched=int(bad.sum()),
        size=int(ref.size),
        scale=scale,
        norm_rel_err=dnorm / rnorm if rnorm > 0 else (0.0 if dnorm == 0 else float("inf")),
        cosine=cosine,
        ratio=ratio,
        atol=float(atol),
        rtol=tol.rtol,
        worst=[] if passed else worst_elements(got, ref, allowed, float(atol)),
    )
