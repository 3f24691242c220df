"""Directional oracle: k sign-random (Rademacher) directions, vᵀ∇L by complex step (DESIGN §5).

One number per direction instead of one per element, whatever the size of the model.
Directions are *joint* (each moves every tensor at once: k copies in all, the default)
or *per tensor* (k for each: k·(number of tensors) copies, to tell which tensor is off).
In a joint direction each tensor's ±1 entries carry a weight w_p ∝ 1/‖τ_p‖₂
(:func:`balance`), so a small tensor's error is not drowned by a large tensor's tolerance.
Used two ways:

- as the default *witness* of the autograd reference (``verdict/consensus.py``): vᵀr of the
  autograd gradient r must equal the complex-step directional derivative, so the
  torch model and the numpy model compute the same function;
- as the *fast mode* (``verdict/fast.py``): vᵀg of the user's gradient against the same
  directional derivative, then per tensor and element-wise to localize a mismatch.

Tolerance, without inflation by the sum of the direction's entries (torch's fast
mode scales atol by Σu·Σv, which let a wrong gradient pass, pytorch#59615): if
every element error e_i is within its element-wise tolerance τ_i, then for a
Rademacher v, P(|vᵀe| ≥ c·‖τ‖₂) ≤ 2·exp(−c²/2) (Hoeffding). With c = 6 a correct
gradient fails a direction with probability below 3e-8, while a wrong one is caught
as soon as |vᵀe| > 6‖τ‖₂: always when a single element is off by that much (Rademacher
weights have modulus 1), and with probability ≥ 1/2 per direction in general.

relu: the directional derivative is a central finite difference along v (the complex
step is not valid); a direction whose ±h copies straddle a kink is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..model.tolerance import Tolerance, allowed
from . import generic
from .batched import STATE_FREE, Trajectory, dense_block, joint_block, run
from .complex_step import ANALYTIC, TangentPropagation, error_estimate
from .fd import EPS_FD, DeltaPropagation

if TYPE_CHECKING:
    from ..model.cases import Case

DEFAULT_DIRECTIONS = 4
CONFIDENCE = 6.0     # c in the tolerance c·‖τ‖₂ (false alarm < 2·exp(-c²/2) ≈ 3e-8 per direction)


JOINT = "*"   # the key of joint directions' values: each direction moves every tensor at once


@dataclass
class DirectionalResult:
    """vᵀ∇L for k directions: ``directions[name]`` is (k, *shape); ``values[name]`` is (k,) per tensor,
    or ``values["*"]`` for joint directions (direction j is the union of ``directions[name][j]``)."""

    name: str
    directions: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    kinks: dict[str, np.ndarray] = field(default_factory=dict)   # (k,) bool per key (relu only)
    method: str = "tangent"
    notes: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)      # joint: the ±w_p entries of each tensor

    @property
    def joint(self) -> bool:
        return JOINT in self.values


def rademacher(shapes: Mapping[str, tuple[int, ...]], k: int, seed: tuple[int, ...],
               masks: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """k random ±1 directions per tensor (name -> shape, in order), reproducible from ``seed``;
    ``masks`` zero some entries."""
    rng = np.random.default_rng([*seed, 0x5EED])
    out = {}
    for name, shape in shapes.items():
        v = rng.integers(0, 2, (k, *shape)).astype(np.float64) * 2.0 - 1.0
        if masks is not None and name in masks:
            v *= masks[name]
        out[name] = v
    return out


def derivatives_along(traj: Trajectory, items: list[tuple[str, np.ndarray]]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directional derivatives for (name, (k, *shape)) items, flat: (values, error estimates, kink flags).

    Analytic f: one batched tangent propagation. relu: central differences along v, step h per
    tensor scaled to the tensor, with a flag where the ±h copies straddle a kink.
    """
    # the output layer's directions last (they skip the state propagation); results in the given order
    order = sorted(range(len(items)), key=lambda i: items[i][0] in STATE_FREE)
    at = np.cumsum([0] + [len(v) for _, v in items])
    back = np.argsort(np.concatenate([np.arange(at[i], at[i + 1]) for i in order]))
    items = [items[i] for i in order]
    vals, err, kinks = _along(traj, items)
    return vals[back], err[back], kinks[back]


