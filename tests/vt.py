"""Run a command in a pseudo-terminal of a given width and replay what it wrote on a small terminal
emulator, to test what a user sees (tests only; stdlib only).

The emulator knows what rich and a line-oriented program send: printable text with auto-wrap at the
right margin, CR, LF, BS, cursor up/down/column (``ESC[nA``, ``ESC[nB``, ``ESC[nG``), erase in line
(``ESC[nK``); colours, cursor show/hide and other sequences are ignored. Each screen row remembers
whether it is the continuation of the row above (wrapped by the terminal, not broken by the program),
so a test can tell a long line the terminal wraps from text the program broke with newlines.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
import unicodedata
from dataclasses import dataclass, field

_CSI = re.compile(r"\x1b\[([0-9;?]*)([ -/]*)([@-~])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def run_in_pty(argv: list[str], cols: int = 80, rows: int = 50, cwd: str | None = None,
               env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a pty of ``cols`` x ``rows``; its exit status and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = dict(env or os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
    env.pop("CI", None)             # rich and others treat CI as "not interactive"
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{argv} ran past {timeout} s")
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:          # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


def _width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


@dataclass
class Screen:
    """The scrollback of a terminal ``cols`` wide: every row ever written, top to bottom."""

    cols: int = 80
    rows: list[list[str]] = field(default_factory=lambda: [[]])
    wrapped: list[bool] = field(default_factory=lambda: [False])    # row i continues row i - 1
    y: int = 0
    x: int = 0
    pending_wrap: bool = False

    def feed(self, text: str) -> Screen:
        text = _OSC.sub("", text)
        i = 0
        while i < len(text):
            m = _CSI.match(text, i)
            if m:
                self._csi(m.group(1), m.group(3))
                i = m.end()
                continue
            ch = text[i]
            i += 1
            if ch == "\x1b":                      # another escape: skip its one byte
                i += 1
            elif ch == "\r":
                self.x, self.pending_wrap = 0, False
            elif ch == "\n":
                self._down(wrapped=False)
            elif ch == "\b":
                self.x = max(0, self.x - 1)
            elif ch >= " " and ch != "\x7f":
                self._put(ch)
        return self

    def _row(self) -> list[str]:
        while len(self.rows) <= self.y:
            self.rows.append([])
            self.wrapped.append(False)
        return self.rows[self.y]

    def _down(self, wrapped: bool) -> None:
        """A line feed (the pty turns the program's LF into CR LF) or the terminal's own wrap."""
        self.y += 1
        self._row()
        self.wrapped[self.y] = wrapped
        self.pending_wrap = False
        if wrapped:
            self.x = 0

    def _put(self, ch: str) -> None:
        w = _width(ch)
        if self.pending_wrap or self.x + w > self.cols:
            self._down(wrapped=True)
        row = self._row()
        while len(row) < self.x:
            row.append(" ")
        if self.x < len(row):
            row[self.x] = ch
        else:
            row.append(ch)
        self.x += w
        if self.x >= self.cols:
            self.x, self.pending_wrap = self.cols - 1, True

    def _csi(self, params: str, final: str) -> None:
        n = int(params) if params.isdigit() else 1
        if final == "A":
            self.y, self.pending_wrap = max(0, self.y - n), False
        elif final == "B":
            self.y += n
            self._row()
        elif final == "G":
            self.x, self.pending_wrap = n - 1, False
        elif final == "K":
            row = self._row()
            if params in ("", "0"):
                del row[self.x:]
            elif params == "2":
                row.clear()
                self.wrapped[self.y] = False
            elif params == "1":
                row[: self.x] = [" "] * min(self.x, len(row))

    def lines(self) -> list[str]:
        """The screen rows (a row the next one continues keeps its trailing blanks), trailing blank rows dropped."""
        out = []
        for i, r in enumerate(self.rows):
            cont = i + 1 < len(self.rows) and self.wrapped[i + 1]
            out.append("".join(r) if cont else "".join(r).rstrip())
        while out and not out[-1].strip():
            out.pop()
        return out

    def logical(self) -> list[tuple[str, int]]:
        """The program's lines: rows the terminal wrapped joined again; each with its number of rows."""
        out: list[tuple[str, int]] = []
        for text, cont in zip(self.lines(), self.wrapped):
            if cont and out:
                out[-1] = (out[-1][0] + text, out[-1][1] + 1)
            else:
                out.append((text, 1))
        return out
