"""The oracle interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..model.cases import Case


@dataclass
class OracleResult:
    name: str
    grads: dict[str, np.ndarray]
    # estimated absolute error per tensor (a scalar or an array shaped like the gradient)
    error: dict[str, np.ndarray | float] = field(default_factory=dict)
    loss: float = float("nan")
    notes: list[str] = field(default_factory=list)
    # how the numbers were computed (e.g. "tangent", "fd", "fd+richardson"), for the report
    method: str = ""
    # elements whose finite-difference step straddles a relu kink: not differentiable there
    # as far as this oracle can tell, so they must not be judged on its numbers
    kinks: dict[str, np.ndarray] = field(default_factory=dict)


class Oracle(Protocol):
    name: str

    def gradients(self, case: Case) -> OracleResult: ...
