"""``isolate="process"``: the user's backward runs in a worker process of its own (DESIGN §13).

The harness side; the child side is ``worker.py``, the bytes between them ``wire.py``.

- **Who runs it.** A *zygote* (a fresh interpreter with bptt_check, numpy and cloudpickle imported,
  started once per harness process, in the background as soon as it is first wanted) forks one
  *worker* per backward: ready in milliseconds, clean (nothing of another backward), persistent
  across that backward's cases. Idle workers are kept for reuse (at most :data:`MAX_IDLE`, least
  recently used closed first).
- **How the backward gets there.** A Python callable — a closure, a lambda, an adapter — is
  pickled with cloudpickle (:func:`ship`; functions of importable modules by reference, then, if the
  worker cannot import their module, by value); a CLI TARGET is loaded by name inside the worker
  (:func:`load_named`), so importing the user's module, and calling a factory, happen there only.
  Either way the first load happens before any case: a backward that cannot get there is a
  :class:`~bptt_check.errors.UsageError`.
- **A call** (:func:`call`) sends the case's arrays and Spec (the worker gets its own copies), waits
  for the reply up to the limit, and reads it as plain data. The worker sends back what the backward
  returned (materialized), what it raised (its traceback text), what it printed, and which inputs
  it changed.
- **Faults.** Past the limit, the worker dumps its stacks (faulthandler, on SIGUSR1: the message says
  where the backward was, even in C code holding the GIL) and is killed with SIGKILL, with its
  process group; the case is a ``timeout``. A worker that dies (``os._exit``, a segfault, the OOM
  killer) makes the case ``crashed``, with its exit code or signal, where it was and the last lines
  it printed. The next call gets a fresh worker. Ctrl-C or SIGTERM in the harness kills the worker
  of the call in progress and goes on out.

Costs (``benchmarks/isolation.py``): the zygote's start (~0.25 s, overlapped with the harness's
own start), a fork and load per backward (~10 ms), and per call a round trip of pickled arrays.
"""

from __future__ import annotations

import atexit
import collections
import io
import itertools
import math
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..model.spec import Spec
from . import wire
from .adapters import Adapted, Layout, Lowered
from .call import Raw, frame_text, is_harness
from .read import Key, clean

ISOLATIONS = ("process", "thread", "none")
AVAILABLE = hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform != "win32"
DEFAULT_ISOLATE = "process" if AVAILABLE else "thread"
LOAD_LIMIT = 300.0               # seconds a worker may take to load a backward (importing torch, say)
START_LIMIT = 120.0              # seconds the zygote may take to start
MAX_IDLE = 4                     # idle workers kept for reuse
_RING = 64 * 1024                # bytes of a worker's output kept (the last lines before a crash)
_DRAIN = 2.0                     # seconds a second call nobody wants may take to finish before its worker is killed
_DUMP_WAIT = 2.0                 # seconds at most to wait for a stack dump, or for a dead worker's last output
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOT = ("import sys; sys.path.insert(0, {root!r}); from bptt_check.runner.worker import zygote; "
         "zygote(int(sys.argv[1]), int(sys.argv[2]))")


def isolation(value: Any) -> str:
    """Validate an ``isolate=`` value: ``process``, ``thread`` or ``none``."""
    if not isinstance(value, str) or value not in ISOLATIONS:
        raise UsageError(f"isolate must be one of {', '.join(ISOLATIONS)} (process: a worker process of its "
                         f"own; thread: in this process, under the time limit; none: in the caller's thread, "
                         f"no limit), got {value!r}")
    if value == "process" and not AVAILABLE:
        raise UsageError("isolate='process' needs fork() and file-descriptor passing (Linux, macOS); "
                         "use isolate='thread'")
    return value


class _Late(Exception):
    """The reply did not come within the limit."""


class _Died(Exception):
    """The worker's channel closed: the worker is gone."""


# ----------------------------------------------------------------- a worker's output

