"""The oracle interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .._cases import Case


@dataclass
class OracleResult:
    name: str
    grads: dict[str, np.ndarray]
    # estimated absolute error per tensor (a scalar or an array shaped like the gradient)
    error: dict[str, np.ndarray | float] = field(default_factory=dict)
    loss: float = float("nan")
    notes: list[str] = field(default_factory=list)


class Oracle(Protocol):
    name: str

    def gradients(self, case: Case) -> OracleResult: ...
