"""Plugging in a backward written in someone else's conventions (DESIGN §4).

A :class:`Layout` says how your code stores things — names, row or column
vectors, ``(out, in)`` or ``(in, out)`` weights, time- or batch-major arrays,
index or one-hot inputs, which parameters it lacks, how its initial state is
treated, how it is called and what it returns, whether it clips. An adapter
lowers your function onto the canonical protocol ``grads = backward(params, x, y)``
so that one engine checks them all:

- :func:`adapt` — a function that computes the gradients itself (numpy, or torch tensors);
- :func:`adapt_torch` — a function (or ``torch.autograd.Function``) whose loss torch
  differentiates, so the hand-written ``backward`` of your Function is what gets checked;
- :func:`adapt_module` — an object with a training-step method that updates its own
  weights in place (the gradient is captured from the update), or returns gradients.

The adapted object is itself a canonical backward (pass it to :func:`bptt_check.check`,
to the pytest fixture, or name it as the CLI TARGET); it carries the spec you
declared, and says — to the runner's ``Target``, through which every call of it goes — how
to shape each case for your layout, how to check the loss your code reports against the
reference forward first, and which reference your layout implies (a declared clip, a
shared h0, a second hidden bias).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..model.cases import Case
from ..model.forward import total_loss
from ..model.names import ordered
from ..model.spec import Spec, Truncation
from ..model.tolerance import tolerance_for
from .read import to_numpy

CANONICAL = ("W", "U", "b", "V", "c", "h0")
WEIGHTS = ("W", "U", "V")
VECTORS = ("row", "column")
BATCH = ("time_major", "batch_major", None)
WEIGHT_ORDERS = ("out_in", "in_out")
INPUTS = ("dense", "one_hot", "index")
TARGETS = ("index", "one_hot")
H0_MODES = ("learned", "shared", "given", "zero")
# a float64 forward that reports a loss must agree with the reference loss this closely (relative); else it
# is judged at float32 precision (see _forward_finding)
FORWARD_RTOL = 1e-9
_IGNORED = (None, "_")


def _choice(field_name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise UsageError(f"Layout({field_name}={value!r}): choose one of {shown}")


@dataclass(frozen=True)
class Layout:
    """How your code stores and exchanges the RNN's arrays.

    names    canonical name -> yours: ``{"W": "Wxh", "U": "Whh", "V": "Why", "b": "bh", "c": "by",
             "h0": "hprev"}``; ``"b": ("b_ih", "b_hh")`` for two hidden biases (torch.nn.RNN).
    weights  ``"out_in"`` (W is (H, I), used as W @ x_col or x_row @ W.T) or ``"in_out"`` (x @ Wx).
    vectors  ``"row"``: a step is (B, I), biases (H,); ``"column"``: a step is (I, B), biases (H, 1).
    batch    ``"time_major"`` x (T, B, I); ``"batch_major"`` x (B, T, I); ``None``: one sequence,
             no batch axis (x (T, I), or (T, I, 1) for column vectors) — cases are drawn with B = 1.
    inputs   ``"dense"`` real vectors; ``"one_hot"`` one-hot vectors; ``"index"`` integer ids
             (x without its feature axis). Cases get one-hot inputs for both of the latter.
    targets  class targets for cross-entropy as ``"index"`` (default) or ``"one_hot"`` vectors.
    h0       ``"learned"`` (B, H) with its gradient; ``"shared"`` one learned (H,) vector for the
             whole batch; ``"given"`` passed in (a carried state), no gradient; ``"zero"`` not
             passed, the code starts from zeros.
    absent   parameters your model lacks among ``b``, ``c`` (held at zero, not passed).
    args     how your function is called, positionally: ``"params"`` (a dict of the rest, your
             names), ``"x"``, ``"y"``, ``"spec"``, or one of your parameter names.
             Default ``("params", "x", "y")``; ``("x", "y")`` for :func:`adapt_module`.
    returns  ``"dict"`` (a mapping, keys your names with or without a ``d`` prefix, ``"dx"``,
             ``"loss"``), ``"loss"`` (only the loss: torch and modules), or a tuple naming each
             returned item in order, ``None`` for items to ignore (``("loss", "dWxh", ..., None)``).
    clip     your code clips every parameter gradient to ±clip before returning it.
    """

    names: Mapping[str, str | tuple[str, str]] = field(default_factory=dict)
    weights: str = "out_in"
    vectors: str = "row"
    batch: str | None = "time_major"
    inputs: str = "dense"
    targets: str = "index"
    h0: str = "learned"
    absent: tuple[str, ...] = ()
    args: tuple[str, ...] | None = None
    returns: str | tuple[str | None, ...] = "dict"
    clip: float | None = None

    def __post_init__(self) -> None:
        _choice("weights", self.weights, WEIGHT_ORDERS)
        _choice("vectors", self.vectors, VECTORS)
        _choice("batch", self.batch, BATCH)
        _choice("inputs", self.inputs, INPUTS)
        _choice("targets", self.targets, TARGETS)
        _choice("h0", self.h0, H0_MODES)
        if self.vectors == "column" and self.batch == "batch_major":
            raise UsageError("Layout(vectors='column', batch='batch_major') is not supported: column "
                                 "vectors keep the batch as columns, x as (T, I, B); use batch='time_major'")
        object.__setattr__(self, "names", dict(self.names))
        object.__setattr__(self, "absent", tuple(self.absent))
        if self.args is not None:
            object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.returns, str):
            object.__setattr__(self, "returns", tuple(self.returns))
        for key, value in self.names.items():
            if key not in CANONICAL:
                raise UsageError(f"Layout(names=...): {key!r} is not a canonical name; the keys are "
                                     f"{', '.join(CANONICAL)} (input->hidden W, hidden->hidden U, hidden bias b, "
                                     "output V, output bias c, initial state h0), the values are yours")
            ok = isinstance(value, str) or (key == "b" and isinstance(value, tuple) and len(value) == 2
                                            and all(isinstance(v, str) for v in value))
            if not ok:
                raise UsageError(f"Layout(names={{{key!r}: {value!r}}}): give one name (a string)"
                                     + ("; or two for two hidden biases, e.g. ('b_ih', 'b_hh')" if key == "b" else ""))
        for a in self.absent:
            if a not in ("b", "c"):
                raise UsageError(f"Layout(absent={self.absent!r}): only the biases 'b' and 'c' can be absent "
                                     "(for a zero initial state use h0='zero')")
        users = self.user_names()
        flat = [u for u in users.values()]
        dupes = sorted({u for u in flat if flat.count(u) > 1})
        if dupes:
            raise UsageError(f"Layout(names=...): the name(s) {dupes} are used for two parameters")
        reserved = {"params", "x", "y", "spec", "loss", "dx"}
        clash = sorted(reserved & set(flat))
        if clash:
            raise UsageError(f"Layout(names=...): {clash} are reserved words in args/returns; rename them")
        if self.clip is not None and not self.clip > 0:
            raise UsageError(f"Layout(clip={self.clip!r}): the clip must be a positive number")
        if self.args is not None:
            for a in self.args:
                if a not in ("params", "x", "y", "spec") and a not in flat:
                    raise UsageError(f"Layout(args=...): {a!r} is none of 'params', 'x', 'y', 'spec' and not "
                                         f"one of your parameter names {flat}")
        if isinstance(self.returns, str):
            _choice("returns", self.returns, ("dict", "loss"))
        else:
            for r in self.returns:
                if r not in _IGNORED and self.resolve(r) is None:
                    raise UsageError(f"Layout(returns=...): {r!r} is not 'loss', 'dx', None or one of your "
                                         f"parameter names with or without a 'd' prefix ({', '.join(flat)})")

    # ------------------------------------------------------------ names

    def user_names(self) -> dict[str, str]:
        """Report key -> your name, for every parameter your code can see (a split bias gives two keys)."""
        out: dict[str, str] = {}
        for k in CANONICAL:
            v = self.names.get(k, k)
            if isinstance(v, tuple):
                out[k] = v[0]
                out[v[1]] = v[1]   # the second hidden bias is reported under your name
            else:
                out[k] = v
        return out

    @property
    def second_bias(self) -> str | None:
        v = self.names.get("b")
        return v[1] if isinstance(v, tuple) else None

    def resolve(self, name: str) -> str | None:
        """The report key a returned name stands for ('loss' and 'x' included), or None."""
        if name == "loss":
            return "loss"
        if name in ("x", "dx"):
            return "x"
        by_user = {u: k for k, u in self.user_names().items()}
        if name in by_user:
            return by_user[name]
        if name.startswith("d") and name[1:] in by_user:
            return by_user[name[1:]]
        return None

    def canonical_of(self, key: str) -> str:
        """The canonical parameter behind a report key (the second hidden bias is b)."""
        return "b" if key == self.second_bias else key

    # ------------------------------------------------------------ arrays: canonical -> yours

    def seq_to_user(self, a: np.ndarray) -> np.ndarray:
        """(T, B, F) -> your layout of a sequence of vectors."""
        if self.vectors == "column":
            return a.transpose(0, 2, 1)                       # (T, F, B); (T, F, 1) unbatched
        if self.batch is None:
            return a[:, 0, :]
        return a.transpose(1, 0, 2) if self.batch == "batch_major" else a

    def seq_from_user(self, a: np.ndarray) -> np.ndarray:
        if self.vectors == "column":
            return a.transpose(0, 2, 1)
        if self.batch is None:
            return a[:, None, :]
        return a.transpose(1, 0, 2) if self.batch == "batch_major" else a

    def ids_to_user(self, a: np.ndarray) -> np.ndarray:
        """(T, B) integers -> your layout (no feature axis)."""
        if self.batch is None:
            return a[:, 0]
        return a.T if self.batch == "batch_major" else a

    def vec_to_user(self, a: np.ndarray) -> np.ndarray:
        """(B, F): one vector per sample (h0, many-to-one targets) -> your layout."""
        if self.vectors == "column":
            return a.T                                         # (F, B); (F, 1) unbatched
        return a[0] if self.batch is None else a

    def vec_from_user(self, a: np.ndarray) -> np.ndarray:
        if self.vectors == "column":
            return a.T
        return a[None, :] if self.batch is None else a

    def bias_to_user(self, a: np.ndarray) -> np.ndarray:
        return a[:, None] if self.vectors == "column" else a

    def bias_from_user(self, a: np.ndarray) -> np.ndarray:
        return a[:, 0] if self.vectors == "column" else a

    def weight_to_user(self, a: np.ndarray) -> np.ndarray:
        return a.T if self.weights == "in_out" else a

    def user_index(self, key: str, index: Sequence[int]) -> tuple[int, ...]:
        """Where the element at ``index`` of the canonical gradient ``key`` sits in your array."""
        idx = tuple(int(i) for i in index)
        kind = self.canonical_of(key)
        if kind in WEIGHTS:
            return idx[::-1] if self.weights == "in_out" else idx
        if kind in ("b", "c"):
            return (idx[0], 0) if self.vectors == "column" else idx
        if kind == "h0":
            if self.h0 == "shared":
                return (idx[-1], 0) if self.vectors == "column" else (idx[-1],)
            b, h = idx
            if self.vectors == "column":
                return (h, b)
            return (h,) if self.batch is None else (b, h)
        if kind == "x":
            t, b, i = idx
            if self.vectors == "column":
                return (t, i, b)
            if self.batch is None:
                return (t, i)
            return (b, t, i) if self.batch == "batch_major" else (t, b, i)
        return idx

    def describe(self) -> str:
        """One line: what differs from the canonical layout."""
        parts = []
        renamed = {k: v for k, v in self.names.items() if v != k}
        if renamed:
            parts.append(", ".join(f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in renamed.items()))
        defaults = Layout()
        for f in ("weights", "vectors", "batch", "inputs", "targets", "h0", "absent", "args", "returns", "clip"):
            v = getattr(self, f)
            if v != getattr(defaults, f):
                parts.append(f"{f}={v!r}")
        return "; ".join(parts) or "canonical"


# ----------------------------------------------------------------- speaking your notation

class Notation:
    """How causes and locations are said: in the canonical names and row-vector form, or in a layout's
    names and orientation (issue 12: for column-vector code "uses Whh where Whh.T belongs", and "your U"
    where your U is the input matrix). ``Notation()`` is the canonical one."""

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout
        names = layout.user_names() if layout is not None else {}
        self.renamed = any(names.get(k, k) != k for k in CANONICAL)
        self._names = names

    def name(self, key: str) -> str:
        """Your name of a parameter (``x`` stays x)."""
        return self._names.get(key, key)

    def grad(self, key: str) -> str:
        """Your name of a gradient: ``dWhh``."""
        return "d" + self.name(key)

    def grads(self, keys: Iterable[str]) -> str:
        """``dW, dU`` — or ``your dWxh, dWhh`` when the layout renames."""
        text = ", ".join(self.grad(k) for k in ordered(keys))
        return ("your " + text) if self.renamed else text

    @property
    def column(self) -> bool:
        return self.layout is not None and self.layout.vectors == "column"

    @property
    def in_out(self) -> bool:
        return self.layout is not None and self.layout.weights == "in_out"

    def used(self, key: str, transposed: bool = False) -> str:
        """The matrix as it appears in your backward's flow dh_{t−1} = … (``transposed``: the other way round)."""
        m = self.name(key)
        flip = self.column != self.in_out        # your form multiplies by the transpose of what you store
        return f"{m}ᵀ" if flip != transposed else m

    def flow(self, key: str = "U", transposed: bool = False, into: str = "dh_{t−1}", delta: str = "dĥ_t") -> str:
        """dh_{t−1} = dĥ_t U in your orientation (``transposed``: with the other orientation of the matrix)."""
        m = self.used(key, transposed)
        return f"{into} = {m} {delta}" if self.column else f"{into} = {delta} {m}"

    def accumulate(self, key: str, delta: str, inp: str) -> str:
        """The accumulation of a weight's gradient in your orientation: dU += dĥ_tᵀ h_{t−1}."""
        g = self.grad(key)
        if self.column:
            return f"{g} += {inp} {delta}ᵀ" if self.in_out else f"{g} += {delta} {inp}ᵀ"
        return f"{g} += {inp}ᵀ {delta}" if self.in_out else f"{g} += {delta}ᵀ {inp}"

    def stored(self) -> str:
        """How your weight matrices are laid out."""
        return "(in, out)" if self.in_out else "(out, in)"


