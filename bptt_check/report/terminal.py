"""The terminal: a progress bar over cases (rich), a compact table of the wrong cases, and for
each the lines that matter. :func:`show` re-renders any earlier ``report.json``.

Made for an 80-column terminal: a wrong case prints one short line above the bar (at most
:data:`BAR_LINES_LIMIT` of them, each cut to the width; the details come after the run), tables
wrap only between words (a word too long for its column ends in "…", it is never split), and a
command to paste is printed on a line of its own without a line break inserted (the terminal
wraps it for the eye, a copy gives it back whole). Text from the user's code is shown through
:func:`bptt_check.report.text.plain` (no escape sequences, no control characters).
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from . import text as tx

TABLE_LIMIT = 20      # rows of the wrong-case tables
LINES_LIMIT = 5       # wrong cases whose lines are printed
BAR_LINES_LIMIT = 10  # wrong cases printed above the progress bar as they come


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
    """Feedback while cases run: a rich bar (the first wrong cases printed above it, one short line
    each, under a heading naming their target and spec), or one summary line per case, or nothing."""

    def __init__(self, total: int, *, mode: str = "auto", file: IO[str] | None = None, label: str = "") -> None:
        self.total = total
        self.label = label            # what part of a sweep runs here ("shard 2/4"), said on the bar
        self.file = file or sys.stdout
        self.mode = resolve_mode(mode, self.file)
        self.bad = 0
        self._progress: Any = None
        self._task: Any = None
        self._group: tuple[str, str] | None = None

    def __enter__(self) -> CaseProgress:
        if self.mode == "bar":
            from rich.markup import escape
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            title = "checking" + (f" {escape(tx.plain(self.label))}" if self.label else "")
            self._progress = Progress(TextColumn(f"[bold]{title}[/]"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[bad]}"), TimeRemainingColumn(),
                                      console=console(self.file), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("cases", total=self.total, bad="")
        elif self.mode == "lines" and self.label:
            print(tx.plain(f"checking {self.label}: {self.total} case{'s' if self.total != 1 else ''}"),
                  file=self.file, flush=True)
        return self

    def update(self, result: Any) -> None:
        bad = result.status in tx.BAD_STATUSES
        self.bad += bad
        if self.mode == "lines":
            print(tx.plain(result.summary()), file=self.file, flush=True)
        elif self.mode == "bar":
            if bad and self.bad <= BAR_LINES_LIMIT:
                con = self._progress.console
                group = (result.target, str(result.spec))
                if group != self._group:
                    self._group = group
                    con.print(tx.plain(f"{result.target or '(Python API)'} [{result.spec}]"), style="bold",
                              markup=False, highlight=False, no_wrap=True, overflow="ellipsis")
                con.print("  " + tx.plain(result.summary(brief=True)), style="red", markup=False, highlight=False,
                          no_wrap=True, overflow="ellipsis")
                if self.bad == BAR_LINES_LIMIT:
                    con.print("  … further wrong cases are counted on the bar; all are listed at the end",
                              markup=False, highlight=False, no_wrap=True, overflow="ellipsis")
            self._progress.update(self._task, advance=1, bad=f"[red]{self.bad} wrong[/]" if self.bad else "")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


# columns kept on one line (short, and splitting them helps nobody), and narrow number columns
_NO_WRAP = ("case", "shapes", "cases", "passed", "failed", "error")
_MAX_WIDTH = {"first bad step": 9, "fails from T": 6, "inconclusive": 12}


def _table(title: str, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for col in columns:
        # "ellipsis": wrap between words only; a word longer than its column is cut with "…", never split
        table.add_column(col, overflow="ellipsis", no_wrap=col in _NO_WRAP, max_width=_MAX_WIDTH.get(col))
    return table


def print_failures(report: dict[str, Any], con: Any = None) -> None:
    """The wrong cases: one compact table per target and spec, then the lines of each of the first few."""
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    con = con or console()
    bad, n_bad = tx.bad_cases(report, TABLE_LIMIT), tx.bad_count(report)
    if not bad:
        return
    con.print(f"[bold]{n_bad} wrong case{'s' if n_bad != 1 else ''}[/]")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in bad[:TABLE_LIMIT]:
        groups.setdefault((c.get("target") or "(Python API)", tx.spec_text(c.get("spec", {}))), []).append(c)
    for (target, spec), cases in groups.items():
        table = _table(escape(tx.plain(f"{target} [{spec}]")),
                       ["case", "shapes", "wrong", "first bad step", "fails from T"])
        for c in cases:
            ev = c.get("evidence") or {}
            what = tx.wrong_text(c)
            first, sfl = ev.get("first_bad_step"), ev.get("shortest_failing_length")
            table.add_row(str(c.get("index")), tx.case_shapes(c), escape(tx.plain(what)),
                          "" if first is None else str(first), "" if sfl is None else str(sfl))
        con.print(table)
    if n_bad > TABLE_LIMIT:
        con.print(f"… and {n_bad - TABLE_LIMIT} more in the report", markup=False, highlight=False)
    for c in bad[:LINES_LIMIT]:
        title, *lines = tx.failure_lines(c, report, shell=True)
        con.print(f"[bold red]{escape(title)}[/]")
        for line in lines:
            if line.startswith(" ") and con.is_terminal:   # prose: wrapped between words, under its own indent
                con.print(Padding(Text(line.lstrip(" ")), (0, 0, 0, len(line) - len(line.lstrip(" ")))))
            elif line.startswith(" "):
                con.print(line, markup=False, highlight=False)
            else:      # a command to paste: one line, never broken (the terminal wraps it for the eye)
                con.print(line, markup=False, highlight=False, soft_wrap=True)
    if n_bad > LINES_LIMIT:
        con.print(f"… {n_bad - LINES_LIMIT} more wrong cases: see report.md / report.html", markup=False,
                  highlight=False)


def print_report(report: dict[str, Any], con: Any = None) -> None:
    """A whole report in the terminal: header, groups, wrong cases, verdict."""
    from rich.markup import escape

    con = con or console()
    ok = report.get("passed") and not report.get("interrupted")
    color = "green" if ok else "red"
    con.print(f"[bold {color}]bptt-check: {tx.verdict(report)}[/] — {escape(tx.counts_text(report))}")
    con.print(f"command: {tx.plain(report.get('command') or '(Python API)')}", markup=False, highlight=False,
              soft_wrap=True)
    con.print(tx.plain(f"bptt-check {report.get('version', '')}, schema {report.get('schema')}, created "
                       f"{report.get('created', '?')}, seed {report.get('seed')}, oracles "
                       f"{', '.join(str(o) for o in report.get('oracles', []))}"), markup=False, highlight=False)
    for line in tx.tolerance_lines(report):
        con.print("tolerances " + line, markup=False, highlight=False)
    gs = tx.groups(report)
    table = _table("by target and spec", ["target", "spec", "cases", "passed", "failed", "inconclusive", "error"])
    for t, s, n in gs[:40]:
        table.add_row(escape(tx.plain(t or "-")), escape(tx.plain(s)), str(sum(n.values())), str(n.get("passed", 0)),
                      str(n.get("failed", 0)), str(n.get("inconclusive", 0)),
                      str(n.get("error", 0) + n.get("timeout", 0)))
    if len(gs) > 40:
        table.caption = f"… and {len(gs) - 40} more"
    con.print(table)
    print_failures(report, con)