class _Ring:
    """Drains a worker's stdout/stderr pipe in a thread, keeping the last :data:`_RING` bytes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.total = 0
        self.lock = threading.Lock()
        self.eof = threading.Event()
        threading.Thread(target=self._drain, name="bptt-check-worker-output", daemon=True).start()

    def _drain(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                with self.lock:
                    self.data += chunk
                    self.total += len(chunk)
                    if len(self.data) > _RING:
                        del self.data[: len(self.data) - _RING]
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.eof.set()

    def since(self, mark: int) -> str:
        with self.lock:
            kept = self.data[max(0, len(self.data) - (self.total - mark)):]
        return bytes(kept).decode("utf-8", "replace")

    def settle(self, mark: int, limit: float) -> None:
        """Wait until output after ``mark`` came and then paused (a stack dump is written at once)."""
        end = time.monotonic() + limit
        seen, quiet = self.total, 0
        while time.monotonic() < end and not self.eof.is_set():
            time.sleep(0.01)
            now = self.total
            quiet = quiet + 1 if now == seen else 0
            if now > mark and quiet >= 5:          # 50 ms without more output
                return
            seen = now


# ----------------------------------------------------------------- the zygote

class _Zygote:
    """The process workers are forked from; started once, in the background, restarted if it dies."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format(root=_ROOT), str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
        theirs.close()
        self.ready: dict[str, Any] | None = None
        self.dead = False
        self.preloaded: set[str] = set()

    def _wait_ready(self) -> dict[str, Any]:
        if self.ready is None:
            try:
                self.ready = _read_reply(self.sock, time.monotonic() + START_LIMIT)
            except (_Late, _Died, wire.WireError, OSError) as exc:
                self.dead = True
                self.proc.kill()
                err = b""
                try:
                    _, err = self.proc.communicate(timeout=5)
                except Exception:
                    pass
                tail = clean(err.decode("utf-8", "replace").strip().splitlines()[-1] if err.strip() else "", 500)
                raise UsageError(f"the worker process that runs the backward could not start "
                                 f"({type(exc).__name__}{': ' + tail if tail else ''}); "
                                 "use isolate='thread' (--isolate thread) to run it in this process") from None
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        return self.ready

    def fork(self) -> _Worker:
        with self.lock:
            ready = self._wait_ready()
            chan, theirs = socket.socketpair()
            out_r, out_w = os.pipe()
            msg = {"op": "fork", "cwd": os.getcwd(), "env": dict(os.environ), "path": list(sys.path)}
            try:
                data = wire.frame(msg)
                socket.send_fds(self.sock, [data[: wire.HEADER_SIZE]], [theirs.fileno(), out_w])
                self.sock.sendall(data[wire.HEADER_SIZE:])
                reply = _read_reply(self.sock, time.monotonic() + START_LIMIT)
            except (_Late, _Died, wire.WireError, OSError, KeyError, TypeError) as exc:
                self.dead = True
                chan.close()
                os.close(out_r)
                raise _Died(f"the zygote process failed ({type(exc).__name__})") from None
            except BaseException:                  # noqa: B036 - interrupted mid-request: its replies are out of step
                self.dead = True
                chan.close()
                os.close(out_r)
                raise
            finally:
                theirs.close()
                os.close(out_w)
            return _Worker(int(reply["pid"]), chan, _Ring(out_r), self, int(ready.get("ident") or 0))

    def preload(self, names: list[str]) -> None:
        """Import libraries a worker needed (torch) into the zygote once, for every later worker."""
        wanted = [n for n in names if isinstance(n, str) and n not in self.preloaded]
        if not wanted:
            return
        with self.lock:
            self.preloaded.update(wanted)
            if self.dead:
                return
            try:
                self.sock.sendall(wire.frame({"op": "import", "modules": wanted}))
                _read_reply(self.sock, time.monotonic() + LOAD_LIMIT)
            except (_Late, _Died, wire.WireError, OSError):
                self.dead = True                   # a new zygote next time (preloading is only an optimization)
            except BaseException:                  # noqa: B036 - interrupted mid-request: its replies are out of step
                self.dead = True
                raise

    def wait(self, pid: int) -> int | None:
        """The exit status of a worker that was killed or died: exit code, or minus the signal."""
        with self.lock:
            if self.dead:
                return None
            try:
                self.sock.sendall(wire.frame({"op": "wait", "pid": pid}))
                reply = _read_reply(self.sock, time.monotonic() + 30)
                status = reply.get("status") if isinstance(reply, dict) else None
                return int(status) if isinstance(status, int) else None
            except (_Late, _Died, wire.WireError, OSError):
                self.dead = True
                return None
            except BaseException:                  # noqa: B036 - interrupted mid-request: its replies are out of step
                self.dead = True
                raise

    def close(self) -> None:
        self.dead = True
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Late
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except TimeoutError:
            raise _Late from None
        except OSError:
            raise _Died from None
        if not chunk:
            raise _Died
        buf += chunk
    return bytes(buf)


