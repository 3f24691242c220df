"""Checking a backward: call it on drawn cases, ask the oracles, compare, decide.

Verdicts (per case):
- ``passed``: every gradient matches the reference wherever the oracles agree;
- ``failed``: some gradient differs from the reference at an element where the
  oracles agree with each other;
- ``inconclusive``: nothing failed, but the oracles disagree with each other on
  some elements (a relu kink, a precision problem), so those prove nothing;
- ``error``: the backward misbehaved (it raised, returned something that is not
  gradients in the protocol, changed its inputs in place, or gave a different
  result on a second call); ``error`` holds ``{"kind", "message", "keys"}``;
- ``timeout``: the backward did not return within the per-call limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from . import _trust as trust
from ._call import DEFAULT_TIMEOUT, Backward, headline, invoke, limit, signature_problem
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
    error: dict[str, Any] | None = None
    target: str = ""
    seconds: float = 0.0
    # issue 3: where in time it goes wrong and how to replay it (failed cases only; see _evidence)
    evidence: dict[str, Any] | None = None
    stdout: str = ""
    # failed cases: the named causes that fit, best first ({"code", "fit", "message"}, DESIGN §7)
    diagnosis: list[dict[str, Any]] = field(default_factory=list)

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
            line = head + " — wrong: " + "; ".join(worst)
            if self.diagnosis:
                best = self.diagnosis[0]
                line += f" — likely {best['code']} (fit {best['fit']:.2f}): {best['message']}"
            return line
        if self.status in ("error", "timeout") and self.error:
            return head + f" — {self.error['kind']}: {headline(self.error)}"
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
            "stdout": self.stdout,
            "diagnosis": list(self.diagnosis),
            "seconds": round(self.seconds, 6),
            "evidence": self.evidence,
        }


@dataclass
class Report:
    """One run: every case checked, and the totals."""

    cases: list[CaseResult]
    seed: int
    oracles: tuple[str, ...]
    seconds: float = 0.0
    argv: list[str] | None = None
    interrupted: bool = False      # the run was stopped (Ctrl-C, SIGTERM): ``cases`` is what was done

    @property
    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "inconclusive": 0, "error": 0, "timeout": 0}
        for c in self.cases:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(c.status in ("passed", "inconclusive") for c in self.cases)

    def summary(self) -> str:
        n = self.counts
        parts = [f"{v} {k}" for k, v in n.items() if v or k in ("passed", "failed")]
        verdict = "OK" if self.passed else "WRONG GRADIENTS"
        if not self.passed and not n["failed"] and (n["error"] or n["timeout"]):
            verdict = "BACKWARD ERRORS"           # the backward misbehaved; no gradient was compared wrong
        if self.interrupted:
            verdict = "INTERRUPTED"
        return f"{verdict}: {len(self.cases)} cases, " + ", ".join(parts) + f" in {self.seconds:.2f}s"

    def to_dict(self) -> dict[str, Any]:
        data = report_dict([c.to_dict() for c in self.cases], seed=self.seed, oracles=self.oracles,
                           seconds=self.seconds, argv=self.argv, interrupted=self.interrupted)
        data["passed"] = self.passed
        return data


def report_dict(cases: list[dict[str, Any]], *, seed: int, oracles: Sequence[str], seconds: float,
                argv: Sequence[str] | None, **extra: Any) -> dict[str, Any]:
    """The report of a run (schema 2) from its case records; shared by the CLI and the pytest plugin."""
    import datetime
    import platform
    import shlex

    specs: list[dict[str, Any]] = []
    targets: list[str] = []
    counts = {"passed": 0, "failed": 0, "inconclusive": 0, "error": 0, "timeout": 0}
    for c in cases:
        if c["spec"] not in specs:
            specs.append(c["spec"])
        if c.get("target", "") not in targets:
            targets.append(c.get("target", ""))
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    return {
        "schema": 2,
        "tool": "bptt-check",
        "version": __version__,
        "argv": list(argv) if argv else None,
        "command": shlex.join(argv) if argv else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": {"python": platform.python_version(), "numpy": np.__version__},
        "specs": specs,
        "targets": targets,
        "passed": all(c["status"] in ("passed", "inconclusive") for c in cases),
        "counts": counts,
        "seed": seed,
        "oracles": list(oracles),
        "tolerances": _tolerance_table(sorted({c["spec"]["dtype"] for c in cases})),
        "seconds": round(seconds, 6),
        **extra,
        "cases": cases,
    }


def _tolerance_table(dtypes: Sequence[str]) -> dict[str, Any]:
    from ._compare import TOLERANCES

    return {
        "user_vs_reference": {d: vars(TOLERANCES[d]) for d in (dtypes or ["float64"]) if d in TOLERANCES},
        "oracle_vs_oracle": vars(ORACLE_TOLERANCE),
        "exact_oracle_vs_oracle": vars(TOLERANCES["float64"]),   # autograd against the complex step
        "why": "element-wise |g-r| <= atol*scale + rtol*|r| + oracle error; scale = max|r| of the "
               "gradient; rtol/atol by the dtype of the backward under test",
    }


# ----------------------------------------------------------------- one case

def check_case(backward: Backward, case: Case, *, oracles: Iterable[str] = DEFAULT_ORACLES,
               target: str = "", evidence: str | None = "full",
               timeout: float | None = DEFAULT_TIMEOUT, fast: bool = False,
               directions: int = DEFAULT_DIRECTIONS) -> CaseResult:
    """Check ``backward`` on one drawn case against the oracles.

    The backward is called twice on copies (see ``_call.invoke``), each call limited to
    ``timeout`` seconds (None or 0: no limit). A misbehaving backward gives status ``error`` (or
    ``timeout``) with ``error = {"kind", "message", "keys"}``; where its gradients could still be
    read (``mutated_input``, ``nondeterministic``) they are compared too.

    A failed case carries ``evidence`` (see ``_evidence``): ``"full"`` re-runs it on prefixes
    of its sequence and maps its error over time, ``"cheap"`` only what the arrays at hand
    show, ``None`` nothing.

    ``fast=True``: k = ``directions`` Rademacher projections per gradient against the complex
    step, element-wise only where one fails (``oracles`` is then not used).
    """
    start = time.perf_counter()
    names = tuple(oracles)
    # --- adapter hooks (bptt_check.adapters): a backward in another layout shapes its case,
    # reports the loss its code computed, and says which reference its layout implies
    hooks = getattr(backward, "bptt_hooks", None)
    if hooks is not None:
        case = hooks.prepare_case(case)
    # --- end adapter hooks
    result = CaseResult(case.index, case.seed, case.spec, case.flavor, case.shapes,
                        status="passed", target=target)
    outcome = invoke(backward, case, timeout=timeout, repeat=True)
    result.stdout = outcome.stdout
    result.notes.extend(outcome.notes)
    if outcome.error is None and hooks is not None:
        outcome.error = hooks.after_call(case)     # a forward that disagrees with the reference
    if outcome.error is not None:
        result.status = outcome.status
        result.error = outcome.error
    comparable = outcome.error is None or outcome.error["kind"] in ("mutated_input", "nondeterministic")
    if outcome.grads is None or not comparable:
        result.diagnosis = trust.error_diagnosis(case, None, None, result, None, None)
        result.seconds = time.perf_counter() - start
        return result
    got = outcome.grads
    if fast and hooks is None:   # an adapted backward's layout needs the lowered reference below
        return _check_fast(got, case, result, directions, start)

    ref = reference(case, names, directions=directions)
    if hooks is not None:
        ref, notes = hooks.lower_reference(case, ref)
        result.notes.extend(notes)
    floor = ref.scale_floor
    disputed = ref.disputed
    result.oracles = dict(ref.agreement)
    result.oracles["reference"] = {"name": ref.name}
    result.oracles["consensus"] = ref.consensus

    # --- trust (issue 6): tolerance over T steps plus this case's own rounding (float32),
    # relu kinks within the FD step excluded as non-differentiable
    tol = tolerance_for(case.spec.dtype, case.T)
    allowance, kinks, unjudged = trust.judging_aids(case, ref.grads, tol, result.notes)
    for name in ref.grads:
        kinks.setdefault(name, np.zeros(ref.grads[name].shape, dtype=bool))
    for name in (*GRAD_ORDER, *(k for k in ref.grads if k not in GRAD_ORDER)):
        if name not in ref.grads:
            continue
        if name == "x" and "x" not in got:
            continue   # dL/dx is optional in the protocol
        err = np.asarray(ref.error.get(name, 0.0)) + allowance.get(name, 0.0)
        g = compare(name, got.get(name), ref.grads[name], tol, ref_error=err, scale_floor=floor)
        skip = disputed[name] | kinks[name]
        if not g.passed and g.problem is None and (skip.any() or name in unjudged):
            # re-judge on the elements where the oracles agree and the objective is differentiable
            ok_elsewhere = name in unjudged or _passes_outside(got[name], ref.grads[name], tol, err, floor, skip)
            if ok_elsewhere:
                g.passed = True
                if (disputed[name] & ~kinks[name]).any():
                    result.notes.append(f"{name}: {int((disputed[name] & ~kinks[name]).sum())} element(s) where "
                                        "the oracles disagree were not judged")
        result.grads[name] = g
    result.notes += trust.exclusion_notes(kinks, unjudged, result.grads)
    open_disputes = {k: d & ~kinks[k] for k, d in disputed.items()}
    if result.error is not None:   # the gradients were compared, but the backward misbehaved
        right = all(g.passed for g in result.grads.values())
        result.notes.append("the (first call's) gradients " + ("match" if right else "do not match")
                            + " the reference")
        result.diagnosis = trust.error_diagnosis(case, got, ref, result, tol, outcome.repeat)
    elif any(not g.passed for g in result.grads.values()):
        result.status = "failed"
        if hooks is not None:
            hooks.annotate(result)                 # where the wrong elements sit in the user's arrays
        trust.second_look(backward, case, got, ref, result, tol, floor, outcome.repeat)
        if evidence and result.status == "failed":   # issue 3: one call into _evidence, failed cases only
            from ._evidence import collect, strip_private

            result.evidence = strip_private(collect(backward, case, result, got, ref.grads, ref.error, tol,
                                                    oracles=names, full=evidence == "full"))
    elif any(d.any() for d in open_disputes.values()) or unjudged:
        result.status = "inconclusive"
        which = [f"{k} ({int(d.sum())}/{d.size})" for k, d in open_disputes.items() if d.any()]
        if which:
            result.notes.insert(0, "oracles disagree on " + ", ".join(which) + ": those elements prove nothing ("
                                + ref.explain() + ")")
            trust.settle_disputes(backward, case, got, ref, result, tol, floor, open_disputes, outcome.repeat)
    if result.status == "passed":
        trust.check_coverage(case, result)
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
    if result.error is not None:   # the gradients were compared, but the backward misbehaved
        pass
    elif any(not g.passed for g in result.grads.values()):
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

def _as_spec(spec: Spec | None, spec_kwargs: dict[str, Any], declared: Spec | None = None) -> Spec:
    if spec is None:
        spec = declared       # the spec an adapted backward declares (bptt_check.adapters)
    if spec is None:
        return Spec(**spec_kwargs)
    if spec_kwargs:
        return spec.replace(**spec_kwargs)
    return spec


def check(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
          oracles: Iterable[str] = DEFAULT_ORACLES, target: str = "",
          on_case: Callable[[CaseResult], None] | None = None, timeout: float | None = DEFAULT_TIMEOUT,
          fast: bool = False, directions: int = DEFAULT_DIRECTIONS, **spec_kwargs: Any) -> Report:
    """Check ``backward`` on ``cases`` random cases drawn inside ``spec``.

    ``spec`` may be given as a :class:`Spec` or as keywords
    (``mode="many-to-one", truncation="window:3"``, ...). ``timeout``: seconds per call of the
    backward (None or 0: no limit). ``fast=True`` checks ``directions`` random projections per
    gradient instead of every element (see :func:`check_case`).
    """
    try:
        spec = _as_spec(spec, spec_kwargs, getattr(backward, "bptt_spec", None))
        if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
            raise BPTTCheckError(f"cases must be a whole number >= 1, got {cases!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise BPTTCheckError(f"seed must be a whole number >= 0, got {seed!r}")
        timeout = limit(timeout)
        problem = signature_problem(backward)
        if problem:
            raise BPTTCheckError(problem)
    except BPTTCheckError as err:
        raise err.with_context(cases=cases, seed=seed) from None
    except TypeError as err:
        raise BPTTCheckError(f"bad spec: {err}", cases=cases, seed=seed) from None
    names = tuple(oracles)
    start = time.perf_counter()
    results = []
    from ._evidence import EVIDENCE_LIMIT

    full_left = EVIDENCE_LIMIT      # the first failed cases get the full evidence, the rest the cheap one
    for i in range(cases):
        r = check_case(backward, draw_case(spec, seed, i), oracles=names, target=target,
                       evidence="full" if full_left > 0 else "cheap", timeout=timeout, fast=fast,
                       directions=directions)
        full_left -= r.status == "failed"
        results.append(r)
        if on_case is not None:
            on_case(r)
    return Report(results, seed, FAST_ORACLES if fast else names, time.perf_counter() - start)


def assert_backward(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
                    oracles: Iterable[str] = DEFAULT_ORACLES, timeout: float | None = DEFAULT_TIMEOUT,
                    fast: bool = False, directions: int = DEFAULT_DIRECTIONS, **spec_kwargs: Any) -> Report:
    """Like :func:`check`, but raise :class:`BPTTCheckError` describing the first wrong case."""
    report = check(backward, spec, cases=cases, seed=seed, oracles=oracles, timeout=timeout, fast=fast,
                   directions=directions, **spec_kwargs)
    lines = describe_wrong(report.cases)
    if lines:
        first = next(c for c in report.cases if c.status not in ("passed", "inconclusive"))
        lines.append(f"  reproduce: bptt_check.draw_case(spec, seed={first.seed}, index={first.index})")
        raise BPTTCheckError("\n".join(lines), spec=str(first.spec), seed=seed, case=first.index)
    return report


def describe_wrong(results: Sequence[CaseResult]) -> list[str]:
    """The lines that describe the first wrong case of ``results`` (none when every case is right)."""
    bad = [c for c in results if c.status not in ("passed", "inconclusive")]
    if not bad:
        return []
    first = bad[0]
    lines = [f"{len(bad)} of {len(results)} case(s) wrong; first: {first.summary()}"]
    if first.error:
        lines.append(f"  {first.error['kind']}: " + first.error["message"].replace("\n", "\n    "))
    for name in first.failed_grads:
        g = first.grads[name]
        lines.append(f"  d{name}: " + (g.problem or
                     f"{g.mismatched}/{g.size} elements off, worst {tuple(g.worst_index)} "
                     f"abs {g.max_abs_err:.3e} rel {g.max_rel_err:.3e}, ratio to reference {g.ratio:.4g}"))
    return lines
