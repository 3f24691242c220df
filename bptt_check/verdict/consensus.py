"""Ask several oracles; the first is the reference, the others witness it (DESIGN §5).

Witnesses are element-wise (``fd``, ``complex-step``, ``autograd``) or directional
(``directional``: k Rademacher projections per tensor). Two exact oracles (autograd,
the complex step) are held to the float64 tolerance; a comparison involving finite
differences to ``ORACLE_TOLERANCE``; both add the oracles' own error estimates.

Elements on which the oracles disagree are ``disputed``: they prove nothing about
the backward under test, and a case whose only mismatches are there is inconclusive
rather than failed. Elements whose finite-difference step straddles a relu kink are
disputed too (not differentiable, as far as the oracles can tell).

Who is off, and why: with three element-wise oracles, per disputed element the one
farthest from the median. With two (or a directional witness against the reference),
a third oracle is computed on the disputed tensors to arbitrate: the complex step for
analytic f, else autograd, else finite differences with Richardson extrapolation; if
still only two element-wise oracles remain, a directional witness siding with one of
them decides. Reasons:
``kink`` (the step straddles a relu kink), ``step`` (a difference quotient off beyond
its own error estimate), ``precision`` (an exact oracle with non-finite or overflowing
numbers), ``model`` (an exact oracle against two others: bptt-check's model of this
spec is in doubt; please report it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..model.compare import compare
from ..model.tolerance import EXACT_TOLERANCE, ORACLE_TOLERANCE, Tolerance, allowed, floor_of, scale_of
from ..oracles import get_oracle
from ..oracles.autograd import AutogradOracle
from ..oracles.base import OracleResult
from ..oracles.complex_step import ComplexStepOracle
from ..oracles.directional import JOINT, DirectionalResult, balance, projections, tolerance
from ..oracles.fd import FiniteDifferenceOracle

if TYPE_CHECKING:
    from ..model.cases import Case


@dataclass
class Reference:
    grads: dict[str, np.ndarray]
    error: dict[str, Any]
    disputed: dict[str, np.ndarray]
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[OracleResult | DirectionalResult] = field(default_factory=list)
    # who is off: oracle name -> {"elements": {tensor: count}, "reason": ...}
    off: dict[str, dict[str, Any]] = field(default_factory=dict)
    kinks: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.results[0].name if self.results else ""

    @property
    def scale_floor(self) -> float:
        """Absolute floor of the comparison scale: a fraction of the case's largest gradient."""
        return floor_of(self.grads.values())

    @property
    def consensus(self) -> dict[str, Any]:
        return {"off": self.off, "kinks": self.kinks, "notes": list(self.notes)}

    def explain(self) -> str:
        """One line: which oracle is off, where, and why."""
        parts = []
        if self.kinks:
            parts.append("relu kink inside the finite-difference step at "
                         + ", ".join(f"{k} ({n})" for k, n in self.kinks.items()))
        for name, info in self.off.items():
            where = ", ".join(f"{k} ({n})" for k, n in info["elements"].items())
            parts.append(f"{name} is off at {where}: {info['reason']}")
        return "; ".join(parts) or "the oracles disagree and no third oracle could tell which is off"


def _exact(res: OracleResult) -> bool:
    return not res.method.startswith("fd")


def _pair_tolerance(a: OracleResult, b: OracleResult) -> Tolerance:
    return EXACT_TOLERANCE if _exact(a) and _exact(b) else ORACLE_TOLERANCE


