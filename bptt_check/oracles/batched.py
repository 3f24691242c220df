"""The batched engine under the complex-step, finite-difference and directional oracles (DESIGN §5).

Many copies of the model, each moved away from the base parameters along its own
direction, are run together as one batched forward, in memory-bounded blocks. No
copy is ever formed as "base + perturbation": every copy carries only its
*difference* from the unperturbed trajectory, which the base trajectory (computed
once) turns into the copy's change of loss. Two ways to carry it:

``tangent``  the derivative along the direction (forward-mode tangent propagation;
             with the derivatives of the scalar functions taken by complex step, it
             is Im L(θ + iεv)/ε exactly, see ``complex_step.py``):
                 dĥ_t = x_t dWᵀ + dx_t Wᵀ + dh_{t-1} Uᵀ + h_{t-1} dUᵀ + db
                 dh_t = f′(ĥ_t) ⊙ dĥ_t,     dŷ_t = dh_t Vᵀ + h_t dVᵀ + dc
                 dL  += ⟨∂E_t/∂ŷ_t, dŷ_t⟩
``delta``    the exact finite change L(θ + δ) − L(θ) (see ``batched_fd.py``):
                 δĥ_t = x_t δWᵀ + δx_t Wᵀ + δh_{t-1} Uᵀ + (h_{t-1} + δh_{t-1}) δUᵀ + δb
                 δh_t = f(ĥ_t + δĥ_t) − f(ĥ_t)  (a cancellation-free formula per f)
                 δŷ_t = δh_t Vᵀ + (h_t + δh_t) δVᵀ + δc,   δL += E_t(ŷ_t + δŷ_t) − E_t(ŷ_t)

The shared matmul with the base U plus a per-copy correction is exact: each copy
differs from the base in its own direction only. Truncation applies exactly as in
the other oracles: every window restarts the copy's difference at zero from the
(constant) base state entering it, except a window starting at 0, where h0's
perturbation enters.

A block is a list of groups; a group is a slice of copies that perturb one tensor,
either one element each (``index``, ``step``) or densely (``dense``: one array per
copy, as for random directions). One-hot h0 and x copies touch one batch row only;
such a block is *row-local*: its copies carry a (1, H) difference instead of (B, H).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.functions import loss_scale, loss_weights, step_loss
from ..model.memo import forward_of
from ..model.names import OUTPUT_LAYER, ordered
from ..model.spec import Shaped

if TYPE_CHECKING:
    from ..model.cases import Case
    from ..model.spec import Spec, Window

# the extra memory of one block stays near this many float64 numbers per work array: 1 MiB, 128
# copies of B=8, H=128 (DESIGN §5 planned 512; on the 2-core machine 128 was as fast for the
# matmuls and faster for the element-wise passes of finite differences, which then stay in cache)
BLOCK_FLOATS = 2**17
# dense tangent runs (directions: a few copies over many steps) take their direct terms for this many
# numbers at a time, in one buffer: 1 MiB, 32 steps of 4 copies at B=8, H=128 (long matmuls; fresh memory
# is slow to touch, so the buffer is reused from one run of steps to the next)
DENSE_FLOATS = 2**17


# BLAS threads inside the engine: 1 unless BPTT_CHECK_THREADS says otherwise. Measured on the shared
# 2-core machine, a multi-threaded OpenBLAS matmul of a (224, 128) block took 16 ms against 0.46 ms
# single-threaded when the other core was busy; pytest-xdist workers oversubscribe cores the same way.
_CONTROLLER: Any = None


def blas_threads() -> contextlib.AbstractContextManager[Any]:
    """A context limiting numpy's BLAS to ``BPTT_CHECK_THREADS`` threads (default 1), if threadpoolctl is there."""
    global _CONTROLLER
    try:
        n = int(os.environ.get("BPTT_CHECK_THREADS", "1"))
    except ValueError:
        n = 1
    if n <= 0:
        return contextlib.nullcontext()
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER.limit(limits=n, user_api="blas")
    except Exception:   # threadpoolctl missing or unable to see the BLAS: run as configured
        return contextlib.nullcontext()


# ----------------------------------------------------------------- the base trajectory