def _read_reply(sock: socket.socket, deadline: float | None) -> Any:
    n = wire.header_length(_recv_exact(sock, wire.HEADER_SIZE, deadline))
    return wire.loads_plain(_recv_exact(sock, n, deadline))


# ----------------------------------------------------------------- one worker

class _Worker:
    """The harness's handle on one worker process."""

    def __init__(self, pid: int, chan: socket.socket, ring: _Ring, zygote: _Zygote, ident: int) -> None:
        self.pid, self.chan, self.ring, self.zygote, self.ident = pid, chan, ring, zygote, ident
        self.loaded: set[int] = set()
        self.alive = True
        self.status: int | None = None

    def request(self, msg: dict[str, Any], deadline: float | None) -> Any:
        self.send(msg, deadline)
        reply = _read_reply(self.chan, deadline)
        if not isinstance(reply, dict):
            raise wire.WireError(f"a reply of type {type(reply).__name__}")
        return reply

    def send(self, msg: dict[str, Any], deadline: float | None) -> None:
        data = wire.frame(msg)
        try:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Late
                self.chan.settimeout(left)
            else:
                self.chan.settimeout(None)
            self.chan.sendall(data)
        except TimeoutError:
            raise _Late from None
        except OSError:
            raise _Died from None

    def where(self) -> tuple[str, str]:
        """Where the worker's main thread is now (a faulthandler dump on SIGUSR1), and the dump's text."""
        mark = self.ring.total
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            return "", ""
        self.ring.settle(mark, _DUMP_WAIT)
        dump = self.ring.since(mark)
        return _where(dump, self.ident), dump

    def kill(self) -> int | None:
        """Kill it (and whatever it started); its exit status (exit code, or minus the signal)."""
        if not self.alive:
            return self.status
        self.alive = False
        _sigkill(self.pid)
        try:
            self.chan.close()
        except OSError:
            pass
        self.status = self.zygote.wait(self.pid)
        return self.status


