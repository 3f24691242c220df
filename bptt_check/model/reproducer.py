"""How to replay one case: the one builder of every reproducer bptt-check prints.

A case is ``(spec, seed, index)``: :func:`bptt_check.draw_case` gives it back bit for bit. A
reproducer says so as code that runs when pasted — into a shell (the CLI line, for a backward the
CLI can load by name) or into a fresh Python session (the snippet) — and as one expression for a
message (:func:`expression`).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from typing import Any

from .spec import Sizes, Spec, Truncation

SIZE_NAMES = ("T", "B", "I", "H", "O")


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


def expression(spec: Spec, seed: int, index: int, backward: str = "backward", case: str | None = None) -> str:
    """One expression that re-checks the case: ``bptt_check.check_case(backward, <the case>)``."""
    return f"bptt_check.check_case({backward}, {case or case_source(spec, seed, index)})"


def import_line(target: str) -> str:
    """The Python line that binds ``backward`` to the checked function, from its TARGET name."""
    if target.startswith("builtin:"):
        return f"from bptt_check.builtin import {target.split(':', 1)[1]} as backward"
    if target:
        return f"from bptt_check.cli import load_target\nbackward = load_target({target!r})"
    return "backward = ...  # your backward(params, x, y)"


def cli_target(target: str) -> str | None:
    """The CLI's TARGET for a checked function's name (None: the CLI cannot load it by name)."""
    if target.startswith("builtin:"):
        return f"bptt_check.builtin.{target.split(':', 1)[1]}:backward"
    return target or None


DEFAULT_ORACLES = ("autograd", "directional")


def reproducer(spec: Spec, seed: int, index: int, target: str, oracles: Sequence[str], *,
               fast: bool = False, directions: int | None = None) -> dict[str, Any]:
    """A Python snippet and a CLI line that re-run only this case, checked the same way."""
    how = "fast=True" if fast else f"oracles={tuple(oracles)!r}"
    if directions is not None:
        how += f", directions={directions}"
    py = "\n".join([
        "import bptt_check",
        import_line(target),
        f"case = {case_source(spec, seed, index)}",
        f"print(bptt_check.check_case(backward, case, {how}).summary())",
    ])
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
    return {"spec": spec.to_dict(), "seed": seed, "index": index, "python": py, "cli": cli, "note": note}
