"""Random cases inside a spec, drawn so that the recurrence is exercised.

Every case has a non-zero h0 and (for H >= 2) a non-symmetric U with a
spectral radius in [0.6, 1.05]: a dropped t = 0 term or a missing transpose
cannot hide. The core of the space has T >= 3 (and T longer than the
truncation window, so truncation bites); the edges T = 1, H = 1, B = 1 and
"window >= T" are visited by a fixed rotation of case flavors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from .cell import cell_of
from .coverage import covered
from .forward import forward
from .functions import loss_weights
from .names import ordered
from .spec import SIZE_NAMES, Shaped, Sizes, Spec, Window

MAX_REDRAWS = 8
UNBOUNDED = ("relu", "identity")   # activations whose states grow with the recurrence
STATE_LIMIT = 1e3                  # their states stay within this (see _tame)
FLAVORS = ("core", "T=1", "core", "H=1", "core", "B=1", "core", "window>=T")


@dataclass
class Case(Shaped):
    """One drawn case: the spec, where it came from, and its arrays."""

    spec: Spec
    seed: int
    index: int
    flavor: str
    params: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    lengths: np.ndarray | None = None     # a padded batch: sequence b has lengths[b] <= T real steps

    @property
    def windows(self) -> list[Window]:
        return self.spec.windows(self.T, self.lengths)

    @property
    def weights(self) -> np.ndarray:
        """The weight of each sample's loss at each step, (T, B) (0 where none exists)."""
        return loss_weights(self.spec, self.T, self.B, self.lengths)

    def prefix(self, T: int) -> Case:
        """The same case on the first T steps of its sequence (nothing else carried over)."""
        y = self.y if self.spec.mode == "many-to-one" else self.y[:T]
        lengths = None if self.lengths is None else np.minimum(self.lengths, T)
        return Case(self.spec, self.seed, self.index, self.flavor,
                    {k: v.copy() for k, v in self.params.items()}, self.x[:T].copy(),
                    np.array(y, copy=True), {"prefix": T}, lengths)


def _nonsymmetric_recurrent(rng: np.random.Generator, H: int) -> np.ndarray:
    U = rng.normal(0.0, 1.0, (H, H)) / np.sqrt(H)
    if H >= 2:
        asym = U - U.T
        if np.linalg.norm(asym) < 0.2 * np.linalg.norm(U):
            U = U + 0.3 * np.triu(np.ones((H, H)), 1)
    radius = float(np.max(np.abs(np.linalg.eigvals(U))))
    target = rng.uniform(0.6, 1.05)
    return U * (target / max(radius, 1e-3))


def _declared(spec: Spec, name: str) -> bool:
    """A size range the spec states (a default range may give way to an edge or to the truncation)."""
    return getattr(spec.sizes, name) != getattr(Sizes(), name)


def _allows(spec: Spec, name: str, value: int) -> bool:
    lo, hi = getattr(spec.sizes, name)
    return not _declared(spec, name) or lo <= value <= hi


def _flavor(spec: Spec, index: int) -> str:
    """The case's flavor: an edge (T = 1, H = 1, B = 1, a window as long as T) where the spec allows it."""
    flavor = FLAVORS[index % len(FLAVORS)]
    reach = spec.truncation.reach
    if flavor == "window>=T" and (reach is None or (_declared(spec, "T") and spec.sizes.T[0] > reach)):
        return "core"
    if flavor in ("T=1", "H=1", "B=1") and not _allows(spec, flavor[0], 1):
        return "core"
    if flavor == "T=1" and spec.lengths:
        return "core"                                # a padded batch needs a step to pad
    if flavor == "H=1" and ("H" in spec.tie or not spec.output_layer) and _needs_classes(spec):
        return "core"                                # H = O, and a softmax needs two classes
    return flavor


def _needs_classes(spec: Spec) -> bool:
    return spec.loss == "cross_entropy" or spec.output == "softmax"


def _draw_T(spec: Spec, rng: np.random.Generator, flavor: str) -> int:
    T = _draw_T_unaligned(spec, rng, flavor)
    tr = spec.truncation
    if spec.lengths:
        # a padded batch: some sequence shorter than T (many-to-one window-loss: its loss at a window's end)
        step = tr.k1 if spec.mode == "many-to-one" and tr.kind == "window-loss" else 1
        T = max(T, 2 * step)
    elif spec.mode == "many-to-one" and tr.kind == "window-loss" and T % tr.k1:
        # the only loss (at T-1) counts only when a window ends at T
        up = T + tr.k1 - T % tr.k1
        T = up if _allows(spec, "T", up) or T - T % tr.k1 < tr.k1 else T - T % tr.k1
    return T


