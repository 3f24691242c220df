"""Calling the user's backward: on copies, in the canonical protocol, turning faults into findings.

A backward under development may raise, hang, return garbage, change its inputs in place or give
a different answer on a second call. :func:`invoke` calls it and turns each of these into an
*error finding* ``{"kind", "message", "keys"}`` (kinds in :data:`ERROR_KINDS`); it never lets the
user's fault become a traceback of the harness.

Timeout mechanism (per call). With a limit, the backward runs in a daemon worker thread (one per
calling thread, reused from call to call) and the caller waits on a lock with the limit. This
works in any thread (the main thread, a pytest-xdist worker, a thread pool), unlike
``signal.alarm``, which only works in the main thread of the main interpreter. When the limit
passes, the case is reported as timed out and the worker is retired: it is asked to stop by an
exception raised inside it (``PyThreadState_SetAsyncExc``) — Python-level loops stop at once, a
blocking call (``sleep``, a lock, I/O, one long C routine) stops when it returns to Python —
and the next call gets a new worker. Until it stops it is abandoned as a daemon thread, the run
goes on, and the message says so. No in-process mechanism can stop a C routine that never
releases the GIL; run the command under an outer ``timeout`` for that. ``timeout=None`` (or
``0``) calls the backward directly in the caller's thread, with no limit, which is what a
debugger wants. Handing a call to the worker costs about 0.1 ms
(``tests/fuzz/bench_call_overhead.py``); a new thread per call would cost ~2 ms (the caller and
the new thread contend for the GIL) and a process per case tens of ms.

Output: what the backward prints through ``sys.stdout`` is captured per call (a router installed
as ``sys.stdout`` while calls run sends writes from the call's thread to a buffer and everything
else through), so it cannot interleave with the command's own output. Output written straight to
file descriptor 1 by C code is not captured.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import math
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._cases import Case
from ._compare import ZERO_FLOOR, tolerance_for
from ._errors import BPTTCheckError

Backward = Callable[..., Mapping[str, Any]]

DEFAULT_TIMEOUT = 30.0           # seconds per call of the backward; None or 0: no limit
ERROR_KINDS = ("exception", "timeout", "missing_key", "extra_key", "shape", "type", "dtype",
               "non_finite", "mutated_input", "nondeterministic")
# when a result has several faults, the error's kind is the first of these present
_RESULT_ORDER = ("type", "missing_key", "extra_key", "shape", "dtype", "non_finite")
_MAX_STDOUT = 64 * 1024          # characters kept per call
_MAX_FRAMES = 12                 # user frames kept in a traceback
_GRACE = 0.1                     # seconds given to a timed-out call to stop
PROTOCOL_CALL = "backward(params, x, y) or backward(params, x, y, spec)"
PROTOCOL = PROTOCOL_CALL + ", returning {'W': dW, 'U': dU, ...}"


@dataclass
class CallOutcome:
    """What calling the backward gave.

    ``grads``: the returned gradients as numpy arrays (copies, the user's dtype), when the result
    could be read; ``error``: ``{"kind", "message", "keys"}`` when the call is at fault (``grads``
    may still be set, e.g. for ``mutated_input`` or ``nondeterministic``); ``notes``: remarks that
    are not faults; ``stdout``: what the backward printed; ``repeat``: the second call's gradients
    when ``invoke(..., repeat=True)`` made one.
    """

    grads: dict[str, np.ndarray] | None = None
    error: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    stdout: str = ""
    seconds: float = 0.0
    repeat: dict[str, np.ndarray] | None = None

    @property
    def status(self) -> str:
        """``ok``, ``error`` or ``timeout``."""
        if self.error is None:
            return "ok"
        return "timeout" if self.error["kind"] == "timeout" else "error"


def finding(kind: str, message: str, keys: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    assert kind in ERROR_KINDS, kind
    return {"kind": kind, "message": message, "keys": list(keys)}


# ----------------------------------------------------------------- the protocol

def wants_spec(fn: Callable[..., Any]) -> bool:
    """Whether the backward takes the spec (a parameter named ``spec``, or ``**kwargs``)."""
    try:
        return _wants_spec_cached(fn)
    except TypeError:                                # an unhashable callable
        return _wants_spec(fn)


@functools.lru_cache(maxsize=256)
def _wants_spec_cached(fn: Callable[..., Any]) -> bool:
    return _wants_spec(fn)


def _wants_spec(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return "spec" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def signature_problem(fn: Any) -> str | None:
    """Why ``fn`` cannot be called in the canonical protocol, or None (also when it cannot be told)."""
    if not callable(fn):
        return f"the backward must be callable, got {type(fn).__name__}"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    args: tuple[Any, ...] = ({}, None, None)
    kwargs = {"spec": None} if wants_spec(fn) else {}
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        return f"{name}{sig} cannot be called as {PROTOCOL_CALL} ({exc})"
    return None


def _inputs(case: Case) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    return {k: v.copy() for k, v in case.params.items()}, case.x.copy(), np.array(case.y, copy=True)


def call_backward(backward: Backward, case: Case) -> Any:
    """Call the backward in the canonical protocol, on copies of the case's arrays (no limit, no checks)."""
    params, x, y = _inputs(case)
    if wants_spec(backward):
        return backward(params, x, y, spec=case.spec)
    return backward(params, x, y)


# ----------------------------------------------------------------- capturing stdout

class _StdoutRouter:
    """``sys.stdout`` while calls run: writes from a call's thread go to its buffer, others through."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def write(self, text: str) -> int:
        buf = _captures.get(threading.get_ident())
        if buf is not None:
            if buf[0] < _MAX_STDOUT:
                buf.append(str(text)[: _MAX_STDOUT - buf[0]])
            buf[0] += len(text)
            return len(text)
        if self._target is None:
            return len(text)
        return self._target.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _captures.get(threading.get_ident()) is None and self._target is not None:
            self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


_captures: dict[int, list[Any]] = {}     # thread id -> [characters written, text, text, ...]
_router_lock = threading.Lock()
_router_users: set[int] = set()          # the calls running (or abandoned) now


def _router_acquire(call: int) -> None:
    with _router_lock:
        if not isinstance(sys.stdout, _StdoutRouter):   # also when someone (pytest's capture) replaced it
            sys.stdout = _StdoutRouter(sys.stdout)
        _router_users.add(call)


def _router_release(call: int) -> None:
    """Idempotent: a call's release may be retried after a late stop request interrupted it."""
    with _router_lock:
        _router_users.discard(call)
        if not _router_users and isinstance(sys.stdout, _StdoutRouter):
            sys.stdout = sys.stdout._target


def _captured(buf: list[Any]) -> str:
    text = "".join(buf[1:])
    if buf[0] > _MAX_STDOUT:
        text += f"\n[... {buf[0] - _MAX_STDOUT} more characters not kept]"
    return text


# ----------------------------------------------------------------- one call under a limit

class _Stopped(BaseException):
    """Raised inside a timed-out call's thread to stop it."""


@dataclass
class _Raw:
    value: Any = None                    # the materialized result (see _materialize)
    exc: BaseException | None = None
    timed_out: bool = False
    stopped: bool = True                 # a timed-out call did stop
    where: str = ""                      # where a timed-out call was
    stdout: str = ""
    seconds: float = 0.0
    passed: tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray] | None = None