def reference(case: Case, names: Iterable[str], *, directions: int | None = None,
              device: str | None = None) -> Reference:
    """Ask the oracles ``names`` (the first is the reference); ``directions``: k of the directional witness;
    ``device``: the torch device of the autograd oracle."""
    names = list(names)
    oracles = [get_oracle(n, **_options(n, directions, device)) for n in names]
    if not oracles or getattr(oracles[0], "kind", "") == "directional":
        raise UsageError(
            f"the first oracle is the reference and must give every element; {names[0] if names else 'none'!r} "
            "does not: put autograd, complex-step or fd first (e.g. --oracle autograd,directional)")
    results: list[Any] = [None if getattr(o, "kind", "") == "directional" else o.gradients(case) for o in oracles]
    ref = results[0]
    assert isinstance(ref, OracleResult)
    for i, o in enumerate(oracles):       # directional witnesses: joint directions balanced on the reference
        if results[i] is None:
            floor = floor_of(ref.grads.values())
            results[i] = o.directional(case, weights=balance(ref.grads, EXACT_TOLERANCE,
                                                               {k: scale_of(g, floor) for k, g in ref.grads.items()}))
    out = Reference(ref.grads, dict(ref.error),
                    {k: np.zeros(v.shape, dtype=bool) for k, v in ref.grads.items()}, results=results)
    for r in results:
        out.notes.extend(f"{r.name}: {n}" for n in r.notes)
    floor = out.scale_floor
    elementwise = [r for r in results if isinstance(r, OracleResult)]

    # kinks: not differentiable as far as finite differences can tell
    for r in elementwise:
        for k, mask in r.kinks.items():
            if k in out.disputed:
                out.disputed[k] |= mask
    out.kinks = {k: int(v.sum()) for k, v in out.disputed.items() if v.any()}
    kinked = {k: v.copy() for k, v in out.disputed.items()}

    # a reference that is not finite somewhere proves nothing there (an overflow)
    disagree: dict[str, np.ndarray] = {}
    for k, g in ref.grads.items():
        broken = ~np.isfinite(np.asarray(g, dtype=np.float64))
        if broken.any():
            disagree[k] = broken

    # element-wise witnesses; where they agree with the reference, the reference is known only to
    # within their spread (issue 12: a finite-difference reference that agrees with autograd to 1e-5 holds
    # the user to that, not to its own smaller error estimate)
    for other in elementwise[1:]:
        agreement = {}
        tol = _pair_tolerance(ref, other)
        for k in ref.grads:
            if k not in other.grads:
                continue
            mask, r = _compared(ref, other, k, tol, floor)
            agreement[k] = {"agree": not bool((mask & ~kinked[k]).any()), "max_abs_err": r.max_abs_err,
                            "max_rel_err": r.max_rel_err, "tolerance": vars(tol)}
            mask &= ~kinked[k]
            if mask.any():
                disagree[k] = disagree.get(k, np.zeros_like(mask)) | mask
            with np.errstate(invalid="ignore"):
                spread = np.where(mask, 0.0, np.nan_to_num(np.abs(other.grads[k] - ref.grads[k]), nan=0.0))
            out.error[k] = np.maximum(np.asarray(out.error.get(k, 0.0), dtype=np.float64), spread)
        out.agreement[f"{other.name}_vs_{ref.name}"] = agreement

    # directional witnesses
    suspect: set[str] = set()
    directional = [d for d in results[1:] if isinstance(d, DirectionalResult)]
    for d in directional:
        agreement = {}
        for key in d.values:
            ok, info = _along(d, ref, key, floor)
            agreement["all" if key == JOINT else key] = {"agree": ok, **info}
            if not ok:
                suspect |= set(d.directions) & set(ref.grads) if key == JOINT else {key}
        out.agreement[f"{d.name}_vs_{ref.name}"] = agreement

    if disagree or suspect:
        _arbitrate(case, out, elementwise, directional, disagree, suspect, floor, device)
    return out


def _options(name: str, directions: int | None, device: str | None) -> dict[str, Any]:
    if name == "directional" and directions:
        return {"k": directions}
    if name == "autograd" and device is not None:
        return {"device": device}
    return {}


def _along(d: DirectionalResult, res: OracleResult, key: str, floor: float) -> tuple[bool, dict[str, Any]]:
    """Whether the projections of ``res``'s gradient match the directional derivatives of ``key``
    (a tensor, or ``JOINT``: the whole gradient on joint directions)."""
    names = [k for k in d.directions if k in res.grads] if key == JOINT else [key]
    tol = EXACT_TOLERANCE if d.method == "tangent" and _exact(res) else ORACLE_TOLERANCE
    k_dirs = len(d.values[key])
    proj = np.zeros(k_dirs)
    tol_sq = 0.0
    res_err = 0.0
    for k in names:
        r = res.grads[k]
        w = d.weights.get(k, 1.0) if key == JOINT else 1.0
        proj += projections(r, d.directions[k])
        tol_sq += (w * tolerance(r, tol, scale_of(r, floor))) ** 2
        res_err += w * float(np.sum(np.broadcast_to(np.asarray(res.error.get(k, 0.0), dtype=float), r.shape)))
    usable = ~d.kinks.get(key, np.zeros(k_dirs, dtype=bool))
    dev = np.abs(proj - d.values[key])
    allowed = np.sqrt(tol_sq) + d.error[key] + res_err
    ok = not bool((~(dev <= allowed) & usable).any())       # a NaN deviation never reads as agreement
    return ok, {"directions": int(usable.sum()), "max_abs_err": float(dev.max(initial=0.0)),
                "tolerance": float(np.min(allowed))}


def _compared(a: OracleResult, b: OracleResult, k: str, tol: Tolerance, floor: float) -> tuple[np.ndarray, Any]:
    """The elements of ``k`` where b is off a beyond tolerance and both error estimates, and the comparison."""
    err = np.asarray(a.error.get(k, 0.0)) + np.asarray(b.error.get(k, 0.0))
    r = compare(k, b.grads[k], a.grads[k], tol, ref_error=err, scale_floor=floor)
    if r.passed:
        return np.zeros(a.grads[k].shape, dtype=bool), r
    diff = np.abs(b.grads[k] - a.grads[k])
    return ~(diff <= allowed(a.grads[k], tol, scale_of(a.grads[k], floor), err)), r


