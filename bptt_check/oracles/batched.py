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

from ..model.forward import forward
from ..model.functions import loss_scale, loss_weights
from ..model.names import OUTPUT_LAYER, ordered
from ..model.spec import Shaped

if TYPE_CHECKING:
    from ..model.cases import Case
    from ..model.spec import Spec, Window

# the extra memory of one block stays near this many float64 numbers per work array: 1 MiB, 128
# copies of B=8, H=128 (DESIGN §5 planned 512; on the 2-core machine 128 was as fast for the
# matmuls and faster for the element-wise passes of finite differences, which then stay in cache)
BLOCK_FLOATS = 2**17


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
        tr = forward(params, x, spec)
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

    def __init__(self, traj: Trajectory, block: Block, WT: np.ndarray) -> None:
        self.traj, self.WT = traj, WT
        self.groups = [g for g in block.groups if g.dense is not None and g.name in ("W", "U", "b", "x")]
        self.KS = block.K_state
        self.steps = max(1, BLOCK_FLOATS // max(1, self.KS * traj.B * traj.H))
        self.lo, self.hi = 0, 0
        self.arr: np.ndarray | None = None

    def at(self, t: int, last: int) -> np.ndarray | None:
        if not self.groups:
            return None
        if not (self.lo <= t < self.hi):
            self._fill(t, min(last + 1, t + self.steps))
        assert self.arr is not None
        return self.arr[:, t - self.lo]

    def _fill(self, lo: int, hi: int) -> None:
        traj = self.traj
        n, B, H = hi - lo, traj.B, traj.H
        arr = np.zeros((self.KS, n, B, H))
        for g in self.groups:
            v = g.dense
            k = len(v)
            if g.name == "W":
                arr[g.sl] += np.matmul(traj.x[lo:hi].reshape(n * B, -1), v.transpose(0, 2, 1)).reshape(k, n, B, H)
            elif g.name == "U":   # the states entering steps lo..hi-1
                arr[g.sl] += np.matmul(traj.h[lo:hi].reshape(n * B, H), v.transpose(0, 2, 1)).reshape(k, n, B, H)
            elif g.name == "b":
                arr[g.sl] += v[:, None, None, :]
            else:
                arr[g.sl] += v[:, lo:hi] @ self.WT
        self.lo, self.hi, self.arr = lo, hi, arr


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
