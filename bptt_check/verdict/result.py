"""The verdict on one case (:class:`CaseResult`).

Statuses:
- ``passed``: every gradient matches the reference wherever the oracles agree;
- ``failed``: some gradient differs from the reference at an element where the
  oracles agree with each other;
- ``inconclusive``: nothing failed, but something proves nothing: the oracles disagree with each
  other on some elements and the Taylor check cannot settle them, or the gradient vanished
  before the early steps;
- ``error``: the backward misbehaved (it raised, returned something that is not
  gradients in the protocol, changed its inputs in place, or gave a different
  result on a second call); ``error`` holds ``{"kind", "message", "keys"}``;
- ``timeout``: the backward did not return within the per-call limit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model.compare import GradResult, json_safe
from ..model.spec import Spec
from ..runner.read import CONTROLS as _CONTROLS
from ..runner.read import ESCAPES as _ESCAPES
from ..runner.read import headline

STATUSES = ("passed", "failed", "inconclusive", "error", "timeout")
GOOD = ("passed", "inconclusive")

# terminal escape sequences and control characters: one definition, in runner/read.py (where the text
# of the user's code is first cleaned); here they are removed, there written as visible escapes
_SURROGATES = re.compile("[\ud800-\udfff]")


def plain(text: Any) -> str:
    """Text from the user's code made safe to show anywhere: terminal escape sequences and control
    characters removed (a carriage return too: it would let a line overwrite itself), lone surrogates
    (which no file encoding can hold) replaced by U+FFFD. Every renderer passes user text through it."""
    s = str(text)
    if s.isprintable() or not s:
        return _SURROGATES.sub("\ufffd", s)
    s = _ESCAPES.sub("", s.replace("\r\n", "\n"))
    return _SURROGATES.sub("\ufffd", _CONTROLS.sub("", s))


# a frame of a Python traceback: File "path", line N, in name (then, indented, the line of code)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"\n]+)", line (?P<line>\d+), in (?P<name>[^\n]+)\n(?P<code>[ \t]+\S[^\n]*)?',
                    re.MULTILINE)


def user_frame(error: dict[str, Any] | None) -> tuple[str, str] | None:
    """Where the user's code raised: ``("my_rnn.py:29 in backward", "return {'W': arr[7]}")`` from the
    innermost frame of the traceback in an ``exception`` finding (the path relative to the working
    folder when it is inside it), or the place a timed-out call was stopped; None when there is none."""
    if not error:
        return None
    message = str(error.get("message") or "")
    frames = list(_FRAME.finditer(message))
    if frames:
        f = frames[-1]
        code = (f["code"] or "").strip()
        return f"{_short_path(f['file'])}:{f['line']} in {f['name'].strip()}", code
    at = re.search(r"it was at (?P<where>\S+:\d+ in \S+)(?: `(?P<code>[^`\n]*)`)?", message)
    if at:
        return at["where"], (at["code"] or "").strip()
    return None


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:          # another drive
        return path
    return path if rel.startswith("..") else rel


def nothing_judged(counts: Mapping[str, int]) -> bool:
    """Every case of a run was inconclusive: nothing about the gradients was verified (issue 12)."""
    return counts.get("inconclusive", 0) > 0 and all(v == 0 for k, v in counts.items() if k != "inconclusive")


def run_passed(counts: Mapping[str, int]) -> bool:
    """A run (counts per status) passes when no case is wrong and some case was judged: a run whose every
    case is inconclusive proved nothing, and must not read as a pass."""
    return all(v == 0 for k, v in counts.items() if k not in GOOD) and not nothing_judged(counts)


@dataclass
class CaseResult:
    """The verdict on one case."""

    index: int
    seed: int
    spec: Spec
    flavor: str
    shapes: dict[str, int]
    status: str
    grads: dict[str, GradResult] = field(default_factory=dict)
    oracles: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    target: str = ""
    seconds: float = 0.0
    # where in time it goes wrong and how to replay it (failed cases only; see evidence.py)
    evidence: dict[str, Any] | None = None
    stdout: str = ""
    # failed cases: the named causes that fit, best first ({"code", "fit", "message"}, DESIGN §7)
    diagnosis: list[dict[str, Any]] = field(default_factory=list)
    # an adapted backward's wrong gradients in its own notation: key -> {"name", "worst_index"}
    yours: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a padded batch: the length of each sequence (None: every sequence is T steps long)
    lengths: list[int] | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed_grads(self) -> list[str]:
        return [k for k, g in self.grads.items() if not g.passed]

    def summary(self, brief: bool = False) -> str:
        """One line: the case, its status and what is wrong (the worst element of each wrong gradient,
        the best-fitting cause; for a misbehaving backward the finding and the user's frame).
        ``brief``: without target, spec and shapes, for a terminal line under a heading that has them."""
        shp = " ".join(f"{k}={v}" for k, v in self.shapes.items())
        if self.lengths is not None:
            shp += f" lengths=({','.join(map(str, self.lengths))})"
        who = f"{self.target} " if self.target else ""
        head = f"case {self.index:>3} {self.status.upper():<12}" + ("" if brief else f" {who}[{self.spec}] {shp}")
        if self.status == "failed":
            worst = []
            for name in self.failed_grads:
                g = self.grads[name]
                if g.problem:
                    worst.append(f"{name}: {g.problem}")
                elif brief:
                    worst.append(f"d{name} {g.mismatched}/{g.size}")
                else:
                    worst.append(f"{name}: max rel err {g.max_rel_err:.2e} at {tuple(g.worst_index)}")
            line = head + (" wrong: " if brief else " — wrong: ") + ("; " if not brief else ", ").join(worst)
            if self.diagnosis:
                best = self.diagnosis[0]
                line += f" — likely {best['code']} (fit {best['fit']:.2f})"
                if not brief:
                    line += f": {best['message']}"
            return plain(line)
        if self.status in ("error", "timeout") and self.error:
            kind = "" if self.error["kind"] == self.status else f"{self.error['kind']}: "
            where = user_frame(self.error)
            said = headline({**self.error, "message": plain(self.error.get("message", ""))})
            return plain(head + f" — {kind}{said}" + (f" (at {where[0]})" if where else ""))
        if self.status == "inconclusive" and self.notes:
            return plain(head + " — " + self.notes[0])
        return plain(head)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseResult:
        """A case read back from its record (:meth:`to_dict`, or the brief record of a passed case, whose
        gradients hold only ``passed`` and ``max_rel_err``)."""
        return cls(index=int(d["index"]), seed=int(d["seed"]), spec=Spec.from_dict(d["spec"]),
                   flavor=d.get("flavor", ""), shapes=dict(d.get("shapes") or {}), status=d["status"],
                   grads={k: GradResult.from_dict(k, g) for k, g in (d.get("params") or {}).items()},
                   oracles=dict(d.get("oracles") or {}), notes=list(d.get("notes") or []), error=d.get("error"),
                   target=d.get("target", ""), seconds=float(d.get("seconds") or 0.0), evidence=d.get("evidence"),
                   stdout=d.get("stdout", ""), diagnosis=list(d.get("diagnosis") or []), lengths=d.get("lengths"))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report: JSON-safe at any depth (no NaN, no infinity, no numpy scalars)."""
        return json_safe({
            "index": self.index,
            "seed": self.seed,
            "target": self.target,
            "passed": self.passed,
            "status": self.status,
            "spec": self.spec.to_dict(),
            "flavor": self.flavor,
            "shapes": self.shapes,
            "lengths": self.lengths,
            "params": {k: g.to_dict() for k, g in self.grads.items()},
            "oracles": self.oracles,
            "notes": list(self.notes),
            "error": self.error,
            "stdout": self.stdout,
            "diagnosis": list(self.diagnosis),
            "seconds": round(self.seconds, 6),
            "evidence": self.evidence,
            **({"yours": self.yours} if self.yours else {}),
        })
