"""The torch side of ``speed.py``: the model the way a careful engineer writes it in torch, per cell.

Two baselines per cell, both float64 and both computing the gradients bptt-check checks (W, U, b, V, c
and a learned h0) for the benchmark's spec (many-to-many, identity output, half_mse, sum, full BPTT):

- ``tight``: the loss as a function of its inputs, for ``torch.autograd.gradcheck``: the input
  projections of all steps in one matmul, one loop over the recurrent steps, one stacked loss;
- ``fused``: torch's own fused module (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) plus an ``nn.Linear`` output
  layer: one forward + backward of it is the floor.

A cell is one :class:`CellBench` entry in ``CELLS``: its spec keywords, its two torch baselines and the
backward bptt-check checks. Adding a cell is one entry (and the two functions it names).
``windowed_loss`` is the spec's truncated objective for any schedule, for the detection rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PARAMS = ("W", "U", "b", "V", "c", "h0")


def tensors(torch: Any, case: Any, names: tuple[str, ...] = PARAMS) -> tuple[Any, Any, list[Any]]:
    """x, y and the parameters ``names`` (requiring grad) of a case, float64."""
    x, y = torch.tensor(case.x), torch.tensor(case.y)
    leaves = [torch.tensor(np.asarray(case.params[k], dtype=np.float64), requires_grad=True) for k in names]
    return x, y, leaves


# ----------------------------------------------------------------- the rnn cell

def rnn_tight(torch: Any, case: Any) -> tuple[Callable[..., Any], list[Any]]:
    """The loss as a function of (W, U, b, V, c, h0): one matmul for every step's input projection, one
    stacked loss."""
    x, y, leaves = tensors(torch, case)
    T, B, I = x.shape

    def loss(W: Any, U: Any, b: Any, V: Any, c: Any, h0: Any) -> Any:
        xw = torch.addmm(b, x.reshape(T * B, I), W.T).reshape(T, B, -1)     # x_t Wᵀ + b, all steps at once
        h, hs = h0, []
        for t in range(T):
            h = torch.tanh(torch.addmm(xw[t], h, U.T))
            hs.append(h)
        yhat = torch.stack(hs) @ V.T + c
        return 0.5 * ((yhat - y) ** 2).sum()

    return loss, leaves


def rnn_fused(torch: Any, case: Any) -> tuple[Callable[[], None], Callable[[], dict[str, np.ndarray]]]:
    """One ``nn.RNN`` + ``nn.Linear`` forward and backward (the case's weights, bias_hh = 0, h0 learned),
    and a function returning the gradients it computed (to show it computes the same ones)."""
    x, y, (W, U, b, V, c, h0) = tensors(torch, case)
    T, B, I = x.shape
    H, O = U.shape[0], V.shape[0]
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh", dtype=torch.float64)
    out_layer = torch.nn.Linear(H, O, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(W)
        rnn.weight_hh_l0.copy_(U)
        rnn.bias_ih_l0.copy_(b)
        rnn.bias_hh_l0.zero_()
        out_layer.weight.copy_(V)
        out_layer.bias.copy_(c)
    state = h0.detach().clone()[None].requires_grad_(True)
    modules = (rnn, out_layer)

    def step() -> None:
        for m in modules:
            m.zero_grad(set_to_none=True)
        state.grad = None
        hs, _ = rnn(x, state)
        loss = 0.5 * ((out_layer(hs) - y) ** 2).sum()
        loss.backward()

    def grads() -> dict[str, np.ndarray]:
        g = {"W": rnn.weight_ih_l0.grad, "U": rnn.weight_hh_l0.grad, "b": rnn.bias_ih_l0.grad,
             "V": out_layer.weight.grad, "c": out_layer.bias.grad, "h0": state.grad[0]}
        return {k: v.detach().numpy().copy() for k, v in g.items()}

    return step, grads


# ----------------------------------------------------------------- the lstm and gru cells (DESIGN §11: torch's)

LSTM_PARAMS = ("W", "U", "b", "V", "c", "h0", "c0")
GRU_PARAMS = ("W", "U", "b", "bu", "V", "c", "h0")


def lstm_tight(torch: Any, case: Any) -> tuple[Callable[..., Any], list[Any]]:
    """The lstm loss as a function of (W, U, b, V, c, h0, c0): one matmul for every step's input
    projection, the gates (i, f, g, o) from one recurrent matmul per step, one stacked loss."""
    x, y, leaves = tensors(torch, case, LSTM_PARAMS)
    T, B, I = x.shape

    def loss(W: Any, U: Any, b: Any, V: Any, c: Any, h0: Any, c0: Any) -> Any:
        xw = torch.addmm(b, x.reshape(T * B, I), W.T).reshape(T, B, -1)
        h, cell, hs = h0, c0, []
        for t in range(T):
            i, f, g, o = torch.addmm(xw[t], h, U.T).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(cell)
            hs.append(h)
        yhat = torch.stack(hs) @ V.T + c
        return 0.5 * ((yhat - y) ** 2).sum()

    return loss, leaves


def gru_tight(torch: Any, case: Any) -> tuple[Callable[..., Any], list[Any]]:
    """The gru loss as a function of (W, U, b, bu, V, c, h0), torch's convention: r, z from the input and
    recurrent projections, n = tanh(x W_nᵀ + b_n + r ⊙ (h U_nᵀ + bu_n)), h = (1 − z) ⊙ n + z ⊙ h."""
    x, y, leaves = tensors(torch, case, GRU_PARAMS)
    T, B, I = x.shape

    def loss(W: Any, U: Any, b: Any, bu: Any, V: Any, c: Any, h0: Any) -> Any:
        xw = torch.addmm(b, x.reshape(T * B, I), W.T).reshape(T, B, -1)
        h, hs = h0, []
        for t in range(T):
            xr, xz, xn = xw[t].chunk(3, dim=1)
            hr, hz, hn = torch.addmm(bu, h, U.T).chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
            hs.append(h)
        yhat = torch.stack(hs) @ V.T + c
        return 0.5 * ((yhat - y) ** 2).sum()

    return loss, leaves


def _module_fused(torch: Any, case: Any, kind: str) -> tuple[Callable[[], None], Callable[[], dict[str, np.ndarray]]]:
    """One ``nn.LSTM`` / ``nn.GRU`` + ``nn.Linear`` forward and backward with the case's weights, the initial
    state(s) learned, and a function returning the gradients it computed."""
    names = LSTM_PARAMS if kind == "lstm" else GRU_PARAMS
    x, y, leaves = tensors(torch, case, names)
    p = dict(zip(names, leaves))
    T, B, I = x.shape
    H, O = p["U"].shape[1], p["V"].shape[0]
    rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H, dtype=torch.float64)
    out_layer = torch.nn.Linear(H, O, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(p["W"])
        rnn.weight_hh_l0.copy_(p["U"])
        rnn.bias_ih_l0.copy_(p["b"])
        if kind == "gru":
            rnn.bias_hh_l0.copy_(p["bu"])
        else:
            rnn.bias_hh_l0.zero_()
        out_layer.weight.copy_(p["V"])
        out_layer.bias.copy_(p["c"])
    initial = [p[k].detach().clone()[None].requires_grad_(True) for k in (("h0", "c0") if kind == "lstm" else ("h0",))]
    modules = (rnn, out_layer)

    def step() -> None:
        for m in modules:
            m.zero_grad(set_to_none=True)
        for s in initial:
            s.grad = None
        hs, _ = rnn(x, tuple(initial) if kind == "lstm" else initial[0])
        loss = 0.5 * ((out_layer(hs) - y) ** 2).sum()
        loss.backward()

    def grads() -> dict[str, np.ndarray]:
        g = {"W": rnn.weight_ih_l0.grad, "U": rnn.weight_hh_l0.grad, "b": rnn.bias_ih_l0.grad,
             "V": out_layer.weight.grad, "c": out_layer.bias.grad, "h0": initial[0].grad[0]}
        if kind == "lstm":
            g["c0"] = initial[1].grad[0]
        else:
            g["bu"] = rnn.bias_hh_l0.grad
        return {k: v.detach().numpy().copy() for k, v in g.items()}

    return step, grads


def lstm_fused(torch: Any, case: Any) -> tuple[Callable[[], None], Callable[[], dict[str, np.ndarray]]]:
    return _module_fused(torch, case, "lstm")


def gru_fused(torch: Any, case: Any) -> tuple[Callable[[], None], Callable[[], dict[str, np.ndarray]]]:
    return _module_fused(torch, case, "gru")


@dataclass(frozen=True)
class CellBench:
    """One cell in the benchmark: the spec keywords that select it, its torch baselines, the backward checked."""

    name: str
    fused_name: str                                   # what the floor runs, for the output
    tight: Callable[[Any, Any], tuple[Callable[..., Any], list[Any]]]
    fused: Callable[[Any, Any], tuple[Callable[[], None], Callable[[], dict[str, np.ndarray]]]]
    backward: Callable[[], Callable[..., Any]]        # the hand-written backward to check (imported late)
    spec: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = PARAMS                  # the tight loss's arguments, in order


def _builtin_truncated() -> Callable[..., Any]:
    from bptt_check.builtin import truncated

    return truncated


def _builtin(name: str) -> Callable[[], Callable[..., Any]]:
    def load() -> Callable[..., Any]:
        from bptt_check.builtin import BUILTINS

        return BUILTINS[name]

    return load


CELLS: dict[str, CellBench] = {
    "rnn": CellBench("rnn", "nn.RNN + nn.Linear", rnn_tight, rnn_fused, _builtin_truncated),
    "lstm": CellBench("lstm", "nn.LSTM + nn.Linear", lstm_tight, lstm_fused, _builtin("lstm"), {"cell": "lstm"},
                      LSTM_PARAMS),
    "gru": CellBench("gru", "nn.GRU + nn.Linear", gru_tight, gru_fused, _builtin("gru"), {"cell": "gru"},
                     GRU_PARAMS),
}


# ----------------------------------------------------------------- any schedule (the detection rows)

def windowed_loss(torch: Any, spec: Any, T: int, B: int) -> Callable[..., Any]:
    """The spec's (truncated) objective as a torch function of (W, U, b, V, c, h0, x, y), rnn cell,
    half_mse, identity output; each window run from the state entering it, detached."""
    from bptt_check.model.functions import loss_scale

    scale = loss_scale(spec, T, B)
    windows = spec.windows(T)
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}.get(spec.activation, lambda v: v)

    def fn(W: Any, U: Any, b: Any, V: Any, c: Any, h0: Any, x: Any, y: Any) -> Any:
        states = [h0]
        for t in range(T):
            states.append(act(x[t] @ W.T + states[-1] @ U.T + b))
        total = 0.0
        for w in windows:
            h = h0 if w.start == 0 else states[w.start].detach()
            for t in range(w.start, max(w.losses) + 1):
                h = states[t + 1] if w.start == 0 else act(x[t] @ W.T + h @ U.T + b)
                if t in w.losses:
                    target = y if spec.mode == "many-to-one" else y[t]
                    total = total + scale * 0.5 * ((h @ V.T + c - target) ** 2).sum()
        return total

    return fn
