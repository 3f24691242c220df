"""The pytest plugin of bptt-check (entry point ``pytest11``): hooks only, the work is in ``session.py``.

- options ``--bptt-cases``, ``--bptt-seed``, ``--bptt-report-dir``, ``--bptt-oracle``, ``--bptt-timeout``,
  ``--bptt-fast`` (a flag), ``--bptt-directions``, ``--bptt-isolate``, ``--bptt-format`` (the run-level
  options of ``options.py``, shared with the CLI); the backward runs in a worker process of its own
  unless ``--bptt-isolate thread|none`` says otherwise;
- the marker ``@pytest.mark.bptt(mode=..., truncation=..., cases=..., seed=...)``: spec defaults;
- the fixture ``bptt`` (session-scoped, so it is safe in Hypothesis ``@given`` tests) and the
  function :func:`check_backward`: ``bptt.check(backward, **spec)``, ``bptt.check_case(backward, case)``;
- a terminal summary, and one report per session written by the main process (never by an
  xdist worker: workers attach their records, plain data, to the test reports they send). A test
  whose xdist worker crashed makes the report incomplete and failing.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from . import session as _session
from .model.spec import Spec
from .options import OPTIONS
from .oracles import parse_oracles
from .report.io import writable_folder_problem
from .runner.process import close_workers
from .verdict.pipeline import FAST_ORACLES

_CONTEXT = pytest.StashKey[_session.TestContext]()
_SPEC_FIELDS = set(Spec.__dataclass_fields__) | set(_session.RUN_KEYS)

checker = _session.Checker()
check_backward = checker.check          # the function form of the fixture


def _flag(name: str) -> str:
    return "--bptt-" + name.replace("_", "-")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bptt-check", "bptt-check: verify hand-written BPTT")
    for opt in OPTIONS:
        if opt.run and opt.flag:
            group.addoption(_flag(opt.name), dest=f"bptt_{opt.name}", action="store_true", default=opt.default,
                            help=opt.help)
        elif opt.run:
            group.addoption(_flag(opt.name), dest=f"bptt_{opt.name}", default=opt.default, type=opt.type,
                            metavar=opt.name.upper(), help=opt.help + f" (default: {opt.default})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bptt(**spec): spec defaults (mode=, truncation=, loss=, ...) and cases=/seed= for the "
                   "bptt-check checks made in this test")
    try:
        oracles = parse_oracles(config.getoption("bptt_oracle"))
    except Exception as err:
        raise pytest.UsageError(f"--bptt-oracle: {err}") from None
    if oracles[0] == "directional" and not config.getoption("bptt_fast"):
        raise pytest.UsageError("--bptt-oracle: the first oracle is the reference and must give every element: put "
                                "autograd, complex-step or fd first, or use --bptt-fast")
    folder = config.getoption("bptt_report_dir")
    if folder and not hasattr(config, "workerinput"):
        problem = writable_folder_problem(config.invocation_params.dir / folder)
        if problem:
            raise pytest.UsageError(f"--bptt-report-dir: {problem}")
    if not hasattr(config, "workerinput"):      # xdist workers only send their records
        config.pluginmanager.register(_Collector(config), "bptt-check-collector")


@pytest.fixture(scope="session")
def bptt() -> _session.Checker:
    """Check a backward: ``bptt.check(my_backward, truncation="window:3")``; fails the test on a wrong
    gradient. Session-scoped (safe inside ``@given``): it finds the running test through a context variable."""
    return checker


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    marker: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("bptt"))):    # the closest marker wins
        if mark.args:
            pytest.fail(f"{item.nodeid}: @pytest.mark.bptt takes keywords only, e.g. "
                        "@pytest.mark.bptt(truncation='window:3', cases=5)", pytrace=False)
        unknown = sorted(set(mark.kwargs) - _SPEC_FIELDS)
        if unknown:
            pytest.fail(f"{item.nodeid}: @pytest.mark.bptt got {unknown}; it takes "
                        f"{', '.join(sorted(_SPEC_FIELDS))}", pytrace=False)
        marker.update(mark.kwargs)
    config = item.config
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    ctx = _session.TestContext(item.nodeid, worker=worker, cases=config.getoption("bptt_cases"),
                               seed=config.getoption("bptt_seed"),
                               oracles=parse_oracles(config.getoption("bptt_oracle")),
                               timeout=config.getoption("bptt_timeout"), fast=bool(config.getoption("bptt_fast")),
                               directions=config.getoption("bptt_directions"),
                               isolate=config.getoption("bptt_isolate"), marker=marker)
    item.stash[_CONTEXT] = ctx
    token = _session.CURRENT.set(ctx)
    try:
        yield
    finally:
        _session.CURRENT.reset(token)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any, Any, None]:
    outcome = yield
    ctx = item.stash.get(_CONTEXT, None)
    if call.when == "call" and ctx is not None and ctx.checks:
        outcome.get_result().bptt = ctx.payload()     # plain data: survives the trip from an xdist worker


class _Collector:
    """Main process only: gathers the tests' payloads, writes the report, prints the summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.payloads: list[dict[str, Any]] = []
        self.crashed: list[str] = []
        self.unwritten = ""
        self.start = _session.now()
        self.lines: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, "bptt", None)
        if payload is not None:
            self.payloads.append(payload)
        elif report.failed and report.when == "???" and "crashed" in str(report.longrepr):
            self.crashed.append(report.nodeid)       # pytest-xdist: "worker 'gw0' crashed while running ..."

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        close_workers()             # the session is over: so are the worker processes of its checks
        if not self.payloads and not self.crashed:
            return          # no bptt check ran: write nothing
        config = self.config
        oracles = FAST_ORACLES if config.getoption("bptt_fast") else parse_oracles(config.getoption("bptt_oracle"))
        data = _session.aggregate(self.payloads, seed=config.getoption("bptt_seed"), oracles=oracles,
                                  seconds=_session.now() - self.start, argv=list(config.invocation_params.args),
                                  crashed=self.crashed)
        folder = config.getoption("bptt_report_dir")
        formats = config.getoption("bptt_format")
        try:
            paths = _session.write_report(config.invocation_params.dir / folder, data, formats) if folder else []
        except OSError as exc:       # the verdict is in the summary; the run must not look green without a report
            paths = []
            self.unwritten = f"bptt-check: cannot write the report: {exc.strerror or exc}" + (
                f": {exc.filename}" if exc.filename else "")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.lines = _session.summary_lines(data, paths) + ([self.unwritten] if self.unwritten else [])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("bptt-check")
            for line in self.lines:
                terminalreporter.write_line(line)
