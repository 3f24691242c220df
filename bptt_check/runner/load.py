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

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from ..importer import import_object
from .adapters import Adapted
from .read import clean


def load_target(text: str) -> Callable[..., Any]:
    """Load ``path/to/file.py:function`` or ``package.module:function``."""
    try:
        fn = load_object(text)
    except UsageError as err:      # an import's error, bounded and on one line
        raise UsageError(clean(" ".join(err.message.split()), 2000)) from None
    if not callable(fn):
        raise UsageError(f"{text!r} is a {type(fn).__name__}, not a function")
    return fn


def load_object(text: str) -> Any:
    """Load the object ``path/to/file.py:NAME`` or ``package.module:NAME`` names (a TARGET, a cell)."""
    return import_object(text)


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
