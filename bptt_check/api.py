"""The Python API: check a backward on many random cases, or assert that it is right.

:func:`check` draws the cases of a run and checks each (``verdict/pipeline.py``); :class:`Report`
holds the run; :func:`assert_backward` raises :class:`~bptt_check.errors.CheckFailed` describing
the first wrong case, with a reproducer.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .errors import BPTTCheckError, CheckFailed, UsageError
from .model.cases import draw_case
from .model.names import describe
from .model.reproducer import expression, loadable, reproducer, target_name
from .model.shard import WHOLE, Shard
from .model.spec import Spec
from .oracles import parse_oracles
from .oracles.autograd import device_problem
from .oracles.directional import DEFAULT_DIRECTIONS
from .report import text
from .report.build import case_record, compact, counts_of, report_dict
from .report.log import CaseLog
from .runner.call import DEFAULT_TIMEOUT, limit
from .runner.target import DEFAULT_ISOLATE, Backward, isolation, signature_problem
from .verdict import evidence as evidence_module
from .verdict import pipeline
from .verdict.pipeline import DEFAULT_ORACLES, FAST_ORACLES
from .verdict.result import GOOD, STATUSES, CaseResult, nothing_judged, plain, run_passed

# the determinism check (the backward called twice on the same inputs) runs on the first cases of a run:
# a backward that keeps state between calls or draws random numbers shows there, and every later case
# calls the backward once
RUN_TWICE = 3


class CaseResults(Sequence[CaseResult]):
    """The cases of a check, in order, held so that memory stays flat in their number: a passed case is
    kept as its brief record (``report.build.compact``: spec, shapes, notes, output, per gradient ``passed``
    and ``max_rel_err``) in a spooled temporary file (``report.log.CaseLog``) and read back as a
    :class:`CaseResult` when asked for; every other case (failed, inconclusive, error, timeout) is kept
    whole, evidence included."""

    def __init__(self, results: Iterable[CaseResult] = ()) -> None:
        self._log = CaseLog()
        self._slots = array("q")              # >= 0: a record in the log; < 0: -1 - its place in _kept
        self._kept: list[CaseResult] = []
        self._counts = {k: 0 for k in STATUSES}
        for r in results:
            self.append(r)

    def append(self, result: CaseResult) -> None:
        self._counts[result.status] = self._counts.get(result.status, 0) + 1
        if result.status == "passed":
            self._slots.append(len(self._log))
            self._log.append(compact(result.to_dict()))
        else:
            self._slots.append(-1 - len(self._kept))
            self._kept.append(result)

    def __len__(self) -> int:
        return len(self._slots)

    @overload
    def __getitem__(self, i: int) -> CaseResult: ...

    @overload
    def __getitem__(self, i: slice) -> list[CaseResult]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        slot = self._slots[i]
        return self._kept[-1 - slot] if slot < 0 else CaseResult.from_dict(self._log[slot])

    def __iter__(self) -> Iterator[CaseResult]:
        for slot, record in self._walk():
            yield self._kept[-1 - slot] if record is None else CaseResult.from_dict(record)

    def records(self) -> Iterator[dict[str, Any]]:
        """Each case as ``report.json`` holds it (``report.build.case_record``)."""
        for slot, record in self._walk():
            yield case_record(self._kept[-1 - slot].to_dict() if record is None else record)

    def _walk(self) -> Iterator[tuple[int, dict[str, Any] | None]]:
        logged = iter(self._log)
        for slot in self._slots:
            yield slot, (next(logged) if slot >= 0 else None)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"<CaseResults of {len(self)} cases: {self._counts}>"


@dataclass
class Report:
    """One run: every case checked, and the totals. ``cases`` is a sequence of :class:`CaseResult`
    (:class:`CaseResults` from :func:`check`, which keeps a passed case compactly; any list works)."""

    cases: Sequence[CaseResult]
    seed: int
    oracles: tuple[str, ...]
    seconds: float = 0.0
    argv: list[str] | None = None
    interrupted: bool = False      # the run was stopped (Ctrl-C, SIGTERM): ``cases`` is what was done
    shard: Shard | None = None     # the share of the sweep's case indices this run checked (None: all)

    @property
    def counts(self) -> dict[str, int]:
        if isinstance(self.cases, CaseResults):
            return self.cases.counts
        return counts_of([{"status": c.status} for c in self.cases])

    @property
    def passed(self) -> bool:
        """No case wrong, and something judged (a run whose every case is inconclusive proved nothing)."""
        return not self.interrupted and run_passed(self.counts)

    def headline(self) -> str:
        """One line: the verdict and the counts (``WRONG GRADIENTS: 20 cases, 0 passed, 20 failed in 2.08s``)."""
        # a run that judged nothing says why: the first case's reason (the records are needed for that)
        return text.headline(self.to_dict(brief=not nothing_judged(self.counts)))

    def summary(self, limit: int = 3) -> str:
        """What the command prints, in plain text: the headline, then for the first ``limit`` wrong
        cases what is wrong and where (the gradient, its worst element, since which step, the likely
        cause; for a misbehaving backward the finding and the line of your code) and how to re-run it."""
        return "\n".join(text.summary_lines(self.to_dict(), limit))

    def to_dict(self, brief: bool = False) -> dict[str, Any]:
        """The report as plain data (``brief``: without the case records, for the headline); a passed case
        is its brief record (``report.build.case_record``), as in report.json."""
        if brief:
            cases: list[dict[str, Any]] = []
        elif isinstance(self.cases, CaseResults):
            cases = list(self.cases.records())
        else:
            cases = [case_record(c.to_dict()) for c in self.cases]
        extra: dict[str, Any] = {"interrupted": self.interrupted}
        if self.shard is not None:
            extra["shard"] = self.shard.to_dict()
        data = report_dict(cases, seed=self.seed, oracles=self.oracles, seconds=self.seconds, argv=self.argv,
                           **extra)
        data["passed"] = self.passed
        data["counts"] = self.counts
        return data


def resolve_spec(backward: Any, spec: Spec | None, spec_kwargs: dict[str, Any],
                 defaults: dict[str, Any] | None = None) -> Spec:
    """The spec of a check: ``spec`` (or the spec an adapted backward declares, or the default), then
    ``defaults`` (a pytest marker's) and ``spec_kwargs`` on top."""
    try:
        if spec is None:
            spec = getattr(backward, "bptt_spec", None) or Spec()
            if defaults:
                spec = spec.replace(**defaults)
        return spec.replace(**spec_kwargs) if spec_kwargs else spec
    except TypeError as err:
        fields = ", ".join(Spec.__dataclass_fields__)
        raise UsageError(f"bad spec keyword: {err}; the spec fields are {fields}") from None


MAX_DIRECTIONS = 1024           # random directions of the directional witness / --fast


def _whole(name: str, value: Any, least: int, most: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise UsageError(f"{name} must be a whole number >= {least}, got {value!r}")
    if most is not None and value > most:
        raise UsageError(f"{name} must be at most {most}, got {value!r}")


def run_options(*, timeout: Any, fast: Any, directions: Any, isolate: Any) -> float | None:
    """Check how a check is run (the same for :func:`check` and the CLI/plugin); the time limit in seconds."""
    if not isinstance(fast, (bool, np.bool_)):
        raise UsageError(f"fast must be True or False, got {fast!r}")
    _whole("directions", directions, 1, MAX_DIRECTIONS)
    isolation(isolate)
    return limit(timeout)


def _run_arguments(backward: Backward, oracles: Iterable[str], *, lengths: bool = False,
                   **how: Any) -> tuple[float | None, tuple[str, ...]]:
    """The checked arguments of a check: the time limit and the oracles; UsageError for a bad one."""
    timeout = run_options(**how)
    names = parse_oracles(oracles)
    problem = signature_problem(backward, lengths=lengths)
    if problem:
        raise UsageError(problem)
    return timeout, names


def check_case(backward: Backward, case: Any, *, oracles: Iterable[str] = DEFAULT_ORACLES, target: str = "",
               evidence: str | None = "full", timeout: float | None = DEFAULT_TIMEOUT, fast: bool = False,
               directions: int = DEFAULT_DIRECTIONS, isolate: str = DEFAULT_ISOLATE,
               device: str | None = None, repeat: bool = True) -> CaseResult:
    """Check ``backward`` on one case (``bptt_check.draw_case(spec, seed, index)``, or a strategies case).

    The arguments are those of :func:`check` (``isolate`` included: by default the backward runs in a
    worker process of its own); ``repeat``: call the backward twice, a determinism check (``check`` does
    on its first ``RUN_TWICE`` cases). The arguments are checked first, a bad one raises
    :class:`~bptt_check.errors.UsageError`. See ``verdict/pipeline.py`` for the stages of the verdict.
    """
    try:
        if evidence not in ("full", "cheap", None):
            raise UsageError(f"evidence must be 'full', 'cheap' or None, got {evidence!r}")
        problem = device_problem(device)
        if problem:
            raise UsageError(problem)
        timeout, names = _run_arguments(backward, oracles, timeout=timeout, fast=fast, directions=directions,
                                        isolate=isolate, lengths=bool(getattr(case, "lengths", None) is not None))
    except BPTTCheckError as err:
        raise err.with_context(case=getattr(case, "index", None), seed=getattr(case, "seed", None)) from None
    return pipeline.check_case(backward, case, oracles=names, target=target, evidence=evidence, timeout=timeout,
                               fast=bool(fast), directions=directions, isolate=isolate, device=device,
                               repeat=bool(repeat))


def check(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
          oracles: Iterable[str] = DEFAULT_ORACLES, target: str = "",
          on_case: Callable[[CaseResult], None] | None = None, timeout: float | None = DEFAULT_TIMEOUT,
          fast: bool = False, directions: int = DEFAULT_DIRECTIONS, device: str | None = None,
          isolate: str = DEFAULT_ISOLATE, shard: str | Shard | None = None,
          **spec_kwargs: Any) -> Report:
    """Check ``backward`` on ``cases`` random cases drawn inside ``spec``.

    ``spec`` may be given as a :class:`Spec` or as keywords
    (``mode="many-to-one", truncation="window:3"``, ...). ``timeout``: seconds per call of the
    backward (None or 0: no limit; default 30). ``fast=True`` checks ``directions`` random
    projections of the gradients instead of every element (see :func:`check_case`). ``device``: the torch
    device of the autograd reference ("cuda" for large cases on a GPU).
    ``target`` names the backward in the report; when it is not a name the command line can load
    (``path.py:name``, ``module:name``), the backward's own importable name is used where it has one
    (:func:`~bptt_check.model.reproducer.target_name`), so that every reproducer runs when pasted.
    ``shard="K/N"`` checks only the case indices i with i mod N = K - 1 (each exactly as the whole run
    would); ``on_case`` is called with each result as it comes.

    ``isolate`` says where the backward runs: ``"process"`` (the default, as for the command and the
    pytest plugin) — a worker process of its own, so that a crash, a hang in C code, ``os._exit``,
    patched modules or an edited Spec cannot reach this process or the verdict; the backward is
    pickled with cloudpickle (closures and lambdas too) and what it does to its own state stays in
    the worker. ``"thread"`` — in this process, under the limit (a closure's side effects are seen
    here; a crash takes this process down). ``"none"`` — in the caller's thread, no limit (for a
    debugger).
    The first ``RUN_TWICE`` (3) cases also call the backward a second time on the same inputs (a
    determinism check: stale accumulators, random numbers); the others call it once.

    The report's cases are :class:`CaseResults`: a passed case is kept as its brief record (what the
    report needs), so memory stays flat in the number of cases; :func:`sweep` gives the results one by
    one without keeping any.
    Raises :class:`~bptt_check.errors.UsageError` for bad arguments, before any case.
    """
    run = sweep(backward, spec, cases=cases, seed=seed, oracles=oracles, target=target, timeout=timeout, fast=fast,
                directions=directions, device=device, isolate=isolate, shard=shard, **spec_kwargs)
    start = time.perf_counter()
    results = CaseResults()
    for r in run:
        results.append(r)
        if on_case is not None:
            on_case(r)
    return Report(results, seed, run.oracles, time.perf_counter() - start,
                  shard=run.shard if shard is not None else None)


@dataclass(frozen=True)
class Sweep:
    """A check made ready by :func:`sweep`: its arguments checked, nothing run yet. Iterating it checks the
    cases of its shard one by one and yields each :class:`CaseResult`, keeping none."""

    backward: Backward
    spec: Spec
    cases: int
    seed: int
    names: tuple[str, ...]
    target: str
    timeout: float | None
    fast: bool
    directions: int
    device: str | None
    isolate: str
    shard: Shard

    @property
    def oracles(self) -> tuple[str, ...]:
        """The oracles as the report states them (fast mode: its own)."""
        return tuple(FAST_ORACLES) if self.fast else self.names

    def indices(self) -> range:
        """The case indices this sweep checks."""
        return self.shard.indices(self.cases)

    def __iter__(self) -> Iterator[CaseResult]:
        full_left = evidence_module.EVIDENCE_LIMIT   # the first failed cases get the full evidence, the rest cheap
        for i in self.indices():
            r = pipeline.check_case(self.backward, draw_case(self.spec, self.seed, i), oracles=self.names,
                                    target=self.target, evidence="full" if full_left > 0 else "cheap",
                                    timeout=self.timeout, fast=self.fast, directions=self.directions,
                                    isolate=self.isolate, device=self.device, repeat=i < RUN_TWICE)
            full_left -= r.status == "failed"
            yield r


def sweep(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
          oracles: Iterable[str] = DEFAULT_ORACLES, target: str = "", timeout: float | None = DEFAULT_TIMEOUT,
          fast: bool = False, directions: int = DEFAULT_DIRECTIONS, device: str | None = None,
          isolate: str = DEFAULT_ISOLATE, shard: str | Shard | None = None, **spec_kwargs: Any) -> Sweep:
    """The arguments of :func:`check`, checked (UsageError before any case), as a :class:`Sweep` to iterate:
    what the command line runs, writing each result to its report as it comes."""
    try:
        spec = resolve_spec(backward, spec, spec_kwargs)
        _whole("cases", cases, 1)
        _whole("seed", seed, 0)
        problem = device_problem(device)
        if problem:
            raise UsageError(problem)
        part = WHOLE if shard is None else Shard.parse(shard)
        timeout, names = _run_arguments(backward, oracles, timeout=timeout, fast=fast, directions=directions,
                                        isolate=isolate, lengths=spec.lengths)
    except BPTTCheckError as err:
        raise err.with_context(cases=cases, seed=seed) from None
    except TypeError as err:
        raise UsageError(f"bad spec: {err}", cases=cases, seed=seed) from None
    if not loadable(target) and not target.startswith("builtin:"):
        target = target_name(backward) or target
    return Sweep(backward, spec, cases, seed, names, target, timeout, bool(fast), directions, device, isolate, part)


def assert_backward(backward: Backward, spec: Spec | None = None, *, cases: int = 20, seed: int = 0,
                    oracles: Iterable[str] = DEFAULT_ORACLES, timeout: float | None = DEFAULT_TIMEOUT,
                    fast: bool = False, directions: int = DEFAULT_DIRECTIONS, device: str | None = None,
                    isolate: str = DEFAULT_ISOLATE, **spec_kwargs: Any) -> Report:
    """Like :func:`check`, but raise :class:`~bptt_check.errors.CheckFailed` describing the first wrong case."""
    report = check(backward, spec, cases=cases, seed=seed, oracles=oracles, timeout=timeout, fast=fast,
                   directions=directions, device=device, isolate=isolate, **spec_kwargs)
    raise_if_wrong(report.cases, report=report, seed=seed)
    return report


def describe_wrong(results: Sequence[CaseResult]) -> list[str]:
    """The lines that describe the first wrong case of ``results`` (none when every case is right)."""
    bad = [c for c in results if c.status not in GOOD]
    if not bad:
        return []
    first = bad[0]
    lines = [f"{len(bad)} of {len(results)} case(s) wrong; first: {first.summary()}"]
    if first.error:
        lines.append(f"  {first.error['kind']}: " + plain(first.error["message"]).replace("\n", "\n    "))
    for name in first.failed_grads:
        g = first.grads[name]
        if g.problem:
            lines.append(f"  {describe([name])}: {g.problem}")
            continue
        # the worst element (furthest beyond its tolerance) with its own errors; the largest errors apart
        w = g.worst[0] if g.worst else {"index": g.worst_index, "abs": g.max_abs_err, "rel": g.max_rel_err}
        lines.append(f"  {describe([name])}: {g.mismatched}/{g.size} elements off, worst {tuple(w['index'])}: "
                     f"abs {w['abs']:.3e}, rel {w['rel']:.3e}; largest abs {g.max_abs_err:.3e}, largest rel "
                     f"{g.max_rel_err:.3e}; ratio to reference {g.ratio:.4g}")
    return lines


def raise_if_wrong(results: Sequence[CaseResult], *, report: Report | None = None, seed: int = 0,
                   notes: bool = False, case: str | None = None) -> None:
    """Raise :class:`~bptt_check.errors.CheckFailed` describing the first wrong case, with a reproducer
    (``case``: the expression that rebuilds a case not drawn by ``draw_case``)."""
    __tracebackhide__ = True       # pytest: show the caller's line
    lines = describe_wrong(results)
    if not lines and report is not None and nothing_judged(report.counts):
        # a run that judged nothing is no pass (a single hand-built case may be inconclusive)
        first = results[0]
        lines = [f"nothing judged: every one of the {len(results)} case(s) was inconclusive; first: {first.summary()}"]
        lines += [f"  note: {n}" for n in first.notes[:3]]
        lines.append(f"  reproduce: {expression(first.spec, first.seed, first.index, case=case)}")
        err = CheckFailed("\n".join(lines), spec=str(first.spec), seed=seed, case=first.index)
        err.report = report
        raise err
    if not lines:
        return
    first = next(r for r in results if r.status not in GOOD)
    if notes:
        lines += [f"  note: {n}" for n in first.notes]
    oracles = report.oracles if report is not None else DEFAULT_ORACLES
    fast = tuple(oracles) == tuple(FAST_ORACLES)
    rep = (first.evidence or {}).get("reproducer") or reproducer(first.spec, first.seed, first.index, first.target,
                                                                 oracles, fast=fast)
    if case is not None:          # a case made with explicit shapes: the expression that makes it again
        again = expression(first.spec, first.seed, first.index, first.target, case, oracles, fast)
        lines.append(f"  reproduce in Python: {again}")
    else:
        if rep.get("cli"):
            lines.append(f"  reproduce in a shell: {rep['cli']}")
        lines.append(f"  reproduce in Python: {rep['oneline']}")
    err = CheckFailed("\n".join(lines), spec=str(first.spec), seed=seed, case=first.index)
    err.report = report
    raise err
