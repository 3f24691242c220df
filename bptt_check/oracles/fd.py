"""Batched central finite differences of the same (truncated) objective (DESIGN §5).

    ∂L/∂θ_k ≈ (L(θ + h_k e_k) − L(θ − h_k e_k)) / (2 h_k),   h_k = ε · max(1, |θ_k|)

All ±h copies run as one batched forward in memory-bounded blocks (``batched.py``).
Each copy carries its exact *difference* from the unperturbed trajectory, not its
own state: δh_t = f(ĥ_t + δĥ_t) − f(ĥ_t) by a cancellation-free formula per f
(tanh: tanh(d)·sech²(a)/(1 + tanh(a)·tanh(d))), and the loss changes by
E(ŷ + δŷ) − E(ŷ) (half_mse: δy·(y − Y + δy/2); softmax and cross-entropy through
expm1/log1p). So the rounding of L(θ ± h) − L(θ) is relative to the difference
itself, not to L: it does not grow as the step shrinks, and the central difference
is limited by its truncation error h²·L‴/6 only, so the step can be small: ε = 1e-9
(summing each copy's loss and subtracting lost 3e-8 at the large size while planning;
carrying differences, the benchmark measures ~5e-15 against autograd at every size).
A smaller step also straddles fewer relu kinks.

Error estimate per element, used by the comparisons as the oracle's own error:
rounding (a few ulps per step of the magnitude of the summed changes) plus
truncation, estimated from the second difference S = L(θ+h) + L(θ−h) − 2L(θ) ≈ h²L″
as 10·ε·|S|/(2h) (L‴ up to 30·L″ per unit of θ), plus 100·h²·max|D| where the curvature
vanishes (about 1e-16 of the gradient's scale at ε = 1e-9); with Richardson extrapolation
(``richardson=True``: ±2h copies too, twice the cost) the estimate is measured,
|D(h) − D(2h)|/3, and the result is (4D(h) − D(2h))/3.

relu: an element whose ±h copies move some ĥ_t across 0 (a kink) is flagged in
``OracleResult.kinks``: the difference quotient there mixes two linear pieces and
proves nothing about the derivative.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..model.forward import window_loss
from ..model.functions import output, softmax
from ..model.kinks import EPS_FD, fd_step
from . import generic
from .base import OracleResult
from .batched import BLOCK_FLOATS, Block, Trajectory, onehot_blocks, run

if TYPE_CHECKING:
    from ..model.cases import Case

# EPS_FD (model/kinks.py, where the kinks read it too): the relative step; rounding does not grow as
# it shrinks (differences are carried exactly)
EPS_M = float(np.finfo(np.float64).eps)


def _sech2(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(a) ** 2


def _smooth_aux(name: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """What the difference formula of f needs at the base point a: (tanh, sech²) of a or a/2."""
    if name == "tanh":
        return np.tanh(a), _sech2(a)
    if name == "sigmoid":
        return np.tanh(0.5 * a), _sech2(0.5 * a)
    return None


def _tanh_small(d: np.ndarray) -> np.ndarray:
    """tanh(d), by its series where |d| < 1e-3 (the next term is 2e-20 of the value there), which is
    most of a finite-difference copy's differences: several times cheaper than np.tanh."""
    d2 = d * d
    out = d2 * (-17.0 / 315.0)
    out += 2.0 / 15.0
    out *= d2
    out -= 1.0 / 3.0
    out *= d2
    out += 1.0
    out *= d
    if d.size and (d.max() >= 1e-3 or d.min() <= -1e-3):
        big = np.abs(d) >= 1e-3
        out[big] = np.tanh(d[big])
    return out


def _delta_smooth(name: str, th0: np.ndarray, s2: np.ndarray, d: np.ndarray) -> np.ndarray:
    """f(a + d) − f(a) for tanh, sigmoid (through tanh(a/2)), identity, without cancellation."""
    if name == "identity":
        return d
    td = _tanh_small(d if name == "tanh" else 0.5 * d)
    den = th0 * td
    den += 1.0
    td *= s2
    td /= den
    return td if name == "tanh" else 0.5 * td


