"""Running a call of the user's code in this process, under a time limit, its output captured.

This is how ``isolate="thread"`` and ``isolate="none"`` call the backward (``isolate="process"``,
the default, runs it in a worker process of its own: ``process.py``, ``worker.py``).
:func:`run_limited` runs a body (a call that ``target.py`` prepared) and returns what happened: its
value or exception, whether it timed out and where it was, what it printed. It never lets the
user's fault become a traceback of the harness.

Timeout mechanism (per call). With a limit, the body runs in a daemon worker thread (one per
calling thread, reused from call to call) and the caller waits on a lock with the limit. This
works in any thread (the main thread, a pytest-xdist worker, a thread pool), unlike
``signal.alarm``, which only works in the main thread of the main interpreter. When the limit
passes, the call is reported as timed out and the worker is retired: it is asked to stop by an
exception raised inside it (``PyThreadState_SetAsyncExc``) — Python-level loops stop at once, a
blocking call (``sleep``, a lock, I/O, one long C routine) stops when it returns to Python —
and the next call gets a new worker. Until it stops it is abandoned as a daemon thread, the run
goes on, and the message says so. No in-process mechanism can stop a C routine that never
releases the GIL: that needs ``isolate="process"``. ``timeout=None`` (or ``0``), or
``isolate="none"``, runs the body directly in the caller's thread, with no limit, which is what a
debugger wants. Handing a call to the worker thread costs about 0.1 ms
(``benchmarks/isolation.py``); a new thread per call would cost ~2 ms (the caller and the new
thread contend for the GIL).

Output: what the body prints through ``sys.stdout`` is captured per call (a router installed
as ``sys.stdout`` while calls run sends writes from the call's thread to a buffer and everything
else through), so it cannot interleave with the command's own output. Every router ever installed
is kept alive: a thread still printing through one while it is taken out of ``sys.stdout`` never
writes through a freed object. Output written straight to file descriptor 1 by C code is not
captured.
"""

from __future__ import annotations

import ctypes
import linecache
import math
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .read import clean

DEFAULT_TIMEOUT = 30.0           # seconds per call of the backward; None or 0: no limit
_MAX_STDOUT = 64 * 1024          # characters kept per call
_MAX_FRAMES = 12                 # user frames kept in a traceback
_GRACE = 0.1                     # seconds given to a timed-out call to stop
_HERE = os.path.dirname(os.path.abspath(__file__))   # the runner's own files: never the user's frames

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
# every router ever installed, and so the stream behind it: print() in another thread holds only a
# borrowed reference to sys.stdout, and freeing the object under it crashed the interpreter (SIGSEGV)
_routers: list[_StdoutRouter] = []


def _router_acquire(call: int) -> None:
    with _router_lock:
        if not isinstance(sys.stdout, _StdoutRouter):   # also when someone (pytest's capture) replaced it
            router = next((r for r in _routers if r._target is sys.stdout), None)
            if router is None:
                router = _StdoutRouter(sys.stdout)
                _routers.append(router)
            sys.stdout = router
        _router_users.add(call)


def _router_release(call: int) -> None:
    """Idempotent: a call's release may be retried after a late stop request interrupted it."""
    with _router_lock:
        _router_users.discard(call)
        if not _router_users and isinstance(sys.stdout, _StdoutRouter):
            sys.stdout = sys.stdout._target


def _captured(buf: list[Any]) -> str:
    text = "".join(str(t) for t in buf[1:])
    if buf[0] > _MAX_STDOUT:
        text += f"\n[... {buf[0] - _MAX_STDOUT} more characters not kept]"
    return clean(text, _MAX_STDOUT + 100)


# ----------------------------------------------------------------- one call under a limit

class _Stopped(BaseException):
    """Raised inside a timed-out call's thread to stop it."""


class Interrupt(BaseException):
    """A stop request of the harness itself (the CLI's SIGTERM): never the user's fault, always passed on
    (like KeyboardInterrupt), also out of a call made in the caller's thread."""


