"""What every built-in backward shares: unpacking, zeroed gradients, spec checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UsageError
from ..model.spec import Spec


def zero_grads(params: Mapping[str, Any], x: np.ndarray) -> dict[str, np.ndarray]:
    grads = {k: np.zeros_like(np.asarray(v)) for k, v in params.items()}
    grads["x"] = np.zeros_like(x)
    return grads


def require(spec: Spec, *, mode: str, name: str) -> None:
    if spec.mode != mode or spec.truncation.kind != "none":
        raise UsageError(
            f"built-in {name} implements {mode} full BPTT, not {spec.mode} "
            f"with truncation {spec.truncation}; use the 'truncated' or 'jacobian' built-in"
        )


def dense_backward(params: Mapping[str, Any], g: dict[str, np.ndarray], dyhat: np.ndarray,
                   h: np.ndarray) -> np.ndarray:
    """ŷ_t = h_t Vᵀ + c: accumulate dV and dc, return ∂E/∂h_t (no output layer: ŷ_t = h_t)."""
    if "V" not in params:
        return dyhat
    g["V"] += dyhat.T @ h
    if "c" in g:
        g["c"] += dyhat.sum(axis=0)
    return dyhat @ params["V"]