CANONICAL_NOTATION = Notation()


# ----------------------------------------------------------------- lowering one call

@dataclass
class _Call:
    """One call of your code: your arrays, and what to expect back."""

    params: dict[str, np.ndarray]       # your name -> array in your layout
    key_of: dict[str, str]              # your name -> report key
    learned: set[str]                   # your names whose gradient is expected
    x: np.ndarray
    y: Any
    spec: Spec
    shapes: dict[str, int]


def _lower(layout: Layout, params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec) -> _Call:
    """The canonical arrays of one case, in your layout."""
    x = np.asarray(x)
    T, B, I = x.shape
    if layout.batch is None and B != 1:
        raise UsageError(f"this layout is unbatched (batch=None) but the case has B = {B}; run it through "
                             "bptt_check.check / check_case, which draws it with B = 1")
    names = layout.user_names()
    out: dict[str, np.ndarray] = {}
    key_of: dict[str, str] = {}
    learned: set[str] = set()
    for k in CANONICAL:
        if k not in params or k in layout.absent:
            continue
        a = np.asarray(params[k])
        if k == "h0":
            if layout.h0 == "zero":
                continue
            if layout.h0 == "shared":
                user = a[0][:, None] if layout.vectors == "column" else a[0].copy()
            else:
                user = layout.vec_to_user(a)
            if layout.h0 != "given":
                learned.add(names[k])
        elif k in WEIGHTS:
            user = layout.weight_to_user(a)
            learned.add(names[k])
        else:
            user = layout.bias_to_user(a)
            learned.add(names[k])
        if k == "b" and layout.second_bias:
            second = layout.second_bias
            out[second] = np.array(0.4 * user)                 # b = b_first + b_second
            key_of[second] = second
            learned.add(second)
            user = 0.6 * user
        out[names[k]] = np.array(user)                        # your own copy, C-contiguous
        key_of[names[k]] = k
    if layout.inputs == "index":
        ux: np.ndarray = layout.ids_to_user(np.argmax(x, axis=-1))
    else:
        ux = layout.seq_to_user(x)
    O = int(np.asarray(params["V"]).shape[0])
    H = int(np.asarray(params["U"]).shape[0])
    uy = _lower_targets(layout, np.asarray(y), spec, O)
    return _Call(out, key_of, learned, np.array(ux), uy, spec, {"T": T, "B": B, "I": I, "H": H, "O": O})


