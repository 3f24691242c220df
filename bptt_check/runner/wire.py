"""What crosses between the harness and the worker process that runs the user's code (``worker.py``).

Frames: an 8-byte length, then a pickle. Requests (harness -> worker) are ordinary pickles: the
harness trusts itself. Replies (worker -> harness) come from a process the user's code ran in, so
they are plain data only — dicts, lists, tuples, str, bytes, int, float, bool, None — and are read
with an unpickler that refuses every class (:func:`loads_plain`): a reply can say anything about
what the backward returned, but it cannot run code in the harness. Arrays travel as
``("nd", dtype.str, shape, bytes)`` (:func:`encode_array`, :func:`decode_array`).
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import types
from typing import Any

import numpy as np

from .read import Key, _Result, _Value, clean

_HEADER = struct.Struct("<Q")
LOST_CHANNEL = 70                    # the exit code of a worker whose channel to the harness broke
MAX_FRAME = 1 << 34                  # 16 GiB: a length above it is a corrupt frame, not a reply


class WireError(Exception):
    """A frame that cannot be read: truncated, oversized, or not plain data."""


class _Plain(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:     # plain data needs no class at all
        raise WireError(f"a reply may hold plain data only, not {module}.{name}")


def frame(obj: Any) -> bytes:
    """``obj`` as one frame (an ordinary pickle, protocol 5)."""
    body = pickle.dumps(obj, protocol=5)
    return _HEADER.pack(len(body)) + body


def header_length(head: bytes) -> int:
    (n,) = _HEADER.unpack(head)
    if n > MAX_FRAME:
        raise WireError(f"a frame of {n} bytes")
    return int(n)


HEADER_SIZE = _HEADER.size


def loads_plain(body: bytes) -> Any:
    """Read a reply: plain data only (any class reference is refused)."""
    try:
        return _Plain(io.BytesIO(body)).load()
    except WireError:
        raise
    except Exception as exc:                       # truncated or garbled bytes
        raise WireError(f"{type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------- a module made in memory, shipped

class SharedModule(types.ModuleType):
    """A module that exists only in memory (``types.ModuleType(...)`` filled by ``exec``), as the worker
    gets it: its attributes *are* the globals of its functions, so code that sets them before calling
    (``setattr(legacy, "Wxh", W); legacy.lossFun(...)``) works there as it does here."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_bptt_globals"][name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__["_bptt_globals"][name] = value

    def __delattr__(self, name: str) -> None:
        del self.__dict__["_bptt_globals"][name]


def shared_module(name: str, namespace: dict[str, Any]) -> SharedModule:
    module = SharedModule(name)
    module.__dict__["_bptt_globals"] = namespace
    return module


def fill_module(module: SharedModule, state: dict[str, Any]) -> None:
    module.__dict__["_bptt_globals"].update(state)


# ----------------------------------------------------------------- arrays as plain data

def encode_array(a: np.ndarray) -> tuple[Any, ...]:
    """A numpy array as plain data; arrays of Python objects keep only their shape."""
    a = np.asarray(a)
    shape = tuple(int(s) for s in a.shape)
    if a.dtype.hasobject:
        return ("nd", "|O", shape, None)
    return ("nd", a.dtype.str, shape, np.ascontiguousarray(a).tobytes())


def decode_array(value: Any) -> np.ndarray:
    """The array :func:`encode_array` described (a writable copy); WireError when it is malformed."""
    if not (isinstance(value, tuple) and len(value) == 4 and value[0] == "nd"):
        raise WireError(f"not an array: {type(value).__name__}")
    _, dstr, shape, data = value
    if not isinstance(dstr, str) or not isinstance(shape, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise WireError("a malformed array header")
    try:
        dtype = np.dtype(dstr)
    except Exception as exc:
        raise WireError(f"an unknown dtype {dstr[:40]!r}: {exc}") from None
    if dtype.hasobject:
        return np.empty(shape, dtype=object)
    count = math.prod(shape)
    if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        raise WireError(f"an array of shape {shape} and dtype {dtype} with {len(data or b'')} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


# ----------------------------------------------------------------- a materialized result as plain data

def result_to_plain(res: _Result) -> dict[str, Any]:
    """What ``read.materialize`` made of the backward's result, as plain data."""
    items = []
    for key, v in res.items:
        k = key if isinstance(key, str) else ("repr", key.text if isinstance(key, Key) else clean(repr(key), 200))
        arr = None if v.array is None else encode_array(v.array)
        items.append((k, {"array": arr, "origin": v.origin, "dtype": v.dtype, "problem": v.problem,
                          "matrix": bool(v.matrix)}))
    return {"mapping": bool(res.mapping), "type_name": res.type_name, "items": items, "length": res.length,
            "first_is_mapping": bool(res.first_is_mapping), "error": res.error}


def _text(value: Any, limit: int = 8000) -> str:
    if not isinstance(value, str):
        raise WireError(f"a {type(value).__name__} where text belongs")
    return clean(value, limit)


def result_from_plain(data: Any) -> _Result:
    """The :class:`read._Result` that :func:`result_to_plain` described; WireError when malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise WireError("a malformed result")
    length = data.get("length")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool)):
        raise WireError("a malformed result length")
    res = _Result(bool(data.get("mapping")), _text(data.get("type_name"), 200), length=length,
                  first_is_mapping=bool(data.get("first_is_mapping")), error=_text(data.get("error") or ""))
    for item in data["items"]:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)):
            raise WireError("a malformed result item")
        key, v = item
        if isinstance(key, tuple) and len(key) == 2 and key[0] == "repr":
            key = Key(_text(key[1], 200))
        elif isinstance(key, str):
            key = clean(key, 200)
        else:
            raise WireError("a malformed key")
        problem = v.get("problem")
        if problem is not None:
            if not (isinstance(problem, tuple) and len(problem) == 2):
                raise WireError("a malformed problem")
            problem = (_text(problem[0], 40), _text(problem[1]))
        arr = None if v.get("array") is None else decode_array(v["array"])
        res.items.append((key, _Value(arr, _text(v.get("origin"), 200), _text(v.get("dtype") or "", 40),
                                      problem, bool(v.get("matrix")))))
    return res


__all__ = ["LOST_CHANNEL", "result_to_plain", "result_from_plain", "WireError", "frame", "header_length", "HEADER_SIZE",
           "loads_plain", "encode_array", "decode_array"]
