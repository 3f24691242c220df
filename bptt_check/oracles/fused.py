"""The autograd reference on torch's fused RNN kernel, where the spec allows it (DESIGN §3, §5).

The generic autograd oracle (``autograd.py``) differentiates the one forward (``model/forward.py``)
step by step in torch: one small graph node per operation and step. For the built-in ``rnn`` cell with
an activation torch fuses (tanh, relu) the same objective is

    Σ_windows Σ_{t∈L} scale·E_t,   every window run from the state entering it

and each window is a plain ``nn.RNN`` run (``torch.rnn_tanh`` / ``torch.rnn_relu``, with the case's W,
U, b as its weights and no second bias) from the state entering the window: h0 itself for a window
that starts at 0, else the constant state h_{s−1} (the same parameters' forward, detached). So:

- the windows that start at 0 share their steps: one run from h0, as long as the longest of them;
- the other windows are grouped by length and run side by side as one batch (a window's rows are
  its x slice and its entering state), so a per-step window schedule is one fused call, not T;
- the output layer and the losses (``model.functions``) are evaluated once, on every (window, loss
  step) at once, each weighted by how many windows count it.

The numbers are those of the generic oracle to machine precision (``tests/test_oracles.py`` holds the
two together over drawn specs); only the order of the floating-point sums differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.cell import RNN, cell_of
from ..model.functions import loss_scale, step_loss
from ..model.memo import forward_of
from ..model.ops import torch_ops
from ..model.spec import Spec, Window
from . import generic

if TYPE_CHECKING:
    from ..model.cases import Case

# the activations torch has a fused recurrent kernel for, and the cells (lstm: rows (i, f, g, o); gru: rows
# (r, z, n), the reset after the recurrent matmul, h = (1 − z)⊙n + z⊙h — DESIGN §11 follows torch)
FUSED_ACTIVATIONS = ("tanh", "relu")
FUSED_CELLS = ("rnn", "lstm", "gru")
# at most this many numbers per hidden-state array of one fused call (about 32 MiB in float64):
# longer schedules run in several calls, each differentiated before the next is built
CHUNK_FLOATS = 2**22


def supported(spec: Spec) -> bool:
    """Whether the spec is a plain (full or truncated) schedule of a built-in cell that torch fuses — the
    rnn with tanh or relu, the lstm, the gru in torch's convention — on full-length sequences, with an
    output layer and a loss of ``model.functions``."""
    if spec.cell not in FUSED_CELLS or generic.needed(spec.replace(cell="rnn")):
        return False
    cell = cell_of(spec)
    return spec.cell != "rnn" or (type(cell) is RNN and cell.activation in FUSED_ACTIVATIONS)


@dataclass
class _Group:
    """Windows run side by side: each from its start, ``length`` steps, its loss steps weighted."""

    starts: np.ndarray          # (m,) window starts
    length: int
    weights: np.ndarray         # (length, m): how many windows count E at step start + i
    from_h0: bool               # the windows start at 0 (from h0; else from constant entering states)


def groups(windows: list[Window]) -> list[_Group]:
    """The fused calls of a schedule: one for the windows starting at 0, one per length for the rest."""
    out = []
    zero = [w for w in windows if w.start == 0]
    if zero:
        n = max(max(w.losses) for w in zero) + 1
        weights = np.zeros((n, 1))
        for w in zero:
            for t in w.losses:
                weights[t, 0] += 1
        out.append(_Group(np.zeros(1, dtype=np.int64), n, weights, True))
    by_length: dict[int, list[Window]] = {}
    for w in windows:
        if w.start > 0:
            by_length.setdefault(max(w.losses) - w.start + 1, []).append(w)
    for n, ws in sorted(by_length.items()):
        weights = np.zeros((n, len(ws)))
        for j, w in enumerate(ws):
            for t in w.losses:
                weights[t - w.start, j] += 1
        out.append(_Group(np.array([w.start for w in ws], dtype=np.int64), n, weights, False))
    return out


def _chunks(group: _Group, rows: int) -> list[_Group]:
    """A group split so that each call's hidden states hold at most ``CHUNK_FLOATS`` numbers."""
    m = len(group.starts)
    per = max(1, CHUNK_FLOATS // max(1, group.length * rows))
    if per >= m:
        return [group]
    return [_Group(group.starts[lo:lo + per], group.length, group.weights[:, lo:lo + per], group.from_h0)
            for lo in range(0, m, per)]


def fused_gradients(case: Case, device: str | None = None) -> tuple[dict[str, np.ndarray], float]:
    """dL/dθ and dL/dx of the case's (truncated) objective, and L, through torch's fused RNN kernel.

    ``device``: a torch device ("cpu", "cuda", "cuda:1"); the arrays come back as numpy float64.
    """
    import torch

    spec = case.spec
    T, B = case.T, case.B
    dev = torch.device(device or "cpu")
    ops = torch_ops()
    windows = spec.windows(T)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in case.params.items()}
    run = _kernel(torch, spec)
    scale = loss_scale(spec, T, B)
    total = 0.0
    with torch.inference_mode(False), torch.enable_grad():
        leaves = {k: _tensor(torch, v, dev).requires_grad_() for k, v in params.items()}
        x = _tensor(torch, np.asarray(case.x, dtype=np.float64), dev).requires_grad_()
        if spec.loss == "cross_entropy":
            y = torch.as_tensor(np.asarray(case.y), dtype=torch.long, device=dev)
        else:
            y = _tensor(torch, np.asarray(case.y, dtype=np.float64), dev)
        W, U, b = leaves["W"], leaves["U"], leaves.get("b")
        second = leaves.get("bu") if spec.cell == "gru" else None     # the gru's recurrent bias; else b = b_ih
        weights = [W, U] if b is None else [W, U, b, torch.zeros_like(b) if second is None else second]
        H = U.shape[1]
        entering = None
        if any(w.start > 0 for w in windows):   # the states entering the windows: constants (the numpy forward)
            states = forward_of(params, np.asarray(case.x, dtype=np.float64), spec).states
            entering = tuple(torch.as_tensor(np.asarray(s, dtype=np.float64), device=dev) for s in states)
        for group in groups(windows):
            for part in _chunks(group, B * max(H, x.shape[2])):
                loss = _window_loss(part, x, y, leaves, weights, entering, run, spec, scale, ops)
                if loss is not None:
                    loss.backward()
                    total += float(loss.detach())
        grads = {k: _numpy(v.grad, v) for k, v in leaves.items()}
        grads["x"] = _numpy(x.grad, x)
    return grads, total