def _lower_targets(layout: Layout, y: np.ndarray, spec: Spec, O: int) -> Any:  # noqa: E741
    many_to_one = spec.mode == "many-to-one"
    if spec.loss == "cross_entropy" and layout.targets == "index":
        if many_to_one:
            return y[0] if layout.batch is None else np.array(y)
        return np.array(layout.ids_to_user(y))
    if spec.loss == "cross_entropy":                          # one-hot class targets
        y = np.eye(O, dtype=np.dtype(spec.dtype))[y]
    if many_to_one:
        return np.array(layout.vec_to_user(y))
    return np.array(layout.seq_to_user(y))


def _arguments(layout: Layout, call: _Call, default: tuple[str, ...]) -> list[Any]:
    args = layout.args if layout.args is not None else default
    taken = {a for a in args if a in call.params}
    rest = {k: v for k, v in call.params.items() if k not in taken}
    values = {"params": rest, "x": call.x, "y": call.y, "spec": call.spec}
    out = []
    for a in args:
        if a in values:
            out.append(values[a])
        elif a in call.params:
            out.append(call.params[a])
        else:   # a parameter the case does not have (a bias under bias=False, h0='zero')
            raise UsageError(f"Layout(args=...) names {a!r}, which this case does not pass to your code "
                                 f"(spec: {call.spec}; h0={layout.h0!r}, absent={layout.absent})")
    return out


