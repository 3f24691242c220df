"""Hostile TARGETs through the command: each row is a module the user might write, the command line, and
what the command must do — the exit status, and a claim about the report that the tests check.

A backward under development is untrusted code. These are the behaviours that once took the
harness down or swayed its verdict (issue 13): a crash, ``os._exit`` in the backward or at import,
``sys.exit`` in a factory, C code holding the GIL past the limit, ``os.chdir`` with a relative
``--report-dir``, closing stdout, ``torch.set_default_device("meta")``, ``sys.setrecursionlimit``, keys
whose ``__repr__``/``__hash__`` raise, lone surrogates and terminal escapes in messages, patching
numpy, the harness, ``atexit`` or the Spec it receives, threads left running, ``GeneratorExit`` and
its own ``BaseException`` under ``--timeout 0``.

Used by ``tests/test_robustness_cli.py`` (every row, asserting its exit status and claim) and by
``docs/gen_robustness_table.py`` (the table of ``docs/robustness.md``; it is rendered from the rows'
own words, which the tests hold true). ``process=True`` rows need a command of their own (what
they do would reach the test process and can only be seen at its exit: threads left running, exit
handlers, with ``--isolate thread``); the others run in the test process through
``bptt_check.cli.main`` — the worker process is what protects it (with ``--isolate thread`` and
``none``, only rows this process survives).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORRECT = "from bptt_check.builtin import truncated as correct\n"


@dataclass(frozen=True)
class Hostile:
    behaviour: str                       # what the TARGET does (the docs table's first column)
    source: str                          # the TARGET module; its `backward` is checked
    exit: int                            # the command's exit status
    claim: str                           # what the report says (the docs table's last column), checked by `check`
    check: Callable[[Run], None]
    argv: tuple[str, ...] = ()
    process: bool = False                # needs a command of its own (see the module's docstring)
    seed_report: bool = False            # an old passing report is in the folder first


@dataclass
class Run:
    """What one row's command gave."""

    code: int
    stdout: str
    stderr: str
    folder: Path                         # the report folder (absolute)
    seconds: float
    report: dict[str, Any] | None = field(default=None)

    @property
    def cases(self) -> list[dict[str, Any]]:
        assert self.report is not None, "no report"
        return self.report["cases"]


def _src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


# ----------------------------------------------------------------- what the rows check