class DeltaPropagation:
    """Copies carry exact finite changes; the loss change is accumulated step by step."""

    linear = False

    def __init__(self, traj: Trajectory) -> None:
        spec = traj.spec
        self.act = spec.activation
        self.hid = traj.memo("fd_hidden", lambda: _smooth_aux(self.act, traj.z))
        self.out = traj.memo("fd_output", lambda: _output_aux(traj))
        self.kink = np.zeros(0, dtype=bool)
        self.magnitude = np.zeros(0)

    def begin(self, block: Block) -> None:
        self.kink = np.zeros(block.K, dtype=bool)
        self.magnitude = np.zeros(block.K)

    def hidden(self, traj, t, sel, dz, block):
        if self.act == "relu":
            a = sel(traj.z[t])
            moved = a + dz
            up, up_moved = a > 0, moved > 0
            self.kink[:dz.shape[0]] |= (up != up_moved).reshape(dz.shape[0], -1).any(axis=1)
            return np.where(up, np.where(up_moved, dz, -a), np.where(up_moved, moved, 0.0))
        if self.hid is None:        # identity
            return dz
        th0, s2 = self.hid
        return _delta_smooth(self.act, sel(th0[t]), sel(s2[t]), dz)

    def loss(self, traj, t, sel, dyhat, block):
        spec = traj.spec
        aux = self.out
        if spec.loss == "cross_entropy":
            p = sel(aux["p"][t])
            e = np.expm1(dyhat)
            m = (p * e).sum(axis=-1)
            tgt = aux["target"][t]
            idx = tgt[None, :] if block.rows is None else tgt[block.rows][:, None]
            idx = np.broadcast_to(idx, dyhat.shape[:-1])
            picked = np.take_along_axis(dyhat, idx[..., None], axis=-1)[..., 0]
            per = np.log1p(m) - picked
        else:
            if spec.output == "softmax":
                p = sel(aux["p"][t])
                e = np.expm1(dyhat)
                m = (p * e).sum(axis=-1, keepdims=True)
                dy = p * (e - m) / (1.0 + m)
            elif spec.output == "identity":
                dy = dyhat
            else:
                th0, s2 = aux["g"]
                dy = _delta_smooth(spec.output, sel(th0[t]), sel(s2[t]), dyhat)
            per = (dy * (sel(aux["resid"][t]) + 0.5 * dy)).sum(axis=-1)
            if spec.loss == "sse":
                per = 2.0 * per
        per = traj.scale * per
        self.magnitude += np.abs(per).sum(axis=1)
        return per.sum(axis=1)


def _output_aux(traj: Trajectory) -> dict[str, np.ndarray]:
    spec = traj.spec
    aux: dict[str, np.ndarray] = {}
    yhat = traj.yhat
    target = traj.y
    if spec.mode == "many-to-one":
        target = np.broadcast_to(traj.y, (traj.T, *np.shape(traj.y)))
    if spec.loss == "cross_entropy" or spec.output == "softmax":
        aux["p"] = softmax(yhat)
    if spec.loss == "cross_entropy":
        aux["target"] = np.asarray(target, dtype=np.int64)
        return aux
    if spec.output in ("tanh", "sigmoid"):
        aux["g"] = _smooth_aux(spec.output, yhat)
    aux["resid"] = output(spec.output, yhat) - target
    return aux


