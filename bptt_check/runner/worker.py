"""The worker process that runs the user's code (DESIGN §13), and the zygote it is forked from.

This module runs in the child processes only; the harness side is ``process.py``.

- The **zygote** is started once per harness process (a fresh interpreter that imported bptt_check,
  numpy and cloudpickle, nothing of the user's). On request it forks a **worker**: a clean process
  per backward, ready in milliseconds, that cannot inherit anything another backward did.
- A **worker** loads one backward — unpickled (cloudpickle) or loaded by name like the CLI's TARGET
  (``load.py``), so that importing the user's module runs only here — and then answers calls: on
  the arrays and Spec it receives (its own copies), under :mod:`faulthandler` (a crash or a stack
  dump on SIGUSR1 says where the backward was), its output captured per call and copied to its
  file descriptors 1 and 2, which the harness drains (the last lines before a crash).
- After every call the worker puts back what the harness itself relies on: ``sys.stdout`` and
  ``sys.stderr``, the recursion limit, the working folder. The rest of what the backward does to its
  process stays in its process; a crash, a hang or a kill ends only it.

Replies are plain data (``wire.py``): the harness re-reads everything it judges.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import signal
import socket
import sys
import threading
import time
from typing import Any

import numpy as np

from ..errors import UsageError
from . import wire
from .adapters import Adapted, Layout
from .call import user_frames
from .load import load_target, resolve
from .read import clean, materialize, plain_key
from .target import PROTOCOL, shape_error, signature_problem, takes

_MAX_OUT = 64 * 1024                     # characters of a call's output kept (as in call.py)
# libraries the zygote imports once a worker needed them, so that later workers start with them (importing
# torch takes a second; forking a process that holds it, a few ms more). Libraries, not the user's code.
_PRELOADABLE = ("torch",)


# ----------------------------------------------------------------- dying with the harness

def _die_with_parent(expected: int) -> None:
    """SIGKILL this process when its parent dies (Linux), also while the user's code holds the GIL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != expected:                             # the parent died before prctl took effect
        os._exit(0)


# ----------------------------------------------------------------- frames on a socket

def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _recv_frame(sock: socket.socket, first: bytes = b"") -> Any:
    head = first + _recv_exact(sock, wire.HEADER_SIZE - len(first))
    return pickle.loads(_recv_exact(sock, wire.header_length(head)))


def _send_plain(sock: socket.socket, obj: Any) -> None:
    body = pickle.dumps(obj, protocol=5)
    sock.sendall(len(body).to_bytes(wire.HEADER_SIZE, "little") + body)


# ----------------------------------------------------------------- the zygote

def zygote(control: int, parent: int) -> None:
    """Serve ``fork`` and ``wait`` requests on the control socket until it closes."""
    _die_with_parent(parent)
    me = os.getpid()
    ctl = socket.socket(fileno=control)
    try:
        import cloudpickle  # noqa: F401 - loaded once here, so that every worker has it
    except ImportError:
        pass
    ident = threading.get_ident()
    _send_plain(ctl, {"ready": True, "pid": os.getpid(), "ident": ident})
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)                                       # nothing of the zygote's own goes anywhere
    os.close(devnull)
    statuses: dict[int, int] = {}
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(ctl, wire.HEADER_SIZE, 2)
            if not head:
                break
            msg = _recv_frame(ctl, head)
        except (EOFError, OSError):
            break
        _reap(statuses)
        if msg.get("op") == "fork":
            pid = os.fork()
            if pid == 0:                                      # the worker
                ctl.close()
                _become_worker(fds[0], fds[1], msg, me)
                os._exit(0)                                   # never reached: _become_worker exits
            for fd in fds:
                os.close(fd)
            _send_plain(ctl, {"pid": pid})
        elif msg.get("op") == "import":                       # a library every worker will want (torch)
            for fd in fds:
                os.close(fd)
            done = []
            for name in msg.get("modules") or []:
                if name in _PRELOADABLE:
                    try:
                        __import__(name)
                        done.append(name)
                    except Exception:
                        pass
            _send_plain(ctl, {"imported": done})
        elif msg.get("op") == "wait":
            pid = int(msg["pid"])
            if pid not in statuses:
                try:
                    _, status = os.waitpid(pid, 0)
                    statuses[pid] = _status(status)
                except ChildProcessError:
                    statuses[pid] = 0
            _send_plain(ctl, {"status": statuses.pop(pid)})
        else:
            for fd in fds:
                os.close(fd)
            _send_plain(ctl, {"error": f"unknown request {msg.get('op')!r}"})
    os._exit(0)