def _call_user(fn: Callable[..., Any], layout: Layout, call: _Call, default: tuple[str, ...]) -> Any:
    """Call your function as the layout says; like the canonical protocol, a ``spec`` parameter gets the spec."""
    args = _arguments(layout, call, default)
    if layout.args is None and _wants_spec(fn):
        return fn(*args, spec=call.spec)
    return fn(*args)


def _wants_spec(fn: Callable[..., Any]) -> bool:
    try:
        return "spec" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _to_float(value: Any) -> float:
    arr = to_numpy(value)
    if arr.size != 1:
        raise UsageError(f"the loss your code returned has shape {arr.shape}; expected a single number")
    return float(arr.reshape(()))


def _split_returned(layout: Layout, raw: Any, what: str) -> tuple[dict[str, Any], float | None]:
    """Your return value -> ({your name or 'x': gradient}, loss)."""
    if layout.returns == "loss":
        return {}, _to_float(raw[0] if isinstance(raw, (tuple, list)) else raw)
    if layout.returns == "dict":
        if not isinstance(raw, Mapping):
            hint = ""
            if isinstance(raw, (tuple, list)):
                hint = (f"; it returned a {type(raw).__name__} of {len(raw)}: declare the order, e.g. "
                        f"Layout(returns=('dW', 'dU', ...))")
            raise UsageError(f"{what} returned {type(raw).__name__}, but the layout says returns='dict'{hint}")
        items = [(str(k), v) for k, v in raw.items()]
    else:
        if not isinstance(raw, (tuple, list)):
            raise UsageError(f"{what} returned {type(raw).__name__}; the layout declares a sequence "
                                 f"{layout.returns}")
        if len(raw) != len(layout.returns):
            raise UsageError(f"{what} returned {len(raw)} values; the layout declares {len(layout.returns)}: "
                                 f"{layout.returns}")
        items = [(str(n), v) for n, v in zip(layout.returns, raw) if n not in _IGNORED]
    grads: dict[str, Any] = {}
    loss = None
    for name, value in items:
        key = layout.resolve(name)
        if key == "loss":
            loss = _to_float(value)
        elif key == "x":
            grads["x"] = value
        elif key is not None:
            grads[layout.user_names()[key]] = value
        else:
            grads[name] = value      # not a gradient of this model: the check notes it
    return grads, loss