@dataclass
class Raw:
    """What one call of the user's code gave, however it was run (a thread, this thread, a worker process)."""

    value: Any = None                    # what the body returned (materialized: plain data)
    exc: BaseException | None = None     # what it raised (in this process)
    error: str | None = None             # what it raised, as the user's traceback (set from ``exc``, or by the worker)
    shape_error: bool = False            # ... an exception that says two arrays' shapes do not fit
    timed_out: bool = False
    stopped: bool = True                 # a timed-out call did stop
    killed: bool = False                 # ... by killing the worker process that ran it
    crashed: str | None = None           # the worker process died: how, where, the last lines it printed
    where: str = ""                      # where a timed-out call was
    stdout: str = ""
    seconds: float = 0.0
    passed: Any = None                   # (given, params, x, y) after the call: what the mutation check reads
    more: bool = False                   # a worker made a second call already (``second`` reads it)
    second: Callable[[], Raw] | None = None
    release: Callable[[], None] | None = None


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
    stack = [f for f in traceback.extract_stack(frame) if not _harness(f.filename)
             and not f.filename.endswith(("threading.py",))]
    if not stack:
        return ""
    f = stack[-1]
    return frame_text(f.filename, f.lineno or 0, f.name, f.line)


def frame_text(filename: str, lineno: int, name: str, line: str | None = None) -> str:
    """``file.py:12 in backward `code``` — where the user's code was (the code read from the file)."""
    if line is None:
        line = linecache.getline(filename, lineno)
    code = f" `{clean(line.strip(), 200)}`" if line and line.strip() else ""
    return f"{clean(_short(filename), 300)}:{lineno} in {clean(name, 100)}{code}"


def is_harness(filename: str) -> bool:
    """Whether a frame's file is the runner's own (never shown as the user's code)."""
    return _harness(filename) or filename.endswith("threading.py")


def _short(filename: str) -> str:
    """A path relative to the working folder when it is inside it."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def run_limited(body: Callable[[], Any], timeout: float | None) -> Raw:
    """Run ``body`` under the limit (None: in this thread, no limit), capturing what it prints."""
    raw = Raw()
    buf: list[Any] = [0]
    start = time.perf_counter()
    if not timeout:
        me = threading.get_ident()
        saved = _captures.get(me)                    # a call nested in a call keeps the outer one's buffer
        _router_acquire(id(buf))
        _captures[me] = buf
        try:
            raw.value = body()
        except (KeyboardInterrupt, Interrupt):
            raise
        except BaseException as exc:               # noqa: B036 - SystemExit, GeneratorExit, its own: the user's
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


# ----------------------------------------------------------------- exceptions, timeouts

def _harness(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _HERE


def user_frames(exc: BaseException, protocol: str = "") -> str:
    """The traceback of an exception raised by user code, without the harness's own frames."""
    tb = traceback.extract_tb(exc.__traceback__)
    kept = [f for f in tb if not _harness(f.filename)]
    head = ""
    if len(kept) > _MAX_FRAMES:
        head = f"  ... {len(kept) - _MAX_FRAMES} outer frames not shown\n"
        kept = kept[-_MAX_FRAMES:]
    lines = traceback.format_list(kept)
    try:
        lines += traceback.format_exception_only(type(exc), exc)
    except Exception:                              # a str() that raises is handled there; anything else too
        lines.append(f"{type(exc).__name__}: <the exception could not be shown>\n")
    text = head + "".join(lines).rstrip()
    if not kept and isinstance(exc, TypeError) and protocol:
        text += f"\n(calling the backward itself failed: the protocol is {protocol})"
    return clean(text)


def timeout_message(raw: Raw, limit: float, which: str) -> str:
    msg = f"the backward did not return within {limit:g} s ({which}; set the limit with --timeout or timeout=)"
    if raw.where:
        msg += f"; it was at {raw.where}"
    if raw.killed:
        msg += "; it was stopped: the worker process running it was killed (SIGKILL), the next call gets a fresh one"
    elif raw.stopped:
        msg += "; it was stopped"
    else:
        msg += ("; it could not be stopped (a blocking call) and keeps running in a background thread, "
                "later cases may be slower")
    return msg


def limit(timeout: Any) -> float | None:
    """A per-call limit in seconds from what a caller gave: None for no limit (None, 0 or inf)."""
    if timeout is None:
        return None
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise UsageError(f"timeout must be a number of seconds, got {timeout!r}") from None
    if math.isnan(value) or value < 0:
        raise UsageError(f"timeout must be >= 0 seconds (0: no limit), got {timeout!r}")
    return None if value == 0 or value >= threading.TIMEOUT_MAX else value
