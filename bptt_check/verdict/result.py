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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model.compare import GradResult, json_safe
from ..model.spec import Spec
from ..runner.read import headline

STATUSES = ("passed", "failed", "inconclusive", "error", "timeout")
GOOD = ("passed", "inconclusive")


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

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed_grads(self) -> list[str]:
        return [k for k, g in self.grads.items() if not g.passed]

    def summary(self) -> str:
        shp = " ".join(f"{k}={v}" for k, v in self.shapes.items())
        who = f"{self.target} " if self.target else ""
        head = f"case {self.index:>3} {self.status.upper():<12} {who}[{self.spec}] {shp}"
        if self.status == "failed":
            worst = []
            for name in self.failed_grads:
                g = self.grads[name]
                if g.problem:
                    worst.append(f"{name}: {g.problem}")
                else:
                    worst.append(f"{name}: max rel err {g.max_rel_err:.2e} at {tuple(g.worst_index)}")
            line = head + " — wrong: " + "; ".join(worst)
            if self.diagnosis:
                best = self.diagnosis[0]
                line += f" — likely {best['code']} (fit {best['fit']:.2f}): {best['message']}"
            return line
        if self.status in ("error", "timeout") and self.error:
            return head + f" — {self.error['kind']}: {headline(self.error)}"
        if self.status == "inconclusive" and self.notes:
            return head + " — " + self.notes[0]
        return head

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
            "params": {k: g.to_dict() for k, g in self.grads.items()},
            "oracles": self.oracles,
            "notes": list(self.notes),
            "error": self.error,
            "stdout": self.stdout,
            "diagnosis": list(self.diagnosis),
            "seconds": round(self.seconds, 6),
            "evidence": self.evidence,
        })
