"""Fast mode (``--fast``): the first stage of the verdict, on random projections (DESIGN §5).

1. k sign-random (Rademacher) joint directions v over every gradient the backward
   returned: Σ vᵀg (the user's) against the complex-step directional derivative
   (``oracles/directional.py``), within c·‖τ‖₂: no inflation by Σ|v_i| (the sum of the
   direction's entries).
2. If one disagrees: k directions per gradient, to find which.
3. A gradient whose own directions fail is a *suspect*: it is judged element-wise by the
   ordinary judge (``judge.py``: the dtype's tolerance over T, the float32 rounding allowance,
   the relu kinks) against the element-wise complex step (relu: finite differences) — per
   parameter, and for x per block of time steps (only the blocks whose own directions fail).
   Fast mode never fails a gradient that the element-wise check would pass; a failed case then
   goes on through the same settling and explaining as any other.

Directions are drawn over what the backward returns; for an adapted backward they are lifted
onto the canonical gradients through its layout (``Target.lift``). A layout that clips is not a
linear map of the gradient: every gradient is then checked element-wise.

No torch, no full gradient unless something is wrong: the cost is one batched
propagation of k tangents, plus the backward under test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.compare import GradResult
from ..model.names import ordered
from ..model.tolerance import floor_of, scale_of, tolerance_for
from ..oracles.batched import Trajectory
from ..oracles.complex_step import ANALYTIC, ComplexStepOracle, tangent_values
from ..oracles.directional import (
    DEFAULT_DIRECTIONS,
    balance,
    derivatives_along,
    joint_derivatives,
    joint_projections,
    joint_tolerance,
    projections,
    rademacher,
    tolerance,
)
from ..oracles.fd import fd_values
from ..runner.target import Target

if TYPE_CHECKING:
    from ..model.cases import Case

TIME_BLOCKS = 8
EPS_M = float(np.finfo(np.float64).eps)
ORACLES = ("directional", "complex-step")


@dataclass
class FastStage:
    """What the directions said: gradients they vouch for, and the suspects to check element-wise."""

    grads: dict[str, GradResult]
    suspects: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _bad(dev: np.ndarray, allowed: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Directions that disagree: a NaN deviation never reads as agreement."""
    return ~(dev <= allowed) & usable


