"""Calling the user's backward: on copies, in the canonical protocol, turning faults into findings."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._cases import Case

Backward = Callable[..., Mapping[str, Any]]
_HERE = __file__.rsplit("/", 1)[0]


@dataclass
class CallOutcome:
    """What one call of the backward gave: gradients as float arrays, or an error finding."""

    grads: dict[str, np.ndarray] | None = None
    error: dict[str, str] | None = None   # {"kind", "message"}


def wants_spec(fn: Callable[..., Any]) -> bool:
    """Whether the backward takes the spec (a parameter named ``spec``, or ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return "spec" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def to_numpy(value: Any) -> np.ndarray:
    """Accept numpy arrays, torch tensors (any device, requiring grad or not) and sequences."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.array(value)


def user_frames(exc: BaseException) -> str:
    """The traceback of an exception raised by user code, without the harness's own frames."""
    tb = traceback.extract_tb(exc.__traceback__)
    kept = [f for f in tb if not f.filename.startswith(_HERE)]
    lines = traceback.format_list(kept or tb)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def call_backward(backward: Backward, case: Case) -> Any:
    """Call the backward in the canonical protocol, on copies of the case's arrays."""
    params = {k: v.copy() for k, v in case.params.items()}
    x, y = case.x.copy(), np.array(case.y, copy=True)
    if wants_spec(backward):
        return backward(params, x, y, spec=case.spec)
    return backward(params, x, y)


def invoke(backward: Backward, case: Case) -> CallOutcome:
    """Call the backward once; an exception or a non-mapping result becomes an error finding."""
    try:
        raw = call_backward(backward, case)
    except Exception as exc:  # the user's code is at fault, not the harness
        return CallOutcome(error={"kind": "exception", "message": user_frames(exc)})
    if not isinstance(raw, Mapping):
        return CallOutcome(error={
            "kind": "type",
            "message": f"the backward returned {type(raw).__name__}, expected a mapping from parameter "
                       "names (W, U, b, V, c, h0, optionally x) to gradients"})
    return CallOutcome(grads={str(k): to_numpy(v) for k, v in raw.items()})