@dataclass
class Trajectory(Shaped):
    """The unperturbed forward of a case in float64, shared by every copy."""

    spec: Spec
    params: dict[str, np.ndarray]
    x: np.ndarray                 # (T, B, I)
    y: np.ndarray                 # targets as in the case
    h: np.ndarray                 # (T+1, B, H): h[0] = h0, h[t+1] = h_t
    z: np.ndarray                 # (T, B, H) pre-activations ĥ_t
    yhat: np.ndarray              # (T, B, O)
    windows: list[Window]
    scale: float                  # the weight of one sample's loss at one step
    cache: dict[str, Any] = field(default_factory=dict)
    lengths: np.ndarray | None = None   # a padded batch (only the generic engine computes those)

    @classmethod
    def of(cls, case: Case) -> Trajectory:
        spec = case.spec
        params = {k: np.array(v, dtype=np.float64) for k, v in case.params.items()}
        x = np.array(case.x, dtype=np.float64)
        y = np.array(case.y) if spec.loss == "cross_entropy" else np.array(case.y, dtype=np.float64)
        tr = forward_of(params, x, spec)       # drawing the case ran it already (for its coverage)
        T, B, _ = x.shape
        lengths = getattr(case, "lengths", None)
        return cls(spec, params, x, y, tr.h, tr.hhat, tr.yhat, spec.windows(T, lengths), loss_scale(spec, T, B),
                   lengths=lengths)

    def names(self) -> list[str]:
        return ordered([*self.params, "x"])

    @property
    def weights(self) -> np.ndarray | None:
        """Each sample's loss weight per step (T, B) for a padded batch; None: ``scale`` everywhere."""
        return None if self.lengths is None else loss_weights(self.spec, self.T, self.B, self.lengths)

    def target(self, t: int) -> np.ndarray:
        return self.y if self.spec.mode == "many-to-one" else self.y[t]

    def loss(self) -> float:
        """The truncated objective at the base parameters. A window restarted from the base state entering
        it repeats the base trajectory exactly, so this is Σ_windows Σ_{t∈L} scale·E_t of the base outputs."""
        counts = np.zeros(self.T)
        for w in self.windows:
            counts[list(w.losses)] += 1
        steps = np.nonzero(counts)[0]
        target = self.y if self.spec.mode == "many-to-one" else self.y[steps]
        e = step_loss(self.spec, self.yhat[steps], target)                        # (steps, B)
        weights = self.weights
        per_step = self.scale * e.sum(axis=-1) if weights is None else (e * weights[steps]).sum(axis=-1)
        return float(np.sum(counts[steps] * per_step))

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


# ----------------------------------------------------------------- directions

STATE_FREE = OUTPUT_LAYER   # tensors of the output layer: their copies carry no state difference