def _raise(layout: Layout, call: _Call, grads: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
    """Your gradients (your names and layout) -> report keys, canonical layout."""
    out: dict[str, np.ndarray] = {}
    for name, value in grads.items():
        g = to_numpy(value)
        if name == "x":
            if layout.inputs != "dense":
                continue      # no gradient exists for ids; one-hot inputs are data, not parameters
            if g.shape != call.x.shape:
                raise UsageError(f"{what}: dx has shape {g.shape}, but x has shape {call.x.shape} in your layout")
            out["x"] = layout.seq_from_user(g)
            continue
        if name not in call.params:
            out[name] = g
            continue
        want = call.params[name].shape
        if g.shape != want:
            raise UsageError(f"{what}: the gradient of {name!r} has shape {g.shape}, but {name!r} has shape "
                                 f"{want}; return every gradient shaped like its parameter")
        key = call.key_of[name]
        kind = layout.canonical_of(key)
        if kind in WEIGHTS:
            out[key] = layout.weight_to_user(g)               # a transpose is its own inverse
        elif kind in ("b", "c"):
            out[key] = layout.bias_from_user(g)
        elif layout.h0 == "shared":
            out[key] = g.reshape(-1)
        else:
            out[key] = layout.vec_from_user(g)
    return out


# ----------------------------------------------------------------- the adapted backward

@dataclass
class Lowered:
    """What one call of an adapted backward gave: canonical gradients, and the loss your code reported."""

    grads: dict[str, Any]
    loss: float | None = None
    source: str = ""


class Adapted:
    """A backward in your conventions, lowered onto the canonical protocol.

    Call it as ``adapted(params, x, y, spec)`` with canonical arrays; it returns canonical
    gradients. ``bptt_spec`` is the spec you declared. The check (``runner/target.py``) also asks it
    how to shape each case for your layout (:meth:`shape_case`), what a call must return
    (:meth:`expected`), whether the loss your code reported agrees with the reference forward
    (:meth:`check_loss`), which reference your layout implies (:meth:`lower`) and where a wrong
    element sits in your own arrays (:meth:`locate`).
    """

    kind = "function"

    def __init__(self, fn: Any, layout: Layout | None, *, forward: Callable[..., Any] | None,
                 spec: Spec | None, spec_kwargs: Mapping[str, Any], name: str | None = None) -> None:
        self.fn = fn
        self.layout = layout if layout is not None else Layout()
        if not isinstance(self.layout, Layout):
            raise UsageError(f"layout must be a bptt_check.Layout, got {type(self.layout).__name__}")
        self.forward = forward
        self.bptt_spec = _declared_spec(self.layout, spec, dict(spec_kwargs))
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__

    def __repr__(self) -> str:
        return f"<bptt_check {self.kind} adapter of {self.name} ({self.layout.describe()})>"

    # ------------------------------------------------------------ canonical protocol

    def __call__(self, params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec | None = None) -> dict[str, Any]:
        return self.run(params, x, y, spec).grads

    def run(self, params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec | None = None) -> Lowered:
        """One call of your code on canonical arrays: canonical gradients and the loss it reported."""
        spec = spec or self.bptt_spec or Spec()
        call = _lower(self.layout, params, x, y, spec)
        loss, source = None, ""
        if self.forward is not None:
            raw = _call_user(self.forward, self.layout, call, ("params", "x", "y"))
            loss, source = _first_loss(raw), "your forward"
        grads, returned = self._run(call)
        if returned is not None and loss is None:
            loss, source = returned, f"the loss {self.name} returned"
        return Lowered(_raise(self.layout, call, grads, self.name), loss, source)

    def _run(self, call: _Call) -> tuple[dict[str, Any], float | None]:
        raw = _call_user(self.fn, self.layout, call, ("params", "x", "y"))
        return _split_returned(self.layout, raw, self.name)

    # ------------------------------------------------------------ what the check asks

    def _dropped(self) -> set[str]:
        """Canonical gradients your code does not return."""
        lay = self.layout
        out = set(lay.absent) | ({"h0"} if lay.h0 in ("given", "zero") else set())
        if lay.inputs != "dense":
            out.add("x")
        return out

    def shape_case(self, case: Case) -> Case:
        """The case as your layout can take it: B = 1, one-hot inputs, zeros where parameters are absent."""
        lay = self.layout
        params = {k: np.array(v, copy=True) for k, v in case.params.items()}
        x, y = np.array(case.x, copy=True), np.array(case.y, copy=True)
        if lay.batch is None and x.shape[1] != 1:
            x = x[:, :1]
            y = y[:1] if case.spec.mode == "many-to-one" else y[:, :1]
            params["h0"] = params["h0"][:1]
        if lay.inputs != "dense":
            x = np.eye(x.shape[2], dtype=x.dtype)[np.argmax(x, axis=-1)]
        for k in lay.absent:
            if k in params:
                params[k] = np.zeros_like(params[k])
        if lay.h0 == "zero":
            params["h0"] = np.zeros_like(params["h0"])
        elif lay.h0 == "shared":
            params["h0"] = np.broadcast_to(params["h0"][:1], params["h0"].shape).copy()
        return Case(case.spec, case.seed, case.index, case.flavor, params, x, y, dict(case.extra))

    def expected(self, case: Case) -> dict[str, tuple[int, ...]]:
        """The gradients a call returns on this (shaped) case, and their shapes (``x`` optional)."""
        lay = self.layout
        dropped = self._dropped()
        out = {k: tuple(v.shape) for k, v in case.params.items() if k not in dropped}
        if lay.h0 == "shared" and "h0" in out:
            out["h0"] = tuple(case.params["h0"].shape[1:])      # one learned h0 for the whole batch
        if lay.second_bias and "b" in out:
            out[lay.second_bias] = out["b"]
        if "x" not in dropped:
            out["x"] = tuple(case.x.shape)
        return out

    def check_loss(self, case: Case, loss: float | None, source: str) -> dict[str, Any] | None:
        """Check the loss your code reported against the reference forward (None: it agrees, or none given)."""
        if loss is None:
            return None
        return _forward_finding(case, loss, source)

    @property
    def linear(self) -> bool:
        """Whether your gradients are a linear map of the canonical ones (no clip): random projections
        of them can be checked against projections of the canonical gradient (:meth:`lift`)."""
        return self.layout.clip is None

    def lower(self, case: Case, arrays: Mapping[str, Any], kind: str = "grad", *, clip: bool = True
              ) -> dict[str, Any]:
        """Canonical arrays -> the ones your layout returns: ``kind`` "grad" (the reference your layout
        implies: a shared h0 summed over the batch, a second bias, a declared clip), "error" (error
        estimates: added the same way) or "mask" (element flags: any over what is summed)."""
        lay = self.layout
        out = {k: v for k, v in arrays.items() if k not in self._dropped()}
        if lay.h0 == "shared" and "h0" in out:
            v = np.asarray(out["h0"])
            if kind == "mask":
                out["h0"] = v.any(axis=0)
            elif kind == "error" and v.ndim < 2:
                out["h0"] = v * case.B
            else:
                out["h0"] = v.sum(axis=0)
        second = lay.second_bias
        if second and "b" in out:
            out[second] = copy.copy(out["b"])
        if lay.clip is not None and kind == "grad" and clip:
            c = float(lay.clip)
            out = {k: (v if k == "x" else np.clip(v, -c, c)) for k, v in out.items()}
        return out

    def lift(self, case: Case, directions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Directions over your gradients -> directions over the canonical ones with the same projections
        (the adjoint of :meth:`lower`'s linear part): ⟨lower(g), v⟩ = ⟨g, lift(v)⟩."""
        lay = self.layout
        second = lay.second_bias
        out: dict[str, np.ndarray] = {}
        for k, v in directions.items():
            if k == second:
                continue
            if k == "h0" and lay.h0 == "shared":
                v = np.broadcast_to(v[:, None, :], (v.shape[0], case.B, v.shape[-1])).copy()
            out[k] = v
        if second and second in directions:
            out["b"] = out.get("b", 0.0) + directions[second]
        return out

    def notes(self, case: Case, ref: Mapping[str, Any]) -> list[str]:
        """What the layout means for this case's verdict."""
        lay = self.layout
        notes = []
        if lay.h0 == "zero":
            notes.append("h0 = 0 (declared): a dU that drops its t = 0 term cannot show on these cases")
        if lay.clip is not None:
            c = float(lay.clip)
            kept = {k: v for k, v in self.lower(case, ref, clip=False).items() if k != "x"}
            reached = sum(int((np.abs(v) > c).sum()) for v in kept.values())
            total = sum(int(np.size(v)) for v in kept.values())
            notes.append(f"clipped at ±{c:g} (declared): {reached} of {total} reference elements reached the clip"
                         + ("" if reached else "; the clip itself was not exercised by this case"))
        return notes

    def locate(self, failed: Mapping[str, Any]) -> list[str]:
        """Where each wrong gradient (name -> its comparison) sits in your own arrays."""
        names = self.layout.user_names()
        out = []
        for key, g in failed.items():
            yours = "x" if key == "x" else names.get(key, key)
            if g.problem or not g.worst_index:
                if yours != key:
                    out.append(f"{key} is your {yours!r}")
                continue
            at = self.layout.user_index(key, g.worst_index)
            where = f"{yours}[{', '.join(map(str, at))}]"
            if yours != key:
                out.append(f"{key} is your {yours!r}: its worst element is {where}")
            elif at != tuple(g.worst_index):
                out.append(f"{key}: its worst element is {where} in your layout")
        return out


class _TorchAdapted(Adapted):
    kind = "torch"

    def __init__(self, fn: Any, layout: Layout | None, *, device: str, spec: Spec | None,
                 spec_kwargs: Mapping[str, Any]) -> None:
        apply = fn
        name = getattr(fn, "__qualname__", None)
        if isinstance(fn, type):
            import torch

            if not issubclass(fn, torch.autograd.Function):
                raise UsageError(f"adapt_torch takes a function or a torch.autograd.Function subclass, "
                                     f"not the class {fn.__name__}")
            apply = fn.apply
        super().__init__(apply, layout, forward=None, spec=spec, spec_kwargs=spec_kwargs, name=name)
        if self.layout.returns not in ("dict", "loss") and "loss" not in self.layout.returns:
            raise UsageError("adapt_torch differentiates the loss your function returns: "
                                 "use returns='loss' (default) or a tuple with 'loss' in it")
        self.device = device

    def _run(self, call: _Call) -> tuple[dict[str, Any], float | None]:
        import torch

        # torch differentiates your loss whatever the caller's grad mode (a no_grad() around the check,
        # set_grad_enabled(False) at the top of your module): your Function's backward must run
        with torch.inference_mode(False), torch.enable_grad():
            return self._differentiate(call)

    def _differentiate(self, call: _Call) -> tuple[dict[str, Any], float | None]:
        import torch

        dtype = torch.float64 if call.spec.dtype == "float64" else torch.float32
        leaves: dict[str, Any] = {}
        tensors: dict[str, Any] = {}
        for name, a in call.params.items():
            t = torch.tensor(a, dtype=dtype, device=self.device, requires_grad=name in call.learned)
            tensors[name] = t
            if name in call.learned:
                leaves[name] = t
        if self.layout.inputs == "index":
            tx = torch.tensor(call.x, dtype=torch.long, device=self.device)
        else:
            tx = torch.tensor(call.x, dtype=dtype, device=self.device, requires_grad=self.layout.inputs == "dense")
            if self.layout.inputs == "dense":
                leaves["x"] = tx
        y = np.asarray(call.y)
        ty = torch.tensor(y, dtype=torch.long if y.dtype.kind in "iu" else dtype, device=self.device)
        view = _Call(tensors, call.key_of, call.learned, tx, ty, call.spec, call.shapes)
        raw = _call_user(self.fn, self.layout, view, ("params", "x", "y"))
        if isinstance(raw, Mapping):
            loss = raw.get("loss")
        elif isinstance(raw, (tuple, list)):
            loss = raw[self.layout.returns.index("loss")] if isinstance(self.layout.returns, tuple) else raw[0]
        else:
            loss = raw
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise UsageError(f"{self.name} must return the scalar loss as a torch tensor (got {shape}); "
                                 "compute the loss from your Function's output inside the function you adapt")
        if not loss.requires_grad:
            raise UsageError(f"the loss {self.name} returned does not depend on any parameter "
                                 "(detached? computed in numpy?)")
        names = list(leaves)
        got = torch.autograd.grad(loss.reshape(()), [leaves[n] for n in names], allow_unused=True)
        grads = {n: g.detach().cpu().numpy() for n, g in zip(names, got) if g is not None}
        return grads, float(loss.detach().cpu().reshape(()))


class _ModuleAdapted(Adapted):
    kind = "module"

    def __init__(self, make: Callable[..., Any], step: str, layout: Layout | None, *, lr: str | float,
                 grads: str, spec: Spec | None, spec_kwargs: Mapping[str, Any]) -> None:
        name = getattr(make, "__qualname__", None) or type(make).__name__
        super().__init__(make, layout, forward=None, spec=spec, spec_kwargs=spec_kwargs, name=f"{name}.{step}")
        if self.layout.args is not None and "params" in self.layout.args:
            raise UsageError("adapt_module sets your parameters as attributes of the object; "
                                 "'params' cannot be one of its args")
        if not isinstance(lr, str) and not (isinstance(lr, (int, float)) and lr > 0):
            raise UsageError(f"lr must be the name of the learning-rate attribute or the positive rate "
                                 f"your object uses, got {lr!r}")
        if grads not in ("update", "returned"):
            raise UsageError(f"adapt_module(grads={grads!r}): choose 'update' (captured from the in-place "
                                 "update) or 'returned' (the step returns them, as Layout.returns says)")
        self.step = step
        self.lr = lr
        self.capture = grads == "update"

    def _make(self, shapes: dict[str, int]) -> Any:
        try:
            n = len([p for p in inspect.signature(self.fn).parameters.values()
                     if p.default is inspect.Parameter.empty
                     and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        except (TypeError, ValueError):
            n = 1
        return self.fn(dict(shapes)) if n >= 1 else self.fn()

    def _run(self, call: _Call) -> tuple[dict[str, Any], float | None]:
        obj = self._make(call.shapes)
        before: dict[str, np.ndarray] = {}
        for name, a in call.params.items():
            old = getattr(obj, name, None)
            value: Any = np.array(a, copy=True)
            if old is not None and hasattr(old, "detach"):     # a torch tensor or Parameter, in the spec's dtype
                import torch

                dtype = torch.float64 if call.spec.dtype == "float64" else torch.float32
                t = torch.tensor(a, dtype=dtype, device=old.device)
                value = torch.nn.Parameter(t, requires_grad=old.requires_grad) if isinstance(
                    old, torch.nn.Parameter) else t
            setattr(obj, name, value)
            before[name] = np.array(a, dtype=np.float64, copy=True)
        rate = 1.0
        if isinstance(self.lr, str):
            setattr(obj, self.lr, rate)
        else:
            rate = float(self.lr)
        method = getattr(obj, self.step, None)
        if not callable(method):
            raise UsageError(f"{type(obj).__name__} has no method {self.step!r}")
        raw = _call_user(method, self.layout, call, ("x", "y"))
        if not self.capture:
            return _split_returned(self.layout, raw, self.name)
        loss = None
        if self.layout.returns != "dict":     # the step may report its loss ("loss", or a tuple naming it)
            _, loss = _split_returned(self.layout, raw, self.name)
        grads = {}
        for name in call.learned:
            after = to_numpy(getattr(obj, name)).astype(np.float64)
            if after.shape != before[name].shape:
                raise UsageError(f"{self.name} replaced {name!r} (shape {before[name].shape}) with an array of "
                                     f"shape {after.shape}")
            grads[name] = (before[name] - after) / rate          # p <- p - lr * g
        return grads, loss


# ----------------------------------------------------------------- public constructors

def adapt(backward: Callable[..., Any], layout: Layout | None = None, *,
          forward: Callable[..., Any] | None = None, spec: Spec | None = None, **spec_kwargs: Any) -> Adapted:
    """Lower ``backward`` — a function that returns gradients in your conventions — onto the canonical protocol.

    ``layout`` says how your code stores and exchanges arrays; ``spec`` (or keywords:
    ``loss="cross_entropy"``, ``truncation="window:4"``, ...) says what it computes, and becomes the
    default of every check of the adapted backward. ``forward``, called like ``backward``, returns your
    loss (or a tuple starting with it): it is checked against the reference forward before any gradient
    is judged, as is a ``"loss"`` your backward returns.
    """
    if not callable(backward):
        raise UsageError(f"adapt() needs a function, got {type(backward).__name__}")
    return Adapted(backward, layout, forward=forward, spec=spec, spec_kwargs=spec_kwargs)


def adapt_torch(loss_fn: Any, layout: Layout | None = None, *, device: str = "cpu", spec: Spec | None = None,
                **spec_kwargs: Any) -> Adapted:
    """Check a hand-written torch backward: ``loss_fn`` computes the loss with torch (through your
    ``torch.autograd.Function``); torch differentiates it, so your Function's ``backward`` is what runs.

    ``loss_fn`` is called as the layout's ``args`` say (default ``(params, x, y)``, tensors in your layout;
    parameters require grad) and returns the scalar loss. A ``torch.autograd.Function`` subclass whose
    ``forward`` returns the loss may be passed directly (its ``apply`` is called with ``args``).
    """
    if not callable(loss_fn):
        raise UsageError(f"adapt_torch() needs a function or autograd.Function, got {type(loss_fn).__name__}")
    layout = layout if layout is not None else Layout()
    if layout.returns == "dict":
        layout = dataclasses.replace(layout, returns="loss")
    return _TorchAdapted(loss_fn, layout, device=device, spec=spec, spec_kwargs=spec_kwargs)


def adapt_module(make: Callable[..., Any], *, step: str, layout: Layout | None = None, lr: str | float = "lr",
                 grads: str = "update", spec: Spec | None = None, **spec_kwargs: Any) -> Adapted:
    """Check an object whose ``step`` method computes the gradients from its own attributes.

    ``make(sizes)`` builds a fresh object for one case (``sizes``: T, B, I, H, O); its parameters are
    then set as attributes (your names) and ``obj.<step>(x, y)`` is called (see ``Layout.args``).
    ``grads="update"``: the step updates the weights in place with plain SGD (``p -= lr * dp``) and the
    gradient is captured from the update; ``lr`` is the attribute the adapter sets to 1.0, or the rate
    your object uses; the step may return its loss (``Layout(returns="loss")``). ``grads="returned"``:
    the step returns the gradients, as ``Layout.returns`` says.
    """
    if not callable(make):
        raise UsageError(f"adapt_module() needs a factory make(sizes) -> object, got {type(make).__name__}")
    layout = layout if layout is not None else Layout()
    return _ModuleAdapted(make, step, layout, lr=lr, grads=grads, spec=spec, spec_kwargs=spec_kwargs)


# ----------------------------------------------------------------- helpers

def _declared_spec(layout: Layout, spec: Spec | None, kwargs: dict[str, Any]) -> Spec | None:
    if set(layout.absent) >= {"b", "c"} and "bias" not in kwargs and spec is None:
        kwargs["bias"] = False
    if spec is None and not kwargs:
        return None
    try:
        return (spec or Spec()).replace(**kwargs) if kwargs else spec
    except TypeError as err:
        fields = ", ".join(Spec.__dataclass_fields__)
        raise UsageError(f"bad spec keyword: {err}; the spec fields are {fields}") from None


def _first_loss(raw: Any) -> float:
    if isinstance(raw, Mapping):
        if "loss" not in raw:
            raise UsageError("your forward returned a mapping without a 'loss' key")
        return _to_float(raw["loss"])
    if isinstance(raw, (tuple, list)):
        return _to_float(raw[0])
    return _to_float(raw)


def _forward_finding(case: Case, loss: float, source: str) -> dict[str, Any] | None:
    """A forward bug: the loss your code reported is not the reference loss (full or truncated objective).

    Judged like the gradients: float64 at ``FORWARD_RTOL``; failing that, and for float32 always, at the
    float32 tolerance over T steps plus 64× this case's own float32 rounding of the loss (the loss recomputed
    in float32) — so correct code that keeps its states in float32 is not a forward bug (issue 12).
    """
    spec = case.spec
    full = total_loss(case.params, case.x, case.y, spec.replace(truncation=Truncation()))
    truncated = total_loss(case.params, case.x, case.y, spec)
    refs = (full, truncated)
    if spec.dtype == "float64" and any(abs(loss - r) <= FORWARD_RTOL * max(abs(r), 1e-12) + 1e-12 for r in refs):
        return None
    tol = tolerance_for("float32", case.T)
    low = {k: np.asarray(v, dtype=np.float32) for k, v in case.params.items()}
    ylow = case.y if spec.loss == "cross_entropy" else np.asarray(case.y, dtype=np.float32)
    x32 = np.asarray(case.x, dtype=np.float32)
    for ref, sp in ((full, spec.replace(truncation=Truncation())), (truncated, spec)):
        rounding = abs(float(total_loss(low, x32, ylow, sp)) - ref)
        if abs(loss - ref) <= tol.rtol * abs(ref) + tol.rounding * rounding + 1e-30:
            return None
    rel = abs(loss - full) / max(abs(full), 1e-300)
    msg = (f"forward bug: {source} is {loss:.10g}, the reference forward gives {full:.10g} (relative difference "
           f"{rel:.2e}) for [{spec}] at T={case.T} B={case.B}; the gradients were not judged, since they would be "
           f"gradients of another function.")
    readings = loss_readings(loss, full, case)
    if readings:
        msg += (f" Ratio {loss / full:.6g}: your loss is "
                + "; or ".join(f"{r['yours']} where the spec's objective is {r['spec']}" for r in readings) + ".")
    return {"kind": "forward", "message": msg, "keys": ["loss"], "loss": loss, "reference_loss": full}


def loss_readings(loss: float, ref: float, case: Case) -> list[dict[str, Any]]:
    """Readings of a constant ratio between your loss and the reference (several may fit): per reading the
    ``ratio``, what your loss is (``yours``), what the spec's objective is (``spec``) and the spec field that
    would make yours right (``declare``)."""
    if ref == 0:
        return []
    r = loss / ref
    spec, T, B = case.spec, case.T, case.B
    batch_mean = spec.reduction in ("mean", "mean_batch")
    time_mean = spec.reduction in ("mean", "mean_time")
    said = f"reduction='{spec.reduction}'"
    readings = []
    if B > 1:
        if not batch_mean:
            readings.append((1 / B, f"averaged over the batch (reduction='mean_batch', or 'mean'; B = {B})",
                             f"the sum over the batch ({said})", "reduction='mean_batch' (or 'mean')"))
        else:
            readings.append((float(B), f"summed over the batch (reduction='sum', or 'mean_time'; B = {B})",
                             f"the mean over the batch ({said})", "reduction='sum' (or 'mean_time')"))
    if T > 1 and spec.mode == "many-to-many":
        if not time_mean:
            readings.append((1 / T, f"averaged over time (reduction='mean_time', or 'mean'; T = {T})",
                             f"the sum over time ({said})", "reduction='mean_time' (or 'mean')"))
        else:
            readings.append((float(T), f"summed over time (reduction='sum', or 'mean_batch'; T = {T})",
                             f"the mean over time ({said})", "reduction='sum' (or 'mean_batch')"))
    if spec.loss == "half_mse":
        readings.append((2.0, "the squared error without the ½ (loss='sse')",
                         "half the squared error (loss='half_mse')", "loss='sse'"))
    if spec.loss == "sse":
        readings.append((0.5, "half the squared error (loss='half_mse')", "the squared error (loss='sse')",
                         "loss='half_mse'"))
    return [{"ratio": value, "yours": yours, "spec": objective, "declare": declare}
            for value, yours, objective, declare in readings if abs(r - value) <= 1e-6 * abs(value)]


__all__ = ["Layout", "Adapted", "Lowered", "Notation", "CANONICAL_NOTATION", "adapt", "adapt_torch", "adapt_module",
           "loss_readings"]