def every_case(status: str, kind: str | None = None, *words: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.cases, "no cases in the report"
        for c in run.cases:
            assert c["status"] == status, (c["status"], c.get("error"))
            if kind is not None:
                assert c["error"]["kind"] == kind, c["error"]
                for w in words:
                    assert w in c["error"]["message"], (w, c["error"]["message"])
        assert run.report["passed"] is (status in ("passed", "inconclusive"))
    return check


def every_case_passed(run: Run) -> None:
    every_case("passed")(run)


def no_report(*words: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.report is None and not run.folder.exists(), "a report was written"
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bptt-check: error: "), run.stderr
        for w in words:
            assert w in lines[0], (w, lines[0])
    return check


def both(*checks: Callable[[Run], None]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        for c in checks:
            c(run)
    return check


def quiet_stdout(run: Run) -> None:
    assert "spam" not in run.stdout and "\x1b" not in run.stdout and "\x1b" not in run.stderr


def no_traceback(run: Run) -> None:
    assert "Traceback (most recent call last)" not in run.stderr and "internal error" not in run.stderr, run.stderr


def files_are_utf8(run: Run) -> None:
    for name in ("report.md", "junit.xml", "report.html", "report.json"):
        (run.folder / name).read_bytes().decode("utf-8")      # strict: a lone surrogate would not encode


def bounded_messages(run: Run) -> None:
    for c in run.cases:
        assert len(c["error"]["message"]) < 9000, len(c["error"]["message"])
    assert (run.folder / "report.md").stat().st_size < 200_000
    assert run.seconds < 60


def judged_on_window_2(run: Run) -> None:
    """Full BPTT equals window:2 only where the window reaches back to step 0 (T <= 3)."""
    assert run.report["passed"] is False
    for c in run.cases:
        assert c["spec"]["truncation"] == "window:2"
        assert c["status"] == ("failed" if c["shapes"]["T"] > 3 else "passed"), (c["shapes"], c["status"])


def fast(run: Run) -> None:
    assert run.seconds < 60, run.seconds


# ----------------------------------------------------------------- the rows

WRONG = "    return {k: 2 * v for k, v in correct(params, x, y, spec).items()}\n"
CHDIR_AND_WRONG = CORRECT + _src("""
    import os, tempfile
    def backward(params, x, y, spec):
        os.chdir(tempfile.gettempdir())
""") + WRONG
ATEXIT_AND_WRONG = CORRECT + _src("""
    import atexit, os
    def backward(params, x, y, spec):
        atexit.register(os._exit, 0)
""") + WRONG
LEAVES_A_THREAD = CORRECT + _src("""
    import threading, time
    def backward(params, x, y, spec):
        threading.Thread(target=time.sleep, args=(600,)).start()
        return correct(params, x, y, spec)
""")
GENERATOR_EXIT = CORRECT + _src("""
    def backward(params, x, y, spec):
        raise GeneratorExit("stop")
""")

ROWS: tuple[Hostile, ...] = (
    Hostile("calls `os._exit(0)` in the backward",
            CORRECT + _src("""
                import os
                def backward(params, x, y, spec):
                    print("about to leave")
                    os._exit(0)
            """), 1, "every case `error`, kind `crashed`: exit code 0, the last line it printed",
            every_case("error", "crashed", "exit code 0", "about to leave"), ("--cases", "3")),
    Hostile("calls `os._exit(0)` at import",
            "import os\nos._exit(0)\n", 2, "one line: loading the TARGET ended the worker process (exit code 0); "
            "no report", no_report("ended the worker process", "exit code 0")),
    Hostile("calls `sys.exit(0)` in a TARGET factory",
            _src("""
                import sys
                def backward():
                    sys.exit(0)
            """), 2, "one line: calling the TARGET factory failed: SystemExit: 0; no report",
            no_report("factory backward() failed: SystemExit: 0")),
    Hostile("crashes in C code (a segfault)",
            CORRECT + _src("""
                import ctypes
                def backward(params, x, y, spec):
                    return ctypes.string_at(0)
            """), 1, "every case `error`, kind `crashed`: killed by signal SIGSEGV, and where it was",
            every_case("error", "crashed", "SIGSEGV", "it was at"), ("--cases", "2")),
    Hostile("starts a thread that keeps printing",
            CORRECT + _src("""
                import threading
                def _spam():
                    while True:
                        print("spam from a thread")
                def backward(params, x, y, spec):
                    threading.Thread(target=_spam, daemon=True).start()
                    return correct(params, x, y, spec)
            """), 0, "every case `passed`; the command's own output stays clean",
            both(every_case_passed, quiet_stdout), ("--cases", "4")),
    Hostile("holds the GIL in C code past `--timeout` (a catastrophic regex)",
            CORRECT + _src("""
                import re
                def backward(params, x, y, spec):
                    re.match(r"(a+)+$", "a" * 64 + "b")
            """), 1, "every case `timeout`: killed after 0.5 s, where it was (the regex)",
            both(every_case("timeout", "timeout", "did not return within 0.5 s", "killed", "re.match"), fast),
            ("--cases", "2", "--timeout", "0.5")),
    Hostile("changes the working folder (`os.chdir`), `--report-dir` relative, and is wrong",
            CHDIR_AND_WRONG, 1, "the new failing report replaces the old passing one in the folder typed",
            every_case("failed"), ("--cases", "2", "--report-dir", "relative/reports"), seed_report=True),
    Hostile("closes `sys.stdout` and file descriptor 1",
            CORRECT + _src("""
                import os, sys
                def backward(params, x, y, spec):
                    sys.stdout.close()
                    try:
                        os.close(1)
                    except OSError:              # closed by an earlier call
                        pass
                    print("printing on")
                    return correct(params, x, y, spec)
            """), 0, "every case `passed`", every_case_passed, ("--cases", "3")),
    Hostile("calls `torch.set_default_device('meta')` at import",
            CORRECT + "import torch\ntorch.set_default_device('meta')\n\n" + _src("""
                def backward(params, x, y, spec):
                    return correct(params, x, y, spec)
            """), 0, "every case `passed` (the reference is computed elsewhere)", every_case_passed,
            ("--cases", "2")),
    Hostile("calls `sys.setrecursionlimit(50)` at import",
            CORRECT + "import sys\nsys.setrecursionlimit(50)\n\n" + _src("""
                def backward(params, x, y, spec):
                    return correct(params, x, y, spec)
            """), 0, "every case `passed`", every_case_passed, ("--cases", "2")),
    Hostile("returns a key whose `__repr__` and `__hash__` raise",
            "from misbehaviours import unshowable_key\n\nbackward = unshowable_key().backward\n",
            1, "every case `error`, kind `extra_key`: a key whose repr() raised",
            every_case("error", "extra_key", "whose repr() raised"), ("--cases", "2")),
    Hostile("raises with a lone surrogate and terminal escapes in its message",
            CORRECT + _src("""
                def backward(params, x, y, spec):
                    raise ValueError("bad \\udc80 text \\x1b[2J\\x1b[31mred\\x07")
            """), 1, "every case `error`, kind `exception`, the text escaped; every report file is UTF-8",
            both(every_case("error", "exception", "\\udc80", "red\\x07"), files_are_utf8, quiet_stdout),
            ("--cases", "2")),
    Hostile("raises with a 20 MB message",
            CORRECT + _src("""
                def backward(params, x, y, spec):
                    raise ValueError("x" * 20_000_000)
            """), 1, "every case `error`, kind `exception`, the message cut to 8,000 characters",
            both(every_case("error", "exception", "not kept ...]"), bounded_messages), ("--cases", "3")),
    Hostile("patches numpy and the harness, and is wrong",
            CORRECT + _src("""
                import numpy as np
                import bptt_check.model.tolerance as tolerance
                import bptt_check.runner.read as read
                def backward(params, x, y, spec):
                    np.abs = lambda a, *args, **kwargs: a * 0
                    np.isfinite = lambda a, *args, **kwargs: True
                    tolerance.allowed = lambda *args, **kwargs: float("inf")
                    read.compare_repeat = lambda *args, **kwargs: (None, [])
            """) + WRONG, 1, "every case `failed`", every_case("failed"), ("--cases", "2")),
    Hostile("registers `atexit.register(os._exit, 0)`, and is wrong",
            ATEXIT_AND_WRONG, 1, "every case `failed`", every_case("failed"), ("--cases", "2")),
    Hostile("edits the Spec it receives (`window:2` into full BPTT)",
            CORRECT + _src("""
                from bptt_check import Truncation
                def backward(params, x, y, spec):
                    object.__setattr__(spec, "truncation", Truncation())
                    return correct(params, x, y, spec)
            """), 1, "every case the window bites on `failed` (judged against `window:2`)", judged_on_window_2,
            ("--cases", "4", "--truncation", "window:2")),
    Hostile("leaves a non-daemon thread running",
            LEAVES_A_THREAD, 0, "every case `passed`; the command ends at once", both(every_case_passed, fast),
            ("--cases", "2")),
    Hostile("raises `GeneratorExit` under `--timeout 0`",
            GENERATOR_EXIT, 1, "every case `error`, kind `exception`: GeneratorExit; no traceback of bptt-check",
            both(every_case("error", "exception", "GeneratorExit"), no_traceback), ("--cases", "2", "--timeout", "0")),
    Hostile("raises its own `BaseException` under `--timeout 0`",
            CORRECT + _src("""
                class Stop(BaseException):
                    pass
                def backward(params, x, y, spec):
                    raise Stop("mine")
            """), 1, "every case `error`, kind `exception`: Stop: mine; no traceback of bptt-check",
            both(every_case("error", "exception", "Stop: mine"), no_traceback), ("--cases", "2", "--timeout", "0")),
    Hostile("is decorated without `functools.wraps` (`wrapper(*args, **kwargs)`)",
            CORRECT + _src("""
                def logged(fn):
                    def wrapper(*args, **kwargs):
                        return fn(*args, **kwargs)
                    return wrapper
                @logged
                def backward(params, x, y, spec):
                    return correct(params, x, y, spec)
            """), 0, "checked as the backward: every case `passed`", every_case_passed, ("--cases", "2")),
    # the same misbehaviours in this process, where it was asked for
    Hostile("changes the working folder, `--report-dir` relative, and is wrong; `--isolate thread`",
            CHDIR_AND_WRONG, 1, "the new failing report replaces the old passing one in the folder typed",
            every_case("failed"), ("--cases", "2", "--report-dir", "relative/reports", "--isolate", "thread"),
            seed_report=True),
    Hostile("leaves a non-daemon thread running; `--isolate thread`",
            LEAVES_A_THREAD, 0, "every case `passed`; the command ends at once", both(every_case_passed, fast),
            ("--cases", "2", "--isolate", "thread"), process=True),
    Hostile("registers `atexit.register(os._exit, 0)`, and is wrong; `--isolate thread`",
            ATEXIT_AND_WRONG, 1, "every case `failed`", every_case("failed"), ("--cases", "2", "--isolate", "thread"),
            process=True),
    Hostile("raises `GeneratorExit`; `--isolate none`",
            GENERATOR_EXIT, 1, "every case `error`, kind `exception`: GeneratorExit; no traceback of bptt-check",
            both(every_case("error", "exception", "GeneratorExit"), no_traceback),
            ("--cases", "2", "--isolate", "none")),
)


def prepare(row: Hostile, where: Path) -> tuple[list[str], Path]:
    """Write the row's TARGET into ``where``; the command line (run with ``where`` as the working folder)
    and the report folder it writes to."""
    target = where / "hostile_target.py"
    target.write_text(row.source, encoding="utf-8")
    argv = ["hostile_target.py:backward", "--oracle", "autograd", "--progress", "lines", *row.argv]
    if "--report-dir" not in argv:
        argv += ["--report-dir", "reports"]
    folder = where / argv[argv.index("--report-dir") + 1]
    if row.seed_report:
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"tool": "bptt-check", "passed": True, "cases": []}))
        (folder / "report.html").write_text("<p>OK: an old report that passed</p>")
    return argv, folder


def result(row: Hostile, code: int, stdout: str, stderr: str, folder: Path, seconds: float) -> Run:
    run = Run(code, stdout, stderr, folder, seconds)
    path = folder / "report.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        run.report = data if data.get("cases") or "counts" in data else None
        if row.seed_report and run.report is None:
            raise AssertionError("the old report is still in the folder")
    return run
