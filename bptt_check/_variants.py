"""The reference gradient recomputed under a suspected mistake (DESIGN §7).

``variant_grads(case, knobs)`` is a plain numpy BPTT over the spec's windows,
in float64, with one dial per mistake a hand-written backward commonly makes.
With every dial at its default it is the true (truncated) gradient; each
non-default dial is one named mistake. The diagnosis compares the user's
gradients with these variants: the variant that reproduces them names the
cause. This module is not an oracle (the oracles are independent witnesses);
it is a model of wrong answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import _model
from ._spec import Window

if TYPE_CHECKING:
    from ._cases import Case

Array = np.ndarray

# f'(ĥ_t) and its usual mistakes
DACT = ("right",          # f'(ĥ_t)
        "formula_on_pre",  # the output form of f' (tanh: 1 - h², sigmoid: h(1 - h)) fed ĥ_t
        "at_output",       # the input form of f' fed h_t: f'(h_t)
        "missing",         # no f' factor at all
        "previous_state",  # the output form fed h_{t-1}: f' taken one step early
        "next_state")      # the output form fed h_{t+1}: one step late
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
    scale: float | None = None        # per-sample-per-step loss weight (None: the spec's)
    dact: str = "right"
    dout: str = "right"
    recur: str = "U"
    skip_steps: frozenset[int] = frozenset()  # parameter (and dx) terms of these steps dropped
    state_shift: bool = False         # dU uses h_t where h_{t-1} belongs; dV uses h_{t-1} for h_t
    swap_input_recurrent: bool = False  # the whole model with W and U exchanged (needs I = H)
    states32: str = ""                # "h": states stored in float32; "h+hhat": pre-activations too
    per_sample: bool = False          # also return per-sample parameter gradients (keys "W@b", ...)

    def __post_init__(self) -> None:
        for name, allowed in (("dact", DACT), ("dout", DOUT), ("recur", RECUR), ("states32", ("", "h", "h+hhat"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Knobs.{name}={getattr(self, name)!r}; choose one of {allowed}")


def _formula_from_output(activation: str, v: Array) -> Array:
    """f' written in terms of the output h = f(ĥ): what people code, here fed ``v``."""
    if activation == "tanh":
        return 1.0 - v ** 2
    if activation == "sigmoid":
        return v * (1.0 - v)
    if activation == "relu":
        return (v > 0).astype(v.dtype)
    return np.ones_like(v)


def _forward(params: dict[str, Array], x: Array, spec, states32: str) -> _model.Trace:
    if not states32:
        return _model.forward(params, x, spec)
    W, U, V, b, c = params["W"], params["U"], params["V"], params.get("b"), params.get("c")
    T, B, _ = x.shape
    H, O = U.shape[0], V.shape[0]
    h = np.empty((T + 1, B, H))
    hhat = np.empty((T, B, H))
    yhat = np.empty((T, B, O))
    h[0] = params["h0"].astype(np.float32)
    for t in range(T):
        z = x[t] @ W.T + h[t] @ U.T
        if b is not None:
            z = z + b
        hhat[t] = z.astype(np.float32) if "hhat" in states32 else z
        h[t + 1] = _model.act(spec.activation, hhat[t]).astype(np.float32)
        yhat[t] = h[t + 1] @ V.T + (c if c is not None else 0.0)
    return _model.Trace(h, hhat, yhat)


def _dyhat(spec, k: Knobs, yhat: Array, target: Array) -> Array:
    if k.dout == "right":
        return _model.step_loss_grad(spec, yhat, target)
    if k.dout == "ce_no_onehot":
        return _model.softmax(yhat) if spec.loss == "cross_entropy" else _model.step_loss_grad(spec, yhat, target)
    if spec.loss == "cross_entropy":
        return _model.step_loss_grad(spec, yhat, target)
    y = _model.output(spec.output, yhat)
    dy = (y - target) if spec.loss == "half_mse" else 2.0 * (y - target)
    if k.dout == "no_output_derivative" or spec.output == "identity":
        return dy
    if k.dout == "formula_on_logits" and spec.output in ("tanh", "sigmoid"):
        return dy * _formula_from_output(spec.output, yhat)
    return _model.step_loss_grad(spec, yhat, target)


