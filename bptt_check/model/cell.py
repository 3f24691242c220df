"""Recurrent cells: each is one step forward and one step back, and nothing else (DESIGN §1, §11).

A cell says which parameters it has and which parts its state has; ``step`` computes one step in any
namespace (numpy real or complex, torch, duals), ``backward_step`` takes one step back in numpy. A cell
may have ``inputs``: the part of every step that reads only x (x_t Wᵀ + b), for all steps in one
product; ``step`` then gets that part of its step instead of x_t (the built-in cells; a cell of your own
gets x_t). Everything
else — the forward over a sequence, the windows of truncation, the output layer and the losses, the
reverse recursion, the mistake variants, coverage, kinks — is written once, over any cell
(``forward.py``, ``backprop.py``).

A state is a tuple of parts; the first part is the hidden state the output layer reads. The initial
state of part ``p`` is the parameter ``p + "0"`` (``h0``; an LSTM adds ``c0``).

- ``rnn``: W (H, I), U (H, H), b (H,); state h: h_t = f(x_t Wᵀ + h_{t−1} Uᵀ + b).
- ``lstm``: W (4H, I), U (4H, H), b (4H,), rows (i, f, g, o); state h, c: i, f, o = σ(·), g = tanh(·) of
  x_t Wᵀ + h_{t−1} Uᵀ + b per block; c_t = f⊙c_{t−1} + i⊙g; h_t = o⊙tanh(c_t).
- ``gru``: W (3H, I), U (3H, H), b (3H,), bu (3H,), rows (r, z, n); state h: r, z = σ(x W_{r,z}ᵀ + b + h U_{r,z}ᵀ
  + bu); n = tanh(x W_nᵀ + b_n + r⊙(h U_nᵀ + bu_n)); h_t = (1 − z)⊙n + z⊙h_{t−1}.

(row-vector batch form, torch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` conventions)

GRU conventions differ between codebases and are declared, not guessed: ``gru:z=n`` is the
"fully gated unit" form h_t = (1 − z)⊙h_{t−1} + z⊙n; ``gru:reset=before`` applies the reset before
the recurrent matmul, n = tanh(x W_nᵀ + b_n + (r⊙h) U_nᵀ + bu_n) (Cho et al., Keras
``reset_after=False``).

``backward_step`` returns, for step t, the gradient reaching the state entering the step, dL/dx_t,
and each parameter's contribution as :class:`Term` s — ``deltaᵀ @ input`` summed over the batch
(``input`` None: ``delta`` summed, a bias), filling some rows of the parameter — or as an array
already summed over the batch. Keeping the terms lets the recursion sum them, keep them per sample,
or attribute them to steps. A cell also lists the mistakes a hand-written backward of it commonly
makes (:meth:`mistakes`), as data the diagnosis tries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..importer import import_object
from .functions import act, act_grad
from .ops import NUMPY
from .usercell import UserCell, check_user_cell

if TYPE_CHECKING:
    from .backprop import Knobs
    from .forward import Trace
    from .spec import Spec

Array = np.ndarray


@dataclass(frozen=True)
class Term:
    """One part of a parameter's contribution at one step: ``deltaᵀ @ input`` over the batch."""

    delta: Array                  # (B, rows)
    input: Array | None = None    # (B, cols); None: a bias (delta summed over the batch)
    rows: slice | None = None     # the rows of the parameter it fills (None: all)


Contribution = "tuple[Term, ...] | Array"   # terms, or a gradient already summed over the batch


def summed(c: Any, shape: tuple[int, ...]) -> Array:
    """A contribution as the parameter-shaped gradient it adds."""
    if not isinstance(c, tuple):
        return np.asarray(c)
    out = np.zeros(shape, dtype=np.result_type(*(t.delta for t in c)))
    for t in c:
        part = t.delta.sum(axis=0) if t.input is None else t.delta.T @ t.input
        if t.rows is None:
            out += part
        else:
            out[t.rows] += part
    return out


