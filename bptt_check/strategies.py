"""Hypothesis strategies for specs, shapes, parameters and whole cases, for users' own property tests.

Every strategy is a function with keyword-only parameters that returns a
strategy; they compose (``cases(spec=specs(modes=["many-to-one"]), shapes=shapes(T=(2, 9)))``).
Arguments are validated eagerly, when the strategy is built. Drawn cases shrink to
their smallest shapes and shortest sequence, and print as the call that rebuilds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .errors import UsageError
from .model.cases import Case, draw_case
from .model.reproducer import SIZE_NAMES, made_case_source, spec_source
from .model.spec import ACTIVATIONS, LOSSES, MODES, OUTPUTS, REDUCTIONS, Sizes, Spec, Truncation

DEFAULT_TRUNCATIONS = ("none", "window:1", "window:2", "tbptt:2,3", "tbptt:1,2", "chunk:2",
                       "chunk:3", "window-loss:2,3", "window-loss:3,2")


def _subset(name: str, values: Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    if values is None:
        return list(allowed)
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise UsageError(f"{name}: {bad or 'empty'} not in {', '.join(allowed)}")
    return values


def truncations(*, kinds: Sequence[str] | None = None, max_k: int = 4) -> st.SearchStrategy[Truncation]:
    """Truncation schedules with window sizes up to ``max_k``."""
    kinds = _subset("kinds", kinds, ("none", "window", "tbptt", "chunk", "window-loss"))
    if max_k < 1:
        raise UsageError(f"max_k must be >= 1, got {max_k}")

    @st.composite
    def draw(data: st.DrawFn) -> Truncation:
        kind = data(st.sampled_from(kinds))
        if kind == "none":
            return Truncation()
        k1 = data(st.integers(1, max_k))
        if kind in ("window", "chunk"):
            return Truncation(kind, k1)
        k2 = data(st.integers(k1 if kind == "tbptt" else 1, max_k + (1 if kind == "tbptt" else 0)))
        return Truncation(kind, k1, k2)

    return draw()


def specs(*, modes: Sequence[str] | None = None,
          truncation: st.SearchStrategy[Truncation] | None = None,
          activations: Sequence[str] | None = None,
          outputs: Sequence[str] | None = None,
          losses: Sequence[str] | None = None,
          reductions: Sequence[str] | None = None,
          bias: bool | None = None,
          dtypes: Sequence[str] = ("float64",),
          cells: Sequence[str] = ("rnn",),
          lengths: bool | None = False,
          output_layer: bool | None = True) -> st.SearchStrategy[Spec]:
    """Specs; every argument restricts one field (None: anything valid). ``cells``: the cells to draw —
    the vanilla rnn by default, since a backward is written for one cell (``rnn``, ``lstm``, ``gru``, a
    GRU variant such as ``gru:z=n``, or the name of a cell object given before); ``activations`` apply to
    the rnn only (the others' are fixed). ``lengths``: padded batches (None: both); ``output_layer``: with
    the dense layer V, c (None: both)."""
    cells = list(cells)
    if not cells:
        raise UsageError("cells: empty; give at least one, e.g. cells=['rnn', 'lstm', 'gru']")
    for c in cells:
        Spec(cell=c)                               # validate eagerly: a UsageError names the choices
    modes = _subset("modes", modes, MODES)
    activations = _subset("activations", activations, ACTIVATIONS)
    outputs = _subset("outputs", outputs, OUTPUTS)
    losses = _subset("losses", losses, LOSSES)
    reductions = _subset("reductions", reductions, REDUCTIONS)
    trunc = truncation if truncation is not None else truncations()

    @st.composite
    def draw(data: st.DrawFn) -> Spec:
        loss = data(st.sampled_from(losses))
        takes = {"cross_entropy": ("softmax", "identity"), "bce": ("sigmoid", "identity")}.get(loss, OUTPUTS)
        outs = [o for o in outputs if o in takes] or ["identity"]
        cell = data(st.sampled_from(cells))
        return Spec(
            cell=cell,
            mode=data(st.sampled_from(modes)),
            truncation=data(trunc),
            activation=data(st.sampled_from(activations)) if cell == "rnn" else "tanh",
            output=data(st.sampled_from(outs)),
            loss=loss,
            reduction=data(st.sampled_from(reductions)),
            bias=data(st.booleans()) if bias is None else bias,
            dtype=data(st.sampled_from(list(dtypes))),
            lengths=data(st.booleans()) if lengths is None else lengths,
            output_layer=data(st.booleans()) if output_layer is None else output_layer,
        )

    return draw()


# ----------------------------------------------------------------- shapes, parameters, whole cases

SHAPE_NAMES = SIZE_NAMES
DEFAULT_SHAPES = {"T": (1, 6), "B": (1, 3), "I": (1, 4), "H": (1, 5), "O": (1, 3)}


def _range(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, int) else tuple(value)
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 1 or hi < lo:
        raise UsageError(f"shapes({name}={value!r}): give a size >= 1 or a range (lo, hi) with 1 <= lo <= hi")
    return int(lo), int(hi)


def shapes(*, T: int | tuple[int, int] = DEFAULT_SHAPES["T"], B: int | tuple[int, int] = DEFAULT_SHAPES["B"],
           I: int | tuple[int, int] = DEFAULT_SHAPES["I"], H: int | tuple[int, int] = DEFAULT_SHAPES["H"],  # noqa: E741
           O: int | tuple[int, int] = DEFAULT_SHAPES["O"]) -> st.SearchStrategy[dict[str, int]]:  # noqa: E741
    """Sizes ``{"T", "B", "I", "H", "O"}``, each a fixed int or an inclusive range; they shrink to the smallest."""
    ranges = {n: _range(n, v) for n, v in zip(SHAPE_NAMES, (T, B, I, H, O))}
    return st.fixed_dictionaries({n: st.integers(lo, hi) for n, (lo, hi) in ranges.items()})


class DrawnCase(Case):
    """A case with explicit shapes; its repr is the call that rebuilds it (Hypothesis prints it)."""

    def reproducer(self) -> str:
        made = self.extra["made_with"]
        return made_case_source(made["spec"], made["seed"], made["shapes"])

    def __repr__(self) -> str:
        return self.reproducer()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:   # Hypothesis's (and IPython's) printer
        printer.text(self.reproducer())


def make_case(spec: Spec, *, seed: int, T: int, B: int, I: int, H: int, O: int) -> DrawnCase:  # noqa: E741
    """The case with exactly these shapes drawn for ``spec`` from ``seed`` (same arguments, same case).

    Parameters are drawn as in :func:`bptt_check.draw_case`: non-zero h0, non-symmetric U.
    """
    sizes = {n: _range(n, v)[0] for n, v in zip(SHAPE_NAMES, (T, B, I, H, O))}
    if spec.loss == "cross_entropy" and sizes["O"] < 2:
        raise UsageError(f"make_case: cross-entropy needs O >= 2 classes, got O={O}")
    pinned = spec.replace(sizes=Sizes(**{n: (v, v) for n, v in sizes.items()}))
    drawn = draw_case(pinned, seed, 0).prefix(sizes["T"])   # index 0: the core flavor, T >= the asked T
    made = {"spec": spec, "seed": int(seed), "shapes": sizes}
    return DrawnCase(spec, int(seed), 0, "drawn", drawn.params, drawn.x, drawn.y, {"made_with": made})


def parameters(*, spec: Spec, shapes: dict[str, int] | st.SearchStrategy[dict[str, int]] | None = None,
               seeds: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Parameter dicts (W, U, b, V, c, h0) for ``spec`` at the given (or drawn) shapes."""
    if not isinstance(spec, Spec):
        raise UsageError(f"parameters(spec=...) needs a Spec, got {type(spec).__name__}")
    return cases(spec=spec, shapes=shapes, seeds=seeds).map(lambda c: c.params)


def cases(*, spec: Spec | st.SearchStrategy[Spec] | None = None,
          shapes: dict[str, int] | st.SearchStrategy[dict[str, int]] | None = None,
          seeds: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[DrawnCase]:
    """Whole cases: a spec, shapes, then parameters and data from a seed.

    A failing case shrinks to its smallest shapes and shortest sequence (and seed 0); its repr is
    ``bptt_check.strategies.make_case(...)``, so Hypothesis's "Falsifying example" is the reproducer.
    """
    spec_st = specs() if spec is None else (st.just(spec) if isinstance(spec, Spec) else spec)
    if shapes is not None and not isinstance(shapes, (dict, st.SearchStrategy)):
        raise UsageError(f"cases(shapes=...) takes a dict or a strategy of dicts, got {type(shapes).__name__}")
    seed_st = seeds if seeds is not None else st.integers(0, 2**32 - 1)

    @st.composite
    def draw(data: st.DrawFn) -> DrawnCase:
        sp = data(spec_st)
        if isinstance(shapes, dict):
            sh = {**{n: lo for n, (lo, _) in DEFAULT_SHAPES.items()}, **shapes}
        elif shapes is None:
            o_lo = 2 if sp.loss == "cross_entropy" else DEFAULT_SHAPES["O"][0]
            sh = data(st.fixed_dictionaries({n: st.integers(max(lo, o_lo) if n == "O" else lo, max(hi, o_lo))
                                             for n, (lo, hi) in DEFAULT_SHAPES.items()}))
        else:
            sh = data(shapes)
        if sp.loss == "cross_entropy" and sh["O"] < 2:
            sh = {**sh, "O": 2}
        return make_case(sp, seed=data(seed_st), **sh)

    return draw()


__all__ = ["truncations", "specs", "shapes", "parameters", "cases", "make_case", "DrawnCase", "spec_source"]
