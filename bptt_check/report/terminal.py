"""The terminal: a progress bar over cases (rich), a compact table of the wrong cases, and for
each the three lines that matter. :func:`show` re-renders any earlier ``report.json``."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from . import text as tx

TABLE_LIMIT = 20     # rows of the wrong-case table
LINES_LIMIT = 5      # wrong cases whose three lines are printed


def console(file: IO[str] | None = None) -> Any:
    from rich.console import Console

    file = file or sys.stdout
    tty = hasattr(file, "isatty") and file.isatty()
    # off a terminal (CI logs, pipes): wide, no colour codes, no wrapping of long lines into boxes
    return Console(file=file, width=None if tty else 160, highlight=False, soft_wrap=not tty)


def resolve_mode(mode: str, file: IO[str] | None = None) -> str:
    """``auto``: a bar on a terminal, one line per case elsewhere (CI logs keep every verdict)."""
    if mode != "auto":
        return mode
    file = file or sys.stdout
    tty = hasattr(file, "isatty") and file.isatty() and os.environ.get("TERM") != "dumb"
    return "bar" if tty else "lines"


class CaseProgress:
    """Feedback while cases run: a rich bar (wrong cases printed above it as they come), or one
    summary line per case, or nothing."""

    def __init__(self, total: int, *, mode: str = "auto", file: IO[str] | None = None) -> None:
        self.total = total
        self.file = file or sys.stdout
        self.mode = resolve_mode(mode, self.file)
        self.bad = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> CaseProgress:
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]checking[/]"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[bad]}"), TimeRemainingColumn(),
                                      console=console(self.file), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("cases", total=self.total, bad="")
        return self

    def update(self, result: Any) -> None:
        bad = result.status in tx.BAD_STATUSES
        self.bad += bad
        if self.mode == "lines":
            print(result.summary(), file=self.file, flush=True)
        elif self.mode == "bar":
            if bad:
                self._progress.console.print(result.summary(), style="red", markup=False, highlight=False)
            self._progress.update(self._task, advance=1, bad=f"[red]{self.bad} wrong[/]" if self.bad else "")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def print_failures(report: dict[str, Any], con: Any = None) -> None:
    """The compact table of wrong cases, then the three lines of each of the first few."""
    from rich.markup import escape
    from rich.table import Table

    con = con or console()
    bad = tx.bad_cases(report)
    if not bad:
        return
    table = Table(title=f"{len(bad)} wrong case{'s' if len(bad) != 1 else ''}", title_justify="left",
                  show_lines=False, header_style="bold")
    for col in ("case", "target", "spec", "shapes", "wrong", "first bad step", "fails from T"):
        table.add_column(col, overflow="fold")
    for c in bad[:TABLE_LIMIT]:
        ev = c.get("evidence") or {}
        what = tx.error_line(c) if c.get("status") in ("error", "timeout") else tx.grad_line(c)[7:]
        first, sfl = ev.get("first_bad_step"), ev.get("shortest_failing_length")
        table.add_row(str(c.get("index")), escape(c.get("target") or "-"), escape(tx.spec_text(c.get("spec", {}))),
                      tx.case_shapes(c), escape(what),
                      "" if first is None else str(first), "" if sfl is None else str(sfl))
    if len(bad) > TABLE_LIMIT:
        table.caption = f"… and {len(bad) - TABLE_LIMIT} more in the report"
    con.print(table)
    for c in bad[:LINES_LIMIT]:
        con.print(f"[bold red]{escape(tx.case_title(c))}[/]")
        for line in tx.three_lines(c):
            con.print("  " + line, markup=False, highlight=False)
        if c.get("status") == "failed":
            con.print("  reproduce: " + tx.reproduce_line(c), markup=False, highlight=False)
    if len(bad) > LINES_LIMIT:
        con.print(f"… {len(bad) - LINES_LIMIT} more wrong cases: see report.md / report.html")


def print_report(report: dict[str, Any], con: Any = None) -> None:
    """A whole report in the terminal: header, groups, wrong cases, verdict."""
    from rich.markup import escape
    from rich.table import Table

    con = con or console()
    ok = report.get("passed") and not report.get("interrupted")
    color = "green" if ok else "red"
    con.print(f"[bold {color}]bptt-check: {tx.verdict(report)}[/] — {escape(tx.counts_text(report))}")
    con.print(f"command: {report.get('command') or '(Python API)'}", markup=False, highlight=False)
    con.print(f"bptt-check {report.get('version', '')}, schema {report.get('schema')}, created "
              f"{report.get('created', '?')}, seed {report.get('seed')}, oracles "
              f"{', '.join(report.get('oracles', []))}", markup=False, highlight=False)
    for line in tx.tolerance_lines(report):
        con.print("tolerances " + line, markup=False, highlight=False)
    gs = tx.groups(report)
    table = Table(title="by target and spec", title_justify="left", header_style="bold")
    for col in ("target", "spec", "cases", "passed", "failed", "inconclusive", "error"):
        table.add_column(col, overflow="fold")
    for t, s, n in gs[:40]:
        table.add_row(escape(t or "-"), escape(s), str(sum(n.values())), str(n.get("passed", 0)),
                      str(n.get("failed", 0)), str(n.get("inconclusive", 0)),
                      str(n.get("error", 0) + n.get("timeout", 0)))
    if len(gs) > 40:
        table.caption = f"… and {len(gs) - 40} more"
    con.print(table)
    print_failures(report, con)
