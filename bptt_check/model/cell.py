"""Recurrent cells: each is one step forward and one step back, and nothing else (DESIGN §1, §11).

A cell says which parameters it has and which parts its state has; ``step`` computes one step in any
namespace (numpy real or complex, torch), ``backward_step`` takes one step back in numpy. Everything
else — the forward over a sequence, the windows of truncation, the output layer and the losses, the
reverse recursion, the mistake variants, coverage, kinks — is written once, over any cell
(``forward.py``, ``backprop.py``).

A state is a tuple of parts; the first part is the hidden state the output layer reads. The initial
state of part ``p`` is the parameter ``p + "0"`` (``h0``; an LSTM adds ``c0``).

``backward_step`` returns, for step t, the gradient reaching the state entering the step, dL/dx_t,
and each parameter's contribution as a *factor pair* ``(delta, input)``: the contribution is
``deltaᵀ @ input`` summed over the batch (``input`` None: ``delta`` summed over the batch, a bias).
Keeping the pairs lets the recursion sum them, keep them per sample, or attribute them to steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .functions import act, act_grad
from .ops import NUMPY
from .spec import Spec

if TYPE_CHECKING:
    from .backprop import Knobs
    from .forward import Trace

Array = np.ndarray
Contribution = tuple[Array, Array | None]


def _formula_from_output(activation: str, v: Array) -> Array:
    """f' written in terms of the output h = f(ĥ): what people code, here fed ``v``."""
    if activation == "tanh":
        return 1.0 - v ** 2
    if activation == "sigmoid":
        return v * (1.0 - v)
    if activation == "relu":
        return (v > 0).astype(v.dtype)
    return np.ones_like(v)


@dataclass(frozen=True)
class RNN:
    """The vanilla cell: ĥ_t = x_t Wᵀ + h_{t−1} Uᵀ + b, h_t = f(ĥ_t)."""

    activation: str = "tanh"
    name = "rnn"
    states = ("h",)

    def parameters(self, I: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:  # noqa: E741
        shapes = {"W": (H, I), "U": (H, H)}
        if bias:
            shapes["b"] = (H,)
        return shapes

    def initial(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return (params["h0"],)

    def step(self, p: dict[str, Any], x_t: Any, state: tuple[Any, ...], ops: Any = NUMPY
             ) -> tuple[tuple[Any, ...], Any]:
        """(h_t,) and the pre-activation ĥ_t from (h_{t−1},)."""
        z = x_t @ ops.mT(p["W"]) + state[0] @ ops.mT(p["U"])
        b = p.get("b")
        if b is not None:
            z = z + b[..., None, :]
        z = ops.keep_pre(z)
        return (act(self.activation, z, ops),), z

    def pre_activations(self, cache: Any) -> list[Any]:
        """The values whose sign decides a relu's branch (for the kinks)."""
        return [cache] if self.activation == "relu" else []

    def backward_step(self, tr: Trace, t: int, dstate: tuple[Array, ...], k: Knobs
                      ) -> tuple[tuple[Array, ...], dict[str, Contribution], Array]:
        """One step back: (dh_{t−1},), the contributions of W, U, b, and dx_t (with the mistake ``k``)."""
        p = tr.params
        h = tr.states[0]
        dhhat = dstate[0] * self._fprime(tr, t, k)
        hu = h[t + 1] if k.state_shift else h[t]
        contrib: dict[str, Contribution] = {"W": (dhhat, tr.x[t]), "U": (dhhat, hu)}
        if "b" in p:
            contrib["b"] = (dhhat, None)
        recur = {"U": p["U"], "UT": p["U"].T, "W": p["W"]}.get(k.recur, p["U"])
        return (dhhat @ recur,), contrib, dhhat @ p["W"]

    def _fprime(self, tr: Trace, t: int, k: Knobs) -> Array:
        name, hhat, h, T = self.activation, tr.cache[t], tr.states[0], tr.T
        if k.dact == "right":
            return act_grad(name, hhat)
        if k.dact == "formula_on_pre":
            return _formula_from_output(name, hhat)
        if k.dact == "at_output":
            return act_grad(name, h[t + 1])
        if k.dact == "missing":
            return np.ones_like(hhat)
        if k.dact == "previous_state":
            return _formula_from_output(name, h[t])
        if k.dact == "next_state":
            return _formula_from_output(name, h[min(t + 2, T)])
        if k.dact == "unsquared":
            return 1.0 - h[t + 1] if name in ("tanh", "sigmoid") else act_grad(name, hhat)
        raise ValueError(k.dact)

    def can(self, k: Knobs, params: dict[str, Any]) -> bool:
        """Whether the mistake ``k`` can be expressed for these parameters."""
        if k.recur == "W" and np.shape(params["W"]) != np.shape(params["U"]):
            return False
        return True


def cell_of(spec: Spec) -> RNN:
    """The cell a spec describes."""
    return RNN(spec.activation)


__all__ = ["RNN", "cell_of", "Contribution"]
