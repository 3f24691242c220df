"""The ``bptt-check`` command.

    bptt-check [TARGET] [--mode ...] [--truncation ...] [--cases N] [--seed S] [--report-dir DIR]
               [--format json,md,junit,html] [--case N] [--progress auto|bar|lines|none]
    bptt-check show [REPORT.json] [--format ...] [--report-dir DIR]

TARGET is ``path/to/file.py:function`` or ``package.module:function``: a
backward in the canonical protocol ``grads = backward(params, x, y)``. Without
TARGET the built-in implementations are checked in every mode.

``show`` re-renders an earlier report in the terminal (and, with ``--format``,
as files again).

Exit status: 0 every case matches, 1 some gradient is wrong (or the backward
misbehaved: raised, hung, returned garbage, changed its inputs), 2 bad usage or
a TARGET that cannot be loaded, 3 an internal error of bptt-check, 130/143 the
run was interrupted by SIGINT/SIGTERM (a complete partial report marked
``"interrupted": true`` is written).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .api import Report, check
from .builtin import BUILTINS, supports
from .errors import BPTTCheckError, UsageError
from .model.cases import draw_case
from .model.spec import Spec, Truncation
from .options import OPTIONS, add_to_argparse, spec_kwargs
from .oracles import parse_oracles
from .report import load_report, parse_formats, write_reports
from .report.io import report_lock, writable_folder_problem
from .report.terminal import CaseProgress, print_failures, print_report
from .runner.call import limit
from .runner.load import load_target, resolve
from .runner.target import signature_problem
from .verdict.pipeline import check_case
from .verdict.result import CaseResult
from .version import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

# the main job without TARGET: (mode, truncation) pairs, each checked with every built-in that implements it
MAIN_JOB: tuple[tuple[str, str], ...] = (
    ("many-to-one", "none"),
    ("many-to-many", "none"),
    ("many-to-many", "window:2"),
    ("many-to-many", "tbptt:2,4"),
    ("many-to-many", "chunk:3"),
    ("many-to-many", "window-loss:2,3"),
    ("many-to-one", "window:3"),
    ("many-to-one", "tbptt:2,3"),
)
# the other built-in cells, each checked with its own built-in backward on these (mode, truncation) pairs
CELL_JOB: tuple[tuple[str, str], ...] = (
    ("many-to-many", "none"),
    ("many-to-many", "tbptt:2,4"),
    ("many-to-one", "window:3"),
)
CELLS_CHECKED = ("rnn", "lstm", "gru")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:   # one line instead of the usage block
        raise UsageError(f"{message} (see bptt-check --help)")


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated(signum)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While the report (complete or partial) is written, SIGINT/SIGTERM are ignored: it takes ms."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def target_and_spec(obj: Any, values: dict[str, Any], given: set[str]) -> tuple[Callable[..., Any], Spec]:
    """The backward and spec for a TARGET: an adapted backward's declared spec is the default, the spec
    flags the user actually typed override it; a plain backward takes the flags (or their defaults)."""
    fn = resolve(obj)
    declared = getattr(fn, "bptt_spec", None)
    if declared is None:
        return fn, Spec(**spec_kwargs(dict(values)))
    typed = {o.name: values[o.name] for o in OPTIONS if o.spec and o.name in given and o.name in values}
    return fn, declared.replace(**spec_kwargs(typed)) if typed else declared


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="bptt-check",
        description="Verify a hand-written backward pass through time against autograd and finite differences.",
        epilog="Re-render an earlier report: bptt-check show [reports/report.json] [--format ...] "
               "(bptt-check show --help). "
               "Exit status: 0 all gradients match, 1 a gradient is wrong or the backward misbehaved, "
               "2 bad usage, 3 internal error, 130/143 interrupted (a partial report is written).",
    )
    parser.add_argument("target", nargs="?", metavar="TARGET",
                        help="path/to/file.py:function or package.module:function; "
                             "without it the built-in implementations are checked in every mode")
    add_to_argparse(parser)
    parser.add_argument("--version", action="version", version=f"bptt-check {__version__}")
    return parser


def _jobs(args: argparse.Namespace, given: set[str]) -> list[tuple[str, Callable[..., Any], Spec]]:
    base = spec_kwargs(vars(args))
    base["cell"] = load_cell(args.cell)
    if args.target:
        # an adapted backward (bptt_check.adapt) or a factory returning one: its declared spec is the
        # default, the spec flags typed on the command line override it
        fn, spec = target_and_spec(load_target(args.target), vars(args), given)
        problem = signature_problem(fn, lengths=spec.lengths)
        if problem:
            raise UsageError(f"TARGET {args.target!r}: {problem}")
        return [(args.target, fn, spec)]
    if "cell" in given:
        cells = [base["cell"]]
    else:   # --activation applies to the rnn cell only
        cells = ["rnn"] if "activation" in given else list(CELLS_CHECKED)
    jobs = []
    for cell in cells:
        pairs = [(m, t) for m, t in (MAIN_JOB if cell == "rnn" else CELL_JOB)
                 if ("mode" not in given or m == args.mode)
                 and ("truncation" not in given or Truncation.parse(t) == Truncation.parse(args.truncation))]
        if not pairs:  # a mode/truncation the main job does not list: check exactly that
            pairs = [(args.mode, args.truncation)]
        for mode, trunc in pairs:
            spec = Spec(**{**base, "cell": cell, "mode": mode, "truncation": trunc})
            for name, fn in BUILTINS.items():
                if supports(name, spec):
                    jobs.append((f"builtin:{name}", fn, spec))
    if not jobs:
        raise UsageError(f"no built-in backward implements cell {base['cell']!r}: give a TARGET")
    return jobs


def load_cell(text: str) -> str:
    """The --cell value as a spec's cell: a built-in cell's name, or a cell of yours (``path.py:NAME``,
    ``module:NAME``) loaded and known by that name from now on (what reproducers of such a case call)."""
    return Spec(cell=text).cell           # a cell of yours (path.py:NAME, module:NAME) is imported by its name


def _given(argv: Sequence[str]) -> set[str]:
    out = set()
    for a in argv:
        if a.startswith("--"):
            out.add(a[2:].split("=", 1)[0].replace("-", "_"))
    return out


def build_show_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bptt-check show",
                                     description="Re-render an earlier bptt-check report in the terminal.")
    parser.add_argument("report", nargs="?", default="reports/report.json", metavar="REPORT",
                        help="a report.json, or the folder holding it (default: reports/report.json)")
    parser.add_argument("--format", default=None,
                        help="also write these formats again (json,md,junit,html or all) from the JSON")
    parser.add_argument("--report-dir", default=None, help="where --format writes (default: REPORT's folder)")
    return parser


def show(argv: Sequence[str]) -> int:
    """``bptt-check show``: exit 0 when the shown report passed, 1 when not, 2 when it cannot be read."""
    args = build_show_parser().parse_args(argv)
    try:
        data = load_report(args.report)
        formats = parse_formats(args.format) if args.format else ()
    except BPTTCheckError as err:
        print(f"bptt-check show: error: {err.message.splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    print_report(data)
    if formats:
        src = Path(args.report)
        folder = args.report_dir or (src if src.is_dir() else src.parent)
        paths = write_reports(data, folder, formats)
        print("report: " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK if data.get("passed") else EXIT_FINDINGS


def run(argv: Sequence[str]) -> int:
    if argv and argv[0] == "show":
        return show(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        problem = writable_folder_problem(args.report_dir)
        if problem:
            raise UsageError(problem)
        oracles = parse_oracles(args.oracle)
        if oracles[0] == "directional" and not args.fast:
            raise UsageError("the first oracle is the reference and must give every element: put autograd, "
                             "complex-step or fd first (e.g. --oracle autograd,directional), or use --fast")
        jobs = _jobs(args, _given(argv))
    except BPTTCheckError as err:
        print(f"bptt-check: error: {err.message.splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE

    start = time.perf_counter()
    cases: list[CaseResult] = []
    per_job = 1 if args.case is not None else args.cases
    stopped_by = 0
    used = oracles
    with CaseProgress(len(jobs) * per_job, mode=args.progress) as progress:

        def on_case(result: CaseResult) -> None:
            cases.append(result)
            progress.update(result)

        with _sigterm_raises():
            try:
                for name, fn, spec in jobs:
                    if args.case is not None:   # one case, as a report's reproducer line asks
                        on_case(check_case(fn, draw_case(spec, args.seed, args.case), oracles=oracles,
                                           target=name, timeout=limit(args.timeout), fast=args.fast,
                                           directions=args.directions))
                        continue
                    rep = check(fn, spec, cases=args.cases, seed=args.seed, oracles=oracles, target=name,
                                on_case=on_case, timeout=args.timeout, fast=args.fast, directions=args.directions)
                    used = rep.oracles
            except KeyboardInterrupt:
                stopped_by = signal.SIGINT
            except _Terminated as term:
                stopped_by = term.signum
    total = Report(cases, args.seed, used, time.perf_counter() - start, argv=["bptt-check", *argv],
                   interrupted=bool(stopped_by))
    data = total.to_dict()
    with _signals_ignored(), report_lock(args.report_dir):
        paths = write_reports(data, args.report_dir, args.format.split(","))
    print_failures(data)
    print(total.headline())
    print("report: " + ", ".join(str(p) for p in paths.values()))
    if stopped_by:
        print(f"bptt-check: interrupted by {signal.Signals(stopped_by).name} after {len(cases)} case(s); "
              "the report holds those, marked \"interrupted\": true", file=sys.stderr)
        return 128 + int(stopped_by)
    return EXIT_OK if total.passed else EXIT_FINDINGS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except KeyboardInterrupt:
        print("bptt-check: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print("bptt-check: internal error (a bug in bptt-check, please report it):", file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