class _Job:
    """One call run by a worker thread; ``done`` is released when it is over."""

    def __init__(self, body: Callable[[], Any], buf: list[Any]) -> None:
        self.body, self.buf = body, buf
        self.value: Any = None
        self.exc: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def run(self) -> None:
        _captures[threading.get_ident()] = self.buf
        try:
            self.value = self.body()
        except BaseException as exc:                # noqa: B036 - everything the user raises is a finding
            self.exc = exc

    def finish(self) -> None:                        # idempotent
        _captures.pop(threading.get_ident(), None)
        _router_release(id(self))
        if self.done.locked():
            self.done.release()


class _Worker:
    """A daemon thread running the calls of one calling thread, one at a time.

    Reusing it costs ~0.05 ms per call where a new thread per call costs ~2 ms (the caller
    waiting in ``Thread.start`` fights the new thread for the GIL). A worker whose call timed out
    is retired: asked to stop, and replaced. An idle worker ends after ``IDLE`` seconds.
    """

    IDLE = 30.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="bptt-check-backward", daemon=True)
        self.thread.start()

    def submit(self, job: _Job) -> bool:
        with self._lock:
            if self.closed:
                return False
            self._jobs.put(job)
            return True

    def retire(self) -> None:
        """Stop the running call (see the module's docstring) and end when it ends."""
        self.thread.name = "bptt-check-backward (abandoned)"
        with self._lock:
            self.closed = True
            # raised while the thread cannot have ended (its ways out need this lock or the None below),
            # so it cannot land in another thread that reuses the id
            _async_raise(self.thread)
            self._jobs.put(None)

    def _next(self) -> _Job | None:
        while True:
            try:
                return self._jobs.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self.closed = True
                        return None

    def _loop(self) -> None:
        job = None
        try:
            while (job := self._next()) is not None:
                try:
                    job.run()
                finally:
                    job.finish()
                job = None
        except BaseException:                       # noqa: B036 - a stop request: this worker is retired
            if job is not None:
                job.finish()