def finite_changes(traj: Trajectory, name: str, index: np.ndarray, step: np.ndarray, *,
                   block_floats: int = BLOCK_FLOATS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L(θ + step_k e_index_k) − L(θ) for every copy, with the magnitude of its sum and its kink flag."""
    n = len(index)
    change, magnitude, kink = np.empty(n), np.empty(n), np.zeros(n, dtype=bool)
    prop = DeltaPropagation(traj)
    at = 0
    for block in onehot_blocks(traj, name, index, step, block_floats):
        k = block.K
        change[at:at + k] = run(traj, block, prop)
        magnitude[at:at + k] = prop.magnitude
        kink[at:at + k] = prop.kink
        at += k
    return change, magnitude, kink


def fd_values(traj: Trajectory, name: str, index: np.ndarray, *, eps: float = EPS_FD, richardson: bool = False,
              block_floats: int = BLOCK_FLOATS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences at the flat ``index`` (x: in increasing order): (values, error estimates, kinks)."""
    if generic.needed(traj.spec):     # beyond the vanilla engine: the one forward on perturbed copies
        values, errors = generic.element_values(generic.Evaluator(traj), name, np.asarray(index), "fd")
        return values, errors, np.zeros(len(values), dtype=bool)
    index = np.asarray(index)
    theta = (traj.x if name == "x" else traj.params[name]).reshape(-1)[index]
    n = theta.size
    h = fd_step(theta, eps)
    signs = np.array([1.0, -1.0, 2.0, -2.0] if richardson else [1.0, -1.0])
    m = len(signs)
    # copies interleaved per element (+h, -h, ...), so x copies stay in time order
    index = np.repeat(index, m)
    step = (h[:, None] * signs[None, :]).reshape(-1)
    change, magnitude, kink = finite_changes(traj, name, index, step, block_floats=block_floats)
    change, magnitude, kink = change.reshape(n, m), magnitude.reshape(n, m), kink.reshape(n, m)
    d1 = (change[:, 0] - change[:, 1]) / (2 * h)
    rounding = 4.0 * EPS_M * (traj.T + traj.H + traj.O) * magnitude.sum(axis=1) / h
    if richardson:
        d2 = (change[:, 2] - change[:, 3]) / (4 * h)
        grad = (4.0 * d1 - d2) / 3.0
        truncation = np.abs(d1 - d2) / 3.0
    else:
        grad = d1
        # h²·L‴/6, with L‴ taken as up to 30·L″ per unit of θ (from the second difference), and at least
        # 600·max|L′| per unit of θ cubed (where the curvature vanishes)
        truncation = (10.0 * eps * np.abs(change[:, 0] + change[:, 1]) / (2 * h)
                      + 100.0 * h ** 2 * np.max(np.abs(d1), initial=0.0))
    return grad, rounding + truncation, kink.any(axis=1)


def fd_gradient(traj: Trajectory, name: str, *, eps: float = EPS_FD, richardson: bool = False,
                block_floats: int = BLOCK_FLOATS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences of ``name`` element-wise: (gradient, error estimate, kink flags), tensor-shaped."""
    shape = traj.shape(name)
    vals = fd_values(traj, name, np.arange(int(np.prod(shape))), eps=eps, richardson=richardson,
                     block_floats=block_floats)
    return tuple(v.reshape(shape) for v in vals)  # type: ignore[return-value]


class FiniteDifferenceOracle:
    """Element-wise batched central differences of every parameter, h0 and x."""

    name = "fd"

    def __init__(self, eps: float = EPS_FD, *, richardson: bool = False, wrt: Iterable[str] | None = None,
                 block_floats: int = BLOCK_FLOATS) -> None:
        self.eps = eps
        self.richardson = richardson
        self.wrt = tuple(wrt) if wrt is not None else None
        self.block_floats = block_floats

    def gradients(self, case: Case) -> OracleResult:
        if generic.needed(case.spec):     # beyond the vanilla engine: the one forward on perturbed copies
            grads, errors, loss = generic.gradients(case, self.wrt, "fd")
            return OracleResult(self.name, grads, errors, loss, method="fd",
                                notes=[f"the {case.spec.cell} cell's forward on perturbed copies, central "
                                       f"differences with a relative step of {generic.EPS_FD:g}"])
        traj = Trajectory.of(case)
        grads, errors, kinks = {}, {}, {}
        for name in traj.names():
            if self.wrt is not None and name not in self.wrt:
                continue
            grads[name], errors[name], kinks[name] = fd_gradient(
                traj, name, eps=self.eps, richardson=self.richardson, block_floats=self.block_floats)
        loss = window_loss(traj.params, traj.x, traj.y, traj.spec, traj.windows, traj.h, traj.weights)
        res = OracleResult(self.name, grads, errors, loss, method="fd+richardson" if self.richardson else "fd")
        flagged = {k: v for k, v in kinks.items() if v.any()}
        if flagged:
            res.kinks = flagged
            res.notes.append("±step straddles a relu kink at " + ", ".join(
                f"{k} ({int(v.sum())}/{v.size})" for k, v in flagged.items()) + ": not differentiable there "
                "as far as finite differences can tell")
        return res
