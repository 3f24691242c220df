"""The one forward (DESIGN §1-3): a cell's steps over a sequence, and the windowed objective.

    ĥ_t = x_t Wᵀ + h_{t−1} Uᵀ + b,  h_t = f(ĥ_t)       (the cell's step; see ``cell.py``)
    ŷ_t = h_t Vᵀ + c,               y_t = g(ŷ_t)         (the output layer, for every cell)

:func:`steps` is the recursion itself, written once. :func:`forward` runs it from the initial state
over the whole sequence in numpy and keeps everything (states as arrays of length T+1 with the
initial state explicit: ``h[0] = h0``, ``h[t+1] = h_t``). :func:`run_windows` runs it over the windows
of a truncation schedule — each window from the state entering it, held constant, or from the
initial state when it starts at 0 — in any namespace: numpy (the variants' objective, the Taylor
check, a reported loss), complex numpy (the literal complex step), torch (the autograd oracle), dual
numbers (the built-in cells' witness), with a leading axis of perturbed copies (the kinks).
:func:`objective` is the truncated loss it defines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cell import cell_of
from .functions import loss_scale, loss_weights, step_loss, targets_at
from .ops import NUMPY
from .spec import Spec, Window

Array = np.ndarray


def steps(cell: Any, p: Mapping[str, Any], x: Any, state: tuple[Any, ...], first: int, stop: int,
          ops: Any = NUMPY) -> Iterator[tuple[int, tuple[Any, ...], Any]]:
    """The recursion: ``(t, state_t, cache_t)`` for t = first … stop−1, from the state entering ``first``.

    ``x`` is (..., T, B, I): any leading axes (perturbed copies) broadcast through. A cell with ``inputs``
    gets each step's part that reads only x, computed for all the steps at once.
    """
    xs = x[..., first:stop, :, :]
    if hasattr(cell, "inputs") and stop > first:
        xs = cell.inputs(p, xs, ops)
    for t in range(first, stop):
        state, cache = cell.step(p, xs[..., t - first, :, :], state, ops)
        state = tuple(ops.keep(s) for s in state)
        yield t, state, cache


def dense(p: Mapping[str, Any], h: Any, ops: Any = NUMPY) -> Any:
    """ŷ = h Vᵀ + c (a model without an output layer: ŷ = h)."""
    if "V" not in p:
        return h
    yhat = h @ ops.mT(p["V"])
    c = p.get("c")
    return yhat if c is None else yhat + c[..., None, :]


@dataclass
class Trace:
    """The forward of one case in numpy: every state, every step's cache, every output."""

    cell: Any
    params: dict[str, Array]
    x: Array
    states: tuple[Array, ...]   # per part, (T+1, B, H): [0] is the initial state
    cache: Any                  # per step (T, ...), or a tuple of such: what the step kept (the rnn: ĥ_t)
    yhat: Array                 # (T, B, O)

    @property
    def T(self) -> int:
        return int(self.x.shape[0])

    @property
    def h(self) -> Array:
        """The hidden states (T+1, B, H): ``h[0] = h0``, ``h[t+1] = h_t``."""
        return self.states[0]

    @property
    def hhat(self) -> Array:
        """The rnn's pre-activations ĥ_t (T, B, H)."""
        return self.cache

    def entering(self, start: int) -> tuple[Array, ...]:
        """The state entering step ``start`` (h_{start−1}; the initial state at 0)."""
        return tuple(s[start] for s in self.states)


def forward(params: Mapping[str, Any], x: Array, spec: Spec, *, ops: Any = NUMPY,
            cell: Any = None) -> Trace:
    """The whole sequence from the initial state, in numpy, everything kept."""
    cell = cell or cell_of(spec)
    p = dict(params)
    T, B, _ = x.shape
    init = tuple(ops.keep(s) for s in cell.initial(p))
    dtype = np.result_type(*(np.asarray(v) for v in p.values()), x)
    states = tuple(np.empty((T + 1, *np.shape(s)), dtype=dtype) for s in init)
    for part, s in zip(states, init):
        part[0] = s
    caches: list[Any] = []
    for t, state, cache in steps(cell, p, x, init, 0, T, ops):
        for part, s in zip(states, state):
            part[t + 1] = s
        caches.append(cache)
    yhat = dense(p, states[0][1:], ops)
    return Trace(cell, p, x, states, _stack(caches, B, states[0].shape[-1], dtype), np.asarray(yhat, dtype=dtype))