_workers = threading.local()


def _submit(job: _Job) -> _Worker:
    while True:
        worker = getattr(_workers, "worker", None)
        if worker is None or worker.closed:
            worker = _workers.worker = _Worker()
        if worker.submit(job):
            return worker


def _async_raise(thread: threading.Thread) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped))


def _where(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return ""
    stack = [f for f in traceback.extract_stack(frame) if f.filename != __file__
             and not f.filename.endswith(("threading.py",))]
    if not stack:
        return ""
    f = stack[-1]
    line = f" `{f.line.strip()}`" if f.line else ""
    return f"{_short(f.filename)}:{f.lineno} in {f.name}{line}"


def _short(filename: str) -> str:
    """A path relative to the working folder when it is inside it."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def _call_once(backward: Backward, case: Case, timeout: float | None) -> _Raw:
    params, x, y = _inputs(case)
    raw = _Raw(passed=(dict(params), params, x, y))
    takes_spec = wants_spec(backward)

    def body() -> Any:
        if takes_spec:
            out = backward(params, x, y, spec=case.spec)
        else:
            out = backward(params, x, y)
        return _materialize(out)

    buf: list[Any] = [0]
    start = time.perf_counter()
    if not timeout:
        me = threading.get_ident()
        saved = _captures.get(me)                    # a call nested in a call keeps the outer one's buffer
        _router_acquire(id(buf))
        _captures[me] = buf
        try:
            raw.value = body()
        except (Exception, SystemExit) as exc:     # the user's code is at fault, not the harness
            raw.exc = exc
        finally:
            if saved is None:
                _captures.pop(me, None)
            else:
                _captures[me] = saved
            _router_release(id(buf))
        raw.seconds = time.perf_counter() - start
        raw.stdout = _captured(buf)
        return raw

    job = _Job(body, buf)
    _router_acquire(id(job))                        # released by the worker: an abandoned call stays captured
    worker = _submit(job)
    try:
        finished = job.done.acquire(True, timeout)
    except BaseException:                           # Ctrl-C / SIGTERM while waiting: stop the call, pass it on
        worker.retire()
        raise
    raw.seconds = time.perf_counter() - start
    if not finished:
        raw.timed_out = True
        raw.where = _where(worker.thread)
        worker.retire()
        worker.thread.join(_GRACE)
        raw.stopped = not worker.thread.is_alive()
    else:
        raw.value, raw.exc = job.value, job.exc
    raw.stdout = _captured(buf)
    return raw


# ----------------------------------------------------------------- reading the result

@dataclass
class _Value:
    """One returned value, turned into a numpy array (or why not) inside the call's time limit."""

    array: np.ndarray | None
    origin: str                           # what the user returned: "ndarray", "torch.Tensor", "list", ...
    dtype: str = ""                       # a torch tensor's dtype as torch names it (numpy: see .array)
    problem: tuple[str, str] | None = None   # (kind, message)
    matrix: bool = False


@dataclass
class _Result:
    mapping: bool
    type_name: str
    items: list[tuple[Any, _Value]] = field(default_factory=list)
    length: int | None = None
    first_is_mapping: bool = False
    error: str = ""                       # reading the mapping itself raised


def _materialize(out: Any) -> _Result:
    """Turn the backward's result into plain data (runs in the call's thread, under its limit)."""
    name = type(out).__name__
    if not isinstance(out, Mapping):
        res = _Result(False, name)
        if isinstance(out, (list, tuple)):
            res.length = len(out)
            res.first_is_mapping = bool(out) and isinstance(out[0], Mapping)
        return res
    res = _Result(True, name)
    try:
        for key, value in list(out.items()):
            res.items.append((key, _convert(value)))
    except Exception as exc:                        # a mapping whose items() fails
        res.error = f"{type(exc).__name__}: {exc}"
    return res


def _is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _convert(value: Any) -> _Value:
    origin = type(value).__module__.split(".")[0] + "." + type(value).__name__
    origin = origin.removeprefix("builtins.").removeprefix("numpy.")
    if value is None:
        return _Value(None, "None", problem=("type", "is None, not an array"))
    try:
        if _is_torch(value):
            t = value.detach()
            if getattr(t, "is_sparse", False) or str(getattr(t, "layout", "torch.strided")) != "torch.strided":
                t = t.to_dense()
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype == "bfloat16":
                t = t.float()
            t = t.cpu()
            if hasattr(t, "resolve_conj"):
                t = t.resolve_conj().resolve_neg()
            return _Value(np.array(t.numpy(), copy=True), "torch.Tensor", dtype)
        if isinstance(value, np.matrix):
            return _Value(np.array(np.asarray(value), copy=True), "numpy.matrix", matrix=True)
        if isinstance(value, np.ndarray):
            return _Value(np.array(value, copy=True), "ndarray")
        arr = np.array(value)
    except Exception as exc:
        return _Value(None, origin, problem=("type", f"is a {origin} that cannot be read as an array "
                                                     f"({type(exc).__name__}: {exc})"))
    return _Value(arr, origin)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of an array-like the user's code gave (numpy, torch on any device, lists)."""
    v = _convert(value)
    if v.array is None:
        raise TypeError(f"a value {v.problem[1] if v.problem else 'cannot be read as an array'}")
    return v.array


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _layout_hint(key: str, got: tuple[int, ...], want: tuple[int, ...], case: Case) -> str:
    """The likely layout mix-up behind a wrong shape."""
    T, B = case.T, case.B
    size = int(np.prod(got)) if got else 1
    if len(got) == 2 and len(want) == 2 and got == want[::-1]:
        return "transposed? (weights are (out, in): W is (H, I), V is (O, H))"
    if key == "h0" and len(got) == 1 and got == want[1:]:
        return "summed over the batch? h0 has one row per sequence, (B, H)"
    squeezed = tuple(s for s in got if s != 1) == tuple(s for s in want if s != 1)
    if squeezed and len(got) == len(want) + 1 and got[0] == 1:
        return "an extra axis of length 1 (keepdims?)"
    if key == "x" and len(got) == 3 and got == (want[1], want[0], want[2]):
        return "batch-major? x is time-major (T, B, I)"
    if len(got) == len(want) + 1 and got[1:] == want and got[0] == T:
        return f"one gradient per time step? sum the {T} steps"
    if len(got) == len(want) + 1 and got[1:] == want and got[0] == B:
        return f"one gradient per sequence? sum over the batch of {B}"
    if squeezed:
        return "an extra or missing axis of length 1 (keepdims?)"
    if got == ():
        return "a scalar where an array is expected"
    if size == int(np.prod(want)):
        return "same number of elements, different layout (reshaped?)"
    return ""


def _check_value(key: str, v: _Value, want: tuple[int, ...], case: Case) -> tuple[Any, list[tuple[str, str]]]:
    """The array for ``key`` and the findings on it."""
    out: list[tuple[str, str]] = []
    if v.problem is not None:
        return None, [(v.problem[0], f"{key!r} {v.problem[1]}")]
    arr = v.array
    assert arr is not None
    kind = arr.dtype.kind
    if kind in "OUSVMm":
        what = {"O": f"a {v.origin} holding Python objects", "U": "an array of strings",
                "S": "an array of bytes"}.get(kind, f"an array of {arr.dtype}")
        return None, [("type", f"{key!r} is {what}, not an array of numbers")]
    if kind == "f" and arr.dtype.itemsize >= 4 and not v.dtype:
        dtype = ""                                  # numpy float32/64: fine (and naming a dtype is slow)
    else:
        dtype = v.dtype or arr.dtype.name
    if kind == "b" or dtype == "bool":
        out.append(("dtype", f"{key!r} has dtype bool: gradients are floating point"))
    elif kind in "iu":
        out.append(("dtype", f"{key!r} has integer dtype {dtype}: gradients are floating point "
                             "(an integer zeros_like buffer, or integer division?)"))
    elif kind == "c":
        out.append(("dtype", f"{key!r} has complex dtype {dtype}: gradients of this model are real"))
    elif dtype in ("float16", "bfloat16"):
        out.append(("dtype", f"{key!r} has dtype {dtype}: too coarse to check (about 3 significant "
                             "digits); compute in float32 or float64"))
    got = tuple(int(s) for s in arr.shape)
    if v.matrix and got != want and arr.size == int(np.prod(want)) and len(want) == 1 and 1 in got:
        arr = arr.reshape(want)                     # np.matrix is always 2-D: a (1, n) row for an (n,) vector
        got = want
    if got != want:
        hint = _layout_hint(key, got, want, case)
        out.append(("shape", f"{key!r}: expected shape {_fmt(want)}, got {_fmt(got)}" + (f" — {hint}" if hint else "")))
        return None, out
    if out:
        return None, out
    finite = np.isfinite(arr)
    if not finite.all():
        out.append(("non_finite", _non_finite(key, arr, finite, case)))
        return None, out
    return arr, out


def _non_finite(key: str, arr: np.ndarray, finite: np.ndarray, case: Case) -> str:
    nan = int(np.isnan(arr).sum())
    inf = int((~finite).sum()) - nan
    parts = [f"{n} {w}" for n, w in ((nan, "nan"), (inf, "inf")) if n]
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    msg = f"{key!r} has {' and '.join(parts)} of {arr.size} elements, first at {first}"
    if key == "x" and arr.ndim == 3:
        steps = sorted({int(t) for t in np.argwhere(~finite)[:, 0]})
        shown = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
        msg += f", at time step{'s' if len(steps) > 1 else ''} {shown}"
    if nan == arr.size:
        msg += " (all nan: a 0/0, log(0) or an uninitialized buffer?)"
    return msg


def _read(res: _Result, case: Case) -> tuple[dict[str, np.ndarray] | None, dict[str, Any] | None, list[str]]:
    """Check the result against the protocol: gradients, or the error finding, and notes."""
    notes: list[str] = []
    if not res.mapping:
        msg = f"the backward returned {res.type_name}, expected a mapping {{'W': dW, 'U': dU, ...}}"
        if res.type_name == "NoneType":
            msg = ("the backward returned None (no return statement? a backward that updates weights "
                   "in place needs an adapter), expected a mapping {'W': dW, 'U': dU, ...}")
        elif res.first_is_mapping:
            msg += f"; it returned a {res.type_name} whose first item is a mapping: return only the gradients"
        elif res.length is not None:
            names = ", ".join(case.params)
            msg += (f"; it returned a {res.type_name} of {res.length} items: name them, e.g. "
                    f"dict(zip([{names}], grads)) if that is their order")
        return None, finding("type", msg), notes
    if res.error:
        return None, finding("type", f"reading the returned {res.type_name} failed: {res.error}"), notes

    if "returns" in case.extra:   # an adapted backward says which gradients its layout returns
        expected = {k: tuple(int(s) for s in v) for k, v in case.extra["returns"].items()}
    else:
        expected = {k: tuple(int(s) for s in v.shape) for k, v in case.params.items()}
        expected["x"] = tuple(int(s) for s in case.x.shape)
    got: dict[str, _Value] = {}
    found: list[tuple[str, str, str]] = []                 # (kind, key, message)
    extra: list[str] = []
    for key, value in res.items:
        if isinstance(key, str) and key in expected:
            got[key] = value
        else:
            extra.append(key if isinstance(key, str) else repr(key))
    missing = [k for k in expected if k != "x" and k not in got]
    renamed = [k for k in (*missing, "x") if "d" + k in extra and k not in got]
    if renamed:   # dW for W: one finding, not two
        pairs = ", ".join(f"{'d' + k!r} for {k!r}" for k in renamed)
        found.append(("missing_key", renamed[0], f"missing {', '.join(map(repr, renamed))}: you returned {pairs} — "
                                                 "name gradients after the parameter, without the 'd'"))
        found += [("missing_key", k, "") for k in renamed[1:]]
        extra = [e for e in extra if e[1:] not in renamed or not e.startswith("d")]
    for name in extra:
        hint = _extra_hint(name, case)
        found.append(("extra_key", name, f"unexpected key {name!r}" + (f" — {hint}" if hint else "")))
    for key in missing:
        if key not in renamed:
            found.append(("missing_key", key, f"missing gradient {key!r} (shape {_fmt(expected[key])})"))
    grads: dict[str, np.ndarray] = {}
    for key, value in got.items():
        arr, problems = _check_value(key, value, expected[key], case)
        found += [(k, key, m) for k, m in problems]
        if arr is not None:
            grads[key] = arr
    low = sorted(k for k, a in grads.items() if a.dtype.itemsize < 8 and case.spec.dtype == "float64")
    if low:
        notes.append(f"{', '.join(low)} returned in float32 under a float64 spec: compared at float64 "
                     "tolerance (use --dtype float32 if your backward computes in float32)")
    if not found:
        return grads, None, notes
    kinds = [k for k in _RESULT_ORDER if any(f[0] == k for f in found)]
    ordered = sorted(found, key=lambda f: _RESULT_ORDER.index(f[0]))
    keys = list(dict.fromkeys(f[1] for f in ordered))
    message = "; ".join(f[2] for f in ordered if f[2])
    return grads or None, finding(kinds[0], message, keys), notes


def _extra_hint(name: str, case: Case) -> str:
    if name.startswith("d") and name[1:] in case.params or name == "dx":
        return f"name gradients after the parameter: {name[1:]!r}, not {name!r}"
    if name in ("b", "c") and not case.spec.bias:
        return "the spec has no biases (--no-bias)"
    for known in (*case.params, "x"):
        if name.lower() == known.lower():
            return f"keys are case-sensitive: {known!r}"
    if name.lower() in ("loss", "h", "hs", "y", "yhat", "cache", "state", "dh", "dy"):
        return "return only gradients (W, U, b, V, c, h0, optionally x)"
    return "not a parameter of this model (W, U, b, V, c, h0, optionally x)"


# ----------------------------------------------------------------- mutation, repetition

def _mutations(case: Case, passed: tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]
               ) -> tuple[list[str], list[str]]:
    """What the backward changed among its inputs: (keys, descriptions)."""
    given, params, x, y = passed
    keys: list[str] = []
    said: list[str] = []
    for key, orig in case.params.items():
        if key not in params:
            keys.append(key)
            said.append(f"removed params[{key!r}]")
        elif params[key] is not given[key]:
            keys.append(key)
            said.append(f"replaced params[{key!r}] by another object (the caller's dict is changed)")
        else:
            d = _changed(given[key], orig, parameter=True)
            if d:
                keys.append(key)
                said.append(f"{key}: {d}")
    for key in params:
        if key not in case.params:
            keys.append(key)
            said.append(f"added params[{key!r}]")
    for key, now, orig in (("x", x, case.x), ("y", y, case.y)):
        d = _changed(now, np.asarray(orig))
        if d:
            keys.append(key)
            said.append(f"{key}: {d}")
    return keys, said


