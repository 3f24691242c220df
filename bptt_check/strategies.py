"""Hypothesis strategies for specs and cases, for users' own property tests.

Every strategy is a function with keyword-only parameters that returns a
strategy; they compose (``cases(spec=specs(modes=["many-to-one"]))``).
Arguments are validated eagerly, when the strategy is built.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from ._cases import Case, draw_case
from ._errors import BPTTCheckError
from ._spec import ACTIVATIONS, LOSSES, MODES, OUTPUTS, REDUCTIONS, Spec, Truncation

DEFAULT_TRUNCATIONS = ("none", "window:1", "window:2", "tbptt:2,3", "tbptt:1,2", "chunk:2",
                       "chunk:3", "window-loss:2,3", "window-loss:3,2")


def _subset(name: str, values: Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    if values is None:
        return list(allowed)
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise BPTTCheckError(f"{name}: {bad or 'empty'} not in {', '.join(allowed)}")
    return values


def truncations(*, kinds: Sequence[str] | None = None, max_k: int = 4) -> st.SearchStrategy[Truncation]:
    """Truncation schedules with window sizes up to ``max_k``."""
    kinds = _subset("kinds", kinds, ("none", "window", "tbptt", "chunk", "window-loss"))
    if max_k < 1:
        raise BPTTCheckError(f"max_k must be >= 1, got {max_k}")

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
          dtypes: Sequence[str] = ("float64",)) -> st.SearchStrategy[Spec]:
    """Specs; every argument restricts one field (None: anything valid)."""
    modes = _subset("modes", modes, MODES)
    activations = _subset("activations", activations, ACTIVATIONS)
    outputs = _subset("outputs", outputs, OUTPUTS)
    losses = _subset("losses", losses, LOSSES)
    reductions = _subset("reductions", reductions, REDUCTIONS)
    trunc = truncation if truncation is not None else truncations()

    @st.composite
    def draw(data: st.DrawFn) -> Spec:
        loss = data(st.sampled_from(losses))
        outs = [o for o in outputs if loss != "cross_entropy" or o in ("softmax", "identity")]
        if not outs:
            outs = ["identity"]
        return Spec(
            mode=data(st.sampled_from(modes)),
            truncation=data(trunc),
            activation=data(st.sampled_from(activations)),
            output=data(st.sampled_from(outs)),
            loss=loss,
            reduction=data(st.sampled_from(reductions)),
            bias=data(st.booleans()) if bias is None else bias,
            dtype=data(st.sampled_from(list(dtypes))),
        )

    return draw()


def cases(*, spec: Spec | st.SearchStrategy[Spec] | None = None,
          seeds: st.SearchStrategy[int] | None = None,
          indices: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Case]:
    """Whole cases: a spec, then a case drawn inside it (shrinks toward index 0 and seed 0)."""
    spec_st = specs() if spec is None else (st.just(spec) if isinstance(spec, Spec) else spec)
    seed_st = seeds if seeds is not None else st.integers(0, 2**32 - 1)
    index_st = indices if indices is not None else st.integers(0, 63)
    return st.builds(draw_case, spec_st, seed_st, index_st)