def _window_loss(group: _Group, x: Any, y: Any, leaves: dict[str, Any], weights: list[Any], entering: Any,
                 run: Any, spec: Spec, scale: float, ops: Any) -> Any:
    """The weighted loss of one fused call: its windows side by side in the batch."""
    import torch

    n, m = group.length, len(group.starts)
    T, B, I = x.shape
    initial = ("h0", "c0") if "c0" in leaves else ("h0",)
    if group.from_h0:
        xs, h = x[:n], tuple(leaves[k][None] for k in initial)
    else:
        starts = torch.as_tensor(group.starts, device=x.device)
        steps = starts[None, :] + torch.arange(n, device=x.device)[:, None]          # (n, m)
        xs = x[steps].reshape(n, m * B, I)
        h = tuple(part[starts].reshape(1, m * B, -1) for part in entering)           # (h, c)_{s-1}, constants
    out = run(xs, h if len(h) > 1 else h[0], weights, len(weights) == 4, 1, 0.0, True, False, False)[0]
    i, j = np.nonzero(group.weights)                                                # the loss positions
    if len(i) == 0:
        return None
    every = len(i) == n * m and group.from_h0          # windows from 0 with a loss at every step: no gather
    if every:
        hs = out
    else:
        hs = out.reshape(n, m, B, -1)[torch.as_tensor(i, device=x.device), torch.as_tensor(j, device=x.device)]
    yhat = hs @ leaves["V"].T
    if "c" in leaves:
        yhat = yhat + leaves["c"]
    if spec.mode == "many-to-one":
        target = y
    elif every:
        target = y[:n]
    else:
        target = y[torch.as_tensor(group.starts[j] + i, device=x.device)]
    e = ops.sum(step_loss(spec, yhat, target, ops), -1)                                # (positions,)
    if (group.weights[i, j] == 1).all():
        return scale * e.sum()
    count = torch.as_tensor(group.weights[i, j], dtype=e.dtype, device=x.device)
    return scale * (count * e).sum()


def _kernel(torch: Any, spec: Spec) -> Any:
    """torch's fused multi-step kernel of the spec's cell (called as ``run(x, hx, weights, has_biases, ...)``)."""
    if spec.cell == "lstm":
        return torch.lstm
    if spec.cell == "gru":
        return torch.gru
    return torch.rnn_tanh if spec.activation == "tanh" else torch.rnn_relu


def _tensor(torch: Any, a: np.ndarray, device: Any) -> Any:
    """A float64 tensor of ``a`` on ``device``, sharing its memory where it can (only read)."""
    if device.type == "cpu" and a.flags.writeable and a.flags.c_contiguous:
        return torch.from_numpy(a)
    return torch.tensor(a, device=device)


def _numpy(grad: Any, like: Any) -> np.ndarray:
    if grad is None:
        return np.zeros(tuple(like.shape))
    return np.asarray(grad.detach().cpu().numpy(), dtype=np.float64)


__all__ = ["supported", "fused_gradients", "groups", "FUSED_ACTIVATIONS", "FUSED_CELLS"]