def per_sample(c: Any, shape: tuple[int, ...]) -> Array | None:
    """A contribution per sample, (B, *shape) (None: the cell only gives it summed)."""
    if not isinstance(c, tuple):
        return None
    B = c[0].delta.shape[0]
    out = np.zeros((B, *shape), dtype=np.result_type(*(t.delta for t in c)))
    for t in c:
        part = t.delta if t.input is None else t.delta[:, :, None] * t.input[:, None, :]
        if t.rows is None:
            out += part
        else:
            out[:, t.rows] += part
    return out


def _bias(b: Any) -> Any:
    """A bias (…, n) broadcast over the batch axis."""
    return b[..., None, :]


def _formula_from_output(activation: str, v: Array) -> Array:
    """f' written in terms of the output h = f(ĥ): what people code, here fed ``v``."""
    if activation == "tanh":
        return 1.0 - v ** 2
    if activation == "sigmoid":
        return v * (1.0 - v)
    if activation == "relu":
        return (v > 0).astype(v.dtype)
    return np.ones_like(v)


def _sig(z: Array) -> Array:
    return act("sigmoid", z)


def _inputs(p: Mapping[str, Any], x: Any, ops: Any) -> Any:
    """x_t Wᵀ + b for every step of x (..., n, B, I) in one product of n·B rows (a leading copy axis stays)."""
    n, B, I = x.shape[-3:]  # noqa: E741
    flat = x.reshape(*x.shape[:-3], n * B, I) @ ops.mT(p["W"])
    b = p.get("b")
    if b is not None:
        flat = flat + _bias(b)
    return flat.reshape(*flat.shape[:-2], n, B, flat.shape[-1])


def _blocks_transposed(U: Array, n: int) -> Array:
    """U with each of its n stacked (H, H) gate blocks transposed."""
    H = U.shape[1]
    return U.reshape(n, H, H).transpose(0, 2, 1).reshape(n * H, H)


# ----------------------------------------------------------------- rnn

