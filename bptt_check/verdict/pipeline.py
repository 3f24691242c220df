"""The verdict on one case, in stages that every path goes through (DESIGN §14):

    call → reference → judge → settle → explain

1. **call** — the backward, through its :class:`~bptt_check.runner.target.Target` (twice: a
   determinism check); a misbehaving backward becomes an error finding.
2. **reference** — the oracles (``consensus.py``: the first is the reference, the others witness it),
   lowered to what the backward's layout returns. In fast mode (``fast.py``) random projections come
   first, and the element-wise reference is computed only for the gradients they suspect.
3. **judge** — every gradient element-wise against the reference (``judge.py``).
4. **settle** — adjustments returned as values (``settle.py``): float32 precision, relu kinks in
   float32, the Taylor check where the oracles disagree, coverage.
5. **explain** — a failed case gets its named causes (``diagnosis.py``) and its evidence
   (``evidence.py``); an error finding gets the causes its data can show.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..model.backprop import variant_grads
from ..model.cases import Case
from ..model.kinks import kink_elements
from ..model.names import ordered
from ..model.tolerance import tolerance_for
from ..oracles import get_oracle
from ..oracles.autograd import device_problem
from ..oracles.directional import DEFAULT_DIRECTIONS
from ..runner.adapters import loss_readings
from ..runner.call import DEFAULT_TIMEOUT
from ..runner.target import DEFAULT_ISOLATE, Backward, Target
from . import diagnosis as diagnosis_module
from . import evidence as evidence_module
from . import fast as fast_mode
from . import settle
from .consensus import Reference, reference
from .judge import Judgement, judge
from .precision import rounding_allowance
from .result import CaseResult

# autograd element-wise, witnessed by a few complex-step directions (issue 5); full element-wise
# finite differences / complex step are opt-in: oracles=("autograd", "fd", "complex-step")
DEFAULT_ORACLES = ("autograd", "directional")
FAST_ORACLES = fast_mode.ORACLES
EVIDENCE_LIMIT = evidence_module.EVIDENCE_LIMIT


@dataclass
class _Verdict:
    """The case's verdict while the stages build it; notes are assembled once, at the end."""

    status: str = "passed"
    lead: str | None = None                      # the reason that heads the notes
    call_notes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dispute_notes: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    def apply(self, adj: settle.Adjustment, result: CaseResult) -> None:
        if adj.status is not None:
            self.status = adj.status
        if adj.settled:
            self.lead = None
            self.dispute_notes = []
        if adj.lead is not None:
            self.lead = adj.lead
        for n in adj.passed:
            result.grads[n].passed = True
        for n in adj.failed:
            result.grads[n].passed = False
        self.tail += adj.notes
        if adj.diagnosis is not None:
            result.diagnosis = adj.diagnosis

    def notes_list(self) -> list[str]:
        rest = [n for n in self.call_notes + self.notes + self.dispute_notes + self.tail if n != self.lead]
        return ([self.lead] if self.lead else []) + rest


@dataclass
class _Reference:
    """The reference for every gradient, as the backward's layout returns them; which oracles gave it."""

    grads: dict[str, np.ndarray]
    error: dict[str, Any]
    oracles: tuple[str, ...]
    consensus: Reference | None = None


