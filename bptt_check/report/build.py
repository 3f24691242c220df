"""The report of a run as plain data (schema 3): built once from the case records, the source of truth
every renderer reads. Shared by the command line, the Python API and the pytest plugin.

Schema 3 (schema 2 plus): a passed case's record is brief (:func:`case_record`: at most
:data:`BRIEF_BYTES` bytes of JSON, ``"brief": true``), every other case keeps its whole record; a shard
of a sweep says so in ``"shard"``, a report joined from shards in ``"merged"``.
"""

from __future__ import annotations

import datetime
import json
import platform
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..model.tolerance import EXACT_TOLERANCE, ORACLE_TOLERANCE, TOLERANCES
from ..verdict.result import STATUSES, run_passed
from ..version import __version__
from .log import summary_of

SCHEMA = 3
READABLE_SCHEMAS = (2, 3)       # what ``bptt-check show`` reads (schema 2: every case in full)
BRIEF_BYTES = 1024              # the most a passed case takes in report.json
_HEAVY = ("oracles", "diagnosis", "evidence")     # what only a case that is not plainly right needs


def counts_of(cases: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = {k: 0 for k in STATUSES}
    for c in cases:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    return counts


def case_record(record: dict[str, Any]) -> dict[str, Any]:
    """What ``report.json`` keeps of a case (the record of ``CaseResult.to_dict``): a passed case's brief
    record (:func:`brief`), every other case's whole record."""
    return brief(record) if record.get("status") == "passed" else record


def brief(record: dict[str, Any], limit: int = BRIEF_BYTES) -> dict[str, Any]:
    """A passed case in at most ``limit`` bytes of JSON: :func:`compact`, then its notes and captured output
    cut (ending in "…") if they do not fit. What is dropped is what a right case does not need to prove it
    right: it is replayed bit for bit from its spec, seed and index (``bptt-check … --case INDEX``)."""
    out = compact(record)
    texts = [("stdout", None)] if out.get("stdout") else []
    texts += [("notes", i) for i in range(len(out.get("notes") or []))]
    over = len(json.dumps(out, separators=(",", ":"))) - limit
    while over > 0 and texts:
        key, i = max(texts, key=lambda t: len(out[t[0]] if t[1] is None else out[t[0]][t[1]]))
        text = out[key] if i is None else out[key][i]
        if len(text) <= 24:
            break
        short = text[:max(20, len(text) - over - 8)].rstrip() + "…"
        if i is None:
            out[key] = short
        else:
            out[key] = [*out[key][:i], short, *out[key][i + 1:]]
        over = len(json.dumps(out, separators=(",", ":"))) - limit
    return out


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """A passed case's record without what only a wrong case needs — the oracles' agreement, the
    diagnosis, the evidence, empty output — and per gradient only ``passed`` and ``max_rel_err`` (3
    significant digits); marked ``"brief": true``. The Python API keeps passed cases this way."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k in _HEAVY or (k == "stdout" and not v) or k == "brief":
            continue
        if k == "params":
            v = {n: {"passed": bool(g.get("passed")), "max_rel_err": _digits(g.get("max_rel_err"))}
                 for n, g in v.items()}
        out[k] = v
        if k == "status":
            out["brief"] = True
    out.setdefault("brief", True)
    return out


def _digits(v: Any, n: int = 3) -> Any:
    return float(f"{v:.{n}g}") if isinstance(v, float) else v


def report_dict(cases: Sequence[dict[str, Any]], *, seed: int, oracles: Sequence[str], seconds: float,
                argv: Sequence[str] | None, **extra: Any) -> dict[str, Any]:
    """The report of a run from its case records (a list, or a :class:`~.log.CaseLog` whose summary was kept
    as the cases came)."""
    summary = summary_of(cases)
    return {
        "schema": SCHEMA,
        "tool": "bptt-check",
        "version": __version__,
        "argv": list(argv) if argv else None,
        "command": shlex.join(argv) if argv else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": {"python": platform.python_version(), "numpy": np.__version__},
        "specs": summary.specs,
        "targets": summary.targets,
        "passed": run_passed(summary.counts),
        "counts": {**{k: 0 for k in STATUSES}, **summary.counts},
        "seed": seed,
        "oracles": list(oracles),
        "tolerances": tolerance_table(sorted(summary.dtypes)),
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