def _stack(caches: list[Any], B: int, H: int, dtype: Any) -> Any:
    """The steps' caches as arrays (T, ...): one array, or a tuple of them when a step keeps several."""
    if not caches:
        return np.empty((0, B, H), dtype=dtype)
    if isinstance(caches[0], tuple):
        return tuple(np.stack(parts) for parts in zip(*caches))
    return np.stack(caches)


def run_windows(params: Mapping[str, Any], x: Any, spec: Spec, windows: Sequence[Window],
                entering: Callable[[int], tuple[Any, ...]], visit: Callable[[Window, int, tuple[Any, ...], Any], None],
                *, ops: Any = NUMPY, cell: Any = None) -> None:
    """Run every window of a schedule: ``visit(window, t, state_t, cache_t)`` at each of its steps.

    A window starting at s > 0 starts from ``entering(s)``, the state entering step s, a constant;
    a window starting at 0 starts from the initial state in ``params`` (so h0 gets its gradient).
    The steps from the initial state are shared by every window that starts at 0 (computed once).
    """
    cell = cell or cell_of(spec)
    p = dict(params)
    from_zero: list[tuple[tuple[Any, ...], Any]] = []
    shared = steps(cell, p, x, cell.initial(p), 0, x.shape[-3], ops)
    for w in windows:
        last = max(w.losses)
        if w.start == 0:
            while len(from_zero) <= last:
                _, state, cache = next(shared)
                from_zero.append((state, cache))
            for t in range(0, last + 1):
                visit(w, t, *from_zero[t])
            continue
        for t, state, cache in steps(cell, p, x, entering(w.start), w.start, last + 1, ops):
            visit(w, t, state, cache)


def objective(params: Mapping[str, Any], x: Any, y: Any, spec: Spec, windows: Sequence[Window],
              entering: Callable[[int], tuple[Any, ...]], *, ops: Any = NUMPY, cell: Any = None,
              weights: Array | None = None) -> Any:
    """The truncated objective Σ_windows Σ_{t∈L} Σ_b w[t, b]·E_t[b] (per leading copy, when there are copies).

    ``weights`` (T, B): each sample's loss weight at each step (``functions.loss_weights``: a padded
    batch); by default the spec's reduction, one weight for all. The windows' steps with a loss keep their
    hidden state; the output layer and the losses then take all of them at once (one product).
    """
    T, B = x.shape[-3], x.shape[-2]
    hs: list[Any] = []
    at: list[int] = []

    def visit(w: Window, t: int, state: tuple[Any, ...], cache: Any) -> None:
        if t in w.losses:
            hs.append(state[0])
            at.append(t)

    run_windows(params, x, spec, windows, entering, visit, ops=ops, cell=cell)
    if not hs:
        return 0.0
    n = len(at)
    h = ops.stack(hs)                                                   # (..., n, B, H)
    target = targets_at(spec, y, at)                                    # (n, B, ...)
    e = step_loss(spec, dense(params, h.reshape(*h.shape[:-3], n * B, h.shape[-1]), ops),
                  target.reshape(n * B, *target.shape[2:]), ops)         # (..., n·B)
    w = np.full(n * B, loss_scale(spec, T, B)) if weights is None else np.concatenate([weights[t] for t in at])
    return ops.sum(e * ops.lift(w, e), -1)


def window_loss(params: Mapping[str, Any], x: Array, y: Array, spec: Spec, windows: Sequence[Window],
                entering: Trace | Array, weights: Array | None = None) -> float:
    """The truncated objective in numpy, each window started from the fixed states of ``entering``
    (a :class:`Trace`, or the hidden states (T+1, B, H) of one)."""
    at = entering.entering if isinstance(entering, Trace) else (lambda s: (entering[s],))
    return float(objective(params, x, y, spec, windows, at, weights=weights))


def total_loss(params: Mapping[str, Any], x: Array, y: Array, spec: Spec, lengths: Any = None) -> float:
    """The (truncated) objective of the spec at these parameters (``lengths``: a padded batch)."""
    tr = forward(params, x, spec)
    T, B = x.shape[0], x.shape[1]
    weights = None if lengths is None else loss_weights(spec, T, B, lengths)
    return window_loss(params, x, y, spec, spec.windows(T, lengths), tr, weights)
