"""The ``bptt-check`` command.

    bptt-check [TARGET] [--mode ...] [--truncation ...] [--cases N] [--seed S] [--report-dir DIR]

TARGET is ``path/to/file.py:function`` or ``package.module:function``: a
backward in the canonical protocol ``grads = backward(params, x, y)``. Without
TARGET the built-in implementations are checked in every mode.

Exit status: 0 every case matches, 1 some gradient is wrong, 2 bad usage or a
TARGET that cannot be loaded, 3 an internal error of bptt-check.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._check import Report, check
from ._errors import BPTTCheckError
from ._io import write_json
from ._options import add_to_argparse, spec_kwargs
from ._spec import Spec, Truncation

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

# the main job without TARGET: (mode, truncation) pairs, each checked with every built-in that implements it
MAIN_JOB: tuple[tuple[str, str], ...] = (
    ("many-to-one", "none"),
    ("many-to-many", "none"),
    ("many-to-many", "window:2"),
    ("many-to-many", "tbptt:2,4"),
    ("many-to-many", "chunk:3"),
    ("many-to-many", "window-loss:2,3"),
    ("many-to-one", "window:3"),
    ("many-to-one", "tbptt:2,3"),
)


class UsageError(Exception):
    """Bad usage: exit 2 with one line."""


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
        except Exception as exc:
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
        except Exception as exc:
            raise UsageError(f"importing {where!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        fn = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise UsageError(f"{where!r} has no attribute {attr!r}; "
                         f"callables there: {', '.join(public) or 'none'}") from None
    if not callable(fn):
        raise UsageError(f"{text!r} is a {type(fn).__name__}, not a function")
    return fn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bptt-check",
        description="Verify a hand-written backward pass through time against autograd and finite differences.",
        epilog="Exit status: 0 all gradients match, 1 a gradient is wrong, 2 bad usage, 3 internal error.",
    )
    parser.add_argument("target", nargs="?", metavar="TARGET",
                        help="path/to/file.py:function or package.module:function; "
                             "without it the built-in implementations are checked in every mode")
    add_to_argparse(parser)
    parser.add_argument("--version", action="version", version=f"bptt-check {__version__}")
    return parser


def _jobs(args: argparse.Namespace, given: set[str]) -> list[tuple[str, Callable[..., Any], Spec]]:
    base = spec_kwargs(vars(args))
    if args.target:
        fn = load_target(args.target)
        return [(args.target, fn, Spec(**base))]
    from .builtin import BUILTINS, supports

    pairs = [(m, t) for m, t in MAIN_JOB
             if ("mode" not in given or m == args.mode)
             and ("truncation" not in given or Truncation.parse(t) == Truncation.parse(args.truncation))]
    if not pairs:  # a mode/truncation the main job does not list: check exactly that
        pairs = [(args.mode, args.truncation)]
    jobs = []
    for mode, trunc in pairs:
        spec = Spec(**{**base, "mode": mode, "truncation": trunc})
        for name, fn in BUILTINS.items():
            if supports(name, spec):
                jobs.append((f"builtin:{name}", fn, spec))
    return jobs


def _given(argv: Sequence[str]) -> set[str]:
    out = set()
    for a in argv:
        if a.startswith("--"):
            out.add(a[2:].split("=", 1)[0].replace("-", "_"))
    return out


def run(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        oracles = tuple(o.strip() for o in args.oracle.split(",") if o.strip())
        from .oracles import ORACLES

        unknown = [o for o in oracles if o not in ORACLES]
        if not oracles or unknown:
            raise UsageError(f"unknown oracle(s) {unknown or args.oracle!r}; choose from {', '.join(ORACLES)}")
        if oracles[0] == "directional" and not args.fast:
            raise UsageError("the first oracle is the reference and must give every element: put autograd, "
                             "complex-step or fd first (e.g. --oracle autograd,directional), or use --fast")
        jobs = _jobs(args, _given(argv))
    except (UsageError, BPTTCheckError) as err:
        msg = err.message if isinstance(err, BPTTCheckError) else str(err)
        print(f"bptt-check: error: {msg.splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE

    start = time.perf_counter()
    cases = []
    for name, fn, spec in jobs:
        report = check(fn, spec, cases=args.cases, seed=args.seed, oracles=oracles, target=name,
                       on_case=lambda r: print(r.summary(), flush=True), fast=args.fast,
                       directions=args.directions)
        cases.extend(report.cases)
    used = report.oracles if jobs else oracles
    total = Report(cases, args.seed, used, time.perf_counter() - start, argv=["bptt-check", *argv])
    path = write_json(Path(args.report_dir) / "report.json", total.to_dict())
    print(total.summary())
    print(f"report: {path}")
    return EXIT_OK if total.passed else EXIT_FINDINGS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except KeyboardInterrupt:
        print("bptt-check: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print("bptt-check: internal error (a bug in bptt-check, please report it):", file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