def _status(status: int) -> int:
    """An exit code (>= 0) or minus the signal that ended the process."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = _status(status)
        if len(statuses) > 1000:
            statuses.pop(next(iter(statuses)))


# ----------------------------------------------------------------- the worker

class _Capture:
    """``sys.stdout`` / ``sys.stderr`` of a worker: a call's output goes to its buffer, everything is
    also written to the file descriptor (the harness keeps the last lines, for a crash)."""

    encoding = "utf-8"
    errors = "backslashreplace"
    closed = False

    def __init__(self, fd: int, calls: _Calls) -> None:
        self.fd, self.calls = fd, calls

    def write(self, text: Any) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.calls.keep(text)
        try:
            os.write(self.fd, text.encode("utf-8", "backslashreplace"))
        except OSError:
            pass
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:                 # the backward may close its stdout: it stays usable
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _Calls:
    """The output of the call running now (``None`` between calls)."""

    def __init__(self) -> None:
        self.buf: list[str] | None = None
        self.count = 0

    def start(self) -> None:
        self.buf, self.count = [], 0

    def keep(self, text: str) -> None:
        buf = self.buf
        if buf is not None:
            if self.count < _MAX_OUT:
                buf.append(text[: _MAX_OUT - self.count])
            self.count += len(text)

    def stop(self) -> str:
        buf, self.buf = self.buf or [], None
        text = "".join(buf)
        if self.count > _MAX_OUT:
            text += f"\n[... {self.count - _MAX_OUT} more characters not kept]"
        return clean(text, _MAX_OUT + 100)


class _Worker:
    def __init__(self, chan: socket.socket, cwd: str) -> None:
        self.chan, self.cwd = chan, cwd
        self.calls = _Calls()
        self.out, self.err = _Capture(1, self.calls), _Capture(2, self.calls)
        self.limit = sys.getrecursionlimit()
        self.loaded: dict[int, Any] = {}
        self.hows: dict[int, str] = {}

    def restore(self) -> None:
        """Put back what the worker itself relies on, whatever the user's code changed."""
        sys.stdout, sys.stderr = self.out, self.err
        try:
            sys.setrecursionlimit(self.limit)
        except Exception:
            pass
        try:
            if os.getcwd() != self.cwd:
                os.chdir(self.cwd)
        except OSError:
            try:
                os.chdir(self.cwd)
            except OSError:
                pass

    def serve(self) -> None:
        self.restore()
        while True:
            try:
                msg = _recv_frame(self.chan)
            except (EOFError, OSError):
                os._exit(0)
            op = msg.get("op")
            try:
                reply = self.load(msg) if op == "load" else self.call(msg) if op == "call" else {
                    "ok": False, "error": f"unknown request {op!r}"}
            except BaseException as exc:                   # noqa: B036 - a fault of ours: say it, and go on
                self.restore()
                reply = {"ok": False, "error": clean(f"the worker failed: {type(exc).__name__}: {exc}")}
            try:
                _send_plain(self.chan, reply)
            except BaseException:                          # noqa: B036 - the channel is gone (or the user broke it)
                os._exit(wire.LOST_CHANNEL)

    # ------------------------------------------------------------ load

    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        sys.path[:] = list(msg.get("path") or sys.path)
        how, what = msg["how"]
        self.calls.start()
        try:
            try:
                if how == "name":
                    obj = resolve(load_target(what))
                else:
                    obj = pickle.loads(what)
            finally:
                printed = self.calls.stop()
                self.restore()
        except BaseException as exc:                       # noqa: B036 - anything the user's import does
            usage = isinstance(exc, UsageError)
            text = clean(exc.message) if isinstance(exc, UsageError) else user_frames(exc)
            return {"ok": False, "usage": usage, "error": text, "import_error": isinstance(exc, ImportError),
                    "stdout": printed}
        try:
            facts = _facts(obj)
        except Exception as exc:
            return {"ok": False, "usage": True, "error": clean(f"the backward cannot be inspected: "
                                                               f"{type(exc).__name__}: {exc}"), "stdout": printed}
        finally:
            self.restore()
        self.loaded[int(msg["token"])] = obj
        return {"ok": True, "facts": facts, "stdout": printed, "libraries": _libraries()}

    # ------------------------------------------------------------ call

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One call; with ``repeat``, after a first call that returned, its reply is sent at once and a
        second call is made on fresh copies (the harness reads it when it wants it)."""
        params, x, y = msg["params"], msg["x"], msg["y"]
        pristine = {k: v.copy() for k, v in params.items()}, x.copy(), np.array(y, copy=True)
        reply = self.call_once(msg, params, x, y)
        if not msg.get("repeat") or reply["error"] is not None:
            return reply
        reply["more"] = True
        _send_plain(self.chan, reply)
        return self.call_once(msg, {k: v.copy() for k, v in pristine[0].items()}, pristine[1].copy(),
                              pristine[2].copy())

    def call_once(self, msg: dict[str, Any], params: dict[str, Any], x: np.ndarray, y: np.ndarray
                  ) -> dict[str, Any]:
        fn = self.loaded[int(msg["token"])]
        spec, how, lengths = msg["spec"], msg["how"], msg.get("lengths")
        if msg.get("repeat"):
            spec = pickle.loads(pickle.dumps(spec))       # its own copy for each call
        kw: dict[str, Any] = {}
        if "spec" in msg.get("keywords", ()):
            kw["spec"] = spec
        if "lengths" in msg.get("keywords", ()) and lengths is not None:
            kw["lengths"] = np.array(lengths, copy=True)
        before = {k: v.copy() for k, v in params.items()}, x.copy(), np.array(y, copy=True)
        given = dict(params)
        value: Any = None
        error, shaped = None, False
        self.calls.start()
        start = time.perf_counter()
        try:
            if how == "adapted":
                out = fn.run(params, x, y, spec, None if lengths is None else np.array(lengths, copy=True))
                loss = None if out.loss is None else float(out.loss)
                value = ("lowered", wire.result_to_plain(materialize(out.grads)), loss, clean(str(out.source), 500))
            else:
                value = ("result", wire.result_to_plain(materialize(fn(params, x, y, **kw))))
        except BaseException as exc:                       # noqa: B036 - everything the user raises is a finding
            error = user_frames(exc, PROTOCOL)
            try:
                shaped = shape_error(exc)
            except Exception:
                shaped = False
            value = None
        seconds = time.perf_counter() - start
        self.restore()
        printed = self.calls.stop()
        return {"ok": True, "value": value, "error": error, "shape_error": shaped, "stdout": printed,
                "seconds": seconds, "after": _after(before, given, params, x, y), "libraries": _libraries()}


def _libraries() -> list[str]:
    return [name for name in _PRELOADABLE if name in sys.modules]


def _after(before: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray], given: dict[str, np.ndarray],
           params: dict[Any, Any], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The inputs after the call, for the harness's mutation check: an array only where it changed."""
    def changed(now: np.ndarray, old: np.ndarray) -> Any:
        try:
            same = now.shape == old.shape and now.dtype == old.dtype and now.tobytes() == old.tobytes()
        except Exception:
            same = False
        return None if same else wire.encode_array(np.array(now, copy=True))

    keys: list[Any] = []
    try:
        for k in list(params.keys()):
            key = plain_key(k)
            same = isinstance(key, str) and key in given and params.get(key) is given[key]
            keys.append((key if isinstance(key, str) else ("repr", key.text), bool(same)))
    except Exception:
        keys = [(k, False) for k in given]
    return {"given": {k: changed(v, before[0][k]) for k, v in given.items()},
            "keys": keys, "x": changed(x, before[1]), "y": changed(y, before[2])}


