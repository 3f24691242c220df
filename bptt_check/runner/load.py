"""Loading a TARGET named on the command line: ``path/to/file.py:function`` or ``package.module:function``.

Importing the user's module runs the user's code, so it lives in the runner. A TARGET may name a
canonical backward, an adapted one (``backward = bptt_check.adapt(...)``), or a function without
required arguments that returns one (a factory), which :func:`resolve` calls. A function that takes
``*args`` (a decorator's ``wrapper(*args, **kwargs)`` without ``functools.wraps``), or parameters named
``params``, ``x`` and ``y``, is a backward, not a factory.

Under ``--isolate process`` (the default) this runs inside the worker process (``process.load_named``):
whatever the import or the factory does — ``os._exit``, ``sys.exit``, patching modules — happens there.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .adapters import Adapted
from .read import clean


def load_target(text: str) -> Callable[..., Any]:
    """Load ``path/to/file.py:function`` or ``package.module:function``."""
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(f"TARGET {text!r} must be path/to/file.py:function or package.module:function")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"TARGET file {where!r} does not exist (cwd: {os.getcwd()})")
        name = f"_bptt_target_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load {where!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(name, None)
            raise UsageError(f"importing {where!r} failed: {type(exc).__name__}: {_said(exc)}") from exc
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                raise UsageError(f"no module named {where!r} (is it installed, or on PYTHONPATH?)") from exc
            raise UsageError(f"importing {where!r} failed: ModuleNotFoundError: {exc}") from exc
        except (Exception, SystemExit) as exc:
            raise UsageError(f"importing {where!r} failed: {type(exc).__name__}: {_said(exc)}") from exc
    try:
        fn = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise UsageError(f"{where!r} has no attribute {attr!r}; "
                         f"callables there: {', '.join(public) or 'none'}") from None
    if not callable(fn):
        raise UsageError(f"{text!r} is a {type(fn).__name__}, not a function")
    return fn


def _said(exc: BaseException) -> str:
    """What an exception of the user's code says, on one line, bounded."""
    try:
        text = str(exc)
    except Exception:
        text = "<its message could not be shown>"
    return clean(" ".join(text.split()), 500)


def is_factory(fn: Any) -> bool:
    """Whether a TARGET is a factory: callable without arguments, and not a backward that happens to be
    (``wrapper(*args, **kwargs)``, ``backward(params=None, x=None, y=None)``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    params = sig.parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False                       # a decorated backward: wrapper(*args, **kwargs)
    if {"params", "x", "y"} <= set(sig.parameters):
        return False
    return all(p.default is not inspect.Parameter.empty or p.kind is p.VAR_KEYWORD for p in params)


def resolve(obj: Any) -> Callable[..., Any]:
    """The backward a TARGET names: itself, or what a factory without required arguments returns."""
    if isinstance(obj, Adapted) or not is_factory(obj):
        return obj
    try:
        fn = obj()
    except (Exception, SystemExit) as exc:
        raise UsageError(f"calling the TARGET factory {clean(str(getattr(obj, '__name__', 'factory')), 200)}() "
                         f"failed: {type(exc).__name__}: {_said(exc)}") from exc
    if not callable(fn):
        raise UsageError(f"the TARGET factory returned {type(fn).__name__}, not a backward")
    return fn
