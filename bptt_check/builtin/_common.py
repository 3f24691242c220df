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