def _sigkill(pid: int) -> None:
    """SIGKILL a worker's process group (it and whatever it started), or the worker alone."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except OSError:
            continue


_FRAME = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')
_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+)")


def _where(dump: str, ident: int) -> str:
    """The innermost frame of the user's code in a faulthandler dump: of the thread ``ident``, else of
    the thread that crashed, else of any thread."""
    blocks: list[tuple[str, str, list[tuple[str, int, str]]]] = []
    for line in dump.splitlines():
        m = _THREAD.match(line)
        if m:
            blocks.append((m.group(1), m.group(2).lower(), []))
            continue
        f = _FRAME.match(line)
        if f and blocks:
            blocks[-1][2].append((f.group(1), int(f.group(2)), f.group(3).strip()))
    want = f"0x{ident:016x}" if ident else ""
    order = sorted(blocks, key=lambda b: (b[1] != want, b[0] != "Current thread"))
    for _, _, frames in order:
        kept = [f for f in frames if not is_harness(f[0]) and "<frozen" not in f[0]]   # most recent call first
        if not kept:
            continue
        yours = next((f for f in kept if not _library(f[0])), None)
        if yours is None or yours is kept[0]:
            return frame_text(*kept[0])
        inner = kept[0]
        return frame_text(*yours) + f" (inside {frame_text(inner[0], inner[1], inner[2], '')})"
    return ""


def _library(filename: str) -> bool:
    """A file of Python's standard library (the user's code is what called into it)."""
    return any(filename.startswith(p) for p in _STDLIB)


_STDLIB = tuple({p for p in (sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")) if p})


def _crash_text(status: int | None, output: str, ident: int) -> str:
    """How a worker died, where, and the last lines it printed."""
    if status is None:
        how = "it stopped answering"
    elif status == wire.LOST_CHANNEL:
        how = ("it could not answer: its channel to the harness was closed or broken (did the backward close "
               "file descriptors it did not open?)")
    elif status >= 0:
        how = f"exit code {status} (os._exit(), or exit() in C code; sys.exit() would be an exception)"
    else:
        sig = -status
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        why = {"SIGSEGV": "an invalid memory access in C code, or a C stack overflow",
               "SIGBUS": "an invalid memory access in C code", "SIGILL": "an illegal instruction in C code",
               "SIGFPE": "an arithmetic fault in C code",
               "SIGABRT": "an abort: a failed assertion in C code, or a fatal error of the interpreter",
               "SIGKILL": "killed from outside: out of memory?"}.get(name, "")
        how = f"killed by signal {name} ({sig}{': ' + why if why else ''})"
    fatal = output.find("Fatal Python error")
    printed, dump = (output[:fatal], output[fatal:]) if fatal >= 0 else (output, "")
    msg = f"the worker process running the backward died{{during}}: {how}"
    where = _where(dump, ident) if dump else ""
    if where:
        msg += f"; it was at {where}"
    lines = [ln.strip() for ln in printed.rstrip().splitlines() if ln.strip()]
    if lines:
        msg += f"; the last line it printed (the case's stdout has more): {clean(lines[-1], 300)}"
    return msg


# ----------------------------------------------------------------- the pool

_lock = threading.Lock()
_zygote: _Zygote | None = None
_idle: collections.OrderedDict[_Worker, int] = collections.OrderedDict()   # worker -> token, LRU first
_live: set[_Worker] = set()
_tokens = itertools.count(1)
_spawner: Any = None


def _get_zygote() -> _Zygote:
    """The zygote, started from a thread that lives as long as this process (a worker is killed when the
    thread that started its process ends: PR_SET_PDEATHSIG)."""
    global _zygote
    with _lock:
        if _zygote is None or _zygote.dead or _zygote.proc.poll() is not None:
            if _zygote is not None:
                _zygote.close()
            _zygote = _in_lasting_thread(_Zygote)
        return _zygote


def _in_lasting_thread(make: Callable[[], Any]) -> Any:
    if threading.current_thread() is threading.main_thread():
        return make()
    global _spawner
    if _spawner is None:
        import queue

        jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def serve() -> None:
            while True:
                fn, box, done = jobs.get()
                try:
                    box.append(fn())
                except BaseException as exc:      # noqa: B036 - handed back to the caller
                    box.append(exc)
                done.set()

        threading.Thread(target=serve, name="bptt-check-spawner", daemon=True).start()
        _spawner = jobs
    box: list[Any] = []
    done = threading.Event()
    _spawner.put((make, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _forget() -> None:
    """In a child forked from this process (multiprocessing, a user's os.fork): the zygote and the workers
    belong to the parent; the child starts its own when it needs them."""
    global _zygote, _lock, _spawner
    _lock = threading.Lock()
    _zygote, _spawner = None, None
    _idle.clear()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def prestart() -> None:
    """Start the zygote now (it imports in the background while the harness does its own work)."""
    if AVAILABLE:
        _get_zygote()


def _fork() -> _Worker:
    zygote = _get_zygote()
    try:
        worker = zygote.fork()
    except _Died:
        worker = _get_zygote().fork()            # a zygote that died is started again, once
    with _lock:
        _live.add(worker)
    return worker


def _acquire(token: int) -> _Worker | None:
    """An idle worker that has loaded this backward and is still there (a worker that died while idle
    — its zygote restarted, the OOM killer — has closed its output: it is not handed out)."""
    gone = []
    found = None
    with _lock:
        for worker in reversed(_idle):
            if _idle[worker] == token:
                del _idle[worker]
                if worker.alive and not worker.ring.eof.is_set() and not worker.zygote.dead:
                    found = worker
                    break
                gone.append(worker)
    for worker in gone:
        _discard(worker)
    return found


def _release(worker: _Worker, token: int) -> None:
    evicted = []
    with _lock:
        if not worker.alive:
            _live.discard(worker)
            return
        _idle[worker] = token
        while len(_idle) > MAX_IDLE:
            old, _ = _idle.popitem(last=False)
            evicted.append(old)
    for old in evicted:
        _discard(old)


def _discard(worker: _Worker) -> int | None:
    status = worker.kill()
    with _lock:
        _live.discard(worker)
        _idle.pop(worker, None)
    return status


def close_workers() -> None:
    """Kill every worker (a run is over: threads its backward left running stop with it); the zygote stays."""
    with _lock:
        workers = list(_live)
    for w in workers:
        _discard(w)


@atexit.register
def shutdown() -> None:
    """Kill every worker and the zygote (at exit; also safe to call any time)."""
    global _zygote
    with _lock:
        workers = list(_live)
        _idle.clear()
        zyg, _zygote = _zygote, None
    for w in workers:
        w.alive = False
        _sigkill(w.pid)
    if zyg is not None:
        zyg.close()


# ----------------------------------------------------------------- shipping a backward

@dataclass
class Shipped:
    """A backward that runs in worker processes: how a worker loads it, and what the harness knows of it."""

    token: int
    how: tuple[str, Any]                      # ("pickle", bytes) or ("name", "path.py:fn")
    name: str
    adapted: Adapted | None = None            # for the layout questions (the object itself, or a shadow)
    keywords: tuple[str, ...] = ()            # of "spec", "lengths": the keywords a plain backward takes
    problems: dict[bool, str | None] = field(default_factory=dict)   # signature problem, without/with lengths
    bptt_spec: Spec | None = None
    source: Any = None                        # the Python object (kept alive: the cache is keyed by its id)
    facts: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(f"{self.name} runs in a worker process: check it with bptt_check.check(...)")


_shipped: collections.OrderedDict[int, Shipped] = collections.OrderedDict()
_MAX_SHIPPED = 32


class _LoadFailed(Exception):
    def __init__(self, reply: dict[str, Any], died: str | None = None) -> None:
        super().__init__(died or reply.get("error"))
        self.reply, self.died = reply, died


def _load(worker: _Worker, shipped: Shipped, limit: float | None) -> dict[str, Any]:
    deadline = None if limit is None else time.monotonic() + limit
    try:
        reply = worker.request({"op": "load", "token": shipped.token, "how": shipped.how, "path": list(sys.path)},
                               deadline)
    except _Late:
        _discard(worker)
        raise _LoadFailed({}, f"loading it took longer than {limit:g} s") from None
    except (_Died, wire.WireError):
        worker.ring.eof.wait(_DUMP_WAIT)
        status = _discard(worker)
        raise _LoadFailed({}, _crash_text(status, worker.ring.since(0), worker.ident).replace("{during}", "")
                          ) from None
    if not reply.get("ok"):
        _discard(worker)
        raise _LoadFailed(reply)
    worker.loaded.add(shipped.token)
    _preload(worker, reply)
    return reply


def _preload(worker: _Worker, reply: dict[str, Any]) -> None:
    libraries = reply.get("libraries")
    if isinstance(libraries, list) and libraries:
        worker.zygote.preload(libraries)


def _worker_for(shipped: Shipped, limit: float | None) -> _Worker:
    worker = _acquire(shipped.token)
    if worker is not None:
        return worker
    worker = _fork()
    _load(worker, shipped, limit)
    return worker


def _pickle(backward: Any, by_value: bool) -> bytes:
    import cloudpickle

    modules = []
    if by_value:
        for obj in (backward, getattr(backward, "fn", None), getattr(backward, "forward", None)):
            name = getattr(obj, "__module__", None)
            mod = sys.modules.get(name) if isinstance(name, str) else None
            if mod is not None and name != "__main__" and not name.startswith(("bptt_check", "numpy", "torch")):
                modules.append(mod)
    for mod in modules:
        try:
            cloudpickle.register_pickle_by_value(mod)
        except (ValueError, TypeError):
            pass
    try:
        buf = io.BytesIO()
        _pickler_class()(buf, protocol=5).dump(backward)
        return buf.getvalue()
    finally:
        for mod in modules:
            try:
                cloudpickle.unregister_pickle_by_value(mod)
            except (ValueError, TypeError):
                pass


def _pickler_class() -> Any:
    """cloudpickle's Pickler, keeping the file names of the code it ships by value (cloudpickle writes
    ``<dynamic-code>``): tracebacks and "where it was" then name the user's file and show its lines.
    Made anew each time (once per backward): cloudpickle may have been imported again since."""
    import cloudpickle

    base = cloudpickle.Pickler

    def code(obj: types.CodeType) -> Any:
        rebuild, args = base.dispatch_table[types.CodeType](obj)
        return rebuild, tuple(obj.co_filename if a == "<dynamic-code>" else a for a in args)

    class Pickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = collections.ChainMap({types.CodeType: code}, base.dispatch_table)

        def reducer_override(self, obj: Any) -> Any:
            # a module made in memory: shipped so that its functions' globals stay its attributes
            if isinstance(obj, types.ModuleType) and sys.modules.get(obj.__name__) is not obj:
                namespace = self.globals_ref.setdefault(id(obj.__dict__), {})
                state = {k: v for k, v in vars(obj).items() if k not in ("__builtins__", "_bptt_globals")}
                return wire.shared_module, (obj.__name__, namespace), state, None, None, wire.fill_module
            return super().reducer_override(obj)

    return Pickler


def ship(backward: Any, *, keywords: tuple[str, ...] = ()) -> Shipped:
    """The backward, made ready to run in worker processes (cached per object): pickled with cloudpickle
    and loaded once into a worker now, so that a backward that cannot get there is a UsageError before
    any case."""
    if isinstance(backward, Shipped):
        return backward
    with _lock:
        known = _shipped.get(id(backward))
        if known is not None and known.source is backward:
            _shipped.move_to_end(id(backward))
            return known
    name = str(getattr(backward, "name", None) or getattr(backward, "__qualname__", None) or type(backward).__name__)
    shipped = Shipped(next(_tokens), ("pickle", b""), name, adapted=backward if isinstance(backward, Adapted) else None,
                      keywords=keywords, bptt_spec=getattr(backward, "bptt_spec", None), source=backward)
    last: _LoadFailed | None = None
    for by_value in (False, True):
        try:
            shipped.how = ("pickle", _pickle(backward, by_value))
        except Exception as exc:
            raise UsageError(f"the backward {clean(name, 200)} cannot be sent to a worker process "
                             f"({type(exc).__name__}: {clean(str(exc), 300)}); pass isolate='thread' "
                             "(--isolate thread, --bptt-isolate thread) to call it in this process") from None
        try:
            worker = _worker_for(shipped, LOAD_LIMIT)
        except _Died as exc:
            raise UsageError(f"no worker process could be started ({exc}); pass isolate='thread' "
                             "(--isolate thread, --bptt-isolate thread) to call the backward in this process") from None
        except _LoadFailed as failed:
            last = failed
            if failed.died or not failed.reply.get("import_error"):
                break
            continue
        _release(worker, shipped.token)
        last = None
        break
    if last is not None:
        why = last.died or last.reply.get("error") or "it failed"
        raise UsageError(f"the backward {clean(name, 200)} cannot be loaded in a worker process: "
                         f"{clean(why, 2000).strip().splitlines()[-1] if not last.died else why}; pass "
                         "isolate='thread' (--isolate thread, --bptt-isolate thread) to call it in this process")
    with _lock:
        _shipped[id(backward)] = shipped
        while len(_shipped) > _MAX_SHIPPED:
            _shipped.popitem(last=False)
    return shipped


def load_named(text: str, *, limit: float | None = LOAD_LIMIT) -> Shipped:
    """A TARGET (``path/to/file.py:function`` or ``package.module:function``) loaded by name inside a
    worker: the user's module is imported, and a factory called, there only. UsageError when it cannot."""
    shipped = Shipped(next(_tokens), ("name", text), text)
    try:
        worker = _fork()
        reply = _load(worker, shipped, limit)
    except _Died as exc:
        raise UsageError(f"no worker process could be started to load TARGET {text!r} ({exc}); "
                         "use --isolate thread") from None
    except _LoadFailed as failed:
        if failed.died:
            raise UsageError(f"loading TARGET {text!r} ended the worker process: "
                             f"{failed.died.removeprefix('the worker process running the backward died: ')}"
                             .replace("\n", " ")) from None
        reply = failed.reply
        if reply.get("usage"):
            raise UsageError(str(reply.get("error") or "")) from None
        lines = [ln for ln in str(reply.get("error") or "").splitlines() if ln.strip()]
        raise UsageError(f"loading TARGET {text!r} failed: {lines[-1].strip() if lines else 'no reason given'}"
                         ) from None
    _release(worker, shipped.token)
    facts = reply.get("facts") or {}
    shipped.facts = facts
    shipped.name = str(facts.get("name") or text)
    shipped.keywords = tuple(k for k in facts.get("keywords") or () if k in ("spec", "lengths"))
    problems = facts.get("problems") if isinstance(facts.get("problems"), dict) else {}
    shipped.problems = {flag: (problems.get(flag) if isinstance(problems.get(flag), str) else None)
                        for flag in (False, True)}
    try:
        if isinstance(facts.get("declared"), dict):
            shipped.bptt_spec = Spec.from_dict(facts["declared"])
        if facts.get("adapted"):
            shadow = Adapted(None, Layout(**facts["layout"]), forward=None, spec=shipped.bptt_spec, spec_kwargs={},
                             name=shipped.name)
            shadow.kind = str(facts.get("kind") or "function")
            shipped.adapted = shadow
    except Exception as exc:
        raise UsageError(f"TARGET {text!r}: its layout or spec cannot be read ({type(exc).__name__}: {exc})") from None
    return shipped


