"""Pure functions of a case's arrays, computed once per content.

Drawing a case runs the numpy forward and measures the coverage (they decide redraws); the verdict needs
both again (the oracles' base trajectory, the coverage settle). :func:`remember` keeps the last results of
each kind, keyed by the spec and a digest of the arrays (their bytes, shapes and dtypes): arrays changed in
place digest differently, so a stale result is never returned. Large results (a long sequence's forward)
are not kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from .forward import Trace, forward
from .spec import Spec

R = TypeVar("R")

# per kind: how many results are kept, the most recent last
SIZES = {"coverage": 256, "forward": 4}
# a result holding more than this many bytes of arrays is computed, not kept
MAX_BYTES = 64 * 2**20
_KEPT: dict[str, OrderedDict[tuple[Spec, bytes], Any]] = {kind: OrderedDict() for kind in SIZES}


def digest(arrays: Mapping[str, Any]) -> bytes:
    """A digest of named arrays: their names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.digest()


def remember(kind: str, spec: Spec, arrays: Mapping[str, Any], make: Callable[[], R],
             size: Callable[[R], int] = lambda _: 0) -> R:
    """``make()``, or the result it gave for the same spec and the same content of ``arrays``."""
    kept = _KEPT[kind]
    key = (spec, digest(arrays))
    if key in kept:
        kept.move_to_end(key)
        return kept[key]
    result = make()
    if size(result) <= MAX_BYTES:
        kept[key] = result
        while len(kept) > SIZES[kind]:
            kept.popitem(last=False)
    return result


def forward_of(params: Mapping[str, np.ndarray], x: np.ndarray, spec: Spec) -> Trace:
    """The numpy forward of the whole sequence (``model.forward.forward``), once per content. Read only."""
    return remember("forward", spec, {**params, "x": x}, lambda: forward(params, x, spec), _nbytes)


def _nbytes(trace: Trace) -> int:
    cache = trace.cache if isinstance(trace.cache, tuple) else (trace.cache,)
    return sum(int(np.asarray(a).nbytes) for a in (*trace.states, *cache, trace.yhat))