@dataclass
class Group:
    """Copies ``start:stop`` of a block, all perturbing the tensor ``name``."""

    name: str
    start: int
    stop: int
    index: np.ndarray | None = None   # one-hot: flat index into the tensor, per copy
    step: np.ndarray | None = None    # one-hot: the signed step, per copy
    dense: np.ndarray | None = None   # dense: (copies, *shape)

    def __post_init__(self) -> None:
        self.sl = slice(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Block:
    """Copies run together. Groups may overlap (a joint direction moves several tensors at once);
    copies past ``K_state`` belong to output-layer groups only and carry no state difference."""

    groups: list[Group]
    rows: np.ndarray | None = None    # row-local block: the batch row of every copy

    def __post_init__(self) -> None:
        self.K = max((g.stop for g in self.groups), default=0)
        self.K_state = max((g.stop for g in self.groups if g.name not in STATE_FREE), default=0)


def onehot_blocks(traj: Trajectory, name: str, index: np.ndarray, step: np.ndarray,
                  block_floats: int = BLOCK_FLOATS) -> Iterator[Block]:
    """Blocks of one-hot copies of ``name``, each holding about ``block_floats`` numbers per array."""
    row_local = name in ("h0", "x")
    width = (1 if row_local else traj.B) * max(traj.H, traj.O)
    per = max(1, block_floats // max(width, 1))
    # x copies should come in flat (time-major) order: a block then starts late, at its first step
    for lo in range(0, len(index), per):
        idx, st = index[lo:lo + per], step[lo:lo + per]
        rows = None
        if name == "h0":
            rows = idx // traj.H
        elif name == "x":
            rows = (idx // traj.x.shape[2]) % traj.B
        yield Block([Group(name, 0, len(idx), index=idx, step=st)], rows=rows)


def dense_block(directions: dict[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> Block:
    """One block of dense copies, one group per (name, (k, *shape)) item (a name may repeat), in order.
    Put the output layer's items last: their copies then skip the state propagation."""
    items = list(directions.items() if isinstance(directions, dict) else directions)
    groups, at = [], 0
    for name, v in items:
        groups.append(Group(name, at, at + len(v), dense=np.asarray(v, dtype=np.float64)))
        at += len(v)
    return Block(groups)


def joint_block(directions: dict[str, np.ndarray]) -> Block:
    """k copies, each moving every tensor at once along its part of one joint direction."""
    return Block([Group(name, 0, len(v), dense=np.asarray(v, dtype=np.float64))
                  for name, v in directions.items()])


# ----------------------------------------------------------------- the propagation

class Propagation:
    """How one kind of copy (tangent or finite change) moves through f, the output and the loss."""

    linear: bool   # tangent: the difference enters the U and V terms without its own products

    def begin(self, block: Block) -> None: ...

    def hidden(self, traj: Trajectory, t: int, sel: Callable[[np.ndarray], np.ndarray], dz: np.ndarray,
               block: Block) -> np.ndarray: ...

    def loss(self, traj: Trajectory, t: int, sel: Callable[[np.ndarray], np.ndarray], dyhat: np.ndarray,
             block: Block) -> np.ndarray: ...

    def maps(self) -> tuple[np.ndarray, np.ndarray] | None:
        """A linear propagation that is a fixed map: (f′(ĥ_t) (T, B, H), ∂(scale·E_t)/∂ŷ_t (T, B, O));
        with them dense blocks run vectorized over time (:func:`_run_dense`). None: step by step only."""
        return None


def run(traj: Trajectory, block: Block, prop: Propagation) -> np.ndarray:
    """The change of the (truncated) loss of every copy in ``block``: an array (K,)."""
    with blas_threads():
        return _run(traj, block, prop)


def _run(traj: Trajectory, block: Block, prop: Propagation) -> np.ndarray:
    K, KS = block.K, block.K_state
    out = np.zeros(K)
    prop.begin(block)
    if K == 0:
        return out
    maps = prop.maps() if prop.linear else None
    if maps is not None and block.rows is None and all(g.dense is not None for g in block.groups):
        return _run_dense(traj, block, prop, *maps)
    p = traj.params
    UT, VT, WT = p["U"].T, p["V"].T, p["W"].T
    O = traj.O
    rows = block.rows
    if rows is None:
        def sel(a: np.ndarray) -> np.ndarray:
            return a[None]
    else:
        def sel(a: np.ndarray) -> np.ndarray:
            return a[rows][:, None, :]
    x_steps = _x_schedule(traj, block)
    terms = _DenseTerms(traj, block, WT) if prop.linear else None
    for w in traj.windows:
        losses = set(w.losses)
        last = max(w.losses)
        first = _first_step(block, w.start, last, x_steps)
        if first is None:
            continue
        dh = _initial(traj, block, w.start)
        for t in range(first, last + 1):
            dz = None
            if dh is not None:
                dz = (dh.reshape(-1, dh.shape[-1]) @ UT).reshape(dh.shape)
            if KS:
                dz = _inject_hidden(traj, block, t, dz, dh, prop.linear, x_steps, WT, terms, last)
            dh = None if dz is None else prop.hidden(traj, t, sel, dz, block)
            if t in losses:
                dyhat = None
                if dh is not None:
                    dy = (dh.reshape(-1, dh.shape[-1]) @ VT).reshape(dh.shape[:-1] + (O,))
                    if KS == K:
                        dyhat = dy
                    else:
                        dyhat = np.zeros((K, *dy.shape[1:]))
                        dyhat[:KS] = dy
                dyhat = _inject_output(traj, block, t, dyhat, dh, prop.linear)
                if dyhat is not None:
                    out += prop.loss(traj, t, sel, dyhat, block)
    return out


class _DenseTerms:
    """The direct terms x_t dWᵀ + h_{t-1} dUᵀ + db + dx_t Wᵀ of the dense groups, for a run of steps at a
    time (tangents only: they do not depend on the copies' state), as a few large matmuls."""

    def __init__(self, traj: Trajectory, block: Block, WT: np.ndarray, floats: int = BLOCK_FLOATS) -> None:
        self.traj, self.WT = traj, WT
        self.groups = [g for g in block.groups if g.dense is not None and g.name in ("W", "U", "b", "x")]
        self.KS = block.K_state
        self.steps = max(1, floats // max(1, self.KS * traj.B * traj.H))
        self.lo, self.hi = 0, 0
        self.arr: np.ndarray | None = None
        self.spans: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None

    def at(self, t: int, last: int) -> np.ndarray | None:
        if not self.groups:
            return None
        if not (self.lo <= t < self.hi):
            self.lo, self.hi = t, min(last + 1, t + self.steps)
            self.arr = self.fill(self.lo, self.hi)
        assert self.arr is not None
        return self.arr[t - self.lo].transpose(1, 0, 2)

    def fill(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """The direct terms of steps lo..hi-1, time-major (hi - lo, B, K_state, H): in ``out`` (reused by
        the caller: fresh memory is slow to touch) or a new array.

        x_t dWᵀ + h_{t-1} dUᵀ + db of the copies of one slice are one matmul of [x_t, h_{t-1}, 1] (every step
        and row) with the stacked directions, written straight into the array when the slice is every copy;
        dx_t Wᵀ is one more."""
        traj = self.traj
        n, B, H = hi - lo, traj.B, traj.H
        rows = n * B
        arr = np.zeros((n, B, self.KS, H)) if out is None else out
        spans = self._spans()
        if out is not None and (0, self.KS) not in spans:
            arr[:] = 0.0
        for (start, stop), (src, rhs) in spans.items():
            k = stop - start
            if k == self.KS:
                np.matmul(src[lo * B:hi * B], rhs, out=arr.reshape(rows, k * H))
            else:
                arr[:, :, start:stop] += (src[lo * B:hi * B] @ rhs).reshape(n, B, k, H)
        for g in self.groups:
            if g.name == "x":          # dx_t Wᵀ
                v = g.dense[:, lo:hi]
                arr[:, :, g.sl] += (v.reshape(-1, v.shape[-1]) @ self.WT).reshape(g.size, n, B, H).transpose(1, 2, 0, 3)
        return arr

    def _spans(self) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """Per slice of copies: [x_t, h_{t-1}, 1] of every step and row (T·B, ·) and the stacked directions
        (·, k·H) whose column block j is copy j's (dWᵀ; dUᵀ; db) — computed once."""
        if self.spans is None:
            traj = self.traj
            T, B, H = traj.T, traj.B, traj.H
            by: dict[tuple[int, int], list[Group]] = {}
            for g in self.groups:
                if g.name != "x":
                    by.setdefault((g.start, g.stop), []).append(g)
            self.spans = {}
            for (start, stop), gs in by.items():
                k = stop - start
                src, rhs = [], []
                for g in gs:
                    if g.name == "W":
                        src.append(traj.x.reshape(T * B, -1))
                    elif g.name == "U":    # the states entering each step
                        src.append(traj.h[:T].reshape(T * B, H))
                    else:
                        src.append(np.ones((T * B, 1)))
                    d = g.dense if g.name != "b" else g.dense[:, :, None]
                    rhs.append(d.transpose(2, 0, 1).reshape(-1, k * H))
                self.spans[(start, stop)] = (src[0] if len(src) == 1 else np.concatenate(src, axis=1),
                                             rhs[0] if len(rhs) == 1 else np.concatenate(rhs, axis=0))
        return self.spans


def _run_dense(traj: Trajectory, block: Block, prop: Propagation, fprime: np.ndarray, gy: np.ndarray
               ) -> np.ndarray:
    """Tangents of dense copies (a linear, fixed propagation), vectorized over time wherever the copies'
    state does not enter: the direct terms of a run of steps are a few large matmuls (``_DenseTerms``),
    the recurrence dĥ_t = dh_{t-1} Uᵀ + direct_t, dh_t = f′(ĥ_t) ⊙ dĥ_t runs in place in that array (one
    matmul of all copies per step), and the output layer and the loss of the run's loss steps are again
    a few large products:
        dŷ_t = dh_t Vᵀ + h_t dVᵀ + dc,   dL += ⟨∂(scale·E_t)/∂ŷ_t, dŷ_t⟩.
    The same sums as the step-by-step loop of :func:`_run`, in another order."""
    K, KS = block.K, block.K_state
    p = traj.params
    UT, VT = p["U"].T, p["V"].T
    B, H, O = traj.B, traj.H, traj.O
    out, magnitude = np.zeros(K), np.zeros(K)
    terms = _DenseTerms(traj, block, p["W"].T, DENSE_FLOATS)
    outputs = [g for g in block.groups if g.name in STATE_FREE]
    carry, state = np.empty((B * KS, H)), np.empty((B * KS, H))
    buffer = np.empty((terms.steps, B, KS, H))     # every run of steps in the same memory
    for w in traj.windows:
        losses = sorted(w.losses)
        last = losses[-1]
        prev = None                  # the copies' state dh_{t-1}, (B·KS, H); None: still zero
        initial = _initial(traj, block, w.start) if KS else None
        if initial is not None:
            prev = initial.transpose(1, 0, 2).reshape(B * KS, H)
        for lo in range(w.start, last + 1, terms.steps):
            hi = min(last + 1, lo + terms.steps)
            arr = buffer[:hi - lo]
            if terms.groups:
                terms.fill(lo, hi, out=arr)
            else:
                arr[:] = 0.0
            for t in range(lo, hi) if KS else ():
                z = arr[t - lo]                          # (B, KS, H): the direct terms of step t
                if prev is not None:
                    np.matmul(prev, UT, out=carry)       # + dh_{t-1} Uᵀ
                    z += carry.reshape(B, KS, H)
                z *= fprime[t][:, None, :]               # dh_t, kept in place for the output layer
                prev = z.reshape(B * KS, H)
            if prev is not None and hi <= last:          # the next run of steps reuses the buffer
                state[:] = prev
                prev = state
            at = [t for t in losses if lo <= t < hi]
            if not at:
                continue
            steps = np.asarray(at)
            n = len(at)
            dyhat = np.zeros((K, n, B, O))
            if KS:                   # dh_t Vᵀ of every copy and loss step: one matmul
                dh = arr if n == hi - lo else arr[steps - lo]
                dyhat[:KS] = (dh.reshape(-1, H) @ VT).reshape(n, B, KS, O).transpose(2, 0, 1, 3)
            for g in outputs:
                if g.name == "V":    # h_t dVᵀ of every copy and loss step: one matmul
                    dyhat[g.sl] += (traj.h[steps + 1].reshape(n * B, H) @ g.dense.transpose(2, 0, 1).reshape(
                        H, g.size * O)).reshape(n, B, g.size, O).transpose(2, 0, 1, 3)
                else:
                    dyhat[g.sl] += g.dense[:, None, None, :]
            g_at = gy[steps].reshape(-1)
            flat = dyhat.reshape(K, -1)
            out += flat @ g_at
            magnitude += np.abs(flat) @ np.abs(g_at)
    prop.magnitude = magnitude
    return out


def _x_schedule(traj: Trajectory, block: Block) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """For a one-hot x group: per step t, the copies entering there, their input index j and step."""
    g = block.groups[0]
    if g.name != "x" or g.index is None:
        return None
    T, B, I = traj.x.shape
    t_of = g.index // (B * I)
    j_of = g.index % I
    out = {}
    for t in np.unique(t_of):
        k = np.nonzero(t_of == t)[0] + g.start
        out[int(t)] = (k, j_of[k - g.start], g.step[k - g.start])
    return out


def _first_step(block: Block, start: int, last: int, x_steps: dict | None) -> int | None:
    if x_steps is not None:
        ts = [t for t in x_steps if start <= t <= last]
        return min(ts) if ts else None
    names = {g.name for g in block.groups}
    if names <= {"h0"} and start != 0:
        return None          # h0 enters only the windows that start at 0
    return start


def _initial(traj: Trajectory, block: Block, start: int) -> np.ndarray | None:
    """The copies' difference of the state entering a window: h0's perturbation when it starts at 0."""
    if start != 0:
        return None
    groups = [g for g in block.groups if g.name == "h0"]
    if not groups:
        return None
    B, H = traj.B, traj.H
    if block.rows is not None:
        g = groups[0]
        dh = np.zeros((block.K_state, 1, H))
        dh[np.arange(g.start, g.stop), 0, g.index % H] = g.step
        return dh
    dh = np.zeros((block.K_state, B, H))
    for g in groups:
        if g.dense is not None:
            dh[g.sl] += g.dense
        else:
            k = np.arange(g.start, g.stop)
            dh[k, g.index // H, g.index % H] = g.step
    return dh


def _inject_hidden(traj: Trajectory, block: Block, t: int, dz: np.ndarray | None, dh_prev: np.ndarray | None,
                   linear: bool, x_steps: dict | None, WT: np.ndarray, terms: _DenseTerms | None,
                   last: int) -> np.ndarray | None:
    """Add every group's direct term to dĥ_t (W, U, b and x enter here)."""
    H = traj.H
    hprev = traj.h[t]                     # the base state entering step t (h_{t-1})
    Bk = 1 if block.rows is not None else traj.B
    if dz is None:
        dz = np.zeros((block.K_state, Bk, H))
        if not any(g.name in ("W", "U", "b") for g in block.groups) and not (
                x_steps and t in x_steps) and not any(g.name == "x" and g.dense is not None for g in block.groups):
            return None
    if terms is not None:
        direct = terms.at(t, last)
        if direct is not None:
            dz += direct
    for g in block.groups:
        if g.name in ("V", "c", "h0"):
            continue
        if g.dense is not None:
            if terms is not None:
                continue                  # already in the dense terms
            v = g.dense
            if g.name == "W":
                dz[g.sl] += np.matmul(traj.x[t], v.transpose(0, 2, 1))
            elif g.name == "U":
                src = hprev if dh_prev is None else hprev + dh_prev[g.sl]
                dz[g.sl] += np.matmul(src, v.transpose(0, 2, 1))
            elif g.name == "b":
                dz[g.sl] += v[:, None, :]
            else:
                dz[g.sl] += v[:, t] @ WT
                for w in block.groups:      # a joint copy moving W too: the product δx_t δWᵀ
                    if not linear and w.name == "W" and w.dense is not None and w.sl == g.sl:
                        dz[g.sl] += np.matmul(v[:, t], w.dense.transpose(0, 2, 1))
            continue
        if g.name == "x":
            if x_steps is not None and t in x_steps:
                k, j, st = x_steps[t]
                dz[k, 0, :] += st[:, None] * WT[j]
            continue
        k = np.arange(g.start, g.stop)
        if g.name == "W":
            I = traj.x.shape[2]
            i, j = g.index // I, g.index % I
            dz[k, :, i] += g.step[:, None] * traj.x[t][:, j].T
        elif g.name == "U":
            i, j = g.index // H, g.index % H
            src = hprev[:, j].T
            if not linear and dh_prev is not None:
                src = src + dh_prev[k, :, j]
            dz[k, :, i] += g.step[:, None] * src
        elif g.name == "b":
            dz[k, :, g.index] += g.step[:, None]
    return dz


def _inject_output(traj: Trajectory, block: Block, t: int, dyhat: np.ndarray | None, dh: np.ndarray | None,
                   linear: bool) -> np.ndarray | None:
    """Add the V and c groups' direct terms to dŷ_t."""
    H, O = traj.H, traj.O
    ht = traj.h[t + 1]
    Bk = 1 if block.rows is not None else traj.B
    for g in block.groups:
        if g.name not in STATE_FREE:
            continue
        if dyhat is None:
            dyhat = np.zeros((block.K, Bk, O))
        carried = not linear and dh is not None and g.stop <= dh.shape[0]   # (h + δh) δVᵀ
        if g.dense is not None:
            if g.name == "V":
                src = ht + dh[g.sl] if carried else ht
                dyhat[g.sl] += np.matmul(src, g.dense.transpose(0, 2, 1))
            else:
                dyhat[g.sl] += g.dense[:, None, :]
            continue
        k = np.arange(g.start, g.stop)
        if g.name == "V":
            i, j = g.index // H, g.index % H
            src = ht[:, j].T
            if carried:
                src = src + dh[k, :, j]
            dyhat[k, :, i] += g.step[:, None] * src
        else:
            dyhat[k, :, g.index] += g.step[:, None]
    return dyhat
