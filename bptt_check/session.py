"""Checks made inside a test session: the checker behind the pytest fixture, the per-test context,
and the one aggregated report. No pytest here: ``plugin.py`` wires these to pytest's hooks.

The plugin sets a context variable for the test being run, so a check made anywhere inside it —
the ``bptt`` fixture, :func:`check_backward`, inside a Hypothesis ``@given`` test — knows the
session's options, the test's ``@pytest.mark.bptt(...)`` defaults, and where to record its cases.
Records are plain JSON data (they cross from pytest-xdist workers to the main process).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Report, check, raise_if_wrong, resolve_spec, run_options
from .errors import BPTTCheckError, UsageError
from .model.cases import Case
from .model.spec import Spec
from .options import default
from .report import FORMATS, report_dict, write_reports
from .verdict.pipeline import DEFAULT_ORACLES, check_case
from .verdict.result import CaseResult, nothing_judged, run_passed

# marker / call keywords that are not spec fields: how the check is run
RUN_KEYS = ("cases", "seed", "timeout", "fast", "directions", "isolate")
MAX_KEPT_PER_TEST = 100               # case records a test keeps (counts stay complete)


@dataclass
class TestContext:
    """What a check inside one test needs: session options, the test's marker, and the record."""

    nodeid: str
    worker: str = "main"              # the xdist worker id, or "main"
    cases: int = 20
    seed: int = 0
    oracles: tuple[str, ...] = DEFAULT_ORACLES
    timeout: float | None = default("timeout")
    fast: bool = False
    directions: int = default("directions")
    isolate: str = default("isolate")
    marker: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    checks: int = 0

    def add(self, results: Iterable[CaseResult]) -> None:
        """Record one check's results."""
        self.checks += 1
        for r in results:
            self.record(r)

    def record(self, result: CaseResult) -> None:
        """Record one result (whole: a test keeps at most MAX_KEPT_PER_TEST records, however many cases)."""
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        record = _plain(result.to_dict())                    # plain built-in types, strict JSON
        record.update(test=self.nodeid, worker=self.worker)
        self.records.append(record)
        if len(self.records) > MAX_KEPT_PER_TEST:
            # keep the newest wrong cases first (Hypothesis replays its shrunk example last), then passes
            bad = [r for r in self.records if r["status"] not in ("passed", "inconclusive")]
            good = [r for r in self.records if r["status"] in ("passed", "inconclusive")]
            keep_bad = bad[-MAX_KEPT_PER_TEST:]
            self.records = good[: MAX_KEPT_PER_TEST - len(keep_bad)] + keep_bad

    def payload(self) -> dict[str, Any]:
        """What travels with the test report (to the main process under xdist)."""
        return {"test": self.nodeid, "checks": self.checks, "counts": dict(self.counts), "cases": self.records}


def _plain(value: Any) -> Any:
    """JSON-able built-in types only (what crosses from an xdist worker); NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        v = value.item() if hasattr(value, "item") else value
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    return str(value)


CURRENT: ContextVar[TestContext | None] = ContextVar("bptt_check_test", default=None)


# ----------------------------------------------------------------- the checker

class Checker:
    """Check a backward inside a test; a wrong gradient fails the test with a readable message.

    Outside a pytest session (no plugin context) it uses the option defaults and records nothing.
    Precedence: keywords of the call > ``@pytest.mark.bptt(...)`` > the spec an adapted backward
    declares > the defaults; how the check runs (``cases``, ``seed``, ``timeout``, ``fast``,
    ``directions``, ``isolate``): call > marker > ``--bptt-<name>`` > the defaults.
    """

    def check(self, backward: Any, spec: Spec | None = None, *, cases: int | None = None,
              seed: int | None = None, **spec_kwargs: Any) -> Report:
        __tracebackhide__ = True       # pytest: show the test's line, not the checker's
        ctx = CURRENT.get()
        run = self._run(ctx, {"cases": cases, "seed": seed, **{k: spec_kwargs.pop(k) for k in RUN_KEYS
                                                               if k in spec_kwargs}})
        marker = {k: v for k, v in (ctx.marker if ctx else {}).items() if k not in RUN_KEYS}
        oracles = ctx.oracles if ctx else DEFAULT_ORACLES
        full = resolve_spec(backward, spec, spec_kwargs, marker)
        # each result recorded as it comes, whole (the report keeps a passed case only compactly)
        report = check(backward, full, oracles=oracles, target=_name(backward),
                       on_case=_recorder(ctx) if ctx is not None else None, **run)
        raise_if_wrong(report.cases, report=report, seed=report.seed, notes=True)
        return report

    @staticmethod
    def _run(ctx: TestContext | None, given: dict[str, Any]) -> dict[str, Any]:
        """How a check runs: the call's keywords, then the test's marker, then the session's options."""
        marker = ctx.marker if ctx else {}
        out = {}
        for key in RUN_KEYS:
            session_value = getattr(ctx, key) if ctx else default(key)
            out[key] = next((v for v in (given.get(key), marker.get(key), session_value) if v is not None),
                            session_value)
        return out

    def check_case(self, backward: Any, case: Case, **how: Any) -> CaseResult:
        """Check one given case (e.g. drawn by ``bptt_check.strategies.cases``); ``how``: ``timeout``,
        ``fast``, ``directions``, ``isolate`` for this check."""
        __tracebackhide__ = True
        ctx = CURRENT.get()
        unknown = sorted(set(how) - set(RUN_KEYS[2:]))
        if unknown:
            raise UsageError(f"check_case() got unexpected keyword(s) {unknown}; it takes "
                             f"{', '.join(RUN_KEYS[2:])}")
        run = self._run(ctx, how)
        oracles = ctx.oracles if ctx else DEFAULT_ORACLES
        try:
            timeout = run_options(timeout=run["timeout"], fast=run["fast"], directions=run["directions"],
                                  isolate=run["isolate"])
        except BPTTCheckError as err:
            raise err.with_context(case=case.index, seed=case.seed) from None
        result = check_case(backward, case, oracles=oracles, target=_name(backward), timeout=timeout,
                            fast=bool(run["fast"]), directions=run["directions"], isolate=run["isolate"])
        if ctx is not None:
            ctx.add([result])
        made = case.reproducer() if hasattr(case, "reproducer") else None
        raise_if_wrong([result], seed=case.seed, notes=True, case=made)
        return result


