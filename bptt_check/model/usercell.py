"""A cell of your own (DESIGN §11), seen through the same protocol as the built-in cells.

You give an object with

    parameters(I, H) -> {name: shape}       the cell's parameters (the output layer V, c is added)
    states(B, H) -> {name: shape}           the state's parts; the first is the hidden state the output
                                            layer reads; part ``s`` starts from the parameter ``s + "0"``
    step(p, x_t, states) -> tuple           one step, written with torch operations

and :class:`UserCell` makes it a cell for every part of bptt-check: the one forward runs your step
(torch tensors in, arrays out: float64 for the reference forward, complex128 for the complex step,
a leading axis of perturbed copies through ``torch.func.vmap``), autograd differentiates it (the
reference), and one step back is the vector-Jacobian product of your step (``backward_step``, for
the diagnosis, coverage and the temporal map). A step that is not analytic in complex128 (relu,
abs, max) cannot take the complex step: the oracles then use finite differences and say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from .backprop import Knobs
    from .forward import Trace

Array = np.ndarray
REQUIRED = ("parameters", "states", "step")


class NotAnalytic(Exception):
    """The cell's step failed on complex numbers: the complex step does not apply to it."""


def check_user_cell(obj: Any, name: str) -> None:
    missing = [m for m in REQUIRED if not callable(getattr(obj, m, None))]
    if missing:
        raise UsageError(f"cell {name!r} lacks {', '.join(missing)}: a cell is an object with parameters(I, H) "
                         "-> {name: shape}, states(B, H) -> {name: shape} and step(p, x_t, states) -> tuple")


def _torch() -> Any:
    import torch

    return torch


@dataclass(frozen=True)
class UserCell:
    """Your cell, as bptt-check's cells are used."""

    name: str
    obj: Any
    gates = 1
    activation = "tanh"

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(self.obj.states(1, 1))

    def parameters(self, I: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:  # noqa: E741
        shapes = {str(k): tuple(int(s) for s in v) for k, v in dict(self.obj.parameters(I, H)).items()}
        clash = sorted(set(shapes) & {"V", "c", "x", *(f"{s}0" for s in self.states)})
        if clash:
            raise UsageError(f"cell {self.name!r}: parameter name(s) {clash} are taken by the output layer (V, c), "
                             "the input x or the initial states; rename them")
        return shapes

    def initial(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(params[f"{s}0"] for s in self.states)

    def initial_shapes(self, B: int, H: int) -> dict[str, tuple[int, ...]]:
        return {f"{s}0": tuple(int(d) for d in shape) for s, shape in dict(self.obj.states(B, H)).items()}

    # ------------------------------------------------------------ one step forward

    def step(self, p: Mapping[str, Any], x_t: Any, state: tuple[Any, ...], ops: Any) -> tuple[tuple[Any, ...], Any]:
        if getattr(ops, "name", "") == "torch":
            return tuple(self.obj.step(dict(p), x_t, tuple(state))), None
        torch = _torch()
        out = self._numpy_step(torch, p, x_t, state)
        return tuple(ops.keep(s) for s in out), None

    def _numpy_step(self, torch: Any, p: Mapping[str, Any], x_t: Any, state: tuple[Any, ...]) -> tuple[Any, ...]:
        """Your step on numpy arrays (real or complex, with or without a leading axis of copies)."""
        arrays = [np.asarray(v) for v in (*p.values(), x_t, *state)]
        dtype = np.result_type(*arrays)               # one dtype for all: complex when one is complex

        def tensor(a: Any) -> Any:
            return torch.as_tensor(np.asarray(a, dtype=dtype))

        tp = {k: tensor(v) for k, v in p.items() if k not in ("V", "c")}
        tx = tensor(x_t)
        ts = tuple(tensor(s) for s in state)
        B, H = ts[0].shape[-2], ts[0].shape[-1]
        want_p = self.parameters(tx.shape[-1], H, True)
        want_s = list(dict(self.obj.states(B, H)).values())
        dims_p = {k: (0 if v.dim() > len(want_p.get(k, v.shape)) else None) for k, v in tp.items()}
        dims_x = 0 if tx.dim() > 2 else None
        dims_s = tuple(0 if s.dim() > len(w) else None for s, w in zip(ts, want_s))
        try:
            if any(d == 0 for d in (*dims_p.values(), dims_x, *dims_s)):
                step = torch.func.vmap(lambda a, b, c: tuple(self.obj.step(a, b, c)), in_dims=(dims_p, dims_x, dims_s))
                out = step(tp, tx, ts)
            else:
                out = tuple(self.obj.step(tp, tx, ts))
        except Exception as exc:
            if tx.is_complex() or any(v.is_complex() for v in tp.values()):
                raise NotAnalytic(f"{type(exc).__name__}: {exc}") from exc
            raise
        return tuple(o.detach().numpy() if hasattr(o, "detach") else np.asarray(o) for o in out)

    def pre_activations(self, cache: Any) -> list[Any]:
        return []                 # no kink is known inside your step

    # ------------------------------------------------------------ one step back

    def backward_step(self, tr: Trace, t: int, dstate: tuple[Array, ...], k: Knobs
                      ) -> tuple[tuple[Array, ...], dict[str, Any], Array]:
        """The vector-Jacobian product of your step at step t: (dstate_{t−1}, {parameter: dθ}, dx_t)."""
        torch = _torch()
        names = [n for n in self.parameters(tr.x.shape[2], tr.states[0].shape[-1], True)]
        with torch.inference_mode(False), torch.enable_grad():
            tp = {n: torch.tensor(np.asarray(tr.params[n], dtype=np.float64), requires_grad=True) for n in names}
            tx = torch.tensor(np.asarray(tr.x[t], dtype=np.float64), requires_grad=True)
            ts = tuple(torch.tensor(np.asarray(s[t], dtype=np.float64), requires_grad=True) for s in tr.states)
            out = tuple(self.obj.step(tp, tx, ts))
            cot = [torch.as_tensor(np.asarray(d, dtype=np.float64)) for d in dstate]
            inputs = [*tp.values(), tx, *ts]
            grads = torch.autograd.grad(out, inputs, grad_outputs=cot, allow_unused=True)

        def arr(g: Any, like: Any) -> Array:
            return np.zeros(tuple(like.shape)) if g is None else g.detach().numpy()

        dparams = {n: arr(g, tp[n]) for n, g in zip(names, grads[:len(names)])}
        dx = arr(grads[len(names)], tx)
        dprev = tuple(arr(g, s) for g, s in zip(grads[len(names) + 1:], ts))
        return dprev, dparams, dx

    def can(self, k: Knobs, params: Mapping[str, Any]) -> bool:
        """Only mistakes of the recursion itself (windows, steps, losses) apply to a cell of yours."""
        return k.recur in ("U", "zero", "zero_inside") and k.dact == "right" and not k.state_shift and not k.cell

    def mistakes(self) -> list[tuple[str, str, str]]:
        return []

    def variant(self, mistake: str) -> UserCell:
        return self
