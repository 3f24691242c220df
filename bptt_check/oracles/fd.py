"""Finite differences: the batched central-difference oracle lives in ``batched_fd.py``."""

from __future__ import annotations

from .batched_fd import EPS_FD, FiniteDifferenceOracle

__all__ = ["EPS_FD", "FiniteDifferenceOracle"]
