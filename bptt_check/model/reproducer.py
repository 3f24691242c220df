"""How to replay one case: the one builder of every reproducer bptt-check prints.

A case is ``(spec, seed, index)``: :func:`bptt_check.draw_case` gives it back bit for bit. A
reproducer says so as code that runs when pasted, from the folder the check ran in:

- ``cli``: a shell line (``bptt-check TARGET ... --seed S --case N``), for a backward the command
  can load by name (``path/to/file.py:name``, ``package.module:name``, a built-in);
- ``python``: a snippet for a fresh Python session (one statement a line), and ``oneline``: the
  same statements joined by ``; `` for a message (an exception, the terminal).

A backward given as a Python object is named by :func:`target_name` when it can be imported again
(a module-level function or adapted object: ``module:name``, or ``file.py:name`` for a file in the
working folder that is not importable as a module). One that cannot be named (a closure, a lambda,
something defined in ``__main__`` or in an interactive session) gets a Python reproducer whose
first line binds ``backward = ...`` with a comment saying what to put there; everything else in it
runs as printed, and there is no shell line.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from .spec import Sizes, Spec, Truncation

SIZE_NAMES = ("T", "B", "I", "H", "O")
DEFAULT_ORACLES = ("autograd", "directional")
# what the line that binds ``backward`` says when the backward has no name a fresh session can import
REPLACE = "backward = ...  # replace ... with your backward"


def spec_source(spec: Spec) -> str:
    """``Spec(...)`` with only the fields that differ from the defaults: short, and valid Python."""
    default = Spec()
    parts = []
    for f in dataclasses.fields(Spec):
        value = getattr(spec, f.name)
        if value == getattr(default, f.name):
            continue
        if isinstance(value, Truncation):
            value = str(value)
        elif isinstance(value, Sizes):
            value = {k: getattr(value, k) for k in SIZE_NAMES}      # Spec takes sizes as a dict
        parts.append(f"{f.name}={value!r}")
    return f"Spec({', '.join(parts)})"


def case_source(spec: Spec, seed: int, index: int) -> str:
    """The expression that draws the case again: ``bptt_check.draw_case(bptt_check.Spec(...), seed=…, index=…)``."""
    return f"bptt_check.draw_case(bptt_check.{spec_source(spec)}, seed={seed}, index={index})"


def made_case_source(spec: Spec, seed: int, shapes: dict[str, int]) -> str:
    """The expression that rebuilds a case drawn with explicit shapes (``bptt_check.strategies.make_case``)."""
    sizes = ", ".join(f"{n}={shapes[n]}" for n in SIZE_NAMES)
    return f"bptt_check.strategies.make_case(bptt_check.{spec_source(spec)}, seed={seed}, {sizes})"


# ----------------------------------------------------------------- naming the backward

def loadable(target: str) -> bool:
    """Whether ``target`` is a name the command line (and :func:`import_lines`) can load."""
    where, sep, attr = (target or "").rpartition(":")
    return bool(sep and where and attr.isidentifier())


def _module_path(name: str, file: str, cwd: str) -> bool:
    """Whether module ``name`` is the file ``file`` as seen from ``cwd`` (so ``import name`` finds it there)."""
    base = os.path.join(cwd, *name.split("."))
    return os.path.normcase(file) in {os.path.normcase(base + ".py"),
                                      os.path.normcase(os.path.join(base, "__init__.py"))}


def target_name(obj: Any, cwd: str | None = None) -> str | None:
    """A TARGET naming ``obj`` that a fresh session started in ``cwd`` can load, or None.

    The object must be a module-level attribute of the module it was defined in (found by identity,
    so ``du_from_t1 = mutant("du_from_t1")`` is named ``du_from_t1``). The module is named
    ``module:name`` when importing it from ``cwd`` (or from an installed package) finds the same
    file, ``file.py:name`` (relative to ``cwd`` when inside it) when it is a lone file that is not
    importable by its module name (e.g. a test file pytest imported with its folder on sys.path).
    ``__main__`` and interactive sessions are never named: loading them again would re-run a script.
    """
    cwd = os.path.abspath(cwd or os.getcwd())
    try:
        holders = (obj, getattr(obj, "fn", None), getattr(obj, "__wrapped__", None))
        own = [getattr(h, "__module__", None) for h in holders]
    except Exception:         # an object whose attributes raise cannot be named
        return None
    # the modules that define it (or the function it wraps) first, then the user's modules in cwd: a
    # backward made by a factory (``wrong = mutant("du_from_t1")``) is named where it is bound
    local = [name for name, m in list(sys.modules.items())
             if os.path.normcase(str(getattr(m, "__file__", None) or "")).startswith(os.path.normcase(cwd + os.sep))
             and os.sep + "site-packages" + os.sep not in str(getattr(m, "__file__", ""))]
    seen: set[str] = set()
    for modname in [*own, *local]:
        if not isinstance(modname, str) or modname in seen or modname == "__main__":
            continue
        seen.add(modname)
        module = sys.modules.get(modname)
        file = getattr(module, "__file__", None)
        if module is None or not isinstance(file, str):
            continue
        attr = next((k for k, v in list(vars(module).items()) if v is obj and k.isidentifier()), None)
        if attr is None:
            continue
        file = os.path.abspath(file)
        inside = os.path.normcase(file).startswith(os.path.normcase(cwd + os.sep))
        installed = any(part in ("site-packages", "dist-packages") for part in file.split(os.sep))
        by_file = modname.startswith("_bptt_target_") or ("." not in modname and (
            not _module_path(modname, file, cwd) if inside else not installed))
        if by_file:                 # a lone file, not importable by its module name from cwd: name the file
            return f"{os.path.relpath(file, cwd) if inside else file}:{attr}"
        return f"{modname}:{attr}"
    return None


def import_lines(target: str) -> list[str]:
    """The Python lines that bind ``backward`` to the checked function, from its TARGET name."""
    if target.startswith("builtin:"):
        return [f"from bptt_check.builtin import {target.split(':', 1)[1]} as backward"]
    if loadable(target):
        return ["from bptt_check.runner.load import load_target, resolve",
                f"backward = resolve(load_target({target!r}))"]
    return [f"{REPLACE}: {target or 'it'} cannot be imported by name"]


def cli_target(target: str) -> str | None:
    """The CLI's TARGET for a checked function's name (None: the CLI cannot load it by name)."""
    if target.startswith("builtin:"):
        return f"bptt_check.builtin.{target.split(':', 1)[1]}:backward"
    return target if loadable(target) else None


def check_source(oracles: Sequence[str] | None = DEFAULT_ORACLES, *, fast: bool = False,
                 directions: int | None = None) -> str:
    """The keywords of ``check_case`` that check the case the way it was checked."""
    how = []
    if fast:
        how.append("fast=True")
    elif oracles is not None and tuple(oracles) != DEFAULT_ORACLES:
        how.append(f"oracles={tuple(oracles)!r}")
    if directions is not None:
        how.append(f"directions={directions}")
    return "".join(", " + h for h in how)


def python_lines(target: str, case: str, how: str = "") -> list[str]:
    """The statements of the Python reproducer: import, bind ``backward``, draw the case, check and print."""
    first = "import bptt_check.strategies" if "bptt_check.strategies." in case else "import bptt_check"
    return [first, *import_lines(target), f"case = {case}",
            f"print(bptt_check.check_case(backward, case{how}).summary())"]


def oneline(lines: Sequence[str]) -> str:
    """Python statements on one line (``a; b; c``): pasted into a fresh session it runs them all. A
    trailing comment (the ``backward = ...`` line) goes last, where it cannot swallow a statement."""
    code, notes = [], []
    for line in lines:
        stmt, hash_, note = line.partition("  # ")
        code.append(stmt)
        if hash_:
            notes.append(note)
    return "; ".join(code) + ("  # " + "; ".join(notes) if notes else "")


def expression(spec: Spec, seed: int, index: int, target: str = "", case: str | None = None,
               oracles: Sequence[str] | None = None, fast: bool = False) -> str:
    """One line of Python that re-checks the case in a fresh session (``case``: an expression that
    rebuilds a case not drawn by ``draw_case``)."""
    return oneline(python_lines(target, case or case_source(spec, seed, index),
                                check_source(oracles, fast=fast)))


def reproducer(spec: Spec, seed: int, index: int, target: str, oracles: Sequence[str], *,
               fast: bool = False, directions: int | None = None) -> dict[str, Any]:
    """A Python snippet, its one-line form and a CLI line that re-run only this case, checked the same way."""
    lines = python_lines(target, case_source(spec, seed, index),
                         check_source(oracles, fast=fast, directions=directions))
    where = cli_target(target)
    cli = note = None
    if where is not None:
        args = ["bptt-check", where, *spec.cli_args(), "--seed", str(seed), "--case", str(index)]
        if fast:
            args.append("--fast")
        elif tuple(oracles) != DEFAULT_ORACLES:
            args += ["--oracle", ",".join(oracles)]
        if directions is not None:
            args += ["--directions", str(directions)]
        cli = shlex.join(args)
        if spec.sizes != Sizes():
            note = "the spec's size ranges are not CLI flags: the CLI line draws a different case; use the snippet"
    elif not target.startswith("builtin:"):
        note = (f"{target or 'this backward'} cannot be imported by name (a closure, a lambda or a function "
                "of __main__): in the snippet, replace ... with your backward; no shell line")
    return {"spec": spec.to_dict(), "seed": seed, "index": index, "python": "\n".join(lines),
            "oneline": oneline(lines), "cli": cli, "note": note}