def _recorder(ctx: TestContext) -> Callable[[CaseResult], None]:
    """Records a check's results into the test's context as they come; the check counts from its first case."""
    first = [True]

    def record(result: CaseResult) -> None:
        if first[0]:
            ctx.checks += 1
            first[0] = False
        ctx.record(result)

    return record


def _name(backward: Any) -> str:
    name = getattr(backward, "name", None) or getattr(backward, "__qualname__", None) or ""
    if not name or "<locals>" in name:
        name = getattr(backward, "__name__", None) or type(backward).__name__
    return name


# ----------------------------------------------------------------- the session's report

def aggregate(payloads: list[dict[str, Any]], *, seed: int, oracles: tuple[str, ...], seconds: float,
              argv: list[str] | None, crashed: Iterable[str] = ()) -> dict[str, Any]:
    """One report for the session, from the tests' payloads (same top-level keys as the CLI's report)."""
    cases = [c for p in payloads for c in p["cases"]]
    counts = {"passed": 0, "failed": 0, "inconclusive": 0, "error": 0, "timeout": 0}
    tests: dict[str, dict[str, Any]] = {}
    for p in payloads:
        entry = tests.setdefault(p["test"], {"checks": 0, "counts": {}, "cases_kept": 0})
        entry["checks"] += p["checks"]
        entry["cases_kept"] += len(p["cases"])
        for k, v in p["counts"].items():
            counts[k] = counts.get(k, 0) + v
            entry["counts"][k] = entry["counts"].get(k, 0) + v
    data = report_dict(cases, seed=seed, oracles=oracles, seconds=seconds, argv=argv,
                       source="pytest", tests=tests)
    # the counts of every case checked, also those not kept as records
    data["counts"] = counts
    data["passed"] = run_passed(counts)
    if crashed:      # an xdist worker died while running these tests: their checks are not in the report
        data["incomplete"] = {"crashed_tests": list(crashed),
                              "why": "a pytest-xdist worker process died while running these tests; "
                                     "the checks they made are missing from this report"}
        data["passed"] = False
    return data


def write_report(report_dir: str | os.PathLike[str], data: dict[str, Any],
                 formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write the session's report files; the one place report formats are produced from the dict."""
    folder = Path(report_dir)
    return list(write_reports(data, folder, formats, replace=True).values())


def summary_lines(data: dict[str, Any], paths: list[Path]) -> list[str]:
    n = data["counts"]
    total = sum(n.values())
    checks = sum(t["checks"] for t in data["tests"].values())
    parts = [f"{v} {k}" for k, v in n.items() if v or k in ("passed", "failed")]
    verdict = "OK" if data["passed"] else "NOTHING JUDGED" if nothing_judged(n) else "WRONG GRADIENTS"
    crashed = (data.get("incomplete") or {}).get("crashed_tests") or []
    if crashed:
        verdict = "INCOMPLETE"
    lines = [f"{verdict}: {checks} check(s) in {len(data['tests'])} test(s), {total} cases: " + ", ".join(parts)]
    for test in crashed[:20]:
        lines.append(f"  {test}: its pytest-xdist worker crashed; its checks are missing from the report")
    last_wrong: dict[str, dict[str, Any]] = {}
    for case in data["cases"]:
        if case["status"] not in ("passed", "inconclusive"):
            last_wrong[case["test"]] = case          # the latest: Hypothesis's shrunk example comes last
    for test, case in list(last_wrong.items())[:20]:
        wrong = [k for k, g in case["params"].items() if not g["passed"]]
        why = ("wrong: " + ", ".join(wrong)) if wrong else (case.get("error") or {}).get("kind", case["status"])
        bad = sum(v for k, v in data["tests"][test]["counts"].items() if k not in ("passed", "inconclusive"))
        total = sum(data["tests"][test]["counts"].values())
        shp = " ".join(f"{k}={v}" for k, v in case["shapes"].items())
        lines.append(f"  {test}: {bad}/{total} cases wrong; last: {case['status']} seed {case['seed']} "
                     f"index {case['index']} {shp}: {why}")
    if len(last_wrong) > 20:
        lines.append(f"  ... and {len(last_wrong) - 20} more tests with wrong cases (see the report)")
    for p in paths:
        lines.append(f"report: {p}")
    return lines


def now() -> float:
    return time.perf_counter()
