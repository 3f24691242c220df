"""The case records of a run, spooled to a temporary file: memory stays flat in the number of cases.

A :class:`CaseLog` is a sequence of case records (plain dicts, as ``report.json`` holds them) kept as
one line of compact JSON each in a temporary file (in memory up to :data:`SPOOL_MEMORY` bytes, on disk
beyond), with the offset of every line (8 bytes a case) and a running :class:`Summary` — the counts,
the specs, targets and dtypes, and per (target, spec) group its counts, time and where its cases are —
so that the report's header and the renderers need no pass over the cases for those. The command line
writes each case here as it is checked and renders the report from it; ``report.json`` itself is read
back into one (``open_report``) by ``bptt-check show`` and ``bptt-check merge``.

A plain list of records works wherever a CaseLog does: :func:`summary_of` makes its Summary in one pass.
"""

from __future__ import annotations

import json
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from ..model.spec import spec_line
from ..verdict.result import GOOD, STATUSES

SPOOL_MEMORY = 4 * 2**20        # bytes of records kept in memory before the spool moves to a file on disk
_CHUNK = 2**20


def encode(record: dict[str, Any]) -> bytes:
    """One record as one line of compact, strict, ASCII JSON (no newline inside: strings escape theirs)."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii")


@dataclass
class Group:
    """The cases of one (target, spec): counts by status, seconds, and their positions as [start, end) runs."""

    target: str
    spec: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    runs: list[list[int]] = field(default_factory=list)

    def positions(self) -> Iterator[int]:
        for start, end in self.runs:
            yield from range(start, end)


@dataclass
class Summary:
    """What the report's header and the renderers need to know of all cases, kept as they come."""

    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in STATUSES})
    specs: list[dict[str, Any]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    bad: array = field(default_factory=lambda: array("q"))       # positions of the cases not passed/inconclusive
    _spec_text: dict[str, str] = field(default_factory=dict)      # spec JSON -> its one-line text
    _targets: set[str] = field(default_factory=set)

    def add(self, position: int, record: dict[str, Any]) -> None:
        status = record.get("status", "?")
        self.counts[status] = self.counts.get(status, 0) + 1
        spec = record.get("spec") or {}
        key = json.dumps(spec, sort_keys=True)
        text = self._spec_text.get(key)
        if text is None:
            text = self._spec_text[key] = spec_line(spec)
            if spec not in self.specs:
                self.specs.append(spec)
            if spec.get("dtype") is not None and spec["dtype"] not in self.dtypes:
                self.dtypes.append(spec["dtype"])
        target = record.get("target", "")
        if target not in self._targets:
            self._targets.add(target)
            self.targets.append(target)
        group = self.groups.get((target, text))
        if group is None:
            group = self.groups[(target, text)] = Group(target, text)
        group.counts[status] = group.counts.get(status, 0) + 1
        group.seconds += record.get("seconds") or 0.0
        if group.runs and group.runs[-1][1] == position:
            group.runs[-1][1] += 1
        else:
            group.runs.append([position, position + 1])
        if status not in GOOD:
            self.bad.append(position)


def summary_of(cases: Iterable[dict[str, Any]]) -> Summary:
    """The Summary of a CaseLog (kept as it grew), or of any other sequence of records (one pass)."""
    if isinstance(cases, CaseLog):
        return cases.summary
    out = Summary()
    for i, c in enumerate(cases):
        out.add(i, c)
    return out


class CaseLog(Sequence[dict[str, Any]]):
    """Case records, one compact JSON line each in a spooled temporary file; see the module's text."""

    def __init__(self, records: Iterable[dict[str, Any]] = (), *, memory: int = SPOOL_MEMORY) -> None:
        self._file: Any = tempfile.SpooledTemporaryFile(max_size=memory, mode="w+b")
        self._offsets = array("q", [0])        # where each line starts; the last entry is the end
        self.summary = Summary()
        for record in records:
            self.append(record)

    def append(self, record: dict[str, Any]) -> None:
        self.append_line(encode(record), record)

    def append_line(self, line: bytes, record: dict[str, Any] | None = None) -> None:
        """Append one record given as its JSON line (``record``: the same, parsed, when the caller has it)."""
        if record is None:
            record = json.loads(line)
        end = self._offsets[-1]
        self._file.seek(end)
        self._file.write(line + b"\n")
        self.summary.add(len(self), record)
        self._offsets.append(end + len(line) + 1)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def line(self, i: int) -> bytes:
        """The JSON text of record ``i``."""
        start, end = self._offsets[i], self._offsets[i + 1]
        self._file.seek(start)
        return bytes(self._file.read(end - start - 1))

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"case record {i} of {n}")
        return json.loads(self.line(i % n))

    def lines(self) -> Iterator[bytes]:
        """The JSON text of every record, in order, read in large chunks (other reads may come in between)."""
        pos, end, rest = 0, self._offsets[-1], b""
        while pos < end:
            self._file.seek(pos)
            chunk = rest + self._file.read(min(_CHUNK, end - pos))
            pos += len(chunk) - len(rest)
            *whole, rest = chunk.split(b"\n")
            yield from whole

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self.lines():
            yield json.loads(line)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"<CaseLog of {len(self)} case records>"


def positions(cases: Sequence[dict[str, Any]], which: Sequence[int]) -> Iterator[dict[str, Any]]:
    """The records at ``which`` (positions, ascending) of a CaseLog or a list."""
    for i in which:
        yield cases[i]
