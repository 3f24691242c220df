"""Comparing one gradient with its reference (DESIGN §6): the verdict on it and the numbers a
report shows (errors, worst elements, norm-wise error, cosine, the best scalar ratio). The
tolerance test itself is :func:`bptt_check.model.tolerance.allowed`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tolerance import Tolerance, allowed, magnitude, scale_of


@dataclass
class GradResult:
    """The comparison of one gradient (W, U, b, V, c, h0 or x) with its reference."""

    name: str
    passed: bool
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    worst_index: list[int] = field(default_factory=list)
    mismatched: int = 0
    size: int = 0
    scale: float = 0.0
    norm_rel_err: float = 0.0
    cosine: float = 1.0
    ratio: float = 1.0
    atol: float = 0.0
    rtol: float = 0.0
    problem: str | None = None   # missing, shape, non-finite: why no comparison was possible
    # the worst <= 10 elements of a wrong gradient: {index, yours, reference, abs, rel, bad}
    worst: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # field by field (``dataclasses.asdict`` deep-copies: a tenth of a millisecond a gradient, per case)
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = _finite(v)
        d["worst_index"] = [int(i) for i in self.worst_index]
        d["worst"] = [{k: (_finite(v) if isinstance(v, float) else list(v) if isinstance(v, list) else v)
                       for k, v in row.items()} for row in self.worst]
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> GradResult:
        """A comparison read back from a report record (full, or the brief one of a passed case). A number
        the record does not hold (a brief record keeps only ``passed`` and ``max_rel_err``), or holds as
        null (a nan in the JSON), is nan: unknown, never a made-up 0."""
        known: dict[str, Any] = {}
        for k, f in cls.__dataclass_fields__.items():
            if k == "name":
                continue
            v = d.get(k)
            if isinstance(f.default, float) and v is None:
                known[k] = float("nan")
            elif k in d:
                known[k] = v
        return cls(name=name, **known)


def _finite(v: float) -> float | None:
    """JSON has no nan/inf: nan becomes null, an infinity the largest double."""
    if math.isfinite(v):
        return v
    return None if math.isnan(v) else (1e308 if v > 0 else -1e308)


def json_safe(value: Any) -> Any:
    """``value`` with every float made JSON-safe (see ``_finite``) and numpy scalars made plain, at any depth."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _finite(float(value))
    return value


WORST_ROWS = 10


def worst_elements(got: np.ndarray, ref: np.ndarray, limit: np.ndarray, atol: float,
                   rows: int = WORST_ROWS) -> list[dict[str, Any]]:
    """The ``rows`` elements furthest beyond their tolerance, worst first."""
    diff = np.abs(got - ref)
    score = (diff / limit).reshape(-1)
    n = min(rows, score.size)
    if n == 0:
        return []
    top = np.argpartition(-score, n - 1)[:n] if score.size > n else np.arange(score.size)
    top = top[np.argsort(-score[top], kind="stable")]
    out = []
    for flat in top:
        idx = np.unravel_index(int(flat), ref.shape)
        r, g, d = float(ref[idx]), float(got[idx]), float(diff[idx])
        out.append({"index": [int(i) for i in idx], "yours": g, "reference": r, "abs": d,
                    "rel": d / max(abs(r), atol), "bad": bool(score[flat] > 1.0)})
    return out


def compare(name: str, got: np.ndarray | None, ref: np.ndarray, tol: Tolerance, *,
            ref_error: np.ndarray | float = 0.0, scale_floor: float = 0.0) -> GradResult:
    ref = np.asarray(ref, dtype=np.float64)
    scale = magnitude(ref)
    if got is None:
        return GradResult(name, False, size=int(ref.size), scale=scale,
                          problem=f"missing: the backward returned no gradient for {name!r}")
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape:
        hint = ""
        if got.ndim == 2 and got.shape[::-1] == ref.shape:
            hint = " (transposed?)"
        elif got.size == ref.size:
            hint = " (same size, different layout?)"
        return GradResult(name, False, size=int(ref.size), scale=scale,
                          problem=f"shape: expected {ref.shape}, got {got.shape}{hint}")
    finite = np.isfinite(got)
    if not finite.all():
        bad = np.argwhere(~finite)
        return GradResult(name, False, size=int(ref.size), scale=scale,
                          mismatched=int(bad.shape[0]), worst_index=[int(i) for i in bad[0]],
                          problem=f"non-finite: {bad.shape[0]} of {ref.size} elements are nan/inf, "
                                  f"first at {tuple(int(i) for i in bad[0])}")
    atol = tol.atol * scale_of(ref, scale_floor)
    limit = allowed(ref, tol, scale_of(ref, scale_floor), ref_error)
    diff = np.abs(got - ref)
    bad = ~(diff <= limit)                  # a NaN (a non-finite reference) never reads as agreement
    rel = diff / np.maximum(np.abs(ref), atol)
    if diff.size:
        worst = np.unravel_index(int(np.argmax(diff / limit)), diff.shape)
    else:
        worst = ()
    rnorm = float(np.linalg.norm(ref))
    gnorm = float(np.linalg.norm(got))
    dnorm = float(np.linalg.norm(got - ref))
    dot = float(np.vdot(got, ref))
    cosine = dot / (rnorm * gnorm) if rnorm > 0 and gnorm > 0 else (1.0 if rnorm == gnorm else 0.0)
    ratio = dot / (rnorm * rnorm) if rnorm > 0 else (1.0 if gnorm == 0 else float("inf"))
    passed = not bool(bad.any())
    return GradResult(
        name=name,
        passed=passed,
        max_abs_err=float(diff.max(initial=0.0)),
        max_rel_err=float(rel.max(initial=0.0)),
        worst_index=[int(i) for i in worst],
        mismatched=int(bad.sum()),
        size=int(ref.size),
        scale=scale,
        norm_rel_err=dnorm / rnorm if rnorm > 0 else (0.0 if dnorm == 0 else float("inf")),
        cosine=cosine,
        ratio=ratio,
        atol=float(atol),
        rtol=tol.rtol,
        worst=[] if passed else worst_elements(got, ref, limit, float(atol)),
    )
