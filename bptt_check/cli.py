"""The ``bptt-check`` command.

    bptt-check [TARGET] [--mode ...] [--truncation ...] [--cases N] [--seed S] [--report-dir DIR]
               [--format json,md,junit,html] [--case N] [--progress auto|bar|lines|none]
    bptt-check show [REPORT.json] [--format ...] [--report-dir DIR]
    bptt-check merge SHARD_REPORT... [--report-dir DIR] [--format ...]

TARGET is ``path/to/file.py:function`` or ``package.module:function``: a
backward in the canonical protocol ``grads = backward(params, x, y)``. Without
TARGET the built-in implementations are checked in every mode.

``show`` re-renders an earlier report in the terminal (and, with ``--format``,
as files again). ``--shard K/N`` checks shard K of N of the case indices;
``merge`` joins the N shards' reports into the report of the whole sweep.

Exit status: 0 every case matches, 1 some gradient is wrong (or the backward
misbehaved: raised, hung, crashed, returned garbage, changed its inputs), 2 bad
usage, a TARGET that cannot be loaded, or a report that cannot be written (the
verdict is printed first), 3 an internal error of bptt-check, 130/143 the run
was interrupted by SIGINT/SIGTERM (a complete partial report marked
``"interrupted": true`` is written).

The backward runs in a worker process of its own (``--isolate process``, the
default): the TARGET is imported there, never here, so nothing it does reaches
this process, its report or its exit status. ``--report-dir`` is made absolute
before anything runs.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .api import sweep
from .builtin import BUILTINS, supports
from .errors import BPTTCheckError, UsageError
from .model.cases import draw_case
from .model.spec import Spec, Truncation
from .options import OPTIONS, add_to_argparse, default, spec_kwargs, sweep_options
from .oracles import parse_oracles
from .report import FILENAMES, open_report, parse_formats, report_dict, text, write_reports
from .report.build import case_record
from .report.io import report_lock, writable_folder_problem
from .report.log import CaseLog
from .report.merge import merge
from .report.terminal import CaseProgress, print_failures, print_report
from .runner import process
from .runner.call import Interrupt, limit
from .runner.load import load_target, resolve
from .runner.read import clean
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


class _Terminated(Interrupt):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stops_raise(seen: list[int]) -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM :class:`_Terminated` in the main thread, and each signal
    is also noted in ``seen``: an exception raised while Python runs a finalizer (``__del__``, a weakref
    callback) is printed and dropped, so the loop over cases checks ``seen`` too and stops at the next
    case."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_int(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    def on_term(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise _Terminated(signum)

    old = {signal.SIGINT: signal.signal(signal.SIGINT, on_int), signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
               "(bptt-check show --help). Join the reports of --shard 1/N ... N/N: bptt-check merge DIR... "
               "(bptt-check merge --help). "
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
        # default, the spec flags typed on the command line override it. Under --isolate process the
        # TARGET is imported (and a factory called) in the worker process only.
        loaded = process.load_named(args.target) if args.isolate == "process" else load_target(args.target)
        fn, spec = target_and_spec(loaded, vars(args), given)
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
        data = open_report(args.report)
        formats = parse_formats(args.format) if args.format else ()
    except BPTTCheckError as err:
        print(f"bptt-check show: error: {err.message.splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print_report(data)
    except Exception as exc:     # the schema holds, but a field is not what any bptt-check writes
        print(f"bptt-check show: error: {args.report!r} cannot be shown ({type(exc).__name__}: "
              f"{clean(str(exc), 200)}); is it a report written by bptt-check?", file=sys.stderr)
        return EXIT_USAGE
    if formats:
        src = Path(args.report)
        folder = args.report_dir or (src if src.is_dir() else src.parent)
        try:
            paths = write_reports(data, folder, formats)
        except OSError as exc:
            print(f"bptt-check show: cannot write the report: {_os_error(exc)}", file=sys.stderr)
            return EXIT_USAGE
        print("report: " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK if data.get("passed") is True else EXIT_FINDINGS


def run(argv: Sequence[str]) -> int:
    if argv and argv[0] == "show":
        return show(argv[1:])
    if argv and argv[0] == "merge":
        return merge_command(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        problem = writable_folder_problem(args.report_dir)
        if problem:
            raise UsageError(problem)
        typed_dir = args.report_dir                            # what the report line shows
        args.report_dir = os.path.abspath(args.report_dir)     # before anything runs: a chdir cannot move it
        oracles = parse_oracles(args.oracle)
        if oracles[0] == "directional" and not args.fast:
            raise UsageError("the first oracle is the reference and must give every element: put autograd, "
                             "complex-step or fd first (e.g. --oracle autograd,directional), or use --fast")
        if args.shard is not None and args.case is not None:
            raise UsageError(f"--case {args.case} checks one case and --shard {args.shard} a share of all of them: "
                             "give one of the two")
        if args.isolate == "process":
            process.prestart()        # the worker's interpreter starts while this one loads the TARGET
        jobs = _jobs(args, _given(argv))
        sweeps = [] if args.case is not None else [
            sweep(fn, spec, cases=args.cases, seed=args.seed, oracles=oracles, target=name, timeout=args.timeout,
                  fast=args.fast, directions=args.directions, device=args.device, isolate=args.isolate,
                  shard=args.shard) for name, fn, spec in jobs]
    except BPTTCheckError as err:
        print(f"bptt-check: error: {clean(err.message.splitlines()[0] if err.message else '', 2000)}",
              file=sys.stderr)
        return EXIT_USAGE

    start = time.perf_counter()
    log = CaseLog()                 # every case's report record, spooled: memory flat in the number of cases
    stopped_by = 0
    total = len(jobs) if args.case is not None else sum(len(s.indices()) for s in sweeps)
    label = f"shard {args.shard}" if args.shard is not None else ""
    with CaseProgress(total, mode=args.progress, label=label) as progress:

        def on_case(result: CaseResult) -> None:
            log.append(case_record(result.to_dict()))
            progress.update(result)

        seen: list[int] = []

        def stop_if_asked() -> None:          # a signal whose exception a finalizer swallowed
            if seen:
                raise _Terminated(seen[0]) if seen[0] == signal.SIGTERM else KeyboardInterrupt

        with _stops_raise(seen):
            try:
                if args.case is not None:       # one case of each job, as a report's reproducer line asks
                    for name, fn, spec in jobs:
                        on_case(check_case(fn, draw_case(spec, args.seed, args.case), oracles=oracles,
                                           target=name, timeout=limit(args.timeout), fast=args.fast,
                                           directions=args.directions, device=args.device,
                                           isolate=args.isolate))
                        stop_if_asked()
                for run_ in sweeps:
                    for result in run_:
                        on_case(result)
                        stop_if_asked()
            except KeyboardInterrupt:
                stopped_by = seen[0] if seen else signal.SIGINT
            except _Terminated as term:
                stopped_by = term.signum
    used = sweeps[0].oracles if sweeps else oracles
    extra: dict[str, Any] = {}
    if args.shard is not None:
        extra["shard"] = {**args.shard.to_dict(), "sweep": {**sweep_options(vars(args)), "target": args.target},
                          "jobs": [{"target": s.target, "spec": s.spec.to_dict(), "cases": s.cases} for s in sweeps]}
    data = report_dict(log, seed=args.seed, oracles=used, seconds=time.perf_counter() - start,
                       argv=["bptt-check", *argv], interrupted=bool(stopped_by), **extra)
    data["passed"] = data["passed"] and not stopped_by
    written = _write_and_say(data, args.report_dir, typed_dir, args.format.split(","), "bptt-check")
    if args.shard is not None and not total:
        print(f"bptt-check: shard {args.shard} holds no case of this sweep (--cases {args.cases} per spec, "
              f"{args.shard.count} shards): nothing was checked", file=sys.stderr)
    if not written:
        return EXIT_USAGE
    if stopped_by:
        print(f"bptt-check: interrupted by {signal.Signals(stopped_by).name} after {len(log)} case(s); "
              "the report holds those, marked \"interrupted\": true", file=sys.stderr)
        return 128 + int(stopped_by)
    return EXIT_OK if data["passed"] else EXIT_FINDINGS


def build_merge_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="bptt-check merge",
        description="Join the reports of a sweep's shards (bptt-check ... --shard K/N, K = 1 ... N) into the report "
                    "one run of the whole sweep writes: the same cases, counts, JUnit, Markdown and HTML.")
    parser.add_argument("reports", nargs="+", metavar="REPORT",
                        help="each shard's report.json, or the folder holding it")
    parser.add_argument("--report-dir", default=default("report_dir"),
                        help=f"folder the joined report is written to (default: {default('report_dir')})")
    parser.add_argument("--format", default=default("format"),
                        help=f"report formats written: json, md, junit, html or all (default: {default('format')})")
    return parser


def merge_command(argv: Sequence[str]) -> int:
    """``bptt-check merge``: exit 0 when the joined sweep passed, 1 when not, 2 when the reports are not the
    shards of one sweep (or cannot be read, or the report cannot be written)."""
    try:
        args = build_merge_parser().parse_args(argv)
        formats = parse_formats(args.format)
        problem = writable_folder_problem(args.report_dir)
        if problem:
            raise UsageError(problem)
        named = [str(Path(r) / FILENAMES["json"]) if Path(r).is_dir() else r for r in args.reports]
        data = merge([(name, open_report(name)) for name in named])
    except BPTTCheckError as err:
        print(f"bptt-check merge: error: {clean(err.message.splitlines()[0] if err.message else '', 2000)}",
              file=sys.stderr)
        return EXIT_USAGE
    if not _write_and_say(data, args.report_dir, args.report_dir, formats, "bptt-check merge"):
        return EXIT_USAGE
    return EXIT_OK if data["passed"] else EXIT_FINDINGS


def _write_and_say(data: dict[str, Any], folder: str, shown: str, formats: Sequence[str], prog: str) -> bool:
    """Write the report set (signals held off for the milliseconds it takes), then print the wrong cases, the
    headline and where the report is; False when it could not be written (the verdict is printed anyway)."""
    unwritten = None
    try:
        with _signals_ignored(), report_lock(folder):
            paths = write_reports(data, folder, formats, replace=True)
    except OSError as exc:        # disk full, no permission, report.json a folder: the verdict still stands
        unwritten = _os_error(exc)
    print_failures(data)
    print(text.headline(data))
    if unwritten is not None:
        print(f"{prog}: cannot write the report: {unwritten}", file=sys.stderr)
        return False
    print("report: " + ", ".join(str(Path(shown) / p.name) for p in paths.values()))
    return True


def _os_error(exc: OSError) -> str:
    """One line for a failed write: what, where."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    return clean(" ".join(f"{what}{where}".split()), 500)


class _QuietPipe:
    """``sys.stdout`` while the command runs: a reader that went away (``bptt-check | head``) does not
    stop the run; the rest of the output is dropped and the run ends with its own exit status."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._broken = False

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self._broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._break()

    def _break(self) -> None:
        self._broken = True
        try:                                   # the interpreter's last flush must not fail either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stdout = sys.stdout
    sys.stdout = _QuietPipe(stdout)
    try:
        try:
            return run(argv)
        finally:
            process.close_workers()      # the run is over: so are its workers, and what they left running
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except KeyboardInterrupt:
        print("bptt-check: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print("bptt-check: internal error (a bug in bptt-check, please report it):", file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        sys.stdout = stdout


def console() -> None:
    """The ``bptt-check`` command: :func:`main`, then exit with its status — also when a backward run in this
    process (``--isolate thread`` or ``none``) left threads running or registered exit handlers of its own."""
    handlers = _exit_handlers()
    code = main()
    process.shutdown()
    foreign = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if foreign or _exit_handlers() > handlers:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


def _exit_handlers() -> int:
    count = getattr(atexit, "_ncallbacks", None)
    return int(count()) if callable(count) else 0


if __name__ == "__main__":  # pragma: no cover
    console()