def _facts(obj: Any) -> dict[str, Any]:
    """What the harness needs to know about a backward it can only call through this worker."""
    adapted = isinstance(obj, Adapted)
    declared = getattr(obj, "bptt_spec", None)
    try:
        declared_dict = declared.to_dict() if declared is not None else None
    except Exception:
        declared_dict = None
    facts: dict[str, Any] = {
        "adapted": adapted,
        "name": clean(str(getattr(obj, "name", None) or getattr(obj, "__qualname__", None) or type(obj).__name__),
                      200),
        "declared": declared_dict,
        "keywords": [] if adapted else [k for k in ("spec", "lengths") if takes(obj, k)],
        "problems": {flag: signature_problem(obj, lengths=flag) for flag in (False, True)},
    }
    if adapted:
        layout: Layout = obj.layout
        facts["layout"] = {f: getattr(layout, f) for f in Layout.__dataclass_fields__}
        facts["layout"]["names"] = dict(layout.names)
        facts["kind"] = str(obj.kind)
    return facts


def _become_worker(chan_fd: int, out_fd: int, msg: dict[str, Any], zygote_pid: int) -> None:
    """In the forked child: the worker's streams, signals and state, then serve until the channel closes."""
    try:
        os.setsid()                                          # its own process group: killed as a whole
    except OSError:
        pass
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    _die_with_parent(zygote_pid)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    faulthandler.enable(file=2, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=2, all_threads=True, chain=False)
    env = msg.get("env")
    if isinstance(env, dict):
        os.environ.clear()
        os.environ.update(env)
    cwd = str(msg.get("cwd") or os.getcwd())
    try:
        os.chdir(cwd)
    except OSError:
        pass
    sys.path[:] = list(msg.get("path") or sys.path)
    chan = socket.socket(fileno=chan_fd)
    try:
        _Worker(chan, cwd).serve()
    finally:
        os._exit(0)
