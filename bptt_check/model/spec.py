"""What a backward implements: the spec, the truncation schedule, and its windows.

DESIGN §3: every mode is a schedule of windows. A window is a start step ``s``
and a set of loss steps ``L`` (each t in L has t >= s). For every window and
every t in L the gradient of E_t flows back through steps s..t only; the state
h_{s-1} entering the window is a constant. When s = 0 the entering state is
h0, which then gets its gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from .cell import CELLS, cell_name, parse_cell, register, user_cell

ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")
OUTPUTS = ("identity", "tanh", "sigmoid", "softmax")
LOSSES = ("half_mse", "sse", "cross_entropy", "bce")
SIZE_NAMES = ("T", "B", "I", "H", "O")
MAX_SIZE = 1_000_000
# sum: sum over batch and time; mean: mean over batch and time;
# mean_batch: sum over time, mean over batch (CS231n style);
# mean_time: mean over time, sum over batch.
REDUCTIONS = ("sum", "mean", "mean_batch", "mean_time")
MODES = ("many-to-one", "many-to-many")
DTYPES = ("float64", "float32")
TRUNCATION_KINDS = ("none", "window", "tbptt", "chunk", "window-loss")


@dataclass(frozen=True)
class Truncation:
    """A named truncation schedule.

    ``window:K``         every step's loss goes back K steps: s = max(0, t-K), L = {t}
    ``tbptt:K1,K2``      every K1 steps, back through K2 steps (K2 >= K1)
    ``chunk:K``          carry the state, detach at chunk borders: TBPTT(K, K) when K divides T
                         (TBPTT's short last block reaches K steps back from T-1; a last chunk
                         starts at its border)
    ``window-loss:K1,K2`` every K1 steps, the losses of the last K2 steps
    """

    kind: str = "none"
    k1: int = 0
    k2: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TRUNCATION_KINDS:
            raise UsageError(
                f"unknown truncation {self.kind!r}; choose one of "
                + ", ".join(TRUNCATION_KINDS)
            )
        if self.kind == "none":
            if self.k1 or self.k2:
                raise UsageError("truncation 'none' takes no window sizes")
            return
        if self.k1 < 1:
            raise UsageError(
                f"truncation {self.kind}: window size must be >= 1, got {self.k1}; "
                "a window of 0 would let no gradient flow back at all"
            )
        if self.kind in ("tbptt", "window-loss") and self.k2 < 1:
            raise UsageError(
                f"truncation {self.kind}: k2 must be >= 1, got {self.k2}"
            )
        if self.kind == "tbptt" and self.k2 < self.k1:
            raise UsageError(
                f"truncation tbptt:{self.k1},{self.k2}: k2 must be >= k1 "
                "(every k1 steps, back through k2 >= k1 steps); "
                f"for k2 = k1 use chunk:{self.k1}"
            )
        if self.kind in ("window", "chunk") and self.k2:
            raise UsageError(f"truncation {self.kind} takes one size, e.g. {self.kind}:3")

    @classmethod
    def parse(cls, text: str | Truncation | None) -> Truncation:
        """Parse ``none``, ``window:K``, ``tbptt:K1,K2``, ``chunk:K``, ``window-loss:K1,K2``."""
        if text is None:
            return cls()
        if isinstance(text, Truncation):
            return text
        s = str(text).strip().lower()
        if s in ("", "none", "full"):
            return cls()
        kind, _, args = s.partition(":")
        kind = kind.replace("_", "-")
        if kind not in TRUNCATION_KINDS:
            raise UsageError(
                f"unknown truncation {text!r}; use none, window:K, tbptt:K1,K2, "
                "chunk:K or window-loss:K1,K2"
            )
        want = 2 if kind in ("tbptt", "window-loss") else 1
        parts = [p for p in args.split(",") if p.strip()] if args else []
        if len(parts) != want:
            example = {"window": "window:3", "chunk": "chunk:4",
                       "tbptt": "tbptt:2,4", "window-loss": "window-loss:2,3"}[kind]
            raise UsageError(
                f"truncation {text!r} needs {want} size{'s' if want > 1 else ''}, e.g. {example}"
            )
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UsageError(
                f"truncation {text!r}: sizes must be whole numbers"
            ) from None
        return cls(kind, nums[0], nums[1] if want == 2 else 0)

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind in ("tbptt", "window-loss"):
            return f"{self.kind}:{self.k1},{self.k2}"
        return f"{self.kind}:{self.k1}"

    @property
    def reach(self) -> int | None:
        """How many steps back a gradient can flow at most (None: unbounded)."""
        if self.kind == "none":
            return None
        if self.kind == "window":
            return self.k1 + 1
        if self.kind == "chunk":
            return self.k1
        return self.k2


@dataclass(frozen=True)
class Window:
    """Gradients of E_t, t in ``losses``, flow back to step ``start`` only."""

    start: int
    losses: tuple[int, ...]


def schedule_windows(truncation: Truncation, T: int) -> list[Window]:
    """The windows of a truncation schedule over T steps, every step bearing a loss."""
    if T < 1:
        raise UsageError(f"sequence length T must be >= 1, got {T}")
    tr = truncation
    if tr.kind == "none":
        return [Window(0, tuple(range(T)))]
    if tr.kind == "window":
        return [Window(max(0, t - tr.k1), (t,)) for t in range(T)]
    if tr.kind in ("tbptt", "chunk"):
        k1 = tr.k1
        out = []
        first = 0
        while first < T:
            end = min(first + k1 - 1, T - 1)  # block end tau (T-1 for a short last block)
            # tbptt: back through k2 steps from tau, even from a short last block;
            # chunk: detach at every chunk border, the short last chunk included
            start = first if tr.kind == "chunk" else max(0, end - tr.k2 + 1)
            out.append(Window(start, tuple(range(first, end + 1))))
            first = end + 1
        return out
    # window-loss: for n = k1, 2k1, ... <= T: s = max(0, n - k2), L = {s .. n-1}
    out = []
    n = tr.k1
    while n <= T:
        s = max(0, n - tr.k2)
        out.append(Window(s, tuple(range(s, n))))
        n += tr.k1
    return out


@dataclass(frozen=True)
class Sizes:
    """The space random cases are drawn from (inclusive ranges)."""

    @classmethod
    def parse(cls, text: str) -> Sizes:
        """``T=3:8,B=1:3,I=1:4,H=2:5,O=1:3`` (any subset; ``N`` or ``LO:HI``), the rest at their defaults."""
        out: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in str(text).split(","))):
            name, eq, value = item.partition("=")
            name = name.strip()
            if not eq or name not in SIZE_NAMES or name in out:
                raise UsageError(f"sizes {text!r}: give NAME=N or NAME=LO:HI for T, B, I, H, O, comma-separated, "
                                 "each once, e.g. T=3:8,B=2")
            lo, colon, hi = value.partition(":")
            try:
                out[name] = (int(lo), int(hi)) if colon else int(lo)
            except ValueError:
                raise UsageError(f"sizes {text!r}: {item!r} is not NAME=N or NAME=LO:HI with whole numbers") from None
        return cls(**out)

    def text(self) -> str:
        """The form :meth:`parse` reads, every size."""
        return ",".join(f"{n}={lo}" if lo == hi else f"{n}={lo}:{hi}" for n in SIZE_NAMES
                        for lo, hi in [getattr(self, n)])

    T: tuple[int, int] = (3, 8)
    B: tuple[int, int] = (1, 3)
    I: tuple[int, int] = (1, 4)  # noqa: E741
    H: tuple[int, int] = (2, 5)
    O: tuple[int, int] = (1, 3)  # noqa: E741

    def __post_init__(self) -> None:
        for name in ("T", "B", "I", "H", "O"):
            value = getattr(self, name)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                value = (value, value)                      # a single size n means n..n
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
                raise UsageError(
                    f"size range {name}={value!r} is invalid: give a whole number or a pair (lo, hi) "
                    "of whole numbers, e.g. T=(3, 8)"
                )
            lo, hi = int(value[0]), int(value[1])
            object.__setattr__(self, name, (lo, hi))
            if lo < 1 or hi < lo:
                raise UsageError(
                    f"size range {name}={lo}..{hi} is invalid: sizes must be >= 1 "
                    "and the range must not be empty"
                )
            if hi > MAX_SIZE:
                raise UsageError(f"size range {name}={lo}..{hi} is too large: at most {MAX_SIZE}")


class Shaped:
    """The sizes of a case's arrays (``x`` (T, B, I), ``params``), for anything that holds them."""

    x: np.ndarray
    params: dict[str, np.ndarray]

    @property
    def T(self) -> int:
        return int(self.x.shape[0])

    @property
    def B(self) -> int:
        return int(self.x.shape[1])

    @property
    def I(self) -> int:  # noqa: E743
        return int(self.x.shape[2])

    @property
    def H(self) -> int:
        return int(self.params["h0"].shape[-1])

    @property
    def O(self) -> int:  # noqa: E743
        return int(self.params["V"].shape[0]) if "V" in self.params else self.H

    @property
    def shapes(self) -> dict[str, int]:
        return {"T": self.T, "B": self.B, "I": self.I, "H": self.H, "O": self.O}

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of a gradient (a parameter's, or ``x``'s)."""
        return tuple(self.x.shape) if name == "x" else tuple(self.params[name].shape)


@dataclass(frozen=True)
class Spec:
    """What the backward under test implements (DESIGN §1-3)."""

    mode: str = "many-to-many"
    truncation: Truncation = field(default_factory=Truncation)
    activation: str = "tanh"
    output: str = "identity"
    loss: str = "half_mse"
    reduction: str = "sum"
    bias: bool = True
    dtype: str = "float64"
    sizes: Sizes = field(default_factory=Sizes)
    # rnn, lstm, gru (gru:z=n, gru:reset=before), or a cell of your own (an object, or its name)
    cell: Any = "rnn"
    # variable-length batches: each case draws lengths 1 <= l_b <= T (DESIGN §12)
    lengths: bool = False
    # the dense layer y_t = h_t V^T + c; without it the hidden state is the output (O = H)
    output_layer: bool = True
    # sizes drawn equal, e.g. ("I", "O") for one vocabulary in and out
    tie: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_cell()
        if isinstance(self.truncation, str) or self.truncation is None:
            object.__setattr__(self, "truncation", Truncation.parse(self.truncation))
        if not isinstance(self.truncation, Truncation):
            raise UsageError(f"truncation must be a string like 'window:3' or a Truncation, "
                                 f"got {self.truncation!r}")
        if isinstance(self.sizes, dict):
            unknown = sorted(set(self.sizes) - {"T", "B", "I", "H", "O"})
            if unknown:
                raise UsageError(f"unknown size(s) {unknown}; sizes are T, B, I, H, O")
            object.__setattr__(self, "sizes", Sizes(**self.sizes))
        if not isinstance(self.sizes, Sizes):
            raise UsageError(f"sizes must be a Sizes or a dict like {{'T': (3, 8)}}, got {self.sizes!r}")
        if not isinstance(self.bias, (bool, np.bool_)):
            raise UsageError(f"bias must be True or False, got {self.bias!r}")
        for name, allowed in (("mode", MODES), ("activation", ACTIVATIONS), ("output", OUTPUTS),
                              ("loss", LOSSES), ("reduction", REDUCTIONS), ("dtype", DTYPES)):
            value = getattr(self, name)
            if value not in allowed:
                raise UsageError(
                    f"unknown {name} {value!r}; choose one of {', '.join(allowed)}"
                )
        if self.loss == "cross_entropy" and self.output not in ("softmax", "identity"):
            raise UsageError(
                f"loss cross_entropy is -log softmax(yhat)[target]; it takes the logits, so "
                f"output must be softmax or identity, not {self.output!r}"
            )
        if self.loss == "bce" and self.output not in ("sigmoid", "identity"):
            raise UsageError(
                f"loss bce is the binary cross-entropy of sigmoid(yhat) and targets in [0, 1]; it takes the "
                f"logits, so output must be sigmoid or identity, not {self.output!r}")
        for name in ("lengths", "output_layer"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise UsageError(f"{name} must be True or False, got {getattr(self, name)!r}")
        tie = (self.tie,) if isinstance(self.tie, str) else tuple(self.tie)
        if any(t not in SIZE_NAMES for t in tie) or len(set(tie)) != len(tie) or len(tie) == 1:
            raise UsageError(f"tie={self.tie!r}: name two or more sizes to draw equal, e.g. tie=('I', 'O') for a "
                             "model whose input and output share one vocabulary")
        object.__setattr__(self, "tie", tie)
        if not self.output_layer and "O" in tie:
            raise UsageError("without an output layer the output is the hidden state: O = H already; tie H instead")

    def _check_cell(self) -> None:
        cell = self.cell
        if not isinstance(cell, str):           # a cell object of the user's: known by its name from now on
            name = cell_name(cell)
            register(name, cell)
            object.__setattr__(self, "cell", name)
            return
        try:
            base, name = parse_cell(cell)
        except UsageError:
            if ":" not in cell or cell.partition(":")[0].strip().lower() in CELLS:
                raise
            user_cell(cell)                      # a user cell's name: it must have been given as an object
            return
        object.__setattr__(self, "cell", name)
        if base != "rnn" and self.activation != "tanh":
            raise UsageError(f"--activation applies to the rnn cell; the {base} cell's activations are fixed "
                             f"(σ gates, tanh), got activation={self.activation!r}")

    def replace(self, **changes: Any) -> Spec:
        return dataclasses.replace(self, **changes)

    def windows(self, T: int, lengths: Any = None) -> list[Window]:
        """The windows of this spec over T steps, restricted to its loss steps (many-to-one: the last step
        of each sequence, ``lengths`` − 1 when the batch is padded; many-to-many: the steps some sequence has)."""
        if self.mode == "many-to-many":
            loss_steps = set(range(T if lengths is None else int(np.max(lengths))))
        else:
            loss_steps = {T - 1} if lengths is None else {int(n) - 1 for n in np.asarray(lengths)}
        out = []
        for w in schedule_windows(self.truncation, T):
            kept = tuple(t for t in w.losses if t in loss_steps)
            if kept:
                out.append(Window(w.start, kept))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "truncation": str(self.truncation),
            "activation": self.activation,
            "output": self.output,
            "loss": self.loss,
            "reduction": self.reduction,
            "bias": self.bias,
            "dtype": self.dtype,
            "sizes": {k: list(v) for k, v in dataclasses.asdict(self.sizes).items()},
            "cell": self.cell,
            "lengths": self.lengths,
            "output_layer": self.output_layer,
            "tie": list(self.tie),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        d = dict(d)
        if "sizes" in d:
            d["sizes"] = Sizes(**{k: tuple(v) for k, v in d["sizes"].items()})
        return cls(**d)

    def cli_args(self) -> list[str]:
        """Command-line flags that state this spec."""
        args = ["--cell", self.cell] if self.cell != "rnn" else []
        args += ["--mode", self.mode]
        if self.truncation.kind != "none":
            args += ["--truncation", str(self.truncation)]
        if self.cell == "rnn":
            args += ["--activation", self.activation]
        args += ["--output", self.output, "--loss", self.loss, "--reduction", self.reduction]
        if not self.bias:
            args.append("--no-bias")
        if self.dtype != "float64":
            args += ["--dtype", self.dtype]
        if self.lengths:
            args.append("--lengths")
        if not self.output_layer:
            args.append("--no-output-layer")
        if self.tie:
            args += ["--tie", ",".join(self.tie)]
        if self.sizes != Sizes():
            args += ["--sizes", self.sizes.text()]
        return args

    def __str__(self) -> str:
        return spec_line(self.to_dict())


def spec_line(spec: dict[str, Any]) -> str:
    """The one-line spec (``lstm many-to-one tbptt:2,3 out=softmax cross_entropy mean``) of a spec's dict."""
    cell = spec.get("cell", "rnn")
    parts = [cell] if cell != "rnn" else []
    parts.append(spec.get("mode", "?"))
    if spec.get("truncation", "none") != "none":
        parts.append(spec["truncation"])
    if cell == "rnn":
        parts.append(spec.get("activation", "?"))
    parts += [f"out={spec.get('output', '?')}", spec.get("loss", "?"), spec.get("reduction", "?")]
    if spec.get("bias") is False:
        parts.append("no-bias")
    if spec.get("dtype", "float64") != "float64":
        parts.append(spec["dtype"])
    if spec.get("lengths"):
        parts.append("lengths")
    if spec.get("output_layer") is False:
        parts.append("no-output-layer")
    if spec.get("tie"):
        parts.append("tie=" + ",".join(spec["tie"]))
    return " ".join(parts)