def check_case(backward: Backward, case: Case, *, oracles: Iterable[str] = DEFAULT_ORACLES,
               target: str = "", evidence: str | None = "full",
               timeout: float | None = DEFAULT_TIMEOUT, fast: bool = False,
               directions: int = DEFAULT_DIRECTIONS, isolate: str = DEFAULT_ISOLATE,
               device: str | None = None, repeat: bool = True) -> CaseResult:
    """Check ``backward`` on one drawn case against the oracles.

    The backward is called on copies, each call limited to ``timeout`` seconds (None or 0: no limit);
    with ``repeat`` (the default) twice, a determinism check (:func:`bptt_check.check` asks it on the
    first cases of a run). A misbehaving backward gives status ``error`` (or ``timeout``)
    with ``error = {"kind", "message", "keys"}``; where its gradients could still be read
    (``mutated_input``, ``nondeterministic``) they are compared too.

    A failed case carries ``evidence`` (see ``evidence.py``): ``"full"`` re-runs it on prefixes
    of its sequence and maps its error over time, ``"cheap"`` only what the arrays at hand
    show, ``None`` nothing.

    ``fast=True``: k = ``directions`` Rademacher projections of the gradients against the complex
    step, element-wise only where one fails (``oracles`` is then not used).

    ``isolate``: where the backward runs — ``"process"`` (default: a worker process of its own, so
    that nothing it does reaches this process), ``"thread"`` (this process, under the limit) or
    ``"none"`` (the caller's thread, no limit: for a debugger). See ``runner/target.py``.
    ``device``: the torch device of the autograd reference (None: the CPU).
    """
    problem = device_problem(device)
    if problem:
        raise UsageError(problem)
    start = time.perf_counter()
    runner = Target(backward, timeout=timeout, isolate=isolate)
    case = runner.prepare(case)
    result = CaseResult(case.index, case.seed, case.spec, case.flavor, case.shapes, status="passed", target=target,
                        lengths=None if case.lengths is None else [int(n) for n in case.lengths])
    v = _Verdict()

    # 1. call
    outcome = runner.call(case, repeat=repeat)
    result.stdout = outcome.stdout
    v.call_notes = list(outcome.notes)
    if outcome.error is not None:
        v.status, result.error = outcome.status, outcome.error
    comparable = outcome.error is None or outcome.error["kind"] in ("mutated_input", "nondeterministic")
    if outcome.grads is None or not comparable:
        result.diagnosis = _error_causes(outcome.error or {})
        if outcome.error is not None and outcome.error["kind"] == "forward" and outcome.grads:
            result.diagnosis = _forward_causes(runner, case, outcome.grads, outcome.error)
        return _done(result, v, start)
    got = outcome.grads

    # 2. reference and 3. judge
    whole: _Reference | None = None
    if fast:
        j = _fast_stage(runner, case, got, result, v, directions)
    else:
        ref = reference(case, tuple(oracles), directions=directions, device=device)
        result.oracles = {**ref.agreement, "reference": {"name": ref.name}, "consensus": ref.consensus}
        v.notes += runner.notes(case, ref.grads)
        whole = _Reference(runner.lower(case, ref.grads), runner.lower(case, ref.error, "error"),
                           tuple(oracles), ref)
        j = judge(case, got, whole.grads, whole.error, runner.lower(case, ref.disputed, "mask"), lower=runner.lower,
                  kinks=runner.lower(case, kink_elements(case), "mask"))
        result.grads = dict(j.grads)
    if j is not None:
        if j.precision_note:
            v.notes.append(j.precision_note)
        v.dispute_notes = list(j.dispute_notes)
        v.tail += [n for n in (j.kink_note(), j.unjudged_note()) if n]

    def reference_of_all() -> _Reference:        # fast mode computes it only when something is wrong
        nonlocal whole
        if whole is None:
            res = get_oracle("complex-step").gradients(case)
            whole = _Reference(runner.lower(case, res.grads), runner.lower(case, res.error, "error"),
                               ("complex-step",))
        return whole

    # 4. settle and 5. explain
    if result.error is not None:             # the gradients were compared, but the backward misbehaved
        right = all(g.passed for g in result.grads.values())
        v.tail.append("the (first call's) gradients " + ("match" if right else "do not match") + " the reference")
        if result.error["kind"] == "nondeterministic" and outcome.repeat is not None:
            result.diagnosis = _stale_causes(case, got, reference_of_all().grads, result, outcome.repeat, v)
    elif j is not None and j.failed:
        v.status = "failed"
        full = reference_of_all()

        def causes() -> list[dict[str, Any]]:
            return _causes(runner, case, got, full.grads, result, j, outcome.repeat, v)

        v.apply(settle.precision(case, got, j, causes), result)
        if v.status == "failed":
            wrong = {n: result.grads[n] for n in result.failed_grads}
            v.tail += runner.locate(case, wrong)
            if runner.adapted is not None:
                result.yours = runner.adapted.yours(case, wrong)
        if v.status == "failed" and not result.diagnosis:
            result.diagnosis = causes()
        if evidence and v.status == "failed":
            run = {"fast": True, "directions": directions} if fast else {}
            result.evidence = evidence_module.strip_private(evidence_module.collect(
                runner, case, result, got, full.grads, full.error, j.tol, oracles=full.oracles,
                full=evidence == "full", run=run))
    elif j is not None and (j.disputed or j.unjudged):
        v.status = "inconclusive"
        blind = all(k in j.unjudged for k, d in j.open.items() if d.any())
        if blind:           # the dtype cannot resolve the gradients (disputed or not): that is the reason
            v.lead = j.unjudged_note()
        else:
            which = [f"{k} ({int(d.sum())}/{d.size})" for k, d in j.open.items() if d.any()]
            if whole is not None and whole.consensus is not None:
                v.lead = ("oracles disagree on " + ", ".join(which) + ": those elements prove nothing ("
                          + whole.consensus.explain() + ")")
            else:            # fast mode: an element-wise reference that overflowed
                v.lead = ("the element-wise reference is not finite on " + ", ".join(which)
                          + ": those elements prove nothing")
            v.apply(settle.disputes(case, got, j, got), result)
            if v.status == "failed":
                result.diagnosis = _causes(runner, case, got, whole.grads, result, j, outcome.repeat, v)
    if v.status == "passed":
        v.apply(settle.coverage(case), result)
    return _done(result, v, start)