def _changed(now: np.ndarray, orig: np.ndarray, parameter: bool = False) -> str:
    if now.shape != orig.shape:
        return f"resized from {_fmt(orig.shape)} to {_fmt(now.shape)}"
    if now.dtype != orig.dtype:
        return f"dtype changed from {orig.dtype} to {now.dtype}"
    if now.tobytes() == orig.tobytes():
        return ""
    a, b = now.astype(np.float64), orig.astype(np.float64)
    diff = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    n = int(diff.sum())
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.where(diff, np.abs(a - b), 0.0)
    at = np.unravel_index(int(np.argmax(np.where(np.isnan(delta), np.inf, delta))), a.shape)
    where = tuple(int(i) for i in at)
    msg = f"{n} of {a.size} elements changed, largest change {float(delta[at]):.3g} at {where}"
    if not a.any():
        msg += " (now all zeros: used as a gradient buffer?)"
    elif n == a.size and parameter:
        msg += " (every element: a parameter update inside the backward?)"
    return msg


def _compare_repeat(first: dict[str, np.ndarray], second: dict[str, np.ndarray], case: Case
                    ) -> tuple[dict[str, Any] | None, list[str]]:
    """Is the second call's result the first's? An error finding beyond tolerance, a note below it."""
    if set(first) != set(second):
        return finding("nondeterministic", "a second call on the same inputs returned other keys: "
                       f"{sorted(first)} then {sorted(second)}", sorted(set(first) ^ set(second))), []
    tol = tolerance_for(case.spec.dtype)
    # an all-zero gradient is judged at a fraction of the case's largest one (as in _compare)
    floor = ZERO_FLOOR * max((float(np.max(np.abs(a), initial=0.0)) for a in first.values()), default=0.0)
    bad: list[str] = []
    keys: list[str] = []
    ratios: list[float] = []
    small: list[tuple[float, str]] = []
    for key, a in first.items():
        b = second[key]
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if a.shape == b.shape and a64.tobytes() == b64.tobytes():
            continue
        if a.shape != b.shape:
            keys.append(key)
            bad.append(f"{key}: shape {_fmt(a.shape)} then {_fmt(b.shape)}")
            continue
        scale = max(float(np.max(np.abs(a64), initial=0.0)), floor, np.finfo(np.float64).tiny)
        diff = np.abs(b64 - a64)
        # differences below the smallest normal number of the dtype (denormals) are zero for this purpose
        tiny = float(np.finfo(a.dtype).tiny) if a.dtype.kind == "f" else 0.0
        off = diff > tol.atol * scale + tol.rtol * np.abs(a64) + tiny
        if not off.any():
            small.append((float(diff.max()), key))
            continue
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        keys.append(key)
        bad.append(f"{key}: {int(off.sum())} of {a.size} elements differ, up to {float(diff.max()):.3g} at {at}")
        den = float(np.vdot(a64, a64))
        if den > 0:
            ratios.append(float(np.vdot(a64, b64)) / den)
    if not bad:
        worst = max(small, default=(0.0, ""))
        notes = [f"not bit-for-bit reproducible: a second call on the same inputs differs in "
                 f"{', '.join(k for _, k in small)}, by at most {worst[0]:.2g} (in {worst[1]}; within tolerance)"
                 ] if small else []
        return None, notes
    if ratios and len(ratios) == len(keys) and max(ratios) - min(ratios) < 1e-6 * max(1.0, abs(ratios[0])):
        why = (f"{ratios[0]:.4g}× the first (gradients accumulated in buffers kept between calls, "
               "not zeroed?)")
    else:
        why = "different gradients (random numbers, global state or a cache in the backward?)"
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return finding("nondeterministic", f"a second call on the same inputs returned {why} — {shown}", keys), []


