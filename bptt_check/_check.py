"""Checking a backward: call it on drawn cases, ask the oracles, compare, decide.

Verdicts (per case):
- ``passed``: every gradient matches the reference wherever the oracles agree;
- ``failed``: some gradient differs from the reference at an element where the
  oracles agree with each other;
- ``inconclusive``: nothing failed, but the oracles disagree with each other on
  some elements (a relu kink, a precision problem), so those prove nothing;
- ``error``: the backward could not be compared at all (it raised, or did not
  return a mapping).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from ._call import Backward, invoke
from ._cases import Case, draw_case
from ._compare import ORACLE_TOLERANCE, GradResult, compare, tolerance_for
from ._errors import BPTTCheckError
from ._spec import Spec
from .oracles.consensus import reference
from .oracles.directional import DEFAULT_DIRECTIONS

GRAD_ORDER = ("W", "U", "b", "V", "c", "h0", "x")
# autograd element-wise, witnessed by a few complex-step directions (issue 5); full element-wise
# finite differences / complex step are opt-in: oracles=("autograd", "fd", "complex-step")
DEFAULT_ORACLES = ("autograd", "directional")
FAST_ORACLES = ("directional", "complex-step")


@dataclass
class CaseResult:
    """The verdict on one case."""

    index: int
    seed: int
    spec: Spec
    flavor: str
    shapes: dict[str, int]
    status: str
    grads: dict[str, GradResult] = field(default_factory=dict)
    oracles: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    target: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed_grads(self) -> list[str]:
        return [k for k, g in self.grads.items() if not g.passed]

    def summary(self) -> str:
        shp = " ".join(f"{k}={v}" for k, v in self.shapes.items())
        who = f"{self.target} " if self.target else ""
        head = f"case {self.index:>3} {self.status.upper():<12} {who}[{self.spec}] {shp}"
        if self.status == "failed":
            worst = []
            for name in self.failed_grads:
                g = self.grads[name]
                if g.problem:
                    worst.append(f"{name}: {g.problem}")
                else:
                    worst.append(f"{name}: max rel err {g.max_rel_err:.2e} at {tuple(g.worst_index)}")
            return head + " — wrong: " + "; ".join(worst)
        if self.status in ("error", "timeout") and self.error:
            return head + f" — {self.error['kind']}: {self.error['message'].splitlines()[-1]}"
        if self.status == "inconclusive" and self.notes:
            return head + " — " + self.notes[0]
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seed": self.seed,
            "target": self.target,
            "passed": self.passed,
            "status": self.status,
            "spec": self.spec.to_dict(),
            "flavor": self.flavor,
            "shapes": self.shapes,
            "params": {k: g.to_dict() for k, g in self.grads.items()},
            "oracles": self.oracles,
            "notes": list(self.notes),
            "error": self.error,
            "seconds": round(self.seconds, 6),
        }


@dataclass
class Report:
    """One run: every case checked, and the totals."""

    cases: list[CaseResult]
    seed: int
    oracles: tuple[str, ...]
    seconds: float = 0.0
    argv: list[str] | None = None

    @property
    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "inconclusive": 0, "error": 0, "timeout": 0}
        for c in self.cases:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    @property
    def passed(self) -> bool:
        return all(c.status in ("passed", "inconclusive") for c in self.cases)

    def summary(self) -> str:
        n = self.counts
        parts = [f"{v} {k}" for k, v in n.items() if v or k in ("passed", "failed")]
        verdict = "OK" if self.passed else "WRONG GRADIENTS"
        return f"{verdict}: {len(self.cases)} cases, " + ", ".join(parts) + f" in {self.seconds:.2f}s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "tool": "bptt-check",
            "version": __version__,
            "argv": self.argv,
            "passed": self.passed,
            "counts": self.counts,
            "seed": self.seed,
            "oracles": list(self.oracles),
            "tolerances": _tolerance_table(self.cases),
            "seconds": round(self.seconds, 6),
            "cases": [c.to_dict() for c in self.cases],
        }


def _tolerance_table(cases: Sequence[CaseResult]) -> dict[str, Any]:
    from ._compare import TOLERANCES

    dtypes = sorted({c.spec.dtype for c in cases}) or ["float64"]
    return {
        "user_vs_reference": {d: vars(TOLERANCES[d]) for d in dtypes},
        "oracle_vs_oracle": vars(ORACLE_TOLERANCE),
        "exact_oracle_vs_oracle": vars(TOLERANCES["float64"]),   # autograd against the complex step
        "why": "element-wise |g-r| <= atol*scale + rtol*|r| + oracle error; scale = max|r| of the "
               "gradient; rtol/atol by the dtype of the backward under test",
    }


# ----------------------------------------------------------------- one case

def check_case(backward: Backward, case: Case, *, oracles: Iterable[str] = DEFAULT_ORACLES,
               target: str = "", fast: bool = False, directions: int = DEFAULT_DIRECTIONS) -> CaseResult:
    """Check ``backward`` on one drawn case against the oracles.

    ``fast=True``: k = ``directions`` Rademacher projections per gradient against the complex
    step, element-wise only where one fails (``oracles`` is then not used).
    """
    start = time.perf_counter()
    names = tuple(oracles)
    result = CaseResult(case.index, case.seed, case.spec, case.flavor, case.shapes,
                        status="passed", target=target)
    outcome = invoke(backward, case)
    if outcome.error is not None or outcome.grads is None:
        result.status = "error"
        result.error = outcome.error
        result.seconds = time.perf_counter() - start
        return result
    got = outcome.grads
    if fast:
        return _check_fast(got, case, result, directions, start)

    ref = reference(case, names, directions=directions)
    floor = ref.scale_floor
    disputed = ref.disputed
    result.oracles = dict(ref.agreement)
    result.oracles["reference"] = {"name": ref.name}
    result.oracles["consensus"] = ref.consensus

    tol = tolerance_for(case.spec.dtype)
    for name in GRAD_ORDER:
        if name not in ref.grads:
            continue
        if name == "x" and "x" not in got:
            continue   # dL/dx is optional in the protocol
        g = compare(name, got.get(name), ref.grads[name], tol,
                    ref_error=ref.error.get(name, 0.0), scale_floor=floor)
        if not g.passed and g.problem is None and disputed[name].any():
            # re-judge on the elements where the oracles agree
            ok_elsewhere = _passes_outside(got[name], ref.grads[name], tol, ref.error.get(name, 0.0),
                                           floor, disputed[name])
            if ok_elsewhere:
                g.passed = True
                result.notes.append(f"{name}: {int(disputed[name].sum())} element(s) where the oracles "
                                    "disagree were not judged")
        result.grads[name] = g
    extra = sorted(set(got) - set(ref.grads))
    if extra:
        result.notes.append(f"the backward returned keys that are not gradients of this model: {extra}")

    if any(not g.passed for g in result.grads.values()):
        result.status = "failed"
    elif any(d.any() for d in disputed.values()):
        result.status = "inconclusive"
        which = [f"{k} ({int(d.sum())}/{d.size})" for k, d in disputed.items() if d.any()]
        result.notes.insert(0, "oracles disagree on " + ", ".join(which) + ": those elements prove nothing ("
                            + ref.explain() + ")")
    result.seconds = time.perf_counter() - start
    return result


def _check_fast(got: dict[str, np.ndarray], case: Case, result: CaseResult, directions: int,
                start: float) -> CaseResult:
    from .oracles.fast import fast_check

    fast = fast_check(got, case, k=directions)
    result.grads = {k: fast.grads[k] for k in GRAD_ORDER if k in fast.grads}
    result.oracles = {"fast": fast.info}
    result.notes.extend(fast.notes)
    extra = sorted(set(got) - set(case.params) - {"x"})
    if extra:
        result.notes.append(f"the backward returned keys that are not gradients of this model: {extra}")
    if any(not g.passed for g in result.grads.values()):
        result.status = "failed"
    elif fast.unjudged:
        result.status = "inconclusive"
        result.notes.insert(0, "relu kinks inside the finite-difference step at " + ", ".join(
            f"{k} ({n})" for k, n in fast.unjudged.items()) + ": those elements prove nothing")
    result.seconds = time.perf_counter() - start
    return result


def _passes_outside(got: np.ndarray, ref: np.ndarray, tol: Any, ref_error: Any, floor: float,
                    disputed: np.ndarray) -> bool:
    keep = ~disputed
    if not keep.any():
        return True
    r = compare("masked", got[keep], ref[keep], tol,
                ref_error=np.broadcast_to(np.asarray(ref_error, dtype=float), ref.shape)[keep],
                scale_floor=max(floor, float(np.max(np.abs(ref), initial=0.0))))
    return r.passed


# ----------------------------------------------------------------- many cases

def _as_spec(spec: Spec | None, spec_kwargs: dict[str, Any]) -> Spec:
    if spec is None:
        return Spec(**spec_kwargs)
    if spec_kwargs:
        return spec.replace(**spec_kwargs)
    return spec


def check(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
          oracles: Iterable[str] = DEFAULT_ORACLES, target: str = "",
          on_case: Callable[[CaseResult], None] | None = None, fast: bool = False,
          directions: int = DEFAULT_DIRECTIONS, **spec_kwargs: Any) -> Report:
    """Check ``backward`` on ``cases`` random cases drawn inside ``spec``.

    ``spec`` may be given as a :class:`Spec` or as keywords
    (``mode="many-to-one", truncation="window:3"``, ...). ``fast=True`` checks ``directions``
    random projections per gradient instead of every element (see :func:`check_case`).
    """
    try:
        spec = _as_spec(spec, spec_kwargs)
        if cases < 1:
            raise BPTTCheckError(f"cases must be >= 1, got {cases}")
    except BPTTCheckError as err:
        raise err.with_context(cases=cases, seed=seed) from None
    except TypeError as err:
        raise BPTTCheckError(f"bad spec: {err}", cases=cases, seed=seed) from None
    names = tuple(oracles)
    start = time.perf_counter()
    results = []
    for i in range(cases):
        r = check_case(backward, draw_case(spec, seed, i), oracles=names, target=target, fast=fast,
                       directions=directions)
        results.append(r)
        if on_case is not None:
            on_case(r)
    return Report(results, seed, FAST_ORACLES if fast else names, time.perf_counter() - start)


def assert_backward(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
                    oracles: Iterable[str] = DEFAULT_ORACLES, fast: bool = False,
                    directions: int = DEFAULT_DIRECTIONS, **spec_kwargs: Any) -> Report:
    """Like :func:`check`, but raise :class:`BPTTCheckError` describing the first wrong case."""
    report = check(backward, spec, cases=cases, seed=seed, oracles=oracles, fast=fast, directions=directions,
                   **spec_kwargs)
    bad = [c for c in report.cases if c.status not in ("passed", "inconclusive")]
    if bad:
        first = bad[0]
        lines = [f"{len(bad)} of {len(report.cases)} cases wrong; first: {first.summary()}"]
        for name in first.failed_grads:
            g = first.grads[name]
            lines.append(f"  d{name}: " + (g.problem or
                         f"{g.mismatched}/{g.size} elements off, worst {tuple(g.worst_index)} "
                         f"abs {g.max_abs_err:.3e} rel {g.max_rel_err:.3e}, ratio to reference {g.ratio:.4g}"))
        lines.append(f"  reproduce: bptt_check.draw_case(spec, seed={first.seed}, index={first.index})")
        raise BPTTCheckError("\n".join(lines), spec=str(first.spec), seed=seed, case=first.index)
    return report
