"""The report of a run as plain data (schema 2): built once from the case records, the source of truth
every renderer reads. Shared by the command line, the Python API and the pytest plugin."""

from __future__ import annotations

import datetime
import platform
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..model.tolerance import EXACT_TOLERANCE, ORACLE_TOLERANCE, TOLERANCES
from ..verdict.result import run_passed
from ..version import __version__

SCHEMA = 2
STATUSES = ("passed", "failed", "inconclusive", "error", "timeout")


def counts_of(cases: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = {k: 0 for k in STATUSES}
    for c in cases:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    return counts


def report_dict(cases: list[dict[str, Any]], *, seed: int, oracles: Sequence[str], seconds: float,
                argv: Sequence[str] | None, **extra: Any) -> dict[str, Any]:
    """The report of a run from its case records."""
    specs: list[dict[str, Any]] = []
    targets: list[str] = []
    for c in cases:
        if c["spec"] not in specs:
            specs.append(c["spec"])
        if c.get("target", "") not in targets:
            targets.append(c.get("target", ""))
    return {
        "schema": SCHEMA,
        "tool": "bptt-check",
        "version": __version__,
        "argv": list(argv) if argv else None,
        "command": shlex.join(argv) if argv else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": {"python": platform.python_version(), "numpy": np.__version__},
        "specs": specs,
        "targets": targets,
        "passed": run_passed(counts_of(cases)),
        "counts": counts_of(cases),
        "seed": seed,
        "oracles": list(oracles),
        "tolerances": tolerance_table(sorted({c["spec"]["dtype"] for c in cases})),
        "seconds": round(seconds, 6),
        **extra,
        "cases": cases,
    }


def tolerance_table(dtypes: Sequence[str]) -> dict[str, Any]:
    return {
        "user_vs_reference": {d: vars(TOLERANCES[d]) for d in (dtypes or ["float64"]) if d in TOLERANCES},
        "oracle_vs_oracle": vars(ORACLE_TOLERANCE),
        "exact_oracle_vs_oracle": vars(EXACT_TOLERANCE),   # autograd against the complex step
        "why": "element-wise |g-r| <= atol*scale + rtol*|r| + oracle error; scale = max|r| of the "
               "gradient; rtol/atol by the dtype of the backward under test",
    }