def _draw_T_unaligned(spec: Spec, rng: np.random.Generator, flavor: str) -> int:
    lo, hi = spec.sizes.T
    tr = spec.truncation
    reach = tr.reach
    if flavor == "T=1":
        return 1
    if flavor == "window>=T" and reach is not None:
        if tr.kind == "window-loss":
            # at least one loss window (n = k1 <= T), all of them starting at 0
            if _declared(spec, "T"):
                return int(rng.integers(max(lo, tr.k1), max(max(lo, tr.k1), min(hi, max(tr.k1, tr.k2))) + 1))
            return int(rng.integers(tr.k1, max(tr.k1, tr.k2) + 1))
        if _declared(spec, "T"):
            return int(rng.integers(lo, min(hi, reach) + 1))
        return int(rng.integers(max(1, min(lo, reach)), reach + 1))
    if reach is not None:
        # let the truncation bite (issue 6: in every such case, not only in most): the shortest T
        # at which some window starts after step 0 — within a declared range, when it holds one
        bite = tr.k1 * (tr.k2 // tr.k1 + 1) if tr.kind == "window-loss" else reach + 1
        if not _declared(spec, "T"):
            hi = max(hi, bite + 1)
            lo = max(lo, bite)
        elif bite <= hi:
            lo = max(lo, bite)
    return int(rng.integers(lo, hi + 1))


def _tie(spec: Spec, rng: np.random.Generator, sizes: dict[str, int]) -> dict[str, int]:
    """Sizes named in ``spec.tie`` drawn equal, from the intersection of their ranges."""
    lo = max(max(getattr(spec.sizes, n)[0] for n in spec.tie), 2 if "O" in spec.tie and _needs_classes(spec) else 1)
    hi = min(getattr(spec.sizes, n)[1] for n in spec.tie)
    if lo > hi:
        raise UsageError(f"tie={spec.tie}: the ranges of {', '.join(spec.tie)} do not overlap "
                         f"({', '.join(f'{n}={getattr(spec.sizes, n)}' for n in spec.tie)})")
    value = int(rng.integers(lo, hi + 1))
    return {**sizes, **{n: value for n in spec.tie}}


def _draw_lengths(spec: Spec, rng: np.random.Generator, T: int, B: int) -> np.ndarray:
    """Per-sequence lengths 1 <= l_b <= T, mixing full and shorter sequences (DESIGN §12): at least one
    sequence shorter than T (there is padding), and with B >= 2 at least one of length T."""
    tr = spec.truncation
    step = tr.k1 if spec.mode == "many-to-one" and tr.kind == "window-loss" else 1
    choices = np.arange(step, T + 1, step)           # many-to-one window-loss: a loss counts at a window's end
    if not len(choices):
        choices = np.array([T])
    lengths = rng.choice(choices, size=B)
    if len(choices) >= 2:
        at = rng.permutation(B)[:2]
        lengths[at[-1]] = rng.choice(choices[:-1])   # always one shorter sequence: some padding to get wrong
        if B >= 2:
            lengths[at[0]] = choices[-1]             # and one full-length sequence
    return lengths.astype(np.int64)


def draw_case(spec: Spec, seed: int, index: int = 0) -> Case:
    """The case number ``index`` of a run with ``seed``: the same arguments give the same case, bit for bit."""
    rng = np.random.default_rng([int(seed), int(index)])
    flavor = _flavor(spec, index)
    s = spec.sizes
    T = _draw_T(spec, rng, flavor)
    B = 1 if flavor == "B=1" else int(rng.integers(s.B[0], s.B[1] + 1))
    H = 1 if flavor == "H=1" else int(rng.integers(s.H[0], s.H[1] + 1))
    I = int(rng.integers(s.I[0], s.I[1] + 1))  # noqa: E741
    O = int(rng.integers(s.O[0], s.O[1] + 1))  # noqa: E741
    if _needs_classes(spec):
        O = max(O, 2)                               # a softmax over one class is constant: no gradient at all
    if spec.tie:
        tied = _tie(spec, rng, {"T": T, "B": B, "I": I, "H": H, "O": O})
        T, B, I, H, O = (tied[n] for n in SIZE_NAMES)  # noqa: E741
    if not spec.output_layer:
        O = H                                       # the hidden state is the output
    lengths = _draw_lengths(spec, rng, T, B) if spec.lengths else None

    # --- coverage guarantee (issue 6): a draw whose gradient vanishes before reaching a window's
    # start (dead relu units, a sigmoid's σ' <= 1/4 per step) proves little about the early steps;
    # redraw the arrays (same shapes, the same rng stream, so the case still replays bit for bit),
    # each time with a stronger recurrence, a few times
    for attempt in range(MAX_REDRAWS + 1):
        case = _draw_arrays(spec, rng, seed, index, flavor, T, B, H, I, O, boost=1.0 + 0.5 * attempt)
        case.lengths = lengths
        if attempt == MAX_REDRAWS or covered(case.params, case.x, case.y, spec, lengths):
            if attempt:
                case.extra["redraws"] = attempt
            return case
    raise AssertionError("unreachable")  # pragma: no cover


def _rnn_params(spec: Spec, rng: np.random.Generator, B: int, H: int, I: int, O: int,  # noqa: E741
                boost: float) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {
        "W": rng.normal(0.0, 0.9 / np.sqrt(I), (H, I)),
        "U": boost * _nonsymmetric_recurrent(rng, H),
        "V": rng.normal(0.0, 1.0 / np.sqrt(H), (O, H)),
    }
    if spec.bias:
        params["b"] = rng.normal(0.0, 0.3, H)
        params["c"] = rng.normal(0.0, 0.3, O)
    if not spec.output_layer:
        params.pop("V")
        params.pop("c", None)
    h0 = rng.normal(0.0, 0.5, (B, H))
    params["h0"] = h0 + 0.1 * np.sign(h0)           # never zero, never tiny
    if spec.activation == "sigmoid":
        params["h0"] = 1.0 / (1.0 + np.exp(-params["h0"]))   # a state sigmoid can reach
    return params


def _cell_params(spec: Spec, cell: Any, rng: np.random.Generator, B: int, H: int, I: int, O: int,  # noqa: E741
                 boost: float) -> dict[str, np.ndarray]:
    """Any other cell: each recurrent matrix a stack of non-symmetric (H, H) blocks, h0 (and c0…) never zero."""
    params: dict[str, np.ndarray] = {}
    for name, shape in cell.parameters(I, H, spec.bias).items():
        if len(shape) == 2 and shape[1] == H and shape[0] % H == 0 and name != "W":
            params[name] = boost * np.concatenate([_nonsymmetric_recurrent(rng, H) for _ in range(shape[0] // H)])
        elif len(shape) == 2:
            params[name] = rng.normal(0.0, 0.9 / np.sqrt(shape[1]), shape)
        else:
            params[name] = rng.normal(0.0, 0.3, shape)
    if cell.name == "lstm" and "b" in params:
        params["b"][H:2 * H] += 1.0                 # a forget gate that keeps some memory
    if spec.output_layer:
        params["V"] = rng.normal(0.0, 1.0 / np.sqrt(H), (O, H))
        if spec.bias:
            params["c"] = rng.normal(0.0, 0.3, O)
    for part, shape in cell.initial_shapes(B, H).items():
        s0 = rng.normal(0.0, 0.5, shape)
        params[part] = s0 + 0.1 * np.sign(s0)      # never zero, never tiny
    return params


def _draw_arrays(spec: Spec, rng: np.random.Generator, seed: int, index: int, flavor: str,
                 T: int, B: int, H: int, I: int, O: int, boost: float = 1.0) -> Case:  # noqa: E741
    cell = cell_of(spec)
    if cell.name == "rnn":
        params = _rnn_params(spec, rng, B, H, I, O, boost)
    else:
        params = _cell_params(spec, cell, rng, B, H, I, O, boost)
    params = {k: params[k] for k in ordered(params)}

    x = rng.normal(0.0, 1.0, (T, B, I))
    ydims = (B,) if spec.mode == "many-to-one" else (T, B)
    if spec.loss == "cross_entropy":
        y = rng.integers(0, O, ydims)
    elif spec.output == "softmax":
        y = rng.dirichlet(np.ones(O), ydims)
    elif spec.output in ("sigmoid",) or spec.loss == "bce":
        y = rng.uniform(0.05, 0.95, (*ydims, O))
    elif spec.output == "tanh":
        y = rng.uniform(-0.9, 0.9, (*ydims, O))
    else:
        y = rng.normal(0.0, 1.0, (*ydims, O))

    _tame(spec, params, x)
    dtype = np.dtype(spec.dtype)
    params = {k: v.astype(dtype) for k, v in params.items()}
    x = x.astype(dtype)
    if spec.loss != "cross_entropy":
        y = y.astype(dtype)
    return Case(spec, int(seed), int(index), flavor, params, x, y)


def _tame(spec: Spec, params: dict[str, np.ndarray], x: np.ndarray) -> None:
    """Keep an unbounded activation's states within ``STATE_LIMIT``: scale U down (in place) until they are.

    relu and identity pass the recurrence on to the states: a strong or very non-normal U (a redraw's boost,
    or a near-nilpotent draw scaled up to its spectral radius) grew relu states to 1e12–1e17 over a few dozen
    steps, and the oracles overflowed (issue 12). Draws whose states stay within the limit are unchanged.
    """
    if spec.activation not in UNBOUNDED or cell_of(spec).name != "rnn":
        return                      # the gated cells keep their states bounded themselves
    T = x.shape[0]
    for _ in range(16):
        top = float(np.max(np.abs(forward(params, x, spec).h)))
        if np.isfinite(top) and top <= STATE_LIMIT:
            return
        shrink = 0.9 * (STATE_LIMIT / top) ** (1.0 / max(T, 1)) if np.isfinite(top) and top > 0 else 0.5
        params["U"] = params["U"] * shrink
