"""Ask several oracles; the first is the reference, the others witness it.

Elements on which the oracles disagree beyond their own error estimates are
``disputed``: they prove nothing about the backward under test (a relu kink,
a precision problem), and a case whose only mismatches are there is
inconclusive rather than failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._compare import ORACLE_TOLERANCE, ZERO_FLOOR, compare
from . import get_oracle
from ._base import OracleResult

if TYPE_CHECKING:
    from .._cases import Case


@dataclass
class Reference:
    grads: dict[str, np.ndarray]
    error: dict[str, Any]
    disputed: dict[str, np.ndarray]
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[OracleResult] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.results[0].name if self.results else ""

    @property
    def scale_floor(self) -> float:
        """Absolute floor of the comparison scale: a fraction of the case's largest gradient."""
        case_scale = max((float(np.max(np.abs(g), initial=0.0)) for g in self.grads.values()), default=0.0)
        return ZERO_FLOOR * case_scale


def reference(case: Case, names: Iterable[str]) -> Reference:
    results = [get_oracle(n).gradients(case) for n in names]
    ref = results[0]
    out = Reference(ref.grads, dict(ref.error),
                    {k: np.zeros(v.shape, dtype=bool) for k, v in ref.grads.items()}, results=results)
    floor = out.scale_floor
    for other in results[1:]:
        agreement = {}
        for k in ref.grads:
            err = np.asarray(other.error.get(k, 0.0)) + np.asarray(ref.error.get(k, 0.0))
            r = compare(k, other.grads[k], ref.grads[k], ORACLE_TOLERANCE, ref_error=err, scale_floor=floor)
            agreement[k] = {"agree": r.passed, "max_abs_err": r.max_abs_err, "max_rel_err": r.max_rel_err}
            if not r.passed:
                diff = np.abs(other.grads[k] - ref.grads[k])
                out.disputed[k] |= diff > (ORACLE_TOLERANCE.atol * max(r.scale, floor)
                                           + ORACLE_TOLERANCE.rtol * np.abs(ref.grads[k]) + err)
        out.agreement[f"{other.name}_vs_{ref.name}"] = agreement
    return out
