"""Independent witnesses of the true (truncated) gradient (DESIGN §5).

Each oracle takes a case and returns ``OracleResult``: a gradient for every
parameter, h0 and x, plus an estimate of its own absolute error per tensor.
"""

from __future__ import annotations

from ._base import Oracle, OracleResult
from .autograd import AutogradOracle
from .fd import FiniteDifferenceOracle

ORACLES: dict[str, type[Oracle]] = {
    "autograd": AutogradOracle,
    "fd": FiniteDifferenceOracle,
}


def get_oracle(name: str) -> Oracle:
    from .._errors import BPTTCheckError

    try:
        return ORACLES[name]()
    except KeyError:
        raise BPTTCheckError(
            f"unknown oracle {name!r}; choose from {', '.join(ORACLES)}"
        ) from None


__all__ = ["ORACLES", "Oracle", "OracleResult", "get_oracle", "AutogradOracle", "FiniteDifferenceOracle"]
