"""Options defined once, shared by the command line and the pytest plugin.

The CLI spells them ``--name``; the pytest plugin exposes the run-level ones
as ``--bptt-name`` (see ``plugin.py``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .api import MAX_DIRECTIONS
from .errors import BPTTCheckError
from .model.shard import Shard
from .model.spec import ACTIVATIONS, DTYPES, LOSSES, MODES, OUTPUTS, REDUCTIONS, SIZE_NAMES, Sizes
from .oracles.autograd import device_problem
from .report import parse_formats
from .runner.call import DEFAULT_TIMEOUT
from .runner.target import DEFAULT_ISOLATE, isolation


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _formats(text: str) -> str:
    try:
        return ",".join(parse_formats(text))
    except BPTTCheckError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:   # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds (0: no limit), got {text!r}")
    return value


def _device(text: str) -> str:
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _sizes(text: str) -> str:
    try:
        Sizes.parse(text)
    except BPTTCheckError as err:
        raise argparse.ArgumentTypeError(err.message) from None
    return text


def _tie(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.replace("=", ",").split(",") if n.strip())
    if len(names) < 2 or len(set(names)) != len(names) or any(n not in SIZE_NAMES for n in names):
        raise argparse.ArgumentTypeError(f"expected two or more of {', '.join(SIZE_NAMES)}, e.g. I,O; got {text!r}")
    return names


def _isolate(text: str) -> str:
    try:
        return isolation(text)
    except BPTTCheckError as err:
        raise argparse.ArgumentTypeError(err.message) from None


PROGRESS = ("auto", "bar", "lines", "none")


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except BPTTCheckError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def _directions(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_DIRECTIONS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DIRECTIONS}, got {value}")
    return value


@dataclass(frozen=True)
class Option:
    name: str                      # the dest, and the CLI flag without dashes
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    flag: bool = False             # a store_true/store_false switch
    spec: bool = False             # part of the spec (vs. how the run is done)
    run: bool = False              # shared with the pytest plugin as --bptt-<name>
    output: bool = False           # only where or how the results are shown: the shards of one sweep may differ

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("cell", "the recurrent cell: rnn, lstm, gru (gru:z=n for h = (1-z)h + zn, gru:reset=before for the "
                   "reset before the recurrent matmul), or your own cell as path.py:NAME or module:NAME",
           "rnn", spec=True),
    Option("mode", "what the loss covers", "many-to-many", choices=MODES, spec=True),
    Option("truncation", "none, window:K, tbptt:K1,K2, chunk:K or window-loss:K1,K2", "none", spec=True),
    Option("activation", "hidden activation f", "tanh", choices=ACTIVATIONS, spec=True),
    Option("output", "output function g", "identity", choices=OUTPUTS, spec=True),
    Option("loss", "per-step loss", "half_mse", choices=LOSSES, spec=True),
    Option("reduction", "over batch and time: sum, mean, mean_batch (sum over time, mean over batch), "
                        "mean_time", "sum", choices=REDUCTIONS, spec=True),
    Option("no_bias", "the model has no biases b and c", False, flag=True, spec=True),
    Option("dtype", "the dtype your backward computes in", "float64", choices=DTYPES, spec=True),
    # issue 16: real code as it comes
    Option("sizes", "the ranges cases are drawn from, any subset of T=3:8,B=1:3,I=1:4,H=2:5,O=1:3 "
                    "(NAME=N or NAME=LO:HI)", None, type=_sizes, spec=True),
    Option("tie", "sizes drawn equal, e.g. I,O for one vocabulary in and out", None, type=_tie, spec=True),
    Option("lengths", "padded batches: each case draws per-sequence lengths 1 <= l <= T, passed to your "
                      "backward as lengths=", False, flag=True, spec=True),
    Option("no_output_layer", "no dense layer: the hidden states are the output (no V, c)", False,
           flag=True, spec=True),
    Option("cases", "random cases per checked spec", 20, type=_positive_int, run=True),
    Option("seed", "seed of the random cases (a case is replayed from seed and index)", 0,
           type=_nonnegative_int, run=True),
    Option("report_dir", "folder the report is written to", "reports", run=True, output=True),
    Option("oracle", "comma-separated oracles, the first is the reference: autograd, complex-step, fd "
                     "(element-wise), directional (k random projections, a witness only); "
                     "full element-wise verification: fd,complex-step,autograd", "autograd,directional", run=True),
    Option("fast", "fast mode: k random projections of the gradients against the complex step, per gradient "
                   "and element-wise only where one fails (no torch)", False, flag=True, run=True),
    Option("directions", "k, the random directions of the directional witness and of --fast",
           4, type=_directions, run=True),
    # issue 3: the report and the terminal
    Option("format", "comma-separated report formats written to the report folder: json, md, junit, html "
                     "(or all)", "json,md,junit,html", type=_formats, run=True, output=True),
    Option("case", "check only case N of the seed (what a report's reproducer line uses)", None,
           type=_nonnegative_int),
    Option("progress", "per-case feedback: a progress bar (on a terminal), one line per case, or none",
           "auto", choices=PROGRESS, output=True),
    # robustness (issue 7): a backward that hangs is reported as timed out and the run goes on
    Option("timeout", "seconds one call of your backward may take before its case is reported as timed "
                      "out; the re-runs of a case (evidence, diagnosis) share one more such limit (0: no limit)",
           DEFAULT_TIMEOUT, type=_seconds, run=True),
    # isolation (issue 13): where your backward runs
    Option("isolate", "where your backward runs: process (a worker process of its own: a crash, a hang in C code, "
                      "os._exit or patched modules cannot reach the check), thread (in this process, under the "
                      "time limit), none (in the main thread, no limit: for a debugger)", DEFAULT_ISOLATE,
           type=_isolate, run=True),
    # issue 14: the autograd reference on a GPU, for large cases
    Option("device", "torch device of the autograd reference: cpu, cuda or cuda:N (the other oracles and "
                     "--fast run on the CPU)", "cpu", type=_device),
    # issue 14: sweeps past one machine
    Option("shard", "K/N: check only shard K of N of the case indices (i mod N = K - 1) of every checked spec, "
                    "each case exactly as the whole run checks it; join the N reports with bptt-check merge",
           None, type=_shard, output=True),
)


def sweep_options(values: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs shards of one sweep, from parsed option values: every option that changes what is
    checked or how (all but --report-dir, --format, --progress, --shard; --case picks a single case), as plain
    JSON data."""
    out = {o.name: values.get(o.name) for o in OPTIONS if not o.output and o.name != "case"}
    return json.loads(json.dumps(out, default=str))


def add_to_argparse(parser: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        if opt.flag:
            parser.add_argument(opt.cli, dest=opt.name, action="store_true", default=opt.default, help=opt.help)
        else:
            parser.add_argument(opt.cli, dest=opt.name, default=opt.default, type=opt.type,
                                choices=opt.choices, help=opt.help + f" (default: {opt.default})")


def default(name: str) -> Any:
    """The default of an option."""
    return next(o.default for o in OPTIONS if o.name == name)


def spec_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Spec keywords from parsed option values."""
    out = {}
    for opt in OPTIONS:
        if not opt.spec or opt.name not in values:
            continue
        if opt.name == "no_bias":
            out["bias"] = not values["no_bias"]
        elif opt.name == "no_output_layer":
            out["output_layer"] = not values["no_output_layer"]
        elif opt.name == "sizes":
            if values["sizes"] is not None:
                out["sizes"] = Sizes.parse(values["sizes"])
        elif opt.name == "tie":
            if values["tie"] is not None:
                out["tie"] = tuple(values["tie"])
        else:
            out[opt.name] = values[opt.name]
    return out