# ----------------------------------------------------------------- one call

_REPLACED = object()          # a params entry the backward replaced by another object


def call(shipped: Shipped, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, spec: Spec, *,
         how: str, keywords: tuple[str, ...] = (), lengths: np.ndarray | None = None, timeout: float | None,
         repeat: bool = False) -> Raw:
    """One call of the backward in a worker, on (copies of) these arrays, under the limit.

    ``repeat``: the worker makes a second call on fresh copies right after a first one that returned,
    without waiting to be asked (one round trip per case instead of two); ``raw.second()`` reads it,
    under its own limit, and ``raw.release()`` (always called, also when the second is not wanted)
    gives the worker back."""
    raw = Raw(passed=(dict(params), dict(params), x, y))
    start = time.perf_counter()
    try:
        worker = _worker_for(shipped, LOAD_LIMIT)
    except _LoadFailed as failed:
        raw.crashed = ("a fresh worker process could not load the backward again{during}: "
                       + (failed.died or str(failed.reply.get("error") or "")).replace("\n", " "))
        return raw
    except (_Died, UsageError) as exc:             # the zygote died and could not be started again
        raw.crashed = f"no worker process could be started{{during}}: {clean(str(exc), 500)}"
        return raw
    msg = {"op": "call", "token": shipped.token, "params": params, "x": x, "y": y, "spec": spec, "how": how,
           "keywords": keywords, "lengths": lengths, "repeat": repeat}
    deadline = None if timeout is None else time.monotonic() + timeout
    mark = worker.ring.total
    try:
        worker.send(msg, deadline)
    except _Late:
        return _late(worker, raw, mark, start)
    except _Died:
        return _died(worker, raw, mark, start, None)
    except BaseException:                          # noqa: B036 - Ctrl-C, SIGTERM: the call is abandoned
        _discard(worker)
        raise
    if not _reply(worker, raw, mark, start, deadline, params, x, y):
        return raw
    if not raw.more:
        _release(worker, shipped.token)
        return raw
    state = {"done": False}

    def second() -> Raw:
        state["done"] = True
        raw2 = Raw(passed=(dict(params), dict(params), x, y))
        began, mark2 = time.perf_counter(), worker.ring.total
        if _reply(worker, raw2, mark2, began, None if timeout is None else time.monotonic() + timeout, params, x, y):
            _release(worker, shipped.token)
        return raw2

    def release() -> None:                          # the second call is not wanted: let it finish, or kill it
        if state["done"]:
            return
        state["done"] = True
        try:                                       # a second call that takes long is not waited for
            _read_reply(worker.chan, time.monotonic() + min(timeout or _DRAIN, _DRAIN))
        except (_Late, _Died, wire.WireError):
            _discard(worker)
            return
        except BaseException:                      # noqa: B036 - Ctrl-C, SIGTERM: the worker goes, the stop goes on
            _discard(worker)
            raise
        _release(worker, shipped.token)

    raw.second, raw.release = second, release
    return raw