def variant_grads(case: Case, k: Knobs = Knobs(), dtype: type = np.float64) -> dict[str, Array]:
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
    W, U, V = params["W"], params["U"], params["V"]
    T, B, _ = x.shape
    tr = _forward(params, x, spec, k.states32)
    scale = _model.loss_scale(spec, T, B) if k.scale is None else k.scale
    windows: Sequence[Window] = spec.windows(T) if k.windows is None else k.windows
    if k.recur == "W" and W.shape != U.shape:
        return {}   # not expressible: the shapes differ
    recur = {"U": U, "UT": U.T, "W": W}.get(k.recur)

    g = {n: np.zeros_like(v) for n, v in params.items()}
    g["x"] = np.zeros_like(x)
    ps: dict[str, Array] = {}
    if k.per_sample:
        ps = {f"{n}@b": np.zeros((B, *v.shape), dtype=dtype) for n, v in params.items() if n != "h0"}

    def dact(t: int) -> Array:
        if k.dact == "right":
            return _model.act_grad(spec.activation, tr.hhat[t])
        if k.dact == "formula_on_pre":
            return _formula_from_output(spec.activation, tr.hhat[t])
        if k.dact == "at_output":
            return _model.act_grad(spec.activation, tr.h[t + 1])
        if k.dact == "missing":
            return np.ones_like(tr.hhat[t])
        if k.dact == "previous_state":
            return _formula_from_output(spec.activation, tr.h[t])
        if k.dact == "next_state":
            return _formula_from_output(spec.activation, tr.h[min(t + 2, T)])
        raise ValueError(k.dact)

    for w in windows:
        losses = set(w.losses)
        if not losses:
            continue
        dh_next = np.zeros_like(tr.h[0])
        for t in reversed(range(w.start, max(losses) + 1)):
            keep = t not in k.skip_steps
            dh = dh_next
            if t in losses:
                target = y if (spec.mode == "many-to-one") else y[t]
                dyhat = scale * _dyhat(spec, k, tr.yhat[t], target)
                hv = tr.h[t] if k.state_shift else tr.h[t + 1]
                if keep:
                    g["V"] += dyhat.T @ hv
                    if "c" in g:
                        g["c"] += dyhat.sum(axis=0)
                    if ps:
                        ps["V@b"] += dyhat[:, :, None] * hv[:, None, :]
                        if "c@b" in ps:
                            ps["c@b"] += dyhat
                dh = dh + dyhat @ V
            dhhat = dh * dact(t)
            hu = tr.h[t + 1] if k.state_shift else tr.h[t]
            if keep:
                g["W"] += dhhat.T @ x[t]
                g["U"] += dhhat.T @ hu
                if "b" in g:
                    g["b"] += dhhat.sum(axis=0)
                g["x"][t] += dhhat @ W
                if ps:
                    ps["W@b"] += dhhat[:, :, None] * x[t][:, None, :]
                    ps["U@b"] += dhhat[:, :, None] * hu[:, None, :]
                    if "b@b" in ps:
                        ps["b@b"] += dhhat
            if k.recur == "zero" or (k.recur == "zero_inside" and t > w.start):
                dh_next = np.zeros_like(dh_next)
            else:
                dh_next = dhhat @ (U if k.recur == "zero_inside" else recur)
        if w.start == 0:
            g["h0"] += dh_next
    if k.swap_input_recurrent:
        g["W"], g["U"] = g["U"], g["W"]
        if ps:
            ps["W@b"], ps["U@b"] = ps["U@b"], ps["W@b"]
    g.update(ps)
    return g


def target_every_step_windows(case: Case) -> tuple[Window, ...]:
    """Windows of the case's schedule as if every step bore a loss (many-to-many)."""
    return tuple(case.spec.replace(mode="many-to-many").windows(case.T))


def last_step_only_windows(case: Case) -> tuple[Window, ...]:
    """Windows of the case's schedule as if only the last step bore a loss (many-to-one)."""
    return tuple(case.spec.replace(mode="many-to-one").windows(case.T))


def never_visiting(windows: Sequence[Window], step: int) -> tuple[Window, ...]:
    """The windows with ``step`` removed as a loss step and as the end of the backward loop."""
    out = []
    for w in windows:
        kept = tuple(t for t in w.losses if t != step)
        if kept:
            out.append(Window(w.start, kept))
    return tuple(out)


def rounding_estimate(case: Case, ref: dict[str, Array], dtype: type = np.float32) -> dict[str, float]:
    """Per gradient, max |reference recomputed in ``dtype`` − reference|: the rounding this case incurs.

    A correct implementation in ``dtype`` makes errors of this order (other operation
    orders round differently, but the cancellations of the case are the same).
    """
    low = variant_grads(case, Knobs(), dtype=dtype)
    out = {}
    for n, r in ref.items():
        v = low.get(n)
        if v is None or v.shape != np.shape(r):
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(v.astype(np.float64) - r)
        out[n] = float(np.max(d, initial=0.0)) if np.all(np.isfinite(d)) else float("inf")
    return out
