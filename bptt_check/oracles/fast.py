"""Fast mode (``--fast``): the user's gradient along k Rademacher directions, localized on a mismatch.

1. k sign-random (Rademacher) joint directions v over every gradient the backward
   returned: Σ vᵀg (the user's) against the complex-step directional derivative
   (``directional.py``), within c·‖τ‖₂: no inflation by Σ|v_i| (the sum of the
   direction's entries).
2. If one disagrees: k directions per gradient, to find which.
3. A gradient whose own directions fail is checked element-wise, block by block: per
   parameter, and for x per block of time steps (only the blocks whose own directions
   fail are expanded), by the element-wise complex step (relu: finite differences).
   The element-wise comparison uses the ordinary tolerances and decides: fast mode
   never fails a gradient that the element-wise check would pass.

No torch, no full gradient unless something is wrong: the cost is one batched
propagation of k tangents, plus the backward under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._compare import ZERO_FLOOR, GradResult, compare, tolerance_for
from ._batched import Trajectory
from .complex_step import ANALYTIC, tangent_values
from .directional import (
    DEFAULT_DIRECTIONS,
    JOINT,
    balance,
    derivatives_along,
    directional_derivatives,
    joint_derivatives,
    joint_projections,
    joint_tolerance,
    projections,
    rademacher,
    tolerance,
)

if TYPE_CHECKING:
    from .._cases import Case

ORDER = ("W", "U", "b", "V", "c", "h0", "x")
TIME_BLOCKS = 8
EPS_M = float(np.finfo(np.float64).eps)


@dataclass
class FastOutcome:
    grads: dict[str, GradResult]
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    unjudged: dict[str, int] = field(default_factory=dict)   # elements not judged (relu kinks)


def fast_check(got: dict[str, np.ndarray], case: Case, *, k: int = DEFAULT_DIRECTIONS,
               time_blocks: int = TIME_BLOCKS) -> FastOutcome:
    """Stage 1: k joint directions over every gradient returned. If one fails, stage 2: k directions per
    gradient; stage 3: element-wise, for the gradients whose own directions fail (all of them if none
    does on its own)."""
    traj = Trajectory.of(case)
    tol = tolerance_for(case.spec.dtype)
    names = [n for n in ORDER if n in traj.names() and (n != "x" or "x" in got)]
    out = FastOutcome({})
    valid = []
    for n in names:
        g = got.get(n)
        shape = traj.shape(n)
        if g is None or np.shape(g) != shape or not np.all(np.isfinite(np.asarray(g, dtype=np.float64))):
            out.grads[n] = compare(n, g, np.zeros(shape), tol)     # missing / shape / non-finite
        else:
            valid.append(n)
    grads = {n: np.asarray(got[n], dtype=np.float64) for n in valid}
    floor = ZERO_FLOOR * max((float(np.max(np.abs(g), initial=0.0)) for g in grads.values()), default=0.0)
    scales = {n: max(float(np.max(np.abs(g), initial=0.0)), floor, np.finfo(np.float64).tiny)
              for n, g in grads.items()}
    per: dict[str, Any] = {}
    out.info = {"mode": "fast", "directions": k,
                "method": "tangent" if traj.spec.activation in ANALYTIC else "fd", "tensors": per}
    if not valid:
        return out

    # stage 1: joint directions, each tensor's ±1 entries weighted so its tolerance counts as much
    weights = balance(grads, tol, scales)
    dirs = {n: v * weights[n] for n, v in rademacher(traj, k, (case.seed, case.index), valid).items()}
    jres = joint_derivatives(traj, dirs)
    s_user = joint_projections(grads, dirs)
    usable = ~jres.kinks.get(JOINT, np.zeros(k, dtype=bool))
    allowed = (joint_tolerance(grads, tol, scales, weights) + jres.error[JOINT]
               + 4 * EPS_M * sum(weights[n] * float(np.abs(g).sum()) for n, g in grads.items()))
    dev = np.abs(s_user - jres.values[JOINT])
    bad = (dev > allowed) & usable
    out.info["joint"] = {"max_deviation": float(dev.max(initial=0.0)), "tolerance": float(np.min(allowed)),
                         "failed_directions": int(bad.sum()), "usable_directions": int(usable.sum())}
    if usable.any() and not bad.any():
        for n, g in grads.items():
            out.grads[n] = _joint_result(n, g, float(np.max(allowed)), tol.rtol, scales[n])
        return out

    # stage 2: per gradient
    dirs = rademacher(traj, k, (case.seed, case.index, 2), valid)
    dres = directional_derivatives(traj, dirs)
    suspects = []
    for n, g in grads.items():
        s_user = projections(g, dirs[n])
        s_ref = dres.values[n]
        usable = ~dres.kinks.get(n, np.zeros(k, dtype=bool))
        allowed = tolerance(g, tol, scales[n]) + dres.error[n] + 4 * EPS_M * float(np.abs(g).sum())
        dev = np.abs(s_user - s_ref)
        bad = (dev > allowed) & usable
        per[n] = {"max_deviation": float(dev.max(initial=0.0)), "tolerance": float(np.min(allowed)),
                  "failed_directions": int(bad.sum()), "usable_directions": int(usable.sum())}
        if bad.any() or not usable.any():
            suspects.append(n)
        else:
            out.grads[n] = _directional_result(n, g, s_user[usable], s_ref[usable], dev[usable],
                                               float(np.max(allowed[usable])), tol.rtol, scales[n])
    if not suspects:     # the joint directions disagreed, no gradient's own did: check every element
        out.notes.append("a joint direction disagreed but no gradient's own directions did: "
                         "checked every element")
        suspects = list(grads)
    # stage 3: element-wise, per gradient (x: per block of steps)
    for n in suspects:
        out.grads[n] = _localize(traj, n, grads[n], tol, scales[n], floor, k, time_blocks, case, out)
        per.setdefault(n, {})["localized"] = True
    return out


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


def _localize(traj: Trajectory, name: str, g: np.ndarray, tol: Any, scale: float, floor: float, k: int,
              time_blocks: int, case: Case, out: FastOutcome) -> GradResult:
    """Element-wise reference of the suspect tensor (for x: only in the time blocks that fail)."""
    shape = traj.shape(name)
    flat_g = g.reshape(-1)
    index = np.arange(flat_g.size)
    where = ""
    if name == "x" and traj.T > 1 and time_blocks > 1:
        spans = [s for s in np.array_split(np.arange(traj.T), min(traj.T, time_blocks)) if len(s)]
        failing = _failing_time_blocks(traj, g, spans, tol, scale, k, case)
        if failing and len(failing) < len(spans):   # none failing on its own: check every element
            steps = np.concatenate([spans[i] for i in failing])
            per_step = shape[1] * shape[2]
            index = (steps[:, None] * per_step + np.arange(per_step)[None, :]).reshape(-1)
            where = (f" (steps {', '.join(f'{spans[i][0]}-{spans[i][-1]}' for i in failing)}; "
                     f"the other {len(spans) - len(failing)} blocks of steps passed {k} directions each)")
    if traj.spec.activation in ANALYTIC:
        ref, err = tangent_values(traj, name, index)
        kinks = np.zeros(len(index), dtype=bool)
        oracle = "complex-step"
    else:
        from .batched_fd import fd_values

        ref, err, kinks = fd_values(traj, name, index)
        oracle = "fd"
    out.info["tensors"][name]["element_wise"] = oracle
    out.info["tensors"][name]["elements_checked"] = int(len(index))
    keep = ~kinks
    if kinks.any():
        out.unjudged[name] = int(kinks.sum())
        out.notes.append(f"{name}: {int(kinks.sum())} element(s) whose finite-difference step straddles a relu "
                         "kink were not judged")
    sub_floor = max(floor, float(np.max(np.abs(np.delete(flat_g, index)), initial=0.0)))
    r = compare(name, flat_g[index][keep], ref[keep], tol, ref_error=err[keep], scale_floor=sub_floor)
    if r.worst_index:
        r.worst_index = [int(i) for i in np.unravel_index(int(index[keep][r.worst_index[0]]), shape)]
    r.size = int(flat_g.size)
    if len(index) < flat_g.size or where:
        out.notes.append(f"{name}: localized element-wise by {oracle} on {len(index)}/{flat_g.size} elements{where}")
    if r.passed:
        out.notes.append(f"{name}: a direction disagreed, but the element-wise {oracle} check passes every element")
    return r


def _failing_time_blocks(traj: Trajectory, g: np.ndarray, spans: list[np.ndarray], tol: Any, scale: float,
                         k: int, case: Case) -> list[int]:
    """The blocks of steps of x whose own k directions (zero outside the block) fail."""
    items = []
    for i, span in enumerate(spans):
        mask = np.zeros(traj.shape("x"))
        mask[span] = 1.0
        v = rademacher(traj, k, (case.seed, case.index, 1 + i), ["x"], {"x": mask})["x"]
        items.append(("x", v))
    vals, errs, kinks = derivatives_along(traj, items)
    failing = []
    for i, (_, v) in enumerate(items):
        sl = slice(i * k, (i + 1) * k)
        gb = g[spans[i]]
        dev = np.abs(projections(g, v) - vals[sl])
        allowed = tolerance(gb, tol, scale) + errs[sl] + 4 * EPS_M * float(np.abs(gb).sum())
        if ((dev > allowed) | kinks[sl]).any():
            failing.append(i)
    return failing
