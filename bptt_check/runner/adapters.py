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
from ..model.names import ORDER, ordered
from ..model.spec import SIZE_NAMES, Spec, Truncation
from ..model.tolerance import tolerance_for
from .read import to_numpy

CANONICAL = tuple(n for n in ORDER if n != "x")       # W, U, b, bu, V, c, h0, c0
WEIGHTS = ("W", "U", "V")
GATED = ("W", "U", "b", "bu")                         # stacked per gate (lstm: i, f, g, o; gru: r, z, n)
CANONICAL_GATES = {"lstm": "ifgo", "gru": "rzn"}
C0_MODES = ("learned", "given", "zero")
VECTORS = ("row", "column")
BATCH = ("time_major", "batch_major", "list", None)
WEIGHT_ORDERS = ("out_in", "in_out")
INPUTS = ("dense", "one_hot", "index")
TARGETS = ("index", "one_hot")
H0_MODES = ("learned", "shared", "given", "zero")
# a float64 forward that reports a loss must agree with the reference loss this closely (relative); else it
# is judged at float32 precision (see _forward_finding)
FORWARD_RTOL = 1e-9
_IGNORED = (None, "_")
GRADS = "grads"          # in a returned tuple: a mapping of gradients (``return loss, grads``)


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
    batch    ``"time_major"`` x (T, B, I); ``"batch_major"`` x (B, T, I); ``"list"``: a list of B
             sequences (ℓ_b, I), unpadded (targets too; dx returned the same way); ``None``: one
             sequence, no batch axis (x (T, I), or (T, I, 1) for column vectors) — cases are drawn with B = 1.
    inputs   ``"dense"`` real vectors; ``"one_hot"`` one-hot vectors; ``"index"`` integer ids
             (x without its feature axis). Cases get one-hot inputs for both of the latter.
    targets  class targets for cross-entropy as ``"index"`` (default) or ``"one_hot"`` vectors.
    h0       ``"learned"`` (B, H) with its gradient; ``"shared"`` one learned (H,) vector for the
             whole batch; ``"given"`` passed in (a carried state), no gradient; ``"zero"`` not
             passed, the code starts from zeros.
    absent   parameters your model lacks among ``b``, ``c`` (held at zero, not passed), and ``V``: no output
             layer, the hidden states are the output (``V`` and ``c`` absent; the spec's ``output_layer=False``).
    args     how your function is called, positionally: ``"params"`` (a dict of the rest, your
             names), ``"x"``, ``"y"``, ``"spec"``, one of your parameter names, the name given as
             ``lengths`` or ``mask``, a size (``"T"``, ``"B"``, ``"I"``, ``"H"``, ``"O"``: that case's), or
             any other value, passed as it is (a constant: ``0.5``, a vocabulary size).
             Default ``("params", "x", "y")``; ``("x", "y")`` for :func:`adapt_module`.
    returns  ``"dict"`` (a mapping, keys your names with or without a ``d`` prefix, ``"dx"``,
             ``"loss"``), ``"loss"`` (only the loss: torch and modules), or a tuple naming each
             returned item in order, ``None`` for items to ignore (``("loss", "dWxh", ..., None)``),
             ``"grads"`` for a mapping of gradients (``("loss", "grads")``), a set
             of names (a mapping holding only those), or one name (that gradient, bare). A tuple, set or
             name declares what is returned: the other gradients are "not returned", not missing.
    clip     your code clips every parameter gradient to ±clip before returning it.
    clip_norm  your code rescales the parameter gradients together to a global norm of at most clip_norm
             (``g *= min(1, clip_norm / ‖g‖)``, ‖g‖ over all of them, dx excluded).
    lengths  padded batches: the name of your parameter that takes the sequences' lengths (ints (B,)).
    mask     padded batches: the name of your parameter that takes the mask, 1.0 on real steps and 0.0
             on padding, (T, B) or (B, T) as ``batch`` says ((T,) unbatched).
    unused   parameters your code has that take no part in the loss: ``{"by2": ("O",)}`` (shape as sizes
             or numbers). Each is passed with non-zero values; its gradient, where returned, must be zero.
    tie      sizes your code assumes equal, e.g. ``("I", "O")`` for one vocabulary in and out.
    gates    (lstm, gru) the order your code stacks the gates' rows (or columns, for (in, out) weights) of
             W, U, b and bu: a permutation of ``"ifgo"`` (lstm; CS231n stacks ``"ifog"``, Chainer/DLFS2
             ``"fgio"``) or ``"rzn"`` (gru; Keras stacks ``"zrn"``). Default: torch's (``ifgo``, ``rzn``).
    c0       (lstm) the initial cell state: ``"learned"`` (B, H) with its gradient, ``"given"`` (passed
             in, no gradient) or ``"zero"`` (not passed, your code starts from zeros).
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
    gates: str | None = None
    c0: str = "learned"
    clip_norm: float | None = None
    lengths: str | None = None
    mask: str | None = None
    unused: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    tie: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _choice("c0", self.c0, C0_MODES)
        if self.gates is not None and (not isinstance(self.gates, str) or len(set(self.gates)) != len(self.gates)
                                       or sorted(self.gates) not in (sorted("ifgo"), sorted("rzn"))):
            raise UsageError(f"Layout(gates={self.gates!r}): give the order your code stacks the gates in, a "
                             "permutation of 'ifgo' (lstm; e.g. 'ifog', 'fgio') or of 'rzn' (gru; e.g. 'zrn')")
        _choice("weights", self.weights, WEIGHT_ORDERS)
        _choice("vectors", self.vectors, VECTORS)
        _choice("batch", self.batch, BATCH)
        _choice("inputs", self.inputs, INPUTS)
        _choice("targets", self.targets, TARGETS)
        _choice("h0", self.h0, H0_MODES)
        if self.vectors == "column" and self.batch in ("batch_major", "list"):
            raise UsageError(f"Layout(vectors='column', batch={self.batch!r}) is not supported: column "
                                 "vectors keep the batch as columns, x as (T, I, B); use batch='time_major'")
        object.__setattr__(self, "unused", {str(k): tuple(v) for k, v in dict(self.unused).items()})
        for k, shape in self.unused.items():
            if not shape or any(not (d in SIZE_NAMES or (isinstance(d, int) and d >= 1)) for d in shape):
                raise UsageError(f"Layout(unused={{{k!r}: {shape!r}}}): give the shape as sizes ('T', 'B', 'I', "
                                 "'H', 'O') or positive numbers, e.g. ('O',) for an output bias")
        object.__setattr__(self, "tie", (self.tie,) if isinstance(self.tie, str) else tuple(self.tie))
        for name, value in (("lengths", self.lengths), ("mask", self.mask)):
            if value is not None and not (isinstance(value, str) and value.isidentifier()):
                raise UsageError(f"Layout({name}={value!r}): give the name of your parameter that takes the "
                                 f"{'lengths' if name == 'lengths' else 'mask'} (a string)")
        if isinstance(self.returns, (set, frozenset)):
            object.__setattr__(self, "returns", frozenset(self.returns))
        object.__setattr__(self, "names", dict(self.names))
        object.__setattr__(self, "absent", tuple(self.absent))
        if self.args is not None:
            object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.returns, (str, frozenset)):
            object.__setattr__(self, "returns", tuple(self.returns))
        for key, value in self.names.items():
            if key not in CANONICAL:
                raise UsageError(f"Layout(names=...): {key!r} is not a canonical name; the keys are "
                                     f"{', '.join(CANONICAL)} (input->hidden W, hidden->hidden U, hidden bias b, "
                                     "the GRU's recurrent bias bu, output V, output bias c, initial states h0 "
                                     "and c0), the values are yours")
            ok = isinstance(value, str) or (key == "b" and isinstance(value, tuple) and len(value) == 2
                                            and all(isinstance(v, str) for v in value))
            if not ok:
                raise UsageError(f"Layout(names={{{key!r}: {value!r}}}): give one name (a string)"
                                     + ("; or two for two hidden biases, e.g. ('b_ih', 'b_hh')" if key == "b" else ""))
        if "V" in self.absent and "c" not in self.absent:
            object.__setattr__(self, "absent", (*self.absent, "c"))     # no output layer: no output bias
        for a in self.absent:
            if a not in ("b", "c", "V"):
                raise UsageError(f"Layout(absent={self.absent!r}): only the biases 'b' and 'c' and the output "
                                     "layer 'V' can be absent (for a zero initial state use h0='zero')")
        users = self.user_names()
        flat = [u for u in users.values()]
        dupes = sorted({u for u in flat if flat.count(u) > 1})
        if dupes:
            raise UsageError(f"Layout(names=...): the name(s) {dupes} are used for two parameters")
        reserved = {"params", "x", "y", "spec", "loss", "dx"} | {n for n in (self.lengths, self.mask) if n}
        clash = sorted(reserved & (set(flat) | set(self.unused)))
        if clash:
            raise UsageError(f"Layout(names=...): {clash} are reserved words in args/returns; rename them")
        for name in ("clip", "clip_norm"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise UsageError(f"Layout({name}={value!r}): the clip must be a positive number")
        if self.args is not None:
            words = {"params", "x", "y", "spec", *SIZE_NAMES} | {n for n in (self.lengths, self.mask) if n}
            for a in self.args:
                if isinstance(a, str) and a not in words and a not in flat and a not in self.unused:
                    raise UsageError(f"Layout(args=...): {a!r} is none of 'params', 'x', 'y', 'spec', a size "
                                     f"(T, B, I, H, O), your lengths or mask parameter, and not one of your "
                                     f"parameter names {flat}; a constant that is a string: pass it with "
                                     "functools.partial")
        if isinstance(self.returns, str) and self.returns not in ("dict", "loss"):
            if self.resolve(self.returns) in (None, "loss"):
                raise UsageError(f"Layout(returns={self.returns!r}): choose 'dict', 'loss', a tuple or set of "
                                 f"names, or the one gradient your code returns (one of {', '.join(flat)}, "
                                 "with or without a 'd' prefix, or 'dx')")
        elif not isinstance(self.returns, str):
            for r in self.returns:
                if r not in _IGNORED and r != GRADS and self.resolve(r) is None:
                    raise UsageError(f"Layout(returns=...): {r!r} is not 'loss', 'dx', 'grads' (a mapping of "
                                     f"gradients), None or one of your parameter names with or without a 'd' "
                                     f"prefix ({', '.join(flat)})")

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
        by_user.update({u: u for u in self.unused})
        if name in by_user:
            return by_user[name]
        if name.startswith("d") and name[1:] in by_user:
            return by_user[name[1:]]
        return None

    def declared(self) -> set[str] | None:
        """The report keys your code returns, when ``returns`` declares them (None: every gradient)."""
        r = self.returns
        if r == "dict" or r == "loss" or (isinstance(r, tuple) and GRADS in r):
            return None
        names = (r,) if isinstance(r, str) else tuple(r)
        return {k for k in (self.resolve(n) for n in names if n not in _IGNORED) if k not in (None, "loss")}

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

    def gate_order(self, spec: Spec, rows: int) -> np.ndarray | None:
        """Canonical row of each of your rows, for a gated parameter with ``rows`` rows (None: the same)."""
        cell = spec.cell.partition(":")[0]
        canonical = CANONICAL_GATES.get(cell)
        if self.gates is None or canonical is None:
            if self.gates is not None and cell not in CANONICAL_GATES:
                raise UsageError(f"Layout(gates={self.gates!r}) applies to the lstm and gru cells, not {cell!r}")
            return None
        if sorted(self.gates) != sorted(canonical):
            raise UsageError(f"Layout(gates={self.gates!r}) does not name the {cell} cell's gates "
                             f"({', '.join(canonical)})")
        H = rows // len(canonical)
        return np.concatenate([np.arange(H) + H * canonical.index(g) for g in self.gates])

    def user_index(self, key: str, index: Sequence[int], spec: Spec | None = None,
                   rows: int = 0) -> tuple[int, ...]:
        """Where the element at ``index`` of the canonical gradient ``key`` sits in your array."""
        idx = tuple(int(i) for i in index)
        kind = self.canonical_of(key)
        if kind in GATED and spec is not None and rows:
            order = self.gate_order(spec, rows)
            if order is not None:
                idx = (int(np.argsort(order)[idx[0]]), *idx[1:])
        if kind in WEIGHTS:
            return idx[::-1] if self.weights == "in_out" else idx
        if kind in ("b", "bu", "c"):
            return (idx[0], 0) if self.vectors == "column" else idx
        if kind in ("h0", "c0"):
            if self.h0 == "shared":
                return (idx[-1], 0) if self.vectors == "column" else (idx[-1],)
            b, h = idx
            if self.vectors == "column":
                return (h, b)
            return (h,) if self.batch is None else (b, h)
        if kind == "x":
            t, b, i = idx
            if self.batch == "list":
                return (b, t, i)
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
        for f in ("weights", "vectors", "batch", "inputs", "targets", "h0", "c0", "gates", "absent", "args",
                  "returns", "clip", "clip_norm", "lengths", "mask", "unused", "tie"):
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
    x: Any
    y: Any
    spec: Spec
    shapes: dict[str, int]
    lengths: np.ndarray | None = None   # the sequences' lengths (B,) (full length when the batch is not padded)
    mask: Any = None                    # 1.0 on real steps, 0.0 on padding, in your layout


def unused_value(shape: tuple[int, ...]) -> np.ndarray:
    """The non-zero values an unused parameter is given (fixed: the same for every call)."""
    n = int(np.prod(shape))
    return 0.3 * np.cos(1.0 + np.arange(n)).reshape(shape) + 0.05


def unused_shape(layout: Layout, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(int(sizes[d]) if isinstance(d, str) else int(d) for d in layout.unused[name])


def _lower(layout: Layout, params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec,
           lengths: Any = None) -> _Call:
    """The canonical arrays of one case, in your layout."""
    x = np.asarray(x)
    T, B, I = x.shape
    lengths = np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    if layout.batch is None and B != 1:
        raise UsageError(f"this layout is unbatched (batch=None) but the case has B = {B}; run it through "
                             "bptt_check.check / check_case, which draws it with B = 1")
    names = layout.user_names()
    out: dict[str, np.ndarray] = {}
    key_of: dict[str, str] = {}
    learned: set[str] = set()
    extra = [k for k in params if k not in CANONICAL]       # a cell of your own: its parameters as they are
    for k in (*CANONICAL, *extra):
        if k not in params or k in layout.absent:
            continue
        a = np.asarray(params[k])
        order = layout.gate_order(spec, a.shape[0]) if k in GATED else None
        if order is not None:
            a = a[order]                                        # your gate order
        if k in extra:
            user = a
            learned.add(names.setdefault(k, k))
        elif k == "h0":
            if layout.h0 == "zero":
                continue
            if layout.h0 == "shared":
                user = a[0][:, None] if layout.vectors == "column" else a[0].copy()
            else:
                user = layout.vec_to_user(a)
            if layout.h0 != "given":
                learned.add(names[k])
        elif k == "c0":
            if layout.c0 == "zero":
                continue
            user = layout.vec_to_user(a)
            if layout.c0 != "given":
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
    H = int(np.asarray(params["h0"]).shape[-1])
    O = int(np.asarray(params["V"]).shape[0]) if "V" in params else H
    sizes = {"T": T, "B": B, "I": I, "H": H, "O": O}
    for name in layout.unused:
        out[name] = unused_value(unused_shape(layout, name, sizes))
        key_of[name] = name
        learned.add(name)
    ids = np.argmax(x, axis=-1)
    ux: Any
    if layout.batch == "list":
        ux = [np.array(ids[:n, b] if layout.inputs == "index" else x[:n, b]) for b, n in enumerate(lengths)]
    elif layout.inputs == "index":
        ux = np.array(layout.ids_to_user(ids))
    else:
        ux = np.array(layout.seq_to_user(x))
    uy = _lower_targets(layout, np.asarray(y), spec, O, lengths)
    mask = (np.arange(T)[:, None] < lengths[None, :]).astype(np.dtype(spec.dtype))
    mask = mask[:, 0].copy() if layout.batch is None else (mask.T.copy() if layout.batch == "batch_major" else mask)
    return _Call(out, key_of, learned, ux, uy, spec, sizes, lengths, mask)


def _lower_targets(layout: Layout, y: np.ndarray, spec: Spec, O: int, lengths: np.ndarray) -> Any:  # noqa: E741
    many_to_one = spec.mode == "many-to-one"
    ids = spec.loss == "cross_entropy" and layout.targets == "index"
    if spec.loss == "cross_entropy" and not ids:              # one-hot class targets
        y = np.eye(O, dtype=np.dtype(spec.dtype))[y]
    if many_to_one:
        if ids:
            return y[0] if layout.batch is None else np.array(y)
        return np.array(layout.vec_to_user(y))
    if layout.batch == "list":
        return [np.array(y[:n, b]) for b, n in enumerate(lengths)]
    if ids:
        return np.array(layout.ids_to_user(y))
    return np.array(layout.seq_to_user(y))


def _arguments(layout: Layout, call: _Call, default: tuple[str, ...]) -> list[Any]:
    args = layout.args if layout.args is not None else default
    taken = {a for a in args if a in call.params}
    rest = {k: v for k, v in call.params.items() if k not in taken}
    values = {"params": rest, "x": call.x, "y": call.y, "spec": call.spec, **call.shapes}
    if layout.lengths:
        values[layout.lengths] = _fresh(call.lengths)
    if layout.mask:
        values[layout.mask] = _fresh(call.mask)
    out = []
    for a in args:
        if not isinstance(a, str):
            out.append(a)                                       # a constant, passed as it is
        elif a in values:
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
    if layout.args is not None:
        return fn(*args)
    kwargs: dict[str, Any] = {"spec": call.spec} if _takes(fn, "spec") else {}
    if layout.lengths:
        kwargs[layout.lengths] = _fresh(call.lengths)
    if layout.mask:
        kwargs[layout.mask] = _fresh(call.mask)
    return fn(*args, **kwargs)


def _fresh(a: Any) -> Any:
    """A copy of a numpy array or torch tensor the user's code may change freely."""
    return a.clone() if hasattr(a, "clone") else np.array(a, copy=True)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
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
    if isinstance(layout.returns, str) and layout.returns != "dict":     # one gradient, bare
        if isinstance(raw, (Mapping, tuple)) or raw is None:
            raise UsageError(f"{what} returned {type(raw).__name__}; the layout declares one bare gradient, "
                             f"returns={layout.returns!r}")
        raw = ((layout.returns, raw),)
        items = [(str(k), v) for k, v in raw]
    elif layout.returns == "dict" or isinstance(layout.returns, frozenset):
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
        items = []
        for n, v in zip(layout.returns, raw):
            if n == GRADS:
                if not isinstance(v, Mapping):
                    raise UsageError(f"{what} returned a {type(v).__name__} where the layout's returns has "
                                     "'grads': a mapping of gradients")
                items += [(str(k), g) for k, g in v.items()]
            elif n not in _IGNORED:
                items.append((str(n), v))
    grads: dict[str, Any] = {}
    loss = None
    for name, value in items:
        key = layout.resolve(name)
        if key == "loss":
            loss = _to_float(value)
        elif key == "x":
            grads["x"] = value
        elif key is not None:
            grads[layout.user_names().get(key, key)] = value
        else:
            grads[name] = value      # not a gradient of this model: the check notes it
    return grads, loss


def _raise(layout: Layout, call: _Call, grads: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
    """Your gradients (your names and layout) -> report keys, canonical layout."""
    out: dict[str, np.ndarray] = {}
    for name, value in grads.items():
        if name == "x" and layout.batch == "list" and layout.inputs == "dense":
            out["x"] = _stack_list(value, call, what)
            continue
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
        if kind not in CANONICAL:
            out[key] = g                                      # a cell of your own: as it is
        elif kind in WEIGHTS:
            out[key] = layout.weight_to_user(g)               # a transpose is its own inverse
        elif kind in ("b", "bu", "c"):
            out[key] = layout.bias_from_user(g)
        elif kind == "h0" and layout.h0 == "shared":
            out[key] = g.reshape(-1)
        else:
            out[key] = layout.vec_from_user(g)
        order = layout.gate_order(call.spec, out[key].shape[0]) if kind in GATED else None
        if order is not None:
            out[key] = out[key][np.argsort(order)]            # back from your gate order
    return out


def _stack_list(value: Any, call: _Call, what: str) -> np.ndarray:
    """dx as a list of B arrays (ℓ_b, I) -> (T, B, I), zero on the padding."""
    T, B, I = call.shapes["T"], call.shapes["B"], call.shapes["I"]
    if not isinstance(value, (list, tuple)) or len(value) != B:
        raise UsageError(f"{what}: dx must be a list of {B} arrays, one per sequence (batch='list'), got "
                         f"{type(value).__name__}" + (f" of {len(value)}" if isinstance(value, (list, tuple)) else ""))
    out = np.zeros((T, B, I))
    for b, (n, g) in enumerate(zip(call.lengths, value)):
        g = to_numpy(g)
        if g.shape != (int(n), I):
            raise UsageError(f"{what}: dx[{b}] has shape {g.shape}, but sequence {b} has shape {(int(n), I)}")
        out[:n, b] = g
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

    def __call__(self, params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec | None = None,
                 lengths: Any = None) -> dict[str, Any]:
        return self.run(params, x, y, spec, lengths).grads

    def run(self, params: Mapping[str, Any], x: np.ndarray, y: Any, spec: Spec | None = None,
            lengths: Any = None) -> Lowered:
        """One call of your code on canonical arrays (``lengths``: a padded batch): canonical gradients and
        the loss it reported."""
        spec = spec or self.bptt_spec or Spec()
        lay = self.layout
        if lengths is not None and not (lay.lengths or lay.mask or lay.batch == "list"):
            raise UsageError("the case is a padded batch (lengths=True), but the layout does not say how your code "
                             "receives it: Layout(lengths='<your parameter>') for the lengths, "
                             "Layout(mask='<your parameter>') for a mask, or batch='list' for unpadded sequences")
        call = _lower(self.layout, params, x, y, spec, lengths)
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
        out |= {"c0"} if lay.c0 in ("given", "zero") else set()
        if lay.inputs != "dense":
            out.add("x")
        return out | self.not_returned()

    def not_returned(self) -> set[str]:
        """Gradients your code exists to compute but, as ``returns`` declares, does not return."""
        declared = self.layout.declared()
        if declared is None:
            return set()
        keys = {*CANONICAL, "x", *self.layout.unused}
        if self.layout.second_bias:
            keys.add(self.layout.second_bias)
        return keys - declared

    def shape_case(self, case: Case) -> Case:
        """The case as your layout can take it: B = 1, one-hot inputs, zeros where parameters are absent."""
        lay = self.layout
        params = {k: np.array(v, copy=True) for k, v in case.params.items()}
        x, y = np.array(case.x, copy=True), np.array(case.y, copy=True)
        lengths = None if case.lengths is None else case.lengths.copy()
        if "V" in lay.absent and "V" in params:
            raise UsageError("Layout(absent=('V',)) declares a model without an output layer, but the spec has one: "
                             "check with output_layer=False (--no-output-layer)")
        if lay.batch is None and x.shape[1] != 1:
            x = x[:, :1]
            y = y[:1] if case.spec.mode == "many-to-one" else y[:, :1]
            for k in ("h0", "c0"):
                if k in params:
                    params[k] = params[k][:1]
            lengths = None if lengths is None else lengths[:1]
        if lay.batch is None and lengths is not None:      # one sequence: cut to its length, nothing padded
            x = x[:int(lengths[0])]
            y = y if case.spec.mode == "many-to-one" else y[:int(lengths[0])]
            lengths = None
        if lay.inputs != "dense":
            x = np.eye(x.shape[2], dtype=x.dtype)[np.argmax(x, axis=-1)]
        for k in lay.absent:
            if k in params:
                params[k] = np.zeros_like(params[k])
        if lay.c0 == "zero" and "c0" in params:
            params["c0"] = np.zeros_like(params["c0"])
        if lay.h0 == "zero":
            params["h0"] = np.zeros_like(params["h0"])
        elif lay.h0 == "shared":
            params["h0"] = np.broadcast_to(params["h0"][:1], params["h0"].shape).copy()
        return Case(case.spec, case.seed, case.index, case.flavor, params, x, y, dict(case.extra), lengths)

    def expected(self, case: Case) -> dict[str, tuple[int, ...]]:
        """The gradients a call returns on this (shaped) case, and their shapes (``x`` optional)."""
        lay = self.layout
        dropped = self._dropped()
        out = {k: tuple(v.shape) for k, v in case.params.items() if k not in dropped}
        if lay.h0 == "shared" and "h0" in out:
            out["h0"] = tuple(case.params["h0"].shape[1:])      # one learned h0 for the whole batch
        if lay.second_bias and "b" in out and lay.second_bias not in dropped:
            out[lay.second_bias] = out["b"]
        for name in lay.unused:
            if name not in dropped:
                out[name] = unused_shape(lay, name, case.shapes)
        if "x" not in dropped:
            out["x"] = tuple(case.x.shape)
        return out

    def optional(self) -> set[str]:
        """Gradients a call may leave out: dx, and those of unused parameters (zero anyway)."""
        return {"x", *self.layout.unused}

    def check_loss(self, case: Case, loss: float | None, source: str) -> dict[str, Any] | None:
        """Check the loss your code reported against the reference forward (None: it agrees, or none given)."""
        if loss is None:
            return None
        return _forward_finding(case, loss, source)

    @property
    def linear(self) -> bool:
        """Whether your gradients are a linear map of the canonical ones (no clip): random projections
        of them can be checked against projections of the canonical gradient (:meth:`lift`)."""
        return self.layout.clip is None and self.layout.clip_norm is None

    def lower(self, case: Case, arrays: Mapping[str, Any], kind: str = "grad", *, clip: bool = True
              ) -> dict[str, Any]:
        """Canonical arrays -> the ones your layout returns: ``kind`` "grad" (the reference your layout
        implies: a shared h0 summed over the batch, a second bias, a declared clip), "error" (error
        estimates: added the same way) or "mask" (element flags: any over what is summed)."""
        lay = self.layout
        dropped = self._dropped()
        out = {k: v for k, v in arrays.items() if k not in dropped}
        for name in lay.unused:                                 # takes no part: its gradient is zero
            if name not in dropped:
                zero = np.zeros(unused_shape(lay, name, case.shapes))
                out[name] = zero.astype(bool) if kind == "mask" else zero
        if lay.h0 == "shared" and "h0" in out:
            v = np.asarray(out["h0"])
            if kind == "mask":
                out["h0"] = v.any(axis=0)
            elif kind == "error" and v.ndim < 2:
                out["h0"] = v * case.B
            else:
                out["h0"] = v.sum(axis=0)
        second = lay.second_bias
        if second and "b" in out and second not in dropped:
            out[second] = copy.copy(out["b"])
        if lay.clip is not None and kind == "grad" and clip:
            c = float(lay.clip)
            out = {k: (v if k == "x" else np.clip(v, -c, c)) for k, v in out.items()}
        if lay.clip_norm is not None and kind in ("grad", "error") and clip:
            factor = self._norm_factor(case, arrays)
            out = {k: (v if k == "x" else factor * np.asarray(v)) for k, v in out.items()}
        return out

    def _norm_factor(self, case: Case, arrays: Mapping[str, Any]) -> float:
        """min(1, clip_norm / ‖g‖) over the parameter gradients your code returns (the reference's)."""
        kept = self.lower(case, arrays, "grad", clip=False)
        norm = float(np.sqrt(sum(float(np.sum(np.square(v))) for k, v in kept.items() if k != "x")))
        return min(1.0, float(self.layout.clip_norm) / norm) if norm > 0 else 1.0

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
        if lay.clip_norm is not None:
            factor = self._norm_factor(case, ref)
            notes.append(f"global-norm clip at {lay.clip_norm:g} (declared): "
                         + (f"the reference was scaled by {factor:.4g}" if factor < 1
                            else "the reference's norm stayed below it; the clip itself was not exercised by "
                                 "this case"))
        skipped = ordered(self.not_returned() & ({*case.params, "x"} - set(lay.absent)))
        if skipped:
            notes.append(f"not returned (declared by Layout.returns): {', '.join(skipped)}")
        return notes

    def yours(self, case: Case, failed: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Per wrong gradient (name -> its comparison): your name for it and, for its worst elements, where
        they sit in your own array — what a report shows instead of the canonical names (issue 12)."""
        names = self.layout.user_names()
        out: dict[str, dict[str, Any]] = {}
        for key, g in failed.items():
            yours = "x" if key == "x" else names.get(key, key)
            canonical = self.layout.canonical_of(key)
            rows = int(np.shape(case.params[canonical])[0]) if canonical in case.params else 0
            at = [list(self.layout.user_index(key, w["index"], case.spec, rows)) for w in (g.worst or [])]
            if yours != key or any(a != list(w["index"]) for a, w in zip(at, g.worst or [])):
                out[key] = {"name": yours, "worst_index": at}
        return out

    def locate(self, case: Case, failed: Mapping[str, Any]) -> list[str]:
        """Where each wrong gradient (name -> its comparison) sits in your own arrays."""
        names = self.layout.user_names()
        out = []
        for key, g in failed.items():
            if key in self.layout.unused:
                out.append(f"{key} takes no part in the loss (Layout.unused): its gradient is zero, yours is not "
                           f"(largest |d{key}| {g.max_abs_err:.3g})")
                continue
            yours = "x" if key == "x" else names.get(key, key)
            if g.problem or not g.worst_index:
                if yours != key:
                    out.append(f"{key} is your {yours!r}")
                continue
            canonical = self.layout.canonical_of(key)
            rows = int(np.shape(case.params[canonical])[0]) if canonical in case.params else 0
            at = self.layout.user_index(key, g.worst_index, case.spec, rows)
            where = f"{yours}[{', '.join(map(str, at))}]"
            if key == "x" and self.layout.batch == "list":
                where = f"dx[{at[0]}][{at[1]}, {at[2]}] (sequence {at[0]})"
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
        dense = self.layout.inputs == "dense"

        def tensor(a: Any, grad: bool = False) -> Any:
            a = np.asarray(a)
            kind = torch.long if a.dtype.kind in "iu" else dtype
            return torch.tensor(a, dtype=kind, device=self.device, requires_grad=grad and kind != torch.long)

        listed = self.layout.batch == "list"
        tx = [tensor(a, dense) for a in call.x] if listed else tensor(call.x, dense)
        if dense:
            leaves.update({f"x[{b}]": t for b, t in enumerate(tx)} if listed else {"x": tx})
        ty = [tensor(a) for a in call.y] if isinstance(call.y, list) else tensor(call.y)
        view = _Call(tensors, call.key_of, call.learned, tx, ty, call.spec, call.shapes,
                     tensor(call.lengths), tensor(call.mask))
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
        grads = {n: (np.zeros(tuple(leaves[n].shape)) if g is None else g.detach().cpu().numpy())
                 for n, g in zip(names, got) if g is not None or n.startswith("x[")}
        if listed and dense:
            grads["x"] = [grads.pop(f"x[{b}]") for b in range(len(tx))]
        return grads, float(loss.detach().cpu().reshape(()))


class _ModuleAdapted(Adapted):
    kind = "module"

    def __init__(self, make: Callable[..., Any], step: str, layout: Layout | None, *, lr: str | float,
                 grads: str, update: Callable[..., Any] | None, spec: Spec | None,
                 spec_kwargs: Mapping[str, Any]) -> None:
        name = getattr(make, "__qualname__", None) or type(make).__name__
        super().__init__(make, layout, forward=None, spec=spec, spec_kwargs=spec_kwargs, name=f"{name}.{step}")
        if self.layout.args is not None and "params" in self.layout.args:
            raise UsageError("adapt_module sets your parameters as attributes of the object; "
                                 "'params' cannot be one of its args")
        if not isinstance(lr, str) and not (isinstance(lr, (int, float)) and lr > 0):
            raise UsageError(f"lr must be the name of the learning-rate attribute or the positive rate "
                                 f"your object uses, got {lr!r}")
        attribute = grads.partition(":")[2] if grads.startswith("attribute:") else None
        if grads not in ("update", "returned") and not attribute:
            raise UsageError(f"adapt_module(grads={grads!r}): choose 'update' (captured from the in-place "
                             "update), 'returned' (the step returns them, as Layout.returns says) or "
                             "'attribute:NAME' (read after the step from obj.NAME, a mapping of your names, or "
                             "from one attribute per parameter: 'attribute:d{name}', 'attribute:grads.{name}')")
        if update is not None and (not callable(update) or grads != "update"):
            raise UsageError("adapt_module(update=...) is the inverse of your update step, "
                             "update(old, new, lr) -> gradient, used with grads='update'")
        self.step = step
        self.lr = lr
        self.capture = grads == "update"
        self.attribute = attribute
        self.update = update

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
            _set_path(obj, name, a, call.spec)
            before[name] = np.array(a, dtype=np.float64, copy=True)
        rate = 1.0
        if isinstance(self.lr, str):
            _set_path(obj, self.lr, rate, None)
        else:
            rate = float(self.lr)
        method = getattr(obj, self.step, None)
        if not callable(method):
            raise UsageError(f"{type(obj).__name__} has no method {self.step!r}")
        raw = _call_user(method, self.layout, call, ("x", "y"))
        if not self.capture and self.attribute is None:
            return _split_returned(self.layout, raw, self.name)
        loss = None
        if self.layout.returns not in ("dict",) and not isinstance(self.layout.returns, frozenset):
            _, loss = _split_returned(self.layout, raw, self.name)   # the step may report its loss
        if self.attribute is not None:
            return self._read_attribute(obj, call), loss
        grads = {}
        for name in call.learned:
            after = to_numpy(_get_path(obj, name)).astype(np.float64)
            if after.shape != before[name].shape:
                raise UsageError(f"{self.name} replaced {name!r} (shape {before[name].shape}) with an array of "
                                     f"shape {after.shape}")
            if self.update is not None:                          # your update step, inverted
                grads[name] = to_numpy(self.update(before[name].copy(), after.copy(), rate))
            else:
                grads[name] = (before[name] - after) / rate          # p <- p - lr * g
        return grads, loss

    def _read_attribute(self, obj: Any, call: _Call) -> dict[str, Any]:
        """Gradients the step left on the object: obj.<attr>[name], or one attribute per parameter."""
        attr = self.attribute or ""
        grads: dict[str, Any] = {}
        if "{name}" not in attr:
            store = _get_path(obj, attr)
            if not isinstance(store, Mapping):
                raise UsageError(f"adapt_module(grads='attribute:{attr}'): obj.{attr} is a {type(store).__name__}, "
                                 "not a mapping of your parameter names to gradients; for one attribute per "
                                 "parameter write the pattern, e.g. 'attribute:d{name}'")
            items = [(str(k), v) for k, v in store.items()]
        else:
            items = []
            for name in [*call.learned, "x"]:
                path = attr.replace("{name}", name)
                try:
                    items.append((name, _get_path(obj, path)))
                except AttributeError:
                    if name != "x":
                        raise UsageError(f"adapt_module(grads='attribute:{attr}'): after the step, "
                                         f"{type(obj).__name__} has no attribute {path!r}") from None
        for name, value in items:
            key = self.layout.resolve(name)
            grads[self.layout.user_names().get(key, key) if key not in (None, "x") else (key or name)] = value
        return grads


def _get_path(obj: Any, path: str) -> Any:
    """obj.a.b for the path 'a.b'."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_path(obj: Any, path: str, value: Any, spec: Spec | None) -> None:
    """Set obj.a.b for the path 'a.b' — in place when the object already holds an array of that shape and
    dtype, so that arrays shared between nested objects (a layer and its model) stay shared."""
    *parents, leaf = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    old = getattr(obj, leaf, None)
    if spec is None:
        setattr(obj, leaf, value)
        return
    if old is not None and hasattr(old, "detach"):             # a torch tensor or Parameter, in the spec's dtype
        import torch

        dtype = torch.float64 if spec.dtype == "float64" else torch.float32
        if tuple(old.shape) == np.shape(value) and old.dtype == dtype:
            with torch.no_grad():
                old.copy_(torch.as_tensor(np.asarray(value), dtype=dtype))
            return
        t = torch.tensor(value, dtype=dtype, device=old.device)
        setattr(obj, leaf, torch.nn.Parameter(t, requires_grad=old.requires_grad)
                if isinstance(old, torch.nn.Parameter) else t)
        return
    if isinstance(old, np.ndarray) and old.shape == np.shape(value) and old.dtype == np.asarray(value).dtype \
            and old.flags.writeable:
        old[...] = value
        return
    setattr(obj, leaf, np.array(value, copy=True))


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
                 grads: str = "update", update: Callable[..., Any] | None = None, spec: Spec | None = None,
                 **spec_kwargs: Any) -> Adapted:
    """Check an object whose ``step`` method computes the gradients from its own attributes.

    ``make(sizes)`` builds a fresh object for one case (``sizes``: T, B, I, H, O); its parameters are
    then set as attributes (your names) and ``obj.<step>(x, y)`` is called (see ``Layout.args``).
    ``grads="update"``: the step updates the weights in place with plain SGD (``p -= lr * dp``) and the
    gradient is captured from the update; ``lr`` is the attribute the adapter sets to 1.0, or the rate
    your object uses; the step may return its loss (``Layout(returns="loss")``). Another update rule
    (momentum, Adagrad, weight decay, ...): ``update(old, new, lr)`` returns the gradient that turned
    ``old`` into ``new`` — the inverse of your step. ``grads="returned"``: the step returns the gradients,
    as ``Layout.returns`` says. ``grads="attribute:grads"``: the step leaves them in ``obj.grads`` (a
    mapping of your names); ``"attribute:d{name}"``: one attribute per parameter (``obj.dWxh``, ...).
    Your names may be paths (``"cell.Wxh"``); arrays your object already holds with the case's shape are
    written in place, so arrays shared between nested objects stay shared.
    """
    if not callable(make):
        raise UsageError(f"adapt_module() needs a factory make(sizes) -> object, got {type(make).__name__}")
    layout = layout if layout is not None else Layout()
    return _ModuleAdapted(make, step, layout, lr=lr, grads=grads, update=update, spec=spec, spec_kwargs=spec_kwargs)


# ----------------------------------------------------------------- helpers

def _declared_spec(layout: Layout, spec: Spec | None, kwargs: dict[str, Any]) -> Spec | None:
    if set(layout.absent) >= {"b", "c"} and "bias" not in kwargs and spec is None:
        kwargs["bias"] = False
    if "V" in layout.absent and "output_layer" not in kwargs:
        kwargs["output_layer"] = False                  # the hidden states are the output
    if layout.tie and "tie" not in kwargs:
        kwargs["tie"] = layout.tie
    if (layout.lengths or layout.mask or layout.batch == "list") and "lengths" not in kwargs and spec is None:
        kwargs["lengths"] = True                        # your code takes padded batches: check it on them
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
    full_spec = spec.replace(truncation=Truncation())
    full = total_loss(case.params, case.x, case.y, full_spec, case.lengths)
    truncated = total_loss(case.params, case.x, case.y, spec, case.lengths)
    if _agrees(case, loss, full, full_spec, case.lengths) or _agrees(case, loss, truncated, spec, case.lengths):
        return None
    rel = abs(loss - full) / max(abs(full), 1e-300)
    msg = (f"forward bug: {source} is {loss:.10g}, the reference forward gives {full:.10g} (relative difference "
           f"{rel:.2e}) for [{spec}] at T={case.T} B={case.B}; the gradients were not judged, since they would be "
           f"gradients of another function.")
    readings = loss_readings(loss, full, case)
    if readings:
        msg += (f" Ratio {loss / full:.6g}: your loss is "
                + "; or ".join(f"{r['yours']} where the spec's objective is {r['spec']}" for r in readings) + ".")
    if case.lengths is not None:
        unpadded = total_loss(case.params, case.x, case.y, spec, None)
        if _agrees(case, loss, unpadded, spec, None):
            msg += (f" Your loss is the reference's for full-length sequences: the lengths "
                    f"({', '.join(map(str, case.lengths))}) of T = {case.T} were ignored — "
                    + ("the loss read at step T − 1, in the padding of the shorter sequences."
                       if spec.mode == "many-to-one" else "the padded steps' losses counted."))
            return {"kind": "forward", "message": msg, "cause": "lengths_ignored"}
    return {"kind": "forward", "message": msg, "keys": ["loss"], "loss": loss, "reference_loss": full}


def _agrees(case: Case, loss: float, ref: float, spec: Spec, lengths: Any) -> bool:
    """Your loss is the reference's: to ``FORWARD_RTOL`` (float64), or to float32 precision over T steps plus
    64× the case's own float32 rounding of that loss."""
    if spec.dtype == "float64" and abs(loss - ref) <= FORWARD_RTOL * max(abs(ref), 1e-12) + 1e-12:
        return True
    tol = tolerance_for("float32", case.T)
    low = {k: np.asarray(v, dtype=np.float32) for k, v in case.params.items()}
    y = case.y if spec.loss == "cross_entropy" else np.asarray(case.y, dtype=np.float32)
    rounding = abs(float(total_loss(low, np.asarray(case.x, dtype=np.float32), y, spec, lengths)) - ref)
    return abs(loss - ref) <= tol.rtol * abs(ref) + tol.rounding * rounding + 1e-30


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
