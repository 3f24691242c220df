"""The complex-step oracle: ∂L/∂θ_k = Im L(θ + iε e_k)/ε, ε = 1e-30, in float64 (DESIGN §5).

No subtraction, so no cancellation and no step to tune: machine precision for
analytic f, g and loss. It is computed as the equivalent forward-mode tangent
propagation (``batched.py``), which ran 1.5-12x faster than literal complex128
arithmetic while planning: with θ + iεv, every linear operation carries its
imaginary part exactly (Im(A(a + iεb)) = εAb), and every scalar function f
carries it as Im f(a + iεb) = ε f′(a) b + O(ε³), where O(ε³) = 0 in float64 at
ε = 1e-30. So the only derivatives the oracle needs are those of the scalar
functions (f, g and the per-step loss), and it takes those by complex step too,
on the base trajectory: no hand-written derivative formula is involved.

Two strategies, same numbers (``ComplexStepOracle(strategy=...)``, ``auto`` picks the cheaper):
``elements`` moves every element θ_k by iε, one batched copy each, exactly as defined;
``preactivations`` moves every pre-activation ĥ_s[b, i] by iε instead and maps those
derivatives onto θ through ĥ_s = x_s Wᵀ + h_{s-1} Uᵀ + b, which is linear in W, U, b, x
and h0, so the result is still Im L(θ + iε e_k)/ε for every k: T·H copies (each over the
rest of its window) instead of one per element, 1.6x fewer copy-steps at the large size.

``literal_complex_step`` is the definition, evaluated directly in complex128 one
element at a time through the one forward; the tests hold both strategies to it.

relu is not analytic: the complex step is not valid there, and the oracle falls
back to batched finite differences (``fd.py``), which flag the elements
whose ±step straddles a kink.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..model.forward import forward, objective, window_loss
from ..model.functions import act, step_loss
from . import generic
from .base import OracleResult
from .batched import BLOCK_FLOATS, Block, Trajectory, blas_threads, onehot_blocks, run
from .fd import FiniteDifferenceOracle

if TYPE_CHECKING:
    from ..model.cases import Case

EPS_CS = 1e-30
EPS_M = float(np.finfo(np.float64).eps)
ANALYTIC = ("tanh", "sigmoid", "identity")


# ----------------------------------------------------------------- the scalar functions, in complex

def _analytic(name: str) -> None:
    if name not in ANALYTIC:
        raise UsageError(f"activation {name!r} is not analytic: the complex step does not apply; "
                         "use finite differences (oracle 'fd')")


def act_prime(traj: Trajectory) -> np.ndarray:
    """f′(ĥ_t) for every step, by complex step on f: (T, B, H)."""
    def make() -> np.ndarray:
        if traj.spec.activation == "identity":
            return np.ones_like(traj.z)
        _analytic(traj.spec.activation)
        return act(traj.spec.activation, traj.z + 1j * EPS_CS).imag / EPS_CS
    return traj.memo("cs_fprime", make)


def loss_grad(traj: Trajectory) -> np.ndarray:
    """scale · ∂E_t/∂ŷ_t for every step, by complex step on the loss, one output unit at a time: (T, B, O)."""
    def make() -> np.ndarray:
        spec, yhat = traj.spec, traj.yhat
        target = traj.y
        if spec.mode == "many-to-one":   # the same target at every step (only T-1 is a loss step)
            target = np.broadcast_to(traj.y, (traj.T, *np.shape(traj.y)))
        if spec.loss != "cross_entropy":
            target = np.asarray(target, dtype=np.float64)
        out = np.empty_like(yhat)
        for o in range(yhat.shape[-1]):
            moved = yhat.astype(np.complex128)
            moved[..., o] += 1j * EPS_CS
            out[..., o] = step_loss(spec, moved, target).imag / EPS_CS
        return traj.scale * out
    return traj.memo("cs_loss_grad", make)


# ----------------------------------------------------------------- the tangent propagation

class TangentPropagation:
    """Copies carry Im(·)/ε: dh_t = f′(ĥ_t) ⊙ dĥ_t, dL += ⟨scale ∂E_t/∂ŷ_t, dŷ_t⟩."""

    linear = True

    def __init__(self, traj: Trajectory) -> None:
        _analytic(traj.spec.activation)
        self.fprime = act_prime(traj)
        self.gy = loss_grad(traj)
        self.magnitude = np.zeros(0)

    def begin(self, block: Block) -> None:
        # Σ |terms| of every copy's sum: the conditioning of its result, for the error estimate
        self.magnitude = np.zeros(block.K)

    def hidden(self, traj, t, sel, dz, block):
        dz *= sel(self.fprime[t])
        return dz

    def loss(self, traj, t, sel, dyhat, block):
        gy = sel(self.gy[t])
        K = dyhat.shape[0]
        if block.rows is None:
            flat = gy.reshape(-1)
            self.magnitude += np.abs(dyhat.reshape(K, -1)) @ np.abs(flat)
            return dyhat.reshape(K, -1) @ flat
        prod = dyhat * gy
        self.magnitude += np.abs(prod).sum(axis=(1, 2))
        return prod.sum(axis=(1, 2))


def error_estimate(traj: Trajectory, magnitude: np.ndarray) -> np.ndarray:
    """Rounding of a tangent result: a few ulps per step and per term of the sums, times their magnitude."""
    return 4.0 * EPS_M * (traj.T + traj.H + traj.O) * magnitude


def tangent_values(traj: Trajectory, name: str, index: np.ndarray, *, block_floats: int = BLOCK_FLOATS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """∂L/∂name at the flat ``index`` (x: in increasing order) and the error estimates."""
    if generic.needed(traj.spec):     # beyond the vanilla engine: the one forward on complex copies
        ev = generic.Evaluator(traj)
        if generic.method_for(traj.spec) == "complex":
            try:
                return generic.element_values(ev, name, np.asarray(index), "complex")
            except generic.NotAnalytic:
                pass
        return generic.element_values(ev, name, np.asarray(index), "fd")
    n = len(index)
    grad = np.empty(n)
    err = np.empty(n)
    prop = TangentPropagation(traj)
    at = 0
    for block in onehot_blocks(traj, name, np.asarray(index), np.ones(n), block_floats):
        k = block.K
        grad[at:at + k] = run(traj, block, prop)
        err[at:at + k] = error_estimate(traj, prop.magnitude)
        at += k
    return grad, err


def tangent_gradient(traj: Trajectory, name: str, *, block_floats: int = BLOCK_FLOATS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """∂L/∂name element-wise and its error estimate, both shaped like the tensor."""
    shape = traj.shape(name)
    grad, err = tangent_values(traj, name, np.arange(int(np.prod(shape))), block_floats=block_floats)
    return grad.reshape(shape), err.reshape(shape)


# ----------------------------------------------------------------- by pre-activation

def preactivation_gradients(traj: Trajectory, names: Iterable[str], *, block_floats: int = BLOCK_FLOATS
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every gradient from complex-step derivatives with respect to the pre-activations.

    λ_s[b, i] = ∂L/∂ĥ_s[b, i] = Im L(ĥ_s[b, i] + iε)/ε, per window: one tangent copy per (step s, unit i),
    started at s with e_i in every batch row (rows do not interact, so each row's share is that row's
    λ) and propagated to the window's last loss. θ enters ĥ_s linearly (ĥ_s = x_s Wᵀ + h_{s-1} Uᵀ + b),
    so Im L(θ + iε e_k)/ε = Σ_s ⟨λ_s, ∂ĥ_s/∂θ_k⟩ exactly: dW = Σ λ_sᵀ x_s, dU = Σ λ_sᵀ h_{s-1},
    db = Σ λ_s, dx_s = λ_s W, dh0 = λ_0 U (windows starting at 0); V and c enter only the output, whose
    derivative ∂E_t/∂ŷ_t is taken by complex step as well. Cost Σ_windows Σ_s (last − s + 1)·H copy-steps
    instead of (number of elements)·(window length): fewer whenever the sequence is shorter than about
    twice the number of input weights per hidden unit (I + H + 1).
    """
    names = list(names)
    fp, gy = act_prime(traj), loss_grad(traj)
    p = traj.params
    UT, VT = p["U"].T, p["V"].T
    B, H = traj.B, traj.H
    grads = {k: np.zeros(traj.shape(k)) for k in names}
    mags = {k: np.zeros(traj.shape(k)) for k in names}
    ones = np.arange(H)
    per = max(1, block_floats // (B * H * H))        # steps s per block (H copies each)
    with blas_threads():
        for w in traj.windows:
            losses = set(w.losses)
            last = max(w.losses)
            n = last - w.start + 1
            lam = np.zeros((n, B, H))
            mag = np.zeros((n, B, H))
            for s0 in range(w.start, last + 1, per):
                s1 = min(last + 1, s0 + per)
                K = (s1 - s0) * H
                acc, acc_mag = np.zeros((K, B)), np.zeros((K, B))
                dh = np.zeros((K, B, H))
                for t in range(s0, last + 1):
                    before = min(K, (t - s0) * H)       # copies started before t: the others are still 0
                    now = min(K, before + H) if t < s1 else K
                    dz = np.zeros((now, B, H))
                    if before:
                        dz[:before] = (dh[:before].reshape(-1, H) @ UT).reshape(before, B, H)
                    if t < s1:                         # the copies of step t start here: e_i in every row
                        dz[before + ones, :, ones] += 1.0
                    dz *= fp[t][None]
                    dh = dz
                    if t in losses:
                        dy = (dh.reshape(-1, H) @ VT).reshape(now, B, -1)
                        acc[:now] += (dy * gy[t][None]).sum(axis=-1)
                        acc_mag[:now] += (np.abs(dy) * np.abs(gy[t][None])).sum(axis=-1)
                lam[s0 - w.start:s1 - w.start] = acc.reshape(s1 - s0, H, B).transpose(0, 2, 1)
                mag[s0 - w.start:s1 - w.start] = acc_mag.reshape(s1 - s0, H, B).transpose(0, 2, 1)
            _assemble(traj, w, lam, grads, names)
            _assemble(traj, w, error_estimate(traj, mag), mags, names, absolute=True)
    # the output layer: ŷ_t = h_t Vᵀ + c at every loss step of every window
    for w in traj.windows:
        for t in w.losses:
            if "V" in grads:
                grads["V"] += gy[t].T @ traj.h[t + 1]
                mags["V"] += np.abs(gy[t]).T @ np.abs(traj.h[t + 1])
            if "c" in grads:
                grads["c"] += gy[t].sum(axis=0)
                mags["c"] += np.abs(gy[t]).sum(axis=0)
    errors = {}
    for k in names:
        errors[k] = mags[k] if k not in ("V", "c") else error_estimate(traj, mags[k])
    return grads, errors


def _assemble(traj: Trajectory, w: Any, lam: np.ndarray, out: dict[str, np.ndarray], names: list[str],
              absolute: bool = False) -> None:
    """Add Σ_s ⟨λ_s, ∂ĥ_s/∂θ⟩ of one window (steps w.start .. last) to the gradients named."""
    n = lam.shape[0]
    S = slice(w.start, w.start + n)
    p = traj.params

    def a(v: np.ndarray) -> np.ndarray:
        return np.abs(v) if absolute else v

    if "W" in out:
        out["W"] += np.einsum("sbi,sbj->ij", lam, a(traj.x[S]))
    if "U" in out:
        out["U"] += np.einsum("sbi,sbj->ij", lam, a(traj.h[S]))     # h[s] is the state entering step s
    if "b" in out:
        out["b"] += lam.sum(axis=(0, 1))
    if "x" in out:
        out["x"][S] += lam @ a(p["W"])
    if "h0" in out and w.start == 0:
        out["h0"] += lam[0] @ a(p["U"])


def _costs(traj: Trajectory, names: Iterable[str]) -> tuple[float, float]:
    """Copy-steps (each one row-block of B·H numbers through one step) of the two strategies."""
    B, H = traj.B, traj.H
    per_element = 0.0
    by_preactivation = 0.0
    for w in traj.windows:
        n = max(w.losses) - w.start + 1
        by_preactivation += H * n * (n + 1) / 2
        for k in names:
            if k in ("W", "U", "b"):
                per_element += int(np.prod(traj.shape(k))) * n
            elif k == "h0" and w.start == 0:
                per_element += int(np.prod(traj.shape(k))) * n / B
            elif k == "x":
                per_element += traj.x.shape[2] * n * (n + 1) / 2
    return per_element, by_preactivation


STRATEGIES = ("auto", "elements", "preactivations")


class ComplexStepOracle:
    """Complex-step gradients of every parameter, h0 and x, element-wise (relu: finite differences).

    ``strategy``: ``elements`` moves every element of θ by iε (one copy each); ``preactivations`` moves
    every pre-activation ĥ_s by iε and maps those derivatives onto θ through ĥ_s's linear dependence on
    it (see :func:`preactivation_gradients`); ``auto`` picks the one with fewer copy-steps. Both give
    Im L(θ + iε e_k)/ε for every element; the tests hold both to the literal complex step.
    """

    name = "complex-step"

    def __init__(self, *, wrt: Iterable[str] | None = None, block_floats: int = BLOCK_FLOATS,
                 strategy: str = "auto") -> None:
        if strategy not in STRATEGIES:
            raise UsageError(f"unknown complex-step strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        self.wrt = tuple(wrt) if wrt is not None else None
        self.block_floats = block_floats
        self.strategy = strategy

    def gradients(self, case: Case) -> OracleResult:
        if case.spec.activation not in ANALYTIC:
            res = FiniteDifferenceOracle(wrt=self.wrt, block_floats=self.block_floats).gradients(case)
            res.name = self.name
            res.method = "fd"
            res.notes.insert(0, f"activation {case.spec.activation} is not analytic: the complex step is not "
                                "valid, this is the batched finite-difference oracle instead")
            return res
        if generic.needed(case.spec):     # beyond the vanilla engine: the one forward on complex copies
            try:
                grads, errors, loss = generic.gradients(case, self.wrt, "complex")
            except generic.NotAnalytic as why:
                grads, errors, loss = generic.gradients(case, self.wrt, "fd")
                return OracleResult(self.name, grads, errors, loss, method="fd",
                                    notes=[generic.NOT_ANALYTIC.format(why=why)])
            return OracleResult(self.name, grads, errors, loss, method="complex",
                                notes=[f"the {case.spec.cell} cell's forward in complex128, copies batched"])
        traj = Trajectory.of(case)
        names = [k for k in traj.names() if self.wrt is None or k in self.wrt]
        strategy = self.strategy
        if strategy == "auto":
            per_element, by_preactivation = _costs(traj, names)
            strategy = "preactivations" if by_preactivation < per_element else "elements"
        if strategy == "preactivations":
            grads, errors = preactivation_gradients(traj, names, block_floats=self.block_floats)
        else:
            grads, errors = {}, {}
            for name in names:
                grads[name], errors[name] = tangent_gradient(traj, name, block_floats=self.block_floats)
        loss = window_loss(traj.params, traj.x, traj.y, traj.spec, traj.windows, traj.h, traj.weights)
        res = OracleResult(self.name, grads, errors, loss, method="tangent")
        res.notes.append(f"by {strategy}")
        return res


# ----------------------------------------------------------------- the definition, literally

def literal_complex_step(case: Case, *, names: Iterable[str] | None = None, eps: float = EPS_CS
                         ) -> dict[str, np.ndarray]:
    """Im L(θ + iε e_k)/ε in complex128, one element at a time, through the one forward (``objective``
    on complex numpy arrays): slow and plain, the reference for the tests."""
    spec = case.spec
    params = {k: np.array(v, dtype=np.complex128) for k, v in case.params.items()}
    x = np.array(case.x, dtype=np.complex128)
    windows = case.windows
    weights = None if case.lengths is None else case.weights
    # a window starting after 0 starts from a constant: the real forward's entering state
    states = forward({k: v.real for k, v in params.items()}, x.real, spec).states
    y = np.asarray(case.y)

    def entering(s: int) -> tuple[np.ndarray, ...]:
        return tuple(part[s].astype(np.complex128) for part in states)

    out = {}
    for name in [*params, "x"]:
        if names is not None and name not in names:
            continue
        arr = x if name == "x" else params[name]
        g = np.zeros(arr.shape)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            flat[i] += 1j * eps
            gflat[i] = complex(objective(params, x, y, spec, windows, entering, weights=weights)).imag / eps
            flat[i] -= 1j * eps
        out[name] = g
    return out
