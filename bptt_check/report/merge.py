"""Joining the reports of a sweep's shards (``bptt-check … --shard K/N``) into the report one run of the whole
sweep writes: ``bptt-check merge DIR…``.

Every case is drawn from (spec, seed, index) alone and checked the same way in any shard, so the joined
report holds the very records the single run would, in its order (spec by spec as the run checks them,
index by index). Two things a shard cannot know are settled here, as the single run settles them: the
failed cases after the first ``EVIDENCE_LIMIT`` of a spec get the cheap evidence (each shard gave the full
one to its own first failures: a superset of the sweep's), and the header is the sweep's. What differs
from a single run's report is only when and how long: ``created``, ``seconds`` (here the sum of the
shards'), each case's ``seconds``; the joined report adds ``merged`` (which shards, from which files,
their seconds) and has no ``shard``.

The shards are checked first, and refused with what, which files and what to do: not a shard's report,
made by another version, of another sweep (any option but --report-dir, --format, --progress and --shard
differs: seed, specs, TARGET, cases, oracles …), shards given twice or missing, an interrupted shard, a
case that is not where its shard and spec put it. Reading and writing go a case at a time (CaseLog):
memory stays flat in the number of cases.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..verdict import evidence
from ..version import __version__
from .build import SCHEMA, report_dict
from .log import CaseLog
from .text import spec_text

# the options of the sweep that only say where or how the results are shown (not compared)
_SHOWN_ONLY = ("report_dir", "format", "progress", "shard")


def merge(reports: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The report of the whole sweep from ``(name, report)`` of each shard (``open_report``); UsageError
    when they are not the N shards of one sweep."""
    if not reports:
        raise UsageError("bptt-check merge: give the report of every shard (their report.json files or the "
                         "folders holding them)")
    _check_shards(reports)
    first = reports[0][1]
    count = first["shard"]["count"]
    by_index = {r["shard"]["index"]: (name, r) for name, r in reports}
    jobs = first["shard"]["jobs"]
    cases = CaseLog()
    streams = {k: iter(r["cases"]) for k, (name, r) in by_index.items()}
    for job in jobs:
        failed = 0
        for index in range(job["cases"]):
            k = index % count + 1
            name = by_index[k][0]
            record = next(streams[k], None)
            where = f"case {index} of {job['target'] or '(Python API)'} [{spec_text(job['spec'])}]"
            if record is None or record.get("index") != index or record.get("target") != job["target"] \
                    or record.get("spec") != job["spec"]:
                got = ("nothing more" if record is None else
                       f"case {record.get('index')} of {record.get('target')} [{spec_text(record.get('spec') or {})}]")
                raise UsageError(f"{name} (shard {k}/{count}) should hold {where} next, but holds {got}: the file "
                                 "was edited or cut; run that shard again")
            if record.get("status") == "failed":
                if failed >= evidence.EVIDENCE_LIMIT and record.get("evidence"):
                    record = {**record, "evidence": evidence.cheapen(record["evidence"], record.get("diagnosis") or [])}
                failed += 1
            cases.append(record)
    for k, stream in streams.items():
        extra = next(stream, None)
        if extra is not None:
            raise UsageError(f"{by_index[k][0]} (shard {k}/{count}) holds case {extra.get('index')} of "
                             f"{extra.get('target')} [{spec_text(extra.get('spec') or {})}], which its sweep does "
                             "not: the file was edited; run that shard again")
    argv = _without_shard(first.get("argv"))
    seconds = [float(by_index[k][1].get("seconds") or 0.0) for k in sorted(by_index)]
    data = report_dict(cases, seed=first["seed"], oracles=first["oracles"], seconds=sum(seconds), argv=argv,
                       interrupted=False,
                       merged={"shards": count, "from": [by_index[k][0] for k in sorted(by_index)],
                               "seconds": seconds})
    data["version"] = first["version"]
    if isinstance(first.get("platform"), dict):
        data["platform"] = first["platform"]
    return data