def _along(traj: Trajectory, items: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if generic.needed(traj.spec):     # beyond the vanilla engine: the one forward on complex copies
        vals, err, _ = generic.along(generic.Evaluator(traj), items)
        return vals, err, np.zeros(len(vals), dtype=bool)
    if traj.spec.activation in ANALYTIC:
        prop = TangentPropagation(traj)
        vals = run(traj, dense_block(items), prop)
        return vals, error_estimate(traj, prop.magnitude), np.zeros(len(vals), dtype=bool)
    steps = {k: EPS_FD * max(1.0, float(np.max(np.abs(traj.x if k == "x" else traj.params[k]), initial=0.0)))
             for k, _ in items}
    prop = DeltaPropagation(traj)
    changes = []
    for sign in (1.0, -1.0):
        moved = [(k, sign * steps[k] * v) for k, v in items]
        changes.append((run(traj, dense_block(moved), prop), prop.magnitude.copy(), prop.kink.copy()))
    (up, mag_up, kink_up), (down, mag_down, kink_down) = changes
    h = np.concatenate([np.full(len(v), steps[k]) for k, v in items])
    vals = (up - down) / (2 * h)
    err = (4.0 * np.finfo(np.float64).eps * (traj.T + traj.H + traj.O) * (mag_up + mag_down)
           + 10.0 * EPS_FD * np.abs(up + down)) / (2 * h)
    return vals, err, kink_up | kink_down


def directional_derivatives(traj: Trajectory, directions: dict[str, np.ndarray]) -> DirectionalResult:
    """The derivative of the truncated loss along every direction, per tensor."""
    sizes = {k: len(v) for k, v in directions.items()}
    vals, err, kinks = derivatives_along(traj, list(directions.items()))
    method = "tangent" if traj.spec.activation in ANALYTIC else "fd"
    res = DirectionalResult("directional", directions, _split(vals, sizes), _split(err, sizes), method=method)
    if method == "fd":
        res.kinks = _split(kinks, sizes)
    return res


def joint_derivatives(traj: Trajectory, directions: dict[str, np.ndarray]) -> DirectionalResult:
    """The derivative along k joint directions (direction j moves every tensor by its ``[j]`` part)."""
    analytic = traj.spec.activation in ANALYTIC
    if generic.needed(traj.spec):     # beyond the vanilla engine: the one forward on complex copies
        vals, err, how = generic.along(generic.Evaluator(traj), list(directions.items()), joint=True)
        kinks = np.zeros(len(vals), dtype=bool)
        analytic = how == "complex"
    elif analytic:
        prop = TangentPropagation(traj)
        vals = run(traj, joint_block(directions), prop)
        err, kinks = error_estimate(traj, prop.magnitude), np.zeros(len(vals), dtype=bool)
    else:
        h = EPS_FD * max(max(1.0, float(np.max(np.abs(traj.x if k == "x" else traj.params[k]), initial=0.0)))
                         for k in directions)
        dprop = DeltaPropagation(traj)
        up = run(traj, joint_block({k: h * v for k, v in directions.items()}), dprop)
        mag_up, kink_up = dprop.magnitude.copy(), dprop.kink.copy()
        down = run(traj, joint_block({k: -h * v for k, v in directions.items()}), dprop)
        vals = (up - down) / (2 * h)
        err = (4.0 * np.finfo(np.float64).eps * (traj.T + traj.H + traj.O) * (mag_up + dprop.magnitude)
               + 10.0 * EPS_FD * np.abs(up + down)) / (2 * h)
        kinks = kink_up | dprop.kink
    res = DirectionalResult("directional", directions, {JOINT: vals}, {JOINT: err},
                            method="tangent" if analytic else "fd")
    if not analytic:
        res.kinks = {JOINT: kinks}
    return res


def _split(arr: np.ndarray, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for k, n in sizes.items():
        out[k] = arr[at:at + n]
        at += n
    return out


def projections(grad: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """vᵀg for each of the k directions (k, *shape) and a gradient shaped like one direction."""
    return directions.reshape(len(directions), -1) @ np.asarray(grad, dtype=np.float64).reshape(-1)


def tolerance(grad: np.ndarray, tol: Tolerance, scale: float) -> float:
    """c·‖τ‖₂ with τ_i = atol·scale + rtol·|g_i|: what a gradient within the element-wise tolerance may show.
    For joint directions over several tensors: the root of the sum of the squares of theirs."""
    tau = allowed(grad, tol, scale)
    return CONFIDENCE * float(np.sqrt(np.sum(tau * tau)))


def balance(grads: dict[str, np.ndarray], tol: Tolerance, scales: dict[str, float]) -> dict[str, float]:
    """Weights w_p of each tensor's ±1 entries in a joint direction: w_p ∝ 1/‖τ_p‖₂, largest 1.

    With them every tensor's tolerance weighs the same in the joint tolerance c·(Σ_p w_p²‖τ_p‖²)^½,
    so a small tensor's error is not drowned by a large tensor's tolerance: an error e_p shows once
    ‖e_p‖ exceeds about c·√(number of tensors)·‖τ_p‖, against c·‖τ_p‖ with k directions per tensor.
    """
    norms = {k: tolerance(g, tol, scales[k]) for k, g in grads.items()}
    positive = [v for v in norms.values() if v > 0]
    if not positive:
        return {k: 1.0 for k in grads}
    least = min(positive)
    return {k: (least / v if v > 0 else 1.0) for k, v in norms.items()}


def joint_tolerance(grads: dict[str, np.ndarray], tol: Tolerance, scales: dict[str, float],
                    weights: dict[str, float]) -> float:
    return float(np.sqrt(sum((weights.get(k, 1.0) * tolerance(g, tol, scales[k])) ** 2 for k, g in grads.items())))


def joint_projections(grads: dict[str, np.ndarray], directions: dict[str, np.ndarray]) -> np.ndarray:
    """Σ over tensors of vᵀg: the projections of the whole gradient on joint directions."""
    total = np.zeros(len(next(iter(directions.values())))) if directions else np.zeros(0)
    for k, v in directions.items():
        total += projections(grads[k], v)
    return total


class DirectionalOracle:
    """k Rademacher directions, joint over all tensors (default) or k per tensor; the seed comes from
    the case, so a run is reproducible."""

    name = "directional"
    kind = "directional"

    def __init__(self, k: int = DEFAULT_DIRECTIONS, *, joint: bool = True) -> None:
        self.k = k
        self.joint = joint

    def directional(self, case: Case, names: list[str] | None = None,
                    weights: dict[str, float] | None = None) -> DirectionalResult:
        """``weights``: of each tensor's entries in joint directions (see :func:`balance`)."""
        traj = Trajectory.of(case)
        names = names if names is not None else traj.names()
        dirs = rademacher({n: traj.shape(n) for n in names}, self.k, (case.seed, case.index))
        if self.joint:
            weights = weights or {}
            dirs = {k: v * weights.get(k, 1.0) for k, v in dirs.items()}
            res = joint_derivatives(traj, dirs)
            res.weights = {k: weights.get(k, 1.0) for k in dirs}
        else:
            res = directional_derivatives(traj, dirs)
        flagged = [k for k, v in res.kinks.items() if v.any()]
        if flagged:
            res.notes.append("directions straddling a relu kink (not used): " + ", ".join(
                f"{k} ({int(res.kinks[k].sum())}/{len(res.kinks[k])})" for k in flagged))
        return res