def _done(result: CaseResult, v: _Verdict, start: float) -> CaseResult:
    result.status = v.status
    result.notes = v.notes_list()
    result.grads = {k: result.grads[k] for k in ordered(result.grads)}
    result.seconds = time.perf_counter() - start
    return result


def _fast_stage(runner: Target, case: Case, got: Mapping[str, np.ndarray], result: CaseResult, v: _Verdict,
                directions: int) -> Judgement | None:
    """Random projections first; the suspects they name are judged element-wise."""
    stage = fast_mode.directions(runner, case, got, k=directions)
    result.grads = dict(stage.grads)
    result.oracles = {"fast": stage.info}
    j = None
    if stage.suspects:
        ref, err, kinks = fast_mode.element_wise(runner, case, got, stage, k=directions)
        j = judge(case, {n: got[n] for n in stage.suspects}, ref, err, kinks=kinks, lower=runner.lower)
        result.grads.update(j.grads)
        for n in stage.suspects:
            if j.grads[n].passed:
                stage.notes.append(f"{n}: a direction disagreed, but the element-wise "
                                   f"{stage.info['tensors'][n]['element_wise']} check passes every element")
    v.notes += stage.notes
    return j


def _causes(runner: Target, case: Case, got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
            result: CaseResult, j: Judgement, repeat: Mapping[str, np.ndarray] | None,
            v: _Verdict) -> list[dict[str, Any]]:
    """The named causes of a failed case; a diagnosis that breaks never hides the verdict."""
    try:
        allowance = {**rounding_allowance(case, dict(ref), j.tol, runner.lower), **j.allowance}
        found = diagnosis_module.diagnose(case, got, ref, result.grads, j.tol, scale_floor=j.floor, target=runner,
                                          repeat=repeat, allowance=allowance)
    except Exception as exc:  # a diagnosis must never hide the verdict itself
        v.tail.append(f"diagnosis failed ({type(exc).__name__}: {exc}); the verdict stands")
        return []
    return [f.to_dict() for f in found]


def _stale_causes(case: Case, got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], result: CaseResult,
                  repeat: Mapping[str, np.ndarray], v: _Verdict) -> list[dict[str, Any]]:
    """Two calls that disagree: ``stale_accumulation`` when the second grew by the true gradient, or doubled."""
    try:
        tol = tolerance_for(case.spec.dtype, case.T)
        found = diagnosis_module.stale_diagnosis(case, got, ref, result.grads, tol, repeat)
        return [f.to_dict() for f in found]
    except Exception as exc:  # a diagnosis must never hide the finding itself
        v.tail.append(f"diagnosis failed ({type(exc).__name__}: {exc}); the finding stands")
        return []


def _forward_causes(runner: Target, case: Case, got: Mapping[str, np.ndarray], error: Mapping[str, Any]
                    ) -> list[dict[str, Any]]:
    """A reported loss off by a convention (a mean where the spec sums, say): do the gradients follow the loss
    or the spec? Said plainly (issue 12: advice to change the reduction, when only the loss averages, made the
    gradients fail next)."""
    if "loss" not in error or "reference_loss" not in error:
        return []
    readings = loss_readings(error["loss"], error["reference_loss"], case)
    ref = runner.lower(case, variant_grads(case))
    names = [n for n in ref if n in got and np.shape(got[n]) == np.shape(ref[n])]
    rr = sum(float(np.vdot(ref[n], ref[n])) for n in names)
    if not readings or rr == 0.0:
        return []
    k = sum(float(np.vdot(np.asarray(got[n], dtype=np.float64), ref[n])) for n in names) / rr
    off = np.sqrt(sum(float(np.sum((np.asarray(got[n], dtype=np.float64) - k * ref[n]) ** 2)) for n in names) / rr)
    if off > 1e-3 * max(abs(k), 1e-300):
        return []                          # the gradients are no constant multiple of the spec's: nothing plain
    out = []
    for r in readings:
        if abs(k - 1.0) <= 1e-3:
            out.append({"code": "loss_gradient_mismatch", "fit": 1.0, "grads": ["loss"], "message": (
                f"your loss is {r['yours']}, but your gradients are those of {r['spec']}, as the spec says: the "
                "loss and the gradients disagree; fix the loss (the gradients are right)")})
        elif abs(k - r["ratio"]) <= 1e-3 * r["ratio"]:
            out.append({"code": "scaled", "fit": 1.0, "grads": [*names, "loss"], "message": (
                f"your loss and your gradients are both {r['yours']} (ratio {k:.6g}), where the spec's objective "
                f"is {r['spec']}: declare {r['declare']}")})
    return out


def _error_causes(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A finding of kind ``shape`` whose layout hint names a mistake carries it, with fit 1."""
    if error.get("kind") == "shape" and error.get("cause"):
        return [{"code": error["cause"], "fit": 1.0, "message": error["message"]}]
    return []