def _reply(worker: _Worker, raw: Raw, mark: int, start: float, deadline: float | None,
           params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> bool:
    """Read one call's reply into ``raw``; False when the call timed out or its worker died (then discarded)."""
    try:
        reply = _read_reply(worker.chan, deadline)
        if not isinstance(reply, dict):
            raise wire.WireError(f"a reply of type {type(reply).__name__}")
    except _Late:
        _late(worker, raw, mark, start)
        return False
    except (_Died, wire.WireError) as exc:
        _died(worker, raw, mark, start, exc if isinstance(exc, wire.WireError) else None)
        return False
    except BaseException:                          # noqa: B036 - Ctrl-C, SIGTERM: the call is abandoned
        _discard(worker)
        raise
    try:
        _read_call(reply, raw, params, x, y)
    except (wire.WireError, KeyError, TypeError, ValueError) as exc:
        _discard(worker)
        raw.value, raw.error = None, None
        raw.crashed = (f"the worker process sent a reply that cannot be read{{during}} "
                       f"({type(exc).__name__}: {clean(str(exc), 300)})")
        return False
    if not math.isfinite(raw.seconds) or raw.seconds < 0:
        raw.seconds = time.perf_counter() - start
    _preload(worker, reply)
    return True


def _late(worker: _Worker, raw: Raw, mark: int, start: float) -> Raw:
    """A call past its limit: where it was, what it printed; the worker is killed."""
    raw.seconds = time.perf_counter() - start
    raw.timed_out, raw.killed = True, True
    raw.where, dump = worker.where()
    printed = worker.ring.since(mark)
    raw.stdout = clean(printed[: len(printed) - len(dump)] if dump else printed)
    _discard(worker)
    return raw


def _died(worker: _Worker, raw: Raw, mark: int, start: float, garbled: Exception | None) -> Raw:
    """A worker that died during a call (or answered garbage): how, where, the last line it printed."""
    raw.seconds = time.perf_counter() - start
    worker.ring.eof.wait(_DUMP_WAIT)
    status = _discard(worker)
    output = worker.ring.since(mark)
    raw.crashed = _crash_text(status, output, worker.ident)
    if garbled is not None:
        raw.crashed = (f"the worker process sent a reply that cannot be read ({clean(str(garbled), 300)}); "
                       + raw.crashed)
    raw.stdout = clean(output.split("Fatal Python error")[0])
    return raw


def _read_call(reply: dict[str, Any], raw: Raw, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
               ) -> None:
    if not reply.get("ok"):
        raise wire.WireError(str(reply.get("error") or "the worker failed"))
    seconds = reply.get("seconds")
    raw.seconds = float(seconds) if isinstance(seconds, float) else -1.0
    raw.more = reply.get("more") is True
    raw.stdout = clean(reply.get("stdout") or "", 64 * 1024 + 100) if isinstance(reply.get("stdout"), str) else ""
    error = reply.get("error")
    if error is not None:
        raw.error = clean(error) if isinstance(error, str) else "the backward raised (its traceback was not readable)"
        raw.shape_error = reply.get("shape_error") is True
    value = reply.get("value")
    if value is not None:
        if not isinstance(value, tuple) or not value:
            raise wire.WireError("a malformed value")
        if value[0] == "lowered" and len(value) == 4:
            loss = value[2]
            if loss is not None and not isinstance(loss, float):
                raise wire.WireError("a malformed loss")
            raw.value = Lowered(wire.result_from_plain(value[1]), loss, clean(str(value[3]), 500))
        elif value[0] == "result" and len(value) == 2:
            raw.value = wire.result_from_plain(value[1])
        else:
            raise wire.WireError("a malformed value")
    after = reply["after"]
    now = after["given"]
    given = {k: (params[k] if now.get(k) is None else wire.decode_array(now[k])) for k in params}
    passed: dict[Any, Any] = {}
    for key, same in after["keys"]:
        if isinstance(key, str):
            passed[key] = given[key] if same and key in given else _REPLACED
        else:
            passed[Key(clean(str(key[1]), 200))] = _REPLACED
    x_now = x if after["x"] is None else wire.decode_array(after["x"])
    y_now = y if after["y"] is None else wire.decode_array(after["y"])
    raw.passed = (given, passed, x_now, y_now)


__all__ = ["ISOLATIONS", "DEFAULT_ISOLATE", "AVAILABLE", "isolation", "Shipped", "ship", "load_named", "call",
           "prestart", "close_workers", "shutdown"]
