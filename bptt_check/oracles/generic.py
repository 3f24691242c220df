"""The complex step and finite differences for any cell, through the one forward (DESIGN §5, §11).

The batched engine of ``batched.py`` carries each perturbed copy's *difference* through formulas
derived for the vanilla cell. For every other cell (LSTM, GRU, a cell of your own) the oracles run
the one forward itself (``model.forward.objective``) on many perturbed copies at once — a leading
copy axis on the moved tensor, everything else shared — in memory-bounded blocks:

- complex step: Im L(θ + iε v)/ε, ε = 1e-30, in complex128: exact to rounding for analytic cells;
  for the built-in cells the same derivative by forward mode on dual numbers (``model/dual.py``), in real
  arithmetic with the unperturbed forward computed once per block (the complex step where a dual lacks
  an operation);
- central differences: (L(θ + h v) − L(θ − h v)) / 2h, h = ε·max(1, |θ|) with ε = 6e-6 (the cube
  root of the machine epsilon: rounding and truncation balance), with an error estimate from the
  second difference and the rounding of L.

``v`` is a one-hot direction (element-wise gradients), a random direction (the directional
witness and fast mode), or several tensors' directions at once (joint directions). Windows starting
after step 0 start from the unperturbed forward's state, held fixed, as in every oracle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.cell import CELLS
from ..model.dual import DUAL, Dual, primal, tangents
from ..model.forward import objective
from ..model.functions import loss_weights
from ..model.memo import forward_of
from ..model.names import ordered
from ..model.ops import NUMPY
from ..model.usercell import NotAnalytic
from .batched import BLOCK_FLOATS

if TYPE_CHECKING:
    from ..model.cases import Case

EPS_CS = 1e-30
EPS_FD = 6e-6
EPS_M = float(np.finfo(np.float64).eps)
# a dual block shares the primal forward between its copies: it may hold this many numbers of tangents
# (32 MiB; 5 copies at T=200, B=8, H=128: the 4 joint directions of the witness in one forward)
DUAL_FLOATS = 2**22
Item = tuple[str, np.ndarray]          # (tensor name, directions (k, *shape))


def needed(spec: Any) -> bool:
    """Whether this engine (and not the vanilla cell's batched one) computes the spec's oracles: any other
    cell, a padded batch, a model without an output layer, the binary cross-entropy."""
    return spec.cell != "rnn" or spec.lengths or not spec.output_layer or spec.loss == "bce"


def builtin(spec: Any) -> bool:
    """Whether the spec's cell is a built-in one (its step is written in the ops namespace: duals apply)."""
    return spec.cell.partition(":")[0] in CELLS


def method_for(spec: Any) -> str:
    """``complex`` for an analytic model, ``fd`` for the vanilla cell with relu."""
    return "fd" if spec.cell == "rnn" and spec.activation == "relu" else "complex"


class Evaluator:
    """The case's windowed objective on copies: ``values(moves)`` for moves {tensor: (k, *shape)} → (k,)."""

    def __init__(self, case: Case, dtype: Any = np.complex128) -> None:
        self.case, self.spec = case, case.spec
        self.dtype = dtype
        self.params = {n: np.asarray(v, dtype=np.float64) for n, v in case.params.items()}
        self.x = np.asarray(case.x, dtype=np.float64)
        self.y = case.y if case.spec.loss == "cross_entropy" else np.asarray(case.y, dtype=np.float64)
        lengths = getattr(case, "lengths", None)
        self.windows = case.spec.windows(self.x.shape[0], lengths)
        self.weights = None if lengths is None else loss_weights(case.spec, self.x.shape[0], self.x.shape[1], lengths)
        self.states = forward_of(self.params, self.x, case.spec).states  # the windows' entering states
        self._base: float | None = None

    @property
    def base(self) -> float:
        """L at the unperturbed parameters (a dual run's primal, or one real forward)."""
        if self._base is None:
            self._base = float(np.real(self.loss({})))
        return self._base

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.x.shape) if name == "x" else tuple(self.params[name].shape)

    def entering(self, s: int) -> tuple[np.ndarray, ...]:
        return tuple(part[s] for part in self.states)

    def loss(self, moves: dict[str, Any], ops: Any = NUMPY) -> Any:
        """L at the parameters moved by ``moves`` (each (k, *shape), added), one value per copy."""
        params = {n: (v + moves[n] if n in moves else v) for n, v in self.params.items()}
        x = self.x + moves["x"] if "x" in moves else self.x
        return objective(params, x, self.y, self.spec, self.windows, self.entering, ops=ops, weights=self.weights)

    def per_copy(self, items: Sequence[Item], floats: int = BLOCK_FLOATS) -> int:
        """How many copies of these tensors one block of ``floats`` numbers holds."""
        size = self.x.shape[0] * self.x.shape[1] * max(8, self.params["h0"].shape[-1] * 4)
        return max(1, floats // size)


def _blocks(k: int, per: int) -> Iterable[slice]:
    for lo in range(0, k, per):
        yield slice(lo, min(k, lo + per))


def _groups(items: Sequence[Item], joint: bool) -> list[list[Item]]:
    """The items moved together: all of them (``joint``: parts of the same directions), or one by one."""
    return [list(items)] if joint else [[item] for item in items]


def _rounding(ev: Evaluator, values: np.ndarray) -> np.ndarray:
    """The error of exact-to-rounding derivatives: a tangent's rounding through T steps, a few ulps per
    step of each copy's magnitude and of the block's largest (the sums that give a small element cancel
    terms of that size)."""
    size = np.abs(values)
    return np.broadcast_to(16.0 * EPS_M * ev.x.shape[0] * (size + size.max(initial=0.0) + abs(ev.base) * 1e-3),
                           values.shape)


def _joined(out: list[np.ndarray], err: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate(out) if out else np.zeros(0), np.concatenate(err) if err else np.zeros(0)


def complex_values(ev: Evaluator, items: Sequence[Item], joint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Directional derivatives Im L(θ + iεv)/ε: one per direction of every item (``joint``: the items
    are the parts of the same k directions, moved together). Returns (values, error estimates)."""
    out, err = [], []
    for group in _groups(items, joint):
        k = len(group[0][1])
        for sl in _blocks(k, ev.per_copy(group)):
            moves = {n: 1j * EPS_CS * np.asarray(v[sl], dtype=np.float64) for n, v in group}
            L = np.asarray(ev.loss(moves))
            out.append(np.broadcast_to(L.imag / EPS_CS, (sl.stop - sl.start,)))
            err.append(_rounding(ev, out[-1]))
    return _joined(out, err)


def dual_values(ev: Evaluator, items: Sequence[Item], joint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The same derivatives as :func:`complex_values` by forward mode on dual numbers (a built-in cell):
    exact to rounding, in real arithmetic, the primal forward once per block of copies. Raises
    ``TypeError`` (``dual.NotDual``) where a dual lacks an operation."""
    out, err = [], []
    for group in _groups(items, joint):
        k = len(group[0][1])
        for sl in _blocks(k, ev.per_copy(group, DUAL_FLOATS)):
            moves = {n: Dual(np.zeros(ev.shape(n)), np.asarray(v[sl], dtype=np.float64)) for n, v in group}
            L = ev.loss(moves, DUAL)
            if ev._base is None:
                ev._base = float(primal(L))
            out.append(np.array(tangents(L, sl.stop - sl.start)))
            err.append(_rounding(ev, out[-1]))
    return _joined(out, err)


def fd_values(ev: Evaluator, items: Sequence[Item], joint: bool = False, eps: float = EPS_FD
              ) -> tuple[np.ndarray, np.ndarray]:
    """Central differences along each direction (``joint``: the items' directions moved together)."""
    out, err = [], []
    for group in _groups(items, joint):
        k = len(group[0][1])
        size = max(1.0, max(float(np.max(np.abs(ev.x if n == "x" else ev.params[n]), initial=0.0)) for n, _ in group))
        h = eps * size
        for sl in _blocks(k, ev.per_copy(group)):
            up = np.asarray(ev.loss({n: h * np.asarray(v[sl], dtype=np.float64) for n, v in group}), dtype=float)
            down = np.asarray(ev.loss({n: -h * np.asarray(v[sl], dtype=np.float64) for n, v in group}), dtype=float)
            d = (up - down) / (2 * h)
            second = np.abs(up + down - 2 * ev.base) / (2 * h)
            out.append(np.broadcast_to(d, (sl.stop - sl.start,)))
            err.append(np.broadcast_to(4.0 * EPS_M * (abs(ev.base) + np.abs(up) + np.abs(down)) / h
                                       + 10.0 * eps * second + 100.0 * h ** 2 * np.abs(d), out[-1].shape))
    return _joined(out, err)


def along(ev: Evaluator, items: Sequence[Item], joint: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Directional derivatives by the complex step (a built-in cell: its dual-number equivalent), or — for
    a step that is not analytic — by finite differences: (values, error estimates, the method used)."""
    if method_for(ev.spec) == "complex":
        if builtin(ev.spec):
            try:
                return (*dual_values(ev, items, joint), "complex")
            except (TypeError, AttributeError):    # an operation duals lack: the complex step, never a guess
                pass
        try:
            return (*complex_values(ev, items, joint), "complex")
        except NotAnalytic:
            pass
    return (*fd_values(ev, items, joint), "fd")


def onehot(shape: tuple[int, ...], index: np.ndarray) -> np.ndarray:
    """One-hot directions (len(index), *shape) at the flat ``index``."""
    v = np.zeros((len(index), int(np.prod(shape))))
    v[np.arange(len(index)), index] = 1.0
    return v.reshape(len(index), *shape)


def element_values(ev: Evaluator, name: str, index: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """∂L/∂name at the flat ``index``, by ``complex`` step or finite differences (``fd``)."""
    shape = ev.shape(name)
    per = max(1, ev.per_copy([]))
    vals, errs = [], []
    for lo in range(0, len(index), per):
        item = [(name, onehot(shape, index[lo:lo + per]))]
        v, e = complex_values(ev, item) if method == "complex" else fd_values(ev, item)
        vals.append(v)
        errs.append(e)
    return (np.concatenate(vals), np.concatenate(errs)) if vals else (np.zeros(0), np.zeros(0))


def gradients(case: Case, names: Iterable[str] | None, method: str) -> tuple[dict[str, np.ndarray],
                                                                             dict[str, np.ndarray], float]:
    """Every element of the named gradients (all: parameters and x), and the loss."""
    ev = Evaluator(case)
    wanted = ordered([*ev.params, "x"]) if names is None else [n for n in ordered([*ev.params, "x"]) if n in names]
    grads, errors = {}, {}
    for n in wanted:
        shape = ev.shape(n)
        v, e = element_values(ev, n, np.arange(int(np.prod(shape))), method)
        grads[n], errors[n] = v.reshape(shape), e.reshape(shape)
    return grads, errors, ev.base


NOT_ANALYTIC = ("the cell's step is not analytic in complex128 ({why}): the complex step does not apply; "
                "these are central finite differences instead")
