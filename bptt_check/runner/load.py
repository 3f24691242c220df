"""Loading a TARGET named on the command line: ``path/to/file.py:function`` or ``package.module:function``.

Importing the user's module runs the user's code, so it lives in the runner. A TARGET may name a
canonical backward, an adapted one (``backward = bptt_check.adapt(...)``), or a function without
required arguments that returns one (a factory), which :func:`resolve` calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from ..importer import import_object
from .adapters import Adapted


def load_target(text: str) -> Callable[..., Any]:
    """Load ``path/to/file.py:function`` or ``package.module:function``."""
    fn = load_object(text)
    if not callable(fn):
        raise UsageError(f"{text!r} is a {type(fn).__name__}, not a function")
    return fn


def load_object(text: str) -> Any:
    """Load the object ``path/to/file.py:NAME`` or ``package.module:NAME`` names (a TARGET, a cell)."""
    return import_object(text)


def _no_required_args(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in sig.parameters.values())


def resolve(obj: Any) -> Callable[..., Any]:
    """The backward a TARGET names: itself, or what a factory without required arguments returns."""
    if isinstance(obj, Adapted) or not _no_required_args(obj):
        return obj
    try:
        fn = obj()
    except Exception as exc:
        raise UsageError(f"calling the TARGET factory {getattr(obj, '__name__', obj)}() failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not callable(fn):
        raise UsageError(f"the TARGET factory returned {type(fn).__name__}, not a backward")
    return fn