@dataclass(frozen=True)
class RNN:
    """The vanilla cell: ĥ_t = x_t Wᵀ + h_{t−1} Uᵀ + b, h_t = f(ĥ_t)."""

    activation: str = "tanh"
    name = "rnn"
    states = ("h",)
    gates = 1

    def parameters(self, I: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:  # noqa: E741
        shapes = {"W": (H, I), "U": (H, H)}
        if bias:
            shapes["b"] = (H,)
        return shapes

    def initial(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return (params["h0"],)

    def initial_shapes(self, B: int, H: int) -> dict[str, tuple[int, ...]]:
        return {f"{part}0": (B, H) for part in self.states}

    def inputs(self, p: Mapping[str, Any], x: Any, ops: Any = NUMPY) -> Any:
        """x_t Wᵀ + b for every step (what ``step`` takes)."""
        return _inputs(p, x, ops)

    def step(self, p: Mapping[str, Any], xw: Any, state: tuple[Any, ...], ops: Any = NUMPY
             ) -> tuple[tuple[Any, ...], Any]:
        """(h_t,) and the pre-activation ĥ_t from x_t Wᵀ + b and (h_{t−1},)."""
        z = ops.keep_pre(xw + state[0] @ ops.mT(p["U"]))
        return (act(self.activation, z, ops),), z

    def pre_activations(self, cache: Any) -> list[Any]:
        """The values whose sign decides a relu's branch (for the kinks)."""
        return [cache] if self.activation == "relu" else []

    def backward_step(self, tr: Trace, t: int, dstate: tuple[Array, ...], k: Knobs
                      ) -> tuple[tuple[Array, ...], dict[str, Any], Array]:
        """One step back: (dh_{t−1},), the contributions of W, U, b, and dx_t (with the mistake ``k``)."""
        p = tr.params
        h = tr.states[0]
        dhhat = dstate[0] * self._fprime(tr, t, k)
        hu = h[t + 1] if k.state_shift else h[t]
        contrib: dict[str, Any] = {"W": (Term(dhhat, tr.x[t]),), "U": (Term(dhhat, hu),)}
        if "b" in p:
            contrib["b"] = (Term(dhhat),)
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

    def can(self, k: Knobs, params: Mapping[str, Any]) -> bool:
        """Whether the mistake ``k`` can be expressed for these parameters."""
        return not (k.recur == "W" and np.shape(params["W"]) != np.shape(params["U"]))

    def mistakes(self) -> list[tuple[str, str, str]]:
        """(knob, diagnosis code, sentence) of the mistakes specific to this cell (the rnn's are general)."""
        return []

    def variant(self, mistake: str) -> RNN:
        return self


# ----------------------------------------------------------------- lstm

LSTM_BLOCKS = "ifgo"
# the gate orders a hand-written backward may assemble dz in while its forward uses (i, f, g, o)
LSTM_ORDERS = ("ifog", "fgio", "fiog", "ifgo"[::-1], "gifo", "iofg")


@dataclass(frozen=True)
class LSTM:
    """The LSTM of torch's ``nn.LSTM``: gate rows (i, f, g, o), b = torch's b_ih + b_hh."""

    name = "lstm"
    states = ("h", "c")
    activation = "tanh"
    gates = 4

    def parameters(self, I: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:  # noqa: E741
        shapes = {"W": (4 * H, I), "U": (4 * H, H)}
        if bias:
            shapes["b"] = (4 * H,)
        return shapes

    def initial(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return (params["h0"], params["c0"])

    def initial_shapes(self, B: int, H: int) -> dict[str, tuple[int, ...]]:
        return {"h0": (B, H), "c0": (B, H)}

    def inputs(self, p: Mapping[str, Any], x: Any, ops: Any = NUMPY) -> Any:
        """x_t Wᵀ + b for every step (what ``step`` takes)."""
        return _inputs(p, x, ops)

    def step(self, p: Mapping[str, Any], xw: Any, state: tuple[Any, ...], ops: Any = NUMPY
             ) -> tuple[tuple[Any, ...], Any]:
        """(h_t, c_t) and the gates' pre-activations z_t from x_t Wᵀ + b and (h_{t−1}, c_{t−1})."""
        h, c = state
        H = h.shape[-1]
        z = ops.keep_pre(xw + h @ ops.mT(p["U"]))
        s = ops.sigmoid(z[..., :2 * H])
        i, f = s[..., :H], s[..., H:]
        g, o = ops.tanh(z[..., 2 * H:3 * H]), ops.sigmoid(z[..., 3 * H:])
        c = f * c + i * g
        return (o * ops.tanh(c), c), z

    def pre_activations(self, cache: Any) -> list[Any]:
        return []

    def backward_step(self, tr: Trace, t: int, dstate: tuple[Array, ...], k: Knobs
                      ) -> tuple[tuple[Array, ...], dict[str, Any], Array]:
        p = tr.params
        h, c = tr.states
        z = tr.cache[t]
        H = h.shape[-1]
        i, f, g, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sig(z[:, 3 * H:])
        dh, dc = dstate
        # h_t = o ⊙ tanh(c_t)
        tc = np.tanh(c[t + 1])
        do = dh * tc
        dc = dc + dh * o * (1.0 if k.cell == "tanh_c_prime_missing" else 1.0 - tc ** 2)
        # c_t = f ⊙ c_{t−1} + i ⊙ g
        di, dg, df = dc * g, dc * i, dc * c[t]
        dc_prev = dc if k.cell == "forget_missing" else dc * f
        # the gates: σ' = s(1 − s), tanh' = 1 − g²
        blocks = {"i": di * i * (1.0 - i), "f": df * f * (1.0 - f), "g": dg * (1.0 - g ** 2), "o": do * o * (1.0 - o)}
        order = k.cell.removeprefix("gate_order:") if k.cell.startswith("gate_order:") else LSTM_BLOCKS
        dz = np.concatenate([blocks[name] for name in order], axis=-1)
        hu = h[t + 1] if k.state_shift else h[t]
        contrib: dict[str, Any] = {"W": (Term(dz, tr.x[t]),), "U": (Term(dz, hu),)}
        if "b" in p:
            contrib["b"] = (Term(dz),)
        recur = {"U": p["U"], "UT": _blocks_transposed(p["U"], 4), "W": p["W"]}.get(k.recur, p["U"])
        return (dz @ recur, dc_prev), contrib, dz @ p["W"]

    def can(self, k: Knobs, params: Mapping[str, Any]) -> bool:
        return not (k.recur == "W" and np.shape(params["W"]) != np.shape(params["U"]))

    def mistakes(self) -> list[tuple[str, str, str]]:
        out = [("forget_missing", "forget_gate_missing",
                "the forget gate is missing on the cell-state path: dc_{t−1} = dc_t instead of dc_t ⊙ f_t"),
               ("tanh_c_prime_missing", "cell_tanh_derivative_missing",
                "tanh′ of the cell state is missing: dc_t += dh_t ⊙ o_t instead of dh_t ⊙ o_t ⊙ (1 − tanh²(c_t))")]
        for order in LSTM_ORDERS:
            out.append((f"gate_order:{order}", "gate_order",
                        f"the gate blocks of the backward are stacked ({', '.join(order)}) while the forward's are "
                        "(i, f, g, o): dz's blocks are in the wrong order"))
        return out

    def variant(self, mistake: str) -> LSTM:
        return self


# ----------------------------------------------------------------- gru

GRU_Z = ("h", "n")             # which of h_{t−1}, n the gate z multiplies
GRU_RESET = ("after", "before")


@dataclass(frozen=True)
class GRU:
    """The GRU of torch's ``nn.GRU`` (rows (r, z, n); b = b_ih, bu = b_hh), or a declared variant."""

    z: str = "h"
    reset: str = "after"
    states = ("h",)
    activation = "tanh"
    gates = 3

    def __post_init__(self) -> None:
        if self.z not in GRU_Z or self.reset not in GRU_RESET:
            raise UsageError(f"gru options z={self.z!r}, reset={self.reset!r}: z is h (torch: h = z⊙h + (1 − z)⊙n) "
                             "or n (h = (1 − z)⊙h + z⊙n); reset is after (torch) or before the recurrent matmul")

    @property
    def name(self) -> str:
        opts = [f"z={self.z}"] if self.z != "h" else []
        opts += [f"reset={self.reset}"] if self.reset != "after" else []
        return "gru" + (":" + ",".join(opts) if opts else "")

    def parameters(self, I: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:  # noqa: E741
        shapes = {"W": (3 * H, I), "U": (3 * H, H)}
        if bias:
            shapes["b"] = (3 * H,)
            shapes["bu"] = (3 * H,)
        return shapes

    def initial(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return (params["h0"],)

    def initial_shapes(self, B: int, H: int) -> dict[str, tuple[int, ...]]:
        return {"h0": (B, H)}

    def inputs(self, p: Mapping[str, Any], x: Any, ops: Any = NUMPY) -> Any:
        """x_t Wᵀ + b for every step (what ``step`` takes)."""
        return _inputs(p, x, ops)

    def step(self, p: Mapping[str, Any], xw: Any, state: tuple[Any, ...], ops: Any = NUMPY
             ) -> tuple[tuple[Any, ...], Any]:
        """(h_t,) and (the pre-activations of r, z, n; what r multiplies) from x_t Wᵀ + b and (h_{t−1},)."""
        h = state[0]
        H = h.shape[-1]
        U, bu, gx = p["U"], p.get("bu"), xw
        # reset after: the three blocks' h U_·ᵀ + bu_· in one product; before: r and z's only
        gh = h @ ops.mT(U if self.reset == "after" else U[..., :2 * H, :])
        if bu is not None:
            gh = gh + _bias(bu if self.reset == "after" else bu[..., :2 * H])
        rz = gx[..., :2 * H] + gh[..., :2 * H]
        gates = ops.sigmoid(rz)
        r, z = gates[..., :H], gates[..., H:]
        if self.reset == "after":
            hn = gh[..., 2 * H:]
            a_n = gx[..., 2 * H:] + r * hn
        else:
            hn = r * h
            a_n = gx[..., 2 * H:] + hn @ ops.mT(U[..., 2 * H:, :])
            if bu is not None:
                a_n = a_n + _bias(bu[..., 2 * H:])
        a = ops.keep_pre(ops.concat([rz, a_n]))
        n = ops.tanh(a[..., 2 * H:])
        h = z * h + (1.0 - z) * n if self.z == "h" else (1.0 - z) * h + z * n
        return (h,), (a, hn)

    def pre_activations(self, cache: Any) -> list[Any]:
        return []

    def backward_step(self, tr: Trace, t: int, dstate: tuple[Array, ...], k: Knobs
                      ) -> tuple[tuple[Array, ...], dict[str, Any], Array]:
        p = tr.params
        a, hn = tr.cache[0][t], tr.cache[1][t]
        hprev = tr.states[0][t]
        H = hprev.shape[-1]
        r, z, n = _sig(a[:, :H]), _sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:])
        dh = dstate[0]
        # h_t = z ⊙ h_{t−1} + (1 − z) ⊙ n   (z=n: (1 − z) ⊙ h_{t−1} + z ⊙ n)
        if self.z == "h":
            dn, dz, dprev = dh * (1.0 - z), dh * (hprev - n), dh * z
        else:
            dn, dz, dprev = dh * z, dh * (n - hprev), dh * (1.0 - z)
        # n = tanh(a_n)
        dan = dn * (1.0 - n ** 2)
        dz_pre = dz * z * (1.0 - z)
        hu = tr.states[0][t + 1] if k.state_shift else hprev
        U = {"U": p["U"], "UT": _blocks_transposed(p["U"], 3), "W": p["W"]}.get(k.recur, p["U"])
        if self.reset == "after":
            # a_n = x W_nᵀ + b_n + r ⊙ (h U_nᵀ + bu_n)
            seen = hn - (p["bu"][2 * H:] if k.cell == "bn_outside_reset" and "bu" in p else 0.0)
            dr_pre = dan * seen * r * (1.0 - r)
            dgh_n = dan if k.cell == "r_factor_missing" else dan * r
            dgh = np.concatenate([dr_pre, dz_pre, dgh_n], axis=-1)
            u_terms = (Term(dgh, hu),)
            bu_delta = np.concatenate([dr_pre, dz_pre, dan if k.cell == "bn_outside_reset" else dgh_n], axis=-1)
            dprev = dprev + dgh @ U
        else:
            # a_n = x W_nᵀ + b_n + (r ⊙ h) U_nᵀ + bu_n
            d_rh = dan @ U[2 * H:]
            dr_pre = d_rh * hprev * r * (1.0 - r)
            drz = np.concatenate([dr_pre, dz_pre], axis=-1)
            u_terms = (Term(drz, hu, slice(0, 2 * H)), Term(dan, r * hu, slice(2 * H, 3 * H)))
            bu_delta = np.concatenate([dr_pre, dz_pre, dan], axis=-1)
            dprev = dprev + d_rh * r + drz @ U[:2 * H]
        if k.cell == "r_path_dropped":
            dprev = dprev - dr_pre @ U[:H]
        dgx = np.concatenate([dr_pre, dz_pre, dan], axis=-1)
        contrib: dict[str, Any] = {"W": (Term(dgx, tr.x[t]),), "U": u_terms}
        if "b" in p:
            contrib["b"] = (Term(dgx),)
        if "bu" in p:
            contrib["bu"] = (Term(bu_delta),)
        return (dprev,), contrib, dgx @ p["W"]

    def can(self, k: Knobs, params: Mapping[str, Any]) -> bool:
        if k.recur == "W" and np.shape(params["W"]) != np.shape(params["U"]):
            return False
        if k.cell == "r_factor_missing" and self.reset != "after":
            return False
        return not (k.cell == "bn_outside_reset" and (self.reset != "after" or "bu" not in params))

    def mistakes(self) -> list[tuple[str, str, str]]:
        out = [("z_flipped", "gru_z_convention",
                "the z gate is used the other way round: the backward is of "
                + ("h = (1 − z)⊙h_{t−1} + z⊙n (the fully gated form: declare --cell gru:z=n if that is your model)"
                   if self.z == "h" else "h = z⊙h_{t−1} + (1 − z)⊙n (torch's form: declare --cell gru)")),
               ("reset_flipped", "gru_reset_convention",
                "the reset gate is applied "
                + ("before the recurrent matmul, (r⊙h) U_nᵀ (Cho et al.; declare --cell gru:reset=before)"
                   if self.reset == "after" else "after the recurrent matmul, r⊙(h U_nᵀ + bu_n) (torch; declare "
                   "--cell gru)")),
               ("r_path_dropped", "gru_reset_path_dropped",
                "the path through the reset gate r back to h_{t−1} is dropped: dh_{t−1} lacks dr̂ U_r")]
        if self.reset == "after":
            out.append(("r_factor_missing", "gru_reset_factor_missing",
                        "the reset factor r is missing from the recurrent term's gradient: d(h U_nᵀ + bu_n) = dn̂ "
                        "instead of dn̂ ⊙ r (dU_n, dbu_n and dh_{t−1} wrong)"))
            out.append(("bn_outside_reset", "gru_bias_outside_reset",
                        "the recurrent bias of n is treated as outside the reset product: dbu_n = dn̂ instead of "
                        "dn̂ ⊙ r, and dr uses h U_nᵀ without bu_n"))
        return out

    def variant(self, mistake: str) -> GRU:
        """The model a forward-convention mistake computes (a backward mistake keeps this one)."""
        if mistake == "z_flipped":
            return GRU("n" if self.z == "h" else "h", self.reset)
        if mistake == "reset_flipped":
            return GRU(self.z, "before" if self.reset == "after" else "after")
        return self


CELLS = ("rnn", "lstm", "gru")
Cell = "RNN | LSTM | GRU"


def parse_cell(text: str) -> tuple[str, str]:
    """``gru:z=n,reset=before`` -> its canonical name (``UsageError`` if it is no built-in cell)."""
    base, _, opts = str(text).strip().lower().partition(":")
    if base not in CELLS:
        raise UsageError(f"unknown cell {text!r}; choose rnn, lstm, gru (gru:z=n, gru:reset=before), or give your "
                         "own cell object (Python cell=...) or path.py:NAME / module:NAME on the command line")
    if base != "gru":
        if opts:
            raise UsageError(f"cell {base!r} takes no options, got {text!r}")
        return base, base
    kv: dict[str, str] = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in ("z", "reset"):
            raise UsageError(f"cell {text!r}: options are z=h|n and reset=after|before, e.g. gru:z=n,reset=before")
        kv[key] = value
    return base, GRU(kv.get("z", "h"), kv.get("reset", "after")).name


def cell_of(spec: Spec) -> Any:
    """The cell a spec describes."""
    base = spec.cell.partition(":")[0]
    if base == "rnn":
        return RNN(spec.activation)
    if base == "lstm":
        return LSTM()
    if base == "gru":
        opts = dict(o.split("=") for o in spec.cell.partition(":")[2].split(",") if o)
        return GRU(opts.get("z", "h"), opts.get("reset", "after"))
    return user_cell(spec.cell)


# user-defined cells, by the name their spec carries (registered when a Spec is made with the object)
_USER_CELLS: dict[str, Any] = {}


def register(name: str, cell: Any) -> None:
    """Know a cell of the user's by ``name`` (a class is made into its instance, with no arguments)."""
    if isinstance(cell, type):
        try:
            cell = cell()
        except TypeError as exc:
            raise UsageError(f"cell {name!r} is a class that cannot be made without arguments ({exc}); "
                             "pass an instance") from None
    check_user_cell(cell, name)
    _USER_CELLS[name] = cell


def cell_name(cell: Any) -> str:
    """The name a user's cell object is known by: its ``name`` attribute, else module:qualname."""
    name = getattr(cell, "name", None)
    if isinstance(name, str) and name:
        return name
    kind = cell if isinstance(cell, type) else type(cell)
    return f"{kind.__module__}:{kind.__qualname__}"


def user_cell(name: str) -> Any:
    """A cell of the user's by its name: given as an object before, or importable as path.py:NAME / module:NAME."""
    if name not in _USER_CELLS:
        if ":" not in name:
            raise UsageError(f"cell {name!r} is not a built-in cell (rnn, lstm, gru) and no cell object of that "
                             "name was given: pass the object (Spec(cell=obj)) or name it path.py:NAME / module:NAME")
        register(name, import_object(name))
    return UserCell(name, _USER_CELLS[name])


__all__ = ["RNN", "LSTM", "GRU", "Term", "cell_of", "parse_cell", "summed", "per_sample", "CELLS"]