# ----------------------------------------------------------------- exceptions

def user_frames(exc: BaseException) -> str:
    """The traceback of an exception raised by user code, without the harness's own frames."""
    tb = traceback.extract_tb(exc.__traceback__)
    kept = [f for f in tb if f.filename != __file__]
    head = ""
    if len(kept) > _MAX_FRAMES:
        head = f"  ... {len(kept) - _MAX_FRAMES} outer frames not shown\n"
        kept = kept[-_MAX_FRAMES:]
    lines = traceback.format_list(kept)
    lines += traceback.format_exception_only(type(exc), exc)
    text = head + "".join(lines).rstrip()
    if not kept and isinstance(exc, TypeError):
        text += f"\n(calling the backward itself failed: the protocol is {PROTOCOL})"
    return text


def _timeout_message(raw: _Raw, limit: float, which: str) -> str:
    msg = f"the backward did not return within {limit:g} s ({which}; set the limit with --timeout or timeout=)"
    if raw.where:
        msg += f"; it was at {raw.where}"
    if raw.stopped:
        msg += "; it was stopped"
    else:
        msg += ("; it could not be stopped (a blocking call) and keeps running in a background thread, "
                "later cases may be slower")
    return msg


# ----------------------------------------------------------------- the entry point

def invoke(backward: Backward, case: Case, *, timeout: float | None = DEFAULT_TIMEOUT,
           repeat: bool = False) -> CallOutcome:
    """Call the backward on copies of ``case``'s arrays and read its result; faults become findings.

    ``timeout``: seconds per call (None or 0: no limit, called in this thread). ``repeat``: call a
    second time on fresh copies and report a different result as ``nondeterministic``.
    Never raises for anything the backward does (KeyboardInterrupt and SystemExit of the harness
    itself pass through).
    """
    timeout = limit(timeout)
    out = CallOutcome()
    raw = _call_once(backward, case, timeout)
    out.stdout, out.seconds = raw.stdout, raw.seconds
    if raw.timed_out:
        out.error = finding("timeout", _timeout_message(raw, float(timeout or 0), "first call"))
        return out
    assert raw.passed is not None
    mutated, said = _mutations(case, raw.passed)
    mutation = None
    if mutated:
        which = list(dict.fromkeys(mutated))
        mutation = finding("mutated_input", f"your backward changed {', '.join(which)} in place — "
                           + "; ".join(said) + " (work on copies: the caller's arrays must stay as they were)", which)
    if raw.exc is not None:
        out.error = finding("exception", user_frames(raw.exc))
        if mutation:
            out.notes.append("also: " + mutation["message"])
        return out
    grads, error, notes = _read(raw.value, case)
    out.grads, out.notes = grads, notes
    if error is not None:
        out.error = error
        if mutation:
            out.notes.append("also: " + mutation["message"])
        return out
    if mutation:
        out.error = mutation
        return out
    if repeat and grads is not None:
        raw2 = _call_once(backward, case, timeout)
        out.seconds += raw2.seconds
        if raw2.timed_out:
            out.error = finding("timeout", _timeout_message(raw2, float(timeout or 0), "second call, same inputs"))
            return out
        if raw2.exc is not None:
            out.error = finding("nondeterministic", "the first call returned, a second call on the same inputs "
                                "raised:\n" + user_frames(raw2.exc))
            return out
        grads2, error2, _ = _read(raw2.value, case)
        if error2 is not None or grads2 is None:
            msg = error2["message"] if error2 else "no gradients"
            out.error = finding("nondeterministic", "the first call's result was fine, a second call on the same "
                                f"inputs gave: {error2['kind'] if error2 else 'nothing'}: {msg}",
                                error2["keys"] if error2 else [])
            return out
        out.repeat = grads2
        out.error, more = _compare_repeat(grads, grads2, case)
        out.notes += more
    return out


def headline(error: dict[str, Any]) -> str:
    """One line for an error finding: an exception's last line, else the message's first line."""
    lines = [ln.strip() for ln in str(error.get("message", "")).splitlines() if ln.strip()]
    if not lines:
        return str(error.get("kind", ""))
    if error.get("kind") == "exception":
        return lines[-1]
    if len(lines) > 1 and lines[0].endswith("raised:"):
        return lines[0] + " " + lines[-1]
    return lines[0]


def limit(timeout: Any) -> float | None:
    """A per-call limit in seconds from what a caller gave: None for no limit (None, 0 or inf)."""
    if timeout is None:
        return None
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise BPTTCheckError(f"timeout must be a number of seconds, got {timeout!r}") from None
    if math.isnan(value) or value < 0:
        raise BPTTCheckError(f"timeout must be >= 0 seconds (0: no limit), got {timeout!r}")
    return None if value == 0 or value >= threading.TIMEOUT_MAX else value