def directions(target: Target, case: Case, got: Mapping[str, np.ndarray], *, k: int = DEFAULT_DIRECTIONS
               ) -> FastStage:
    """Stages 1 and 2: joint directions over every returned gradient; if one fails, k per gradient."""
    traj = Trajectory.of(case)
    tol = tolerance_for(case.spec.dtype, case.T)
    grads = {n: np.asarray(got[n], dtype=np.float64) for n in ordered(got)}
    floor = floor_of(grads.values())
    scales = {n: scale_of(g, floor) for n, g in grads.items()}
    method = "tangent" if case.spec.activation in ANALYTIC else "fd"
    per: dict[str, Any] = {}
    out = FastStage({}, info={"mode": "fast", "directions": k, "method": method, "tensors": per})
    if not grads:
        return out
    if not target.linear:
        out.suspects = list(grads)
        out.notes.append("fast mode: the layout declares a clip, which random projections cannot see through: "
                         "every gradient was checked element-wise")
        return out

    # stage 1: joint directions, each tensor's ±1 entries weighted so its tolerance counts as much
    weights = balance(grads, tol, scales)
    shapes = {n: g.shape for n, g in grads.items()}
    dirs = {n: v * weights[n] for n, v in rademacher(shapes, k, (case.seed, case.index)).items()}
    jres = joint_derivatives(traj, target.lift(case, dirs))
    s_user = joint_projections(grads, dirs)
    usable = ~jres.kinks.get("*", np.zeros(k, dtype=bool))
    allowed = (joint_tolerance(grads, tol, scales, weights) + jres.error["*"]
               + 4 * EPS_M * sum(weights[n] * float(np.abs(g).sum()) for n, g in grads.items()))
    dev = np.abs(s_user - jres.values["*"])
    bad = _bad(dev, allowed, usable)
    out.info["joint"] = {"max_deviation": float(np.nan_to_num(dev, nan=np.inf).max(initial=0.0)),
                         "tolerance": float(np.min(allowed)), "failed_directions": int(bad.sum()),
                         "usable_directions": int(usable.sum())}
    if usable.any() and not bad.any():
        for n, g in grads.items():
            out.grads[n] = _joint_result(n, g, float(np.max(allowed)), tol.rtol, scales[n])
        return out

    # stage 2: per gradient
    dirs = rademacher(shapes, k, (case.seed, case.index, 2))
    items = [item for n in grads for item in target.lift(case, {n: dirs[n]}).items()]
    vals, errs, kinks = derivatives_along(traj, items)
    for i, (n, g) in enumerate(grads.items()):
        sl = slice(i * k, (i + 1) * k)
        s_user, s_ref = projections(g, dirs[n]), vals[sl]
        usable = ~kinks[sl]
        allowed = tolerance(g, tol, scales[n]) + errs[sl] + 4 * EPS_M * float(np.abs(g).sum())
        dev = np.abs(s_user - s_ref)
        bad = _bad(dev, allowed, usable)
        per[n] = {"max_deviation": float(np.nan_to_num(dev, nan=np.inf).max(initial=0.0)),
                  "tolerance": float(np.min(allowed)), "failed_directions": int(bad.sum()),
                  "usable_directions": int(usable.sum())}
        if bad.any() or not usable.any():
            out.suspects.append(n)
        else:
            out.grads[n] = _directional_result(n, g, s_user[usable], s_ref[usable], dev[usable],
                                               float(np.max(allowed[usable])), tol.rtol, scales[n])
    if not out.suspects:     # the joint directions disagreed, no gradient's own did: check every element
        out.notes.append("a joint direction disagreed but no gradient's own directions did: "
                         "checked every element")
        out.suspects = list(grads)
        out.grads = {}
    return out