def _mismatch(a: OracleResult, b: OracleResult, k: str, tol: Tolerance, floor: float) -> np.ndarray:
    return _compared(a, b, k, tol, floor)[0]


def _third(case: Case, present: list[OracleResult], tensors: set[str], device: str | None = None
           ) -> OracleResult | None:
    """An element-wise oracle not already present, on the disputed tensors only."""
    have = {(r.name, r.method) for r in present}
    analytic = case.spec.activation != "relu"
    if analytic and not any(r.method == "tangent" for r in present):
        return ComplexStepOracle(wrt=tensors).gradients(case)
    if not any(r.name == "autograd" for r in present):
        return AutogradOracle(device=device).gradients(case)
    if ("fd", "fd+richardson") not in have:
        res = FiniteDifferenceOracle(richardson=True, wrt=tensors).gradients(case)
        res.name = "fd-richardson"
        return res
    return None


def _reason(res: OracleResult, k: str, where: np.ndarray) -> str:
    if not _exact(res):
        return ("step: its difference quotient is off beyond its own error estimate (the step is too large "
                "for the curvature here, or a kink is just outside it)")
    vals = res.grads[k][where]
    if not np.all(np.isfinite(vals)) or np.max(np.abs(vals), initial=0.0) > 1e150:
        return "precision: non-finite or overflowing numbers"
    return ("model: an exact oracle against two others beyond machine precision; bptt-check's model of "
            "this spec is in doubt, please report it")


def _arbitrate(case: Case, out: Reference, elementwise: list[OracleResult], directional: list[DirectionalResult],
               disagree: dict[str, np.ndarray], suspect: set[str], floor: float, device: str | None = None) -> None:
    ref = elementwise[0]
    pool = list(elementwise)
    tensors = set(disagree) | suspect
    if len(pool) < 3 or suspect:
        third = _third(case, pool, tensors, device)
        if third is not None:
            pool.append(third)
            out.results.append(third)
            out.notes.append(f"the oracles disagreed on {', '.join(sorted(tensors))}: asked {third.name} "
                             f"({third.method or 'exact'}) to arbitrate")
    # a directional witness that disagrees: compare the reference with the other oracles element-wise
    confirmed, unchecked = False, []
    for k in sorted(suspect):
        if not any(k in r.grads for r in pool[1:]):
            unchecked.append(k)
            continue
        mask = np.zeros(ref.grads[k].shape, dtype=bool)
        for r in pool[1:]:
            if k in r.grads:
                mask |= _mismatch(ref, r, k, _pair_tolerance(ref, r), floor)
        mask &= ~out.disputed[k]
        if mask.any():
            confirmed = True
            disagree[k] = disagree.get(k, np.zeros_like(mask)) | mask
    for k in unchecked:           # nothing to compare with: all of it is in doubt
        disagree[k] = np.ones(ref.grads[k].shape, dtype=bool) & ~out.disputed[k]
    if suspect and not confirmed and not unchecked:
        out.off["directional"] = {"elements": {k: 0 for k in sorted(suspect)}, "reason": (
            "its projections disagree with the reference, but an element-wise oracle agrees with the "
            "reference everywhere")}
    for k, mask in disagree.items():
        out.disputed[k] |= mask
        members = [r for r in pool if k in r.grads]
        off = _odd_ones(members, directional, k, mask, floor)
        if off is None:
            info = out.off.setdefault("?", {"elements": {}, "reason": (
                "two oracles disagree and no third is available to tell which is off")})
            info["elements"][k] = info["elements"].get(k, 0) + int(mask.sum())
            continue
        for r, where in off:
            n = int(where.sum())
            if n:
                info = out.off.setdefault(r.name, {"elements": {}, "reason": _reason(r, k, where)})
                info["elements"][k] = info["elements"].get(k, 0) + n


def _odd_ones(members: list[OracleResult], directional: list[DirectionalResult], k: str, mask: np.ndarray,
              floor: float) -> list[tuple[OracleResult, np.ndarray]] | None:
    """Per disputed element, the oracle that is off: the farthest from the median of three or more, or,
    of two, the one a directional witness does not side with."""
    if len(members) >= 3:
        vals = np.stack([np.broadcast_to(r.grads[k], mask.shape)[mask] for r in members])
        odd = np.argmax(np.abs(vals - np.median(vals, axis=0)), axis=0)
        out = []
        for i, r in enumerate(members):
            where = np.zeros(mask.shape, dtype=bool)
            where[mask] = odd == i
            out.append((r, where))
        return out
    if len(members) == 2:
        for d in directional:
            key = JOINT if d.joint else k
            if key not in d.values or k not in d.directions:
                continue
            if d.joint and not all(set(d.directions) <= set(r.grads) for r in members):
                continue            # a joint projection needs every tensor of both
            sides = [_along(d, r, key, floor)[0] for r in members]
            if sides[0] != sides[1]:
                return [(members[sides.index(False)], mask)]
    return None
