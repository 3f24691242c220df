"""Importing an object by name — ``path/to/file.py:NAME`` or ``package.module:NAME`` — as the command line
names a TARGET and a spec names a cell of your own. Importing your module runs your code: every failure
is a :class:`~bptt_check.errors.UsageError` that says what and where."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from .errors import UsageError


def import_object(text: str) -> Any:
    """The object ``path/to/file.py:NAME`` or ``package.module:NAME`` names (a TARGET, a cell)."""
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
            raise UsageError(f"importing {where!r} failed: {type(exc).__name__}: {exc}") from exc
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
            raise UsageError(f"importing {where!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        fn = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise UsageError(f"{where!r} has no attribute {attr!r}; "
                         f"callables there: {', '.join(public) or 'none'}") from None
    return fn