def element_wise(target: Target, case: Case, got: Mapping[str, np.ndarray], stage: FastStage, *,
                 k: int = DEFAULT_DIRECTIONS, time_blocks: int = TIME_BLOCKS
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Stage 3: the element-wise reference of every suspect (x: in the blocks of steps whose own
    directions fail), as whole tensors in what the backward returns: ``(reference, error, kinks)``.
    Elements not computed carry the user's own value (they passed their directions), no error."""
    traj = Trajectory.of(case)
    oracle = "complex-step" if case.spec.activation in ANALYTIC else "fd"
    ref: dict[str, np.ndarray] = {}
    err: dict[str, Any] = {}
    kinks: dict[str, np.ndarray] = {}
    if target.adapted is not None:
        # through the layout: whole canonical tensors, lowered
        res = ComplexStepOracle().gradients(case)
        lowered, lowered_err = target.lower(case, res.grads), target.lower(case, res.error, "error")
        lowered_kinks = target.lower(case, {n: res.kinks.get(n, np.zeros(v.shape, dtype=bool))
                                            for n, v in res.grads.items()}, "mask")
        for n in stage.suspects:
            ref[n], err[n], kinks[n] = lowered[n], lowered_err[n], lowered_kinks[n]
            _record(stage, n, oracle, int(np.size(ref[n])), int(np.size(ref[n])), "")
        return ref, err, kinks
    tol = tolerance_for(case.spec.dtype, case.T)
    for n in stage.suspects:
        g = np.asarray(got[n], dtype=np.float64)
        index = np.arange(g.size)
        where = ""
        if n == "x" and traj.T > 1 and time_blocks > 1:
            spans = [s for s in np.array_split(np.arange(traj.T), min(traj.T, time_blocks)) if len(s)]
            failing = _failing_time_blocks(traj, g, spans, tol, scale_of(g), k, case)
            if failing and len(failing) < len(spans):   # none failing on its own: check every element
                steps = np.concatenate([spans[i] for i in failing])
                per_step = g.shape[1] * g.shape[2]
                index = (steps[:, None] * per_step + np.arange(per_step)[None, :]).reshape(-1)
                where = (f" (steps {', '.join(f'{spans[i][0]}-{spans[i][-1]}' for i in failing)}; "
                         f"the other {len(spans) - len(failing)} blocks of steps passed {k} directions each)")
        if oracle == "complex-step":
            values, errors = tangent_values(traj, n, index)
            flags = np.zeros(len(index), dtype=bool)
        else:
            values, errors, flags = fd_values(traj, n, index)
        full, full_err, full_kinks = g.reshape(-1).copy(), np.zeros(g.size), np.zeros(g.size, dtype=bool)
        full[index], full_err[index], full_kinks[index] = values, errors, flags
        ref[n], err[n], kinks[n] = full.reshape(g.shape), full_err.reshape(g.shape), full_kinks.reshape(g.shape)
        _record(stage, n, oracle, len(index), g.size, where)
    return ref, err, kinks


def _record(stage: FastStage, name: str, oracle: str, checked: int, size: int, where: str) -> None:
    info = stage.info["tensors"].setdefault(name, {})
    info.update(localized=True, element_wise=oracle, elements_checked=int(checked))
    if checked < size or where:
        stage.notes.append(f"{name}: localized element-wise by {oracle} on {checked}/{size} elements{where}")


def _joint_result(name: str, g: np.ndarray, allowed: float, rtol: float, scale: float) -> GradResult:
    """A gradient that passed with all the others on joint directions: no per-gradient error is measured."""
    nan = float("nan")
    return GradResult(name=name, passed=True, max_abs_err=nan, max_rel_err=nan, worst_index=[], mismatched=0,
                      size=int(g.size), scale=scale, norm_rel_err=nan, cosine=nan, ratio=nan, atol=allowed,
                      rtol=rtol)


def _directional_result(name: str, g: np.ndarray, s_user: np.ndarray, s_ref: np.ndarray, dev: np.ndarray,
                        allowed: float, rtol: float, scale: float) -> GradResult:
    """A passed tensor, in the terms of its directions (the errors are those of vᵀg)."""
    rn, gn = float(np.linalg.norm(s_ref)), float(np.linalg.norm(s_user))
    dot = float(s_user @ s_ref)
    return GradResult(
        name=name, passed=True,
        max_abs_err=float(dev.max(initial=0.0)),
        max_rel_err=float(np.max(dev / np.maximum(np.abs(s_ref), max(allowed, np.finfo(float).tiny)), initial=0.0)),
        worst_index=[], mismatched=0, size=int(g.size), scale=scale,
        norm_rel_err=float(np.linalg.norm(dev)) / rn if rn > 0 else 0.0,
        cosine=dot / (rn * gn) if rn > 0 and gn > 0 else 1.0,
        ratio=dot / (rn * rn) if rn > 0 else 1.0,
        atol=allowed, rtol=rtol)


def _failing_time_blocks(traj: Trajectory, g: np.ndarray, spans: list[np.ndarray], tol: Any, scale: float,
                         k: int, case: Case) -> list[int]:
    """The blocks of steps of x whose own k directions (zero outside the block) fail."""
    items = []
    for i, span in enumerate(spans):
        mask = np.zeros(g.shape)
        mask[span] = 1.0
        v = rademacher({"x": g.shape}, k, (case.seed, case.index, 1 + i), {"x": mask})["x"]
        items.append(("x", v))
    vals, errs, kinks = derivatives_along(traj, items)
    failing = []
    for i, (_, v) in enumerate(items):
        sl = slice(i * k, (i + 1) * k)
        gb = g[spans[i]]
        dev = np.abs(projections(g, v) - vals[sl])
        allowed = tolerance(gb, tol, scale) + errs[sl] + 4 * EPS_M * float(np.abs(gb).sum())
        if (~(dev <= allowed) | kinks[sl]).any():
            failing.append(i)
    return failing