def _check_shards(reports: Sequence[tuple[str, dict[str, Any]]]) -> None:
    for name, r in reports:
        shard = r.get("shard")
        if not isinstance(shard, dict):
            what = "the joined report of a sweep" if r.get("merged") else "not the report of a shard"
            raise UsageError(f"{name} is {what} (it has no \"shard\" field): merge joins the reports of "
                             "`bptt-check … --shard K/N` runs, K = 1 … N")
        if not isinstance(shard.get("sweep"), dict) or not isinstance(shard.get("jobs"), list):
            raise UsageError(f"{name} is shard {_k(r)} of a check made from Python (check(..., shard=)), which "
                             "does not record its sweep: merge joins the reports of `bptt-check … --shard K/N` "
                             "runs; join Python shards' cases yourself")
        if r.get("schema") != SCHEMA or r.get("version") != __version__:
            raise UsageError(f"{name} was written by bptt-check {r.get('version')} (report schema "
                             f"{r.get('schema')}); this is bptt-check {__version__} (schema {SCHEMA}): run every "
                             "shard and the merge with one version")
        if r.get("interrupted"):
            raise UsageError(f"{name} (shard {_k(r)}) was interrupted: it holds only part of its cases; "
                             "run that shard again")
    name0, r0 = reports[0]
    for name, r in reports[1:]:
        if r["shard"]["count"] != r0["shard"]["count"]:
            raise UsageError(f"{name0} is shard {_k(r0)} and {name} shard {_k(r)}: the shards of one sweep share "
                             "N; run them all with --shard K/N for one N")
        diff = _differences(r0["shard"]["sweep"], r["shard"]["sweep"])
        if r.get("seed") != r0.get("seed"):
            diff.insert(0, f"--seed {r0.get('seed')} vs {r.get('seed')}")
        if not diff and r["shard"]["jobs"] != r0["shard"]["jobs"]:
            diff.append("the specs checked")
        if diff:
            raise UsageError(f"{name0} and {name} are not shards of one sweep ({'; '.join(diff[:4])}): run every "
                             "shard with the same command apart from --shard (and --report-dir, --format, "
                             "--progress)")
    seen: dict[int, str] = {}
    for name, r in reports:
        k = r["shard"]["index"]
        if k in seen:
            raise UsageError(f"shard {_k(r)} is given twice: {seen[k]} and {name}; give each shard's report once")
        seen[k] = name
    count = r0["shard"]["count"]
    missing = [k for k in range(1, count + 1) if k not in seen]
    if missing:
        again = _without_shard(r0.get("argv"), ("--shard", "--report-dir")) or ["bptt-check", "…"]
        cmd = shlex.join([*again, "--shard", f"{missing[0]}/{count}", "--report-dir", f"shard-{missing[0]}"])
        raise UsageError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{k}/{count}' for k in missing[:10])}"
                         f"{' …' if len(missing) > 10 else ''} missing ({len(seen)} of {count} given): give "
                         f"{'their reports' if len(missing) > 1 else 'its report'} too, made by e.g. {cmd}")


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key in [*a, *(k for k in b if k not in a)]:
        if key in _SHOWN_ONLY or a.get(key) == b.get(key):
            continue
        flag = "TARGET" if key == "target" else "--" + key.replace("_", "-")
        out.append(f"{flag} {_value(a.get(key))} vs {_value(b.get(key))}")
    return out


def _value(v: Any) -> str:
    if v is None:
        return "(not given)"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def _k(r: dict[str, Any]) -> str:
    return f"{r['shard'].get('index')}/{r['shard'].get('count')}"


def _without_shard(argv: Any, flags: tuple[str, ...] = ("--shard",)) -> list[str] | None:
    """A shard's command line as the whole sweep's: ``--shard K/N`` (or ``--shard=K/N``) taken out (and any
    other of ``flags`` with its value)."""
    if not isinstance(argv, list):
        return None
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        flag, eq, _ = a.partition("=")
        if len(flag) >= 4 and any(f.startswith(flag) for f in flags):      # argparse takes --sh, --sha … too
            skip = not eq
            continue
        out.append(a)
    return out
