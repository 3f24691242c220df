"""Independent witnesses of the true (truncated) gradient (DESIGN §5). Oracles only: how their
answers are weighed against each other and against the user's is the verdict's (``verdict/``).

Element-wise oracles take a case and return ``OracleResult``: a gradient for every
parameter, h0 and x, plus an estimate of its own absolute error per tensor:

- ``autograd``: torch autograd in float64 (the default reference);
- ``complex-step``: Im L(θ + iεe_k)/ε as batched tangent propagation (relu: finite differences);
- ``fd``: batched central finite differences, step per element, Richardson on demand.

The ``directional`` oracle returns k Rademacher projections vᵀ∇L per tensor instead
(``DirectionalResult``): the default witness of the reference, and the fast mode.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .autograd import AutogradOracle
from .base import Oracle, OracleResult
from .complex_step import ComplexStepOracle
from .directional import DirectionalOracle, DirectionalResult
from .fd import FiniteDifferenceOracle

ORACLES: dict[str, type[Any]] = {
    "autograd": AutogradOracle,
    "fd": FiniteDifferenceOracle,
    "complex-step": ComplexStepOracle,
    "directional": DirectionalOracle,
}


def get_oracle(name: str, **options: Any) -> Any:
    """An oracle by name; ``options`` go to its constructor (e.g. ``k`` for ``directional``)."""
    try:
        cls = ORACLES[name]
    except KeyError:
        raise UsageError(f"unknown oracle {name!r}; choose from {', '.join(ORACLES)}") from None
    return cls(**options)


def parse_oracles(text: str | Any) -> tuple[str, ...]:
    """``"autograd,directional"`` (or a sequence of names) -> the names, checked."""
    names = tuple(o.strip() for o in text.split(",") if o.strip()) if isinstance(text, str) else tuple(text)
    bad = [o for o in names if o not in ORACLES]
    if not names or bad:
        raise UsageError(f"unknown oracle(s) {bad or list(names)!r}; choose from {', '.join(ORACLES)}")
    return names


__all__ = ["ORACLES", "Oracle", "OracleResult", "DirectionalResult", "get_oracle", "parse_oracles",
           "AutogradOracle", "FiniteDifferenceOracle", "ComplexStepOracle", "DirectionalOracle"]
