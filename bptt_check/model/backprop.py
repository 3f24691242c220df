"""The one reverse recursion (DESIGN §3), and the gradients it gives under a suspected mistake (DESIGN §7).

:func:`backprop` walks every window of a schedule backwards, from its last loss step to its start,
with the cell's ``backward_step``: at a loss step the output layer's gradient enters the hidden
state; the state entering the window gets what is left (h0's gradient when the window starts at 0).
Every step's contributions go to the gradients — summed, or kept per sample — and to an optional
``visit`` that sees the gradient reaching each step and each step's contributions: the coverage
(how much reaches a window's start) and the temporal map of the evidence (which step's
contribution is off) are two such visits.

:class:`Knobs` turns one dial per mistake a hand-written backward commonly makes; with every dial at
its default the recursion is the true (truncated) gradient. :func:`variant_grads` is the recursion
on a case with one dial turned: the diagnosis compares the user's gradients with these variants,
and the variant that reproduces them names the cause. This is not an oracle (the oracles are
independent witnesses); it is a model of wrong answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .cell import Term, cell_of, per_sample, summed
from .forward import Trace, forward
from .functions import loss_weights, output, softmax, step_loss_grad, target_at
from .ops import NUMPY, rounded
from .spec import Spec, Window

if TYPE_CHECKING:
    from .cases import Case

Array = np.ndarray

# f'(ĥ_t) and its usual mistakes
DACT = ("right",          # f'(ĥ_t)
        "formula_on_pre",  # the output form of f' (tanh: 1 - h², sigmoid: h(1 - h)) fed ĥ_t
        "at_output",       # the input form of f' fed h_t: f'(h_t)
        "missing",         # no f' factor at all
        "previous_state",  # the output form fed h_{t-1}: f' taken one step early
        "next_state",      # the output form fed h_{t+1}: one step late
        "unsquared")       # the output form with a factor of h dropped: tanh 1 − h, sigmoid 1 − h
# dE/dŷ and its usual mistakes
DOUT = ("right",
        "no_output_derivative",  # g' left out (tanh / sigmoid / softmax output with a squared error)
        "ce_no_onehot",          # cross-entropy: softmax(ŷ) without subtracting the one-hot target
        "formula_on_logits")     # the output form of g' fed ŷ (tanh: 1 - ŷ², sigmoid: ŷ(1 - ŷ))
RECUR = ("U",       # dh_{t-1} = dĥ_t U
         "UT",      # dĥ_t Uᵀ: the transpose of the right matrix
         "W",       # dĥ_t W: the input matrix in the recurrent flow (needs I = H)
         "zero",    # nothing flows back, not even into the entering state
         "zero_inside")  # nothing flows back between steps; the entering state still gets its term


@dataclass(frozen=True)
class Knobs:
    """One suspected mistake (or none: every field at its default)."""

    windows: tuple[Window, ...] | None = None   # None: the spec's own windows
    scale: float | None = None        # per-sample-per-step loss weight where a loss exists (None: the spec's)
    mode: str | None = None           # the loss steps of this mode (None: the spec's)
    ignore_lengths: bool = False      # a padded batch treated as full-length sequences
    dact: str = "right"
    dout: str = "right"
    recur: str = "U"
    skip_steps: frozenset[int] = frozenset()  # parameter (and dx) terms of these steps dropped
    state_shift: bool = False         # dU uses h_t where h_{t-1} belongs; dV uses h_{t-1} for h_t
    swap_input_recurrent: bool = False  # the whole model with W and U exchanged (needs I = H)
    states32: str = ""                # "h": states stored in float32; "h+hhat": pre-activations too
    per_sample: bool = False          # also return per-sample parameter gradients (keys "W@b", ...)
    cell: str = ""                    # a mistake specific to the cell (its ``mistakes()``), "" for none

    def __post_init__(self) -> None:
        for name, allowed in (("dact", DACT), ("dout", DOUT), ("recur", RECUR), ("states32", ("", "h", "h+hhat"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Knobs.{name}={getattr(self, name)!r}; choose one of {allowed}")


RIGHT = Knobs()
Visit = Callable[[Window, int, tuple[Array, ...], "dict[str, Any] | None"], None]


def _dyhat(spec: Spec, k: Knobs, yhat: Array, target: Array) -> Array:
    """dE_t/dŷ_t, or its mistake ``k.dout``."""
    if k.dout == "right" or spec.loss == "cross_entropy" and k.dout != "ce_no_onehot":
        return step_loss_grad(spec, yhat, target)
    if k.dout == "ce_no_onehot":
        return softmax(yhat) if spec.loss == "cross_entropy" else step_loss_grad(spec, yhat, target)
    y = output(spec.output, yhat)
    dy = (y - target) if spec.loss == "half_mse" else 2.0 * (y - target)
    if k.dout == "no_output_derivative" or spec.output == "identity":
        return dy
    if k.dout == "formula_on_logits" and spec.output in ("tanh", "sigmoid"):
        return dy * (1.0 - yhat ** 2 if spec.output == "tanh" else yhat * (1.0 - yhat))
    return step_loss_grad(spec, yhat, target)


def _add(g: dict[str, Array], name: str, contrib: Any, ps: dict[str, Array] | None) -> None:
    g[name] += summed(contrib, g[name].shape)
    if ps is not None and f"{name}@b" in ps:
        each = per_sample(contrib, g[name].shape)
        if each is not None:
            ps[f"{name}@b"] += each


def backprop(tr: Trace, y: Any, spec: Spec, k: Knobs = RIGHT, *, windows: Sequence[Window] | None = None,
             weights: Array | None = None, visit: Visit | None = None, accumulate: bool = True) -> dict[str, Array]:
    """dL/dθ and dL/dx of the (truncated) objective over ``windows`` (the spec's by default), with the
    mistake ``k``; ``weights`` (T, B): each sample's loss weight per step (a padded batch; by default the
    spec's reduction); ``visit(window, t, dstate, contributions)`` sees every step (and, with ``t`` the
    window's start − 1 and no contributions, the gradient reaching the state entering the window).
    ``accumulate=False``: only the visit is wanted (no gradient is summed)."""
    cell, p, x = tr.cell, tr.params, tr.x
    T, B = tr.T, x.shape[1]
    if weights is None:
        weights = loss_weights(spec.replace(mode=k.mode) if k.mode else spec, T, B)
    if k.scale is not None:
        weights = k.scale * (weights != 0)
    windows = spec.windows(T) if windows is None else windows
    V = p.get("V")
    h = tr.states[0]
    g = {n: np.zeros_like(v) for n, v in p.items()}
    g["x"] = np.zeros_like(x)
    ps = {f"{n}@b": np.zeros((B, *v.shape), dtype=v.dtype) for n, v in p.items()
          if n not in ("h0", "c0")} if k.per_sample else None
    initial = [f"{part}0" for part in cell.states]
    for w in windows:
        losses = set(w.losses)
        if not losses:
            continue
        dstate = tuple(np.zeros_like(s[0]) for s in tr.states)
        for t in reversed(range(w.start, max(losses) + 1)):
            keep = t not in k.skip_steps
            if t in losses:
                dyhat = weights[t][:, None] * _dyhat(spec, k, tr.yhat[t], target_at(spec, y, t, T))
                if keep and accumulate and V is not None:
                    _add(g, "V", (Term(dyhat, h[t] if k.state_shift else h[t + 1]),), ps)
                    if "c" in g:
                        _add(g, "c", (Term(dyhat),), ps)
                dstate = (dstate[0] + (dyhat if V is None else dyhat @ V), *dstate[1:])
            prev, contrib, dx = cell.backward_step(tr, t, dstate, k)
            if visit is not None:
                visit(w, t, dstate, contrib)
            if keep and accumulate:
                for name, pair in contrib.items():
                    _add(g, name, pair, ps)
                g["x"][t] += dx
            if k.recur == "zero" or (k.recur == "zero_inside" and t > w.start):
                prev = tuple(np.zeros_like(d) for d in prev)
            dstate = prev
        if visit is not None:
            visit(w, w.start - 1, dstate, None)
        if w.start == 0:
            for name, d in zip(initial, dstate):
                g[name] += d
    if ps:
        g.update(ps)
    return g


def variant_grads(case: Case, k: Knobs = RIGHT, dtype: type = np.float64) -> dict[str, Array]:
    """dL/dθ (and dL/dx) of the case's objective, computed with the mistake ``k``.

    ``dtype`` is the precision of the arithmetic (float32 gives the rounding error a
    float32 implementation of the same formulas makes on this case).
    """
    spec = case.spec
    params = {n: np.asarray(v, dtype=dtype) for n, v in case.params.items()}
    if k.swap_input_recurrent:
        if params["W"].shape != params["U"].shape:
            return {}
        params["W"], params["U"] = params["U"], params["W"]
    x = np.asarray(case.x, dtype=dtype)
    y = case.y if spec.loss == "cross_entropy" else np.asarray(case.y, dtype=dtype)
    ops = rounded(pre="hhat" in k.states32) if k.states32 else NUMPY
    cell = cell_of(spec)
    cell = cell.variant(k.cell) if k.cell else cell
    if not cell.can(k, params):
        return {}   # not expressible: the shapes differ
    tr = forward(params, x, spec, ops=ops, cell=cell)
    lengths = None if k.ignore_lengths else case.lengths
    mode_spec = spec.replace(mode=k.mode) if k.mode else spec
    weights = loss_weights(mode_spec, case.T, case.B, lengths)
    windows = k.windows if k.windows is not None else mode_spec.windows(case.T, lengths)
    g = backprop(tr, y, spec, k, windows=windows, weights=weights)
    if k.swap_input_recurrent:
        g["W"], g["U"] = g["U"], g["W"]
        if k.per_sample:
            g["W@b"], g["U@b"] = g["U@b"], g["W@b"]
    return g


def never_visiting(windows: Sequence[Window], step: int) -> tuple[Window, ...]:
    """The windows with ``step`` removed as a loss step and as the end of the backward loop."""
    out = []
    for w in windows:
        kept = tuple(t for t in w.losses if t != step)
        if kept:
            out.append(Window(w.start, kept))
    return tuple(out)


def rounding_estimate(case: Case, ref: Mapping[str, Array], dtype: type = np.float32, *,
                      lower: Callable[..., dict[str, Any]] | None = None) -> dict[str, float]:
    """Per gradient, max |reference recomputed in ``dtype`` − reference|: the rounding this case incurs.

    A correct implementation in ``dtype`` makes errors of this order (other operation
    orders round differently, but the cancellations of the case are the same). ``lower``: the
    layout ``ref`` is in (canonical gradients -> what a backward returns), applied to the recomputation.
    """
    low = variant_grads(case, RIGHT, dtype=dtype)
    if lower is not None:
        low = lower(case, {n: v.astype(np.float64) for n, v in low.items()})
    out = {}
    for n, r in ref.items():
        v = low.get(n)
        if v is None or np.shape(v) != np.shape(r):
            continue
        known = np.isfinite(r)               # a non-finite reference element says nothing of rounding
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(np.asarray(v, dtype=np.float64) - r)[known]
        out[n] = float(np.max(d, initial=0.0)) if np.all(np.isfinite(d)) else float("inf")
    return out
