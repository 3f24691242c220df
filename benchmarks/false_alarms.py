"""The false-alarm sweep: correct backwards on many random cases, across every flag, must never fail.

    python benchmarks/false_alarms.py --cases 100000 --jobs 2             # the issue 12 sweep (resumable)
    python benchmarks/false_alarms.py --cases 2000 --jobs 2 --seed 7       # a smaller one
    python benchmarks/false_alarms.py --cases 100000 --write-docs          # also record it in docs/verdicts.md
    python benchmarks/false_alarms.py --summary                            # re-read the finished chunks only

Every case draws its flags at random (seeded, so a run is reproducible): mode; truncation (none,
``window:K``, ``tbptt:K1,K2``, ``chunk:K``, ``window-loss:K1,K2`` with windows up to 31 and T up to 40);
activation; every valid output/loss pair (bce included); reduction; biases; float64/float32; the cell
(rnn, lstm, gru in both z conventions and both reset placements); padded batches; ``--fast`` or not; the
oracle order (autograd, fd and complex-step in every order, with or without a directional witness);
and one case in five has its output layer scaled up so that a tanh, sigmoid or softmax output saturates.
It checks one of the hand-written implementations that support the spec (``bptt_check.builtin``) with
``check_case``, exactly as ``bptt-check`` does, and writes the case's record as strict JSON (what the
command writes into ``report.json``).

A false alarm is a ``failed`` or ``error`` verdict on a correct implementation; a crash (what would be
exit status 3: an exception in bptt-check, or a record that is not strict JSON) is counted apart.
``inconclusive`` is neither: the sweep counts it and sorts it by the reason its first note gives.

Work is split into chunks of ``--chunk`` cases, run on ``--jobs`` processes; each finished chunk is
saved under ``benchmarks/results/sweep-SEED/`` (not committed), so a stopped run resumes where it
stopped. The summary goes to ``benchmarks/results/false_alarms.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MAX_WINDOW = 31
MAX_T = 40
OUTPUT_LOSS = tuple((o, lo) for o in ("identity", "tanh", "sigmoid", "softmax") for lo in ("half_mse", "sse")) + (
    ("softmax", "cross_entropy"), ("identity", "cross_entropy"), ("sigmoid", "bce"), ("identity", "bce"))
CELLS = ("rnn",) * 6 + ("lstm", "gru", "gru:z=n", "gru:reset=before")
ORACLE_ORDERS = (
    ("autograd", "directional"), ("autograd",), ("autograd", "fd"), ("autograd", "complex-step"),
    ("fd", "autograd"), ("complex-step", "autograd"), ("fd", "complex-step", "autograd"),
    ("complex-step", "fd", "autograd"), ("autograd", "fd", "complex-step"), ("autograd", "complex-step", "fd"),
    ("fd", "autograd", "complex-step"), ("complex-step", "autograd", "fd"), ("fd", "directional"),
    ("complex-step", "directional"), ("fd",), ("complex-step",),
)
SATURATE = (5.0, 20.0, 100.0)


def _truncation(rng: np.random.Generator) -> str:
    kind = ("none", "window", "tbptt", "chunk", "window-loss")[rng.integers(5)]
    small = rng.random() < 0.5                    # half the windows short (the common case), half up to 31
    top = 6 if small else MAX_WINDOW
    if kind == "none":
        return "none"
    if kind in ("window", "chunk"):
        return f"{kind}:{rng.integers(1, top + 1)}"
    if kind == "tbptt":
        k1 = int(rng.integers(1, top + 1))
        return f"tbptt:{k1},{rng.integers(k1, top + 1)}"
    while True:                                   # window-loss: the bite k1·(k2 // k1 + 1) stays within T
        k1, k2 = int(rng.integers(1, top + 1)), int(rng.integers(1, top + 1))
        if k1 * (k2 // k1 + 1) < MAX_T:
            return f"window-loss:{k1},{k2}"


def draw(seed: int, index: int) -> dict:
    """The flags of sweep case ``index``: a spec, how it is checked, and whether its output saturates."""
    rng = np.random.default_rng([seed, index, 12])
    output, loss = OUTPUT_LOSS[rng.integers(len(OUTPUT_LOSS))]
    long = rng.random() < 0.5
    cell = CELLS[rng.integers(len(CELLS))]
    activation = ("tanh", "sigmoid", "relu", "identity")[rng.integers(4)]
    return {
        "spec": dict(
            mode=("many-to-one", "many-to-many")[rng.integers(2)], truncation=_truncation(rng),
            activation=activation if cell == "rnn" else "tanh", output=output, loss=loss,
            reduction=("sum", "mean", "mean_batch", "mean_time")[rng.integers(4)], bias=bool(rng.integers(2)),
            dtype=("float64", "float32")[rng.integers(2)],
            sizes={"T": (3, MAX_T) if long else (3, 8)},
            cell=cell, lengths=bool(rng.random() < 0.15)),
        "fast": bool(rng.random() < 0.25),
        "oracles": ORACLE_ORDERS[0] if rng.random() < 0.3 else ORACLE_ORDERS[rng.integers(len(ORACLE_ORDERS))],
        "saturate": float(SATURATE[rng.integers(len(SATURATE))]) if rng.random() < 0.2 else 1.0,
    }


def _reason(notes: list[str]) -> str:
    """An inconclusive case's reason, as a short bucket."""
    first = notes[0] if notes else ""
    for prefix in ("coverage", "precision: float32 rounding", "precision: float64 rounding", "precision: d",
                   "a relu pre-activation", "oracles disagree"):
        if first.startswith(prefix):
            return prefix.removesuffix(": d")
    return first.split(":")[0][:60]


def one(seed: int, index: int) -> dict:
    import bptt_check as bc
    from bptt_check.builtin import BUILTINS, supports

    flags = draw(seed, index)
    spec = bc.Spec(**flags["spec"])
    names = [n for n in BUILTINS if supports(n, spec)]
    name = names[index % len(names)]
    how = ("fast " if flags["fast"] else "") + ",".join(flags["oracles"])
    row = {"index": index, "builtin": name, "spec": str(spec), "dtype": spec.dtype, "how": how,
           "saturate": flags["saturate"]}
    start = time.perf_counter()
    try:
        case = bc.draw_case(spec, seed, index)
        if flags["saturate"] != 1.0:
            for k in ("V", "c"):
                if k in case.params:
                    case.params[k] = (case.params[k] * flags["saturate"]).astype(case.params[k].dtype)
        r = bc.check_case(BUILTINS[name], case, oracles=flags["oracles"], fast=flags["fast"], evidence="cheap")
        json.dumps(r.to_dict(), allow_nan=False)     # what report.json holds: strict JSON, or exit 3
    except Exception as exc:  # noqa: BLE001 - a crash of bptt-check is the finding here
        row.update(status="crash", summary=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc()[-2000:])
        return row
    row.update(status=r.status, T=case.T, flavor=case.flavor, seconds=round(time.perf_counter() - start, 4))
    if r.status != "passed":
        row.update(summary=r.summary()[:600], notes=r.notes[:4], reason=_reason(r.notes),
                   reproduce=f"bptt-check bptt_check.builtin:{name} " + _cli(spec, seed, index, flags))
    return row


def _cli(spec, seed: int, index: int, flags: dict) -> str:
    parts = [f"--mode {spec.mode}", f"--truncation {spec.truncation}", f"--activation {spec.activation}",
             f"--output {spec.output}", f"--loss {spec.loss}", f"--reduction {spec.reduction}"]
    if spec.cell != "rnn":
        parts.append(f"--cell {spec.cell}")
    if spec.lengths:
        parts.append("--lengths")
    if not spec.bias:
        parts.append("--no-bias")
    parts += [f"--dtype {spec.dtype}", f"--seed {seed}", f"--case {index}", f"--oracle {','.join(flags['oracles'])}"]
    if flags["fast"]:
        parts.append("--fast")
    if flags["saturate"] != 1.0:
        parts.append(f"(output layer scaled ×{flags['saturate']:g} in benchmarks/false_alarms.py)")
    if spec.sizes.T != (3, 8):
        parts.append(f"(sizes T={spec.sizes.T[0]}..{spec.sizes.T[1]})")
    return " ".join(parts)


def run_chunk(job: tuple[int, int, int, str]) -> str:
    seed, lo, hi, folder = job
    rows = [one(seed, i) for i in range(lo, hi)]
    path = Path(folder) / f"chunk-{lo:07d}-{hi:07d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_chunk_summary(rows)))
    tmp.replace(path)                                 # a chunk is done when its file exists
    return path.name


def _chunk_summary(rows: list[dict]) -> dict:
    """What a chunk keeps: counts, and every case that did not pass (passed cases only as numbers)."""
    return {"cases": len(rows), "seconds": round(sum(r.get("seconds", 0.0) for r in rows), 2),
            "counts": dict(collections.Counter(r["status"] for r in rows)),
            "by_dtype": dict(collections.Counter(f"{r['dtype']}/{r['status']}" for r in rows)),
            "fast": sum(r["how"].startswith("fast") for r in rows),
            "cells": sum(r["spec"].startswith(("lstm", "gru")) for r in rows),
            "padded": sum(" lengths" in r["spec"] for r in rows),
            "saturated": sum(r["saturate"] != 1.0 for r in rows),
            "long": sum(r.get("T", 0) > 8 for r in rows),
            "max_T": max((r.get("T", 0) for r in rows), default=0),
            "windows_over_8": sum(_window(r["spec"]) > 8 for r in rows),
            "max_window": max((_window(r["spec"]) for r in rows), default=0),
            "not_passed": [r for r in rows if r["status"] != "passed"]}


def _window(spec_text: str) -> int:
    m = re.search(r"(?:window|tbptt|chunk|window-loss):(\d+)(?:,(\d+))?", spec_text)
    return max(int(v) for v in m.groups() if v) if m else 0


def sweep(cases: int, seed: int, jobs: int, chunk: int) -> dict:
    folder = RESULTS / f"sweep-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    done = {p.name for p in folder.glob("chunk-*.json")}
    todo = [(seed, lo, min(lo + chunk, cases), str(folder)) for lo in range(0, cases, chunk)
            if f"chunk-{lo:07d}-{min(lo + chunk, cases):07d}.json" not in done]
    print(f"{len(todo)} chunk(s) of {chunk} to run, {len(done)} already done, on {jobs} process(es)", file=sys.stderr)
    start = time.perf_counter()
    if jobs > 1 and todo:
        with mp.get_context("spawn").Pool(jobs) as pool:
            for k, name in enumerate(pool.imap_unordered(run_chunk, todo), 1):
                print(f"  {k}/{len(todo)} {name} ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    else:
        for k, job in enumerate(todo, 1):
            print(f"  {k}/{len(todo)} {run_chunk(job)} ({time.perf_counter() - start:.0f}s)", file=sys.stderr,
                  flush=True)
    return summarize(seed, cases, chunk, jobs)


def summarize(seed: int, cases: int, chunk: int, jobs: int) -> dict:
    folder = RESULTS / f"sweep-{seed}"
    wanted = {f"chunk-{lo:07d}-{min(lo + chunk, cases):07d}.json" for lo in range(0, cases, chunk)}
    parts = [json.loads(p.read_text()) for p in sorted(folder.glob("chunk-*.json")) if p.name in wanted]
    counts: collections.Counter = collections.Counter()
    by_dtype: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    bad, inconclusive = [], collections.Counter()
    totals = collections.Counter()
    for part in parts:
        counts.update(part["counts"])
        for key, n in part["by_dtype"].items():
            dtype, status = key.split("/")
            by_dtype[dtype][status] += n
        for k in ("fast", "cells", "padded", "saturated", "long", "windows_over_8"):
            totals[k] += part[k]
        totals["max_T"] = max(totals["max_T"], part["max_T"])
        totals["max_window"] = max(totals["max_window"], part["max_window"])
        totals["seconds"] += part["seconds"]
        for r in part["not_passed"]:
            if r["status"] == "inconclusive":
                inconclusive[r["reason"]] += 1
            else:
                bad.append(r)
    n = sum(p["cases"] for p in parts)
    return {
        "cases": n, "planned": cases, "seed": seed, "chunk": chunk, "jobs": jobs,
        "case_seconds": round(totals["seconds"], 1),
        "counts": dict(counts), "by_dtype": {k: dict(v) for k, v in by_dtype.items()},
        "false_alarms": sum(r["status"] in ("failed", "error") for r in bad),
        "crashes": sum(r["status"] == "crash" for r in bad),
        "alarms": bad[:50],
        "inconclusive_reasons": dict(inconclusive.most_common()),
        "covered": {k: totals[k] for k in ("fast", "cells", "padded", "saturated", "long", "windows_over_8", "max_T",
                                           "max_window")},
    }


def headline(res: dict) -> str:
    n = res["counts"]
    return (f"{res['cases']} correct cases (seed {res['seed']}): {n.get('passed', 0)} passed, "
            f"{n.get('inconclusive', 0)} inconclusive, {n.get('failed', 0)} failed, {n.get('error', 0)} errors, "
            f"{res['crashes']} crashes: {res['false_alarms']} false alarms")


def write_docs(res: dict) -> None:
    doc = ROOT / "docs" / "verdicts.md"
    by_text = "; ".join(f"{d}: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
                        for d, c in sorted(res["by_dtype"].items()))
    cov = res["covered"]
    lines = [
        f"`python benchmarks/false_alarms.py --cases {res['planned']} --seed {res['seed']} --jobs {res['jobs']}` "
        "(random flags: both modes; no truncation, per-step windows, TBPTT, chunks and window-loss schedules "
        f"with windows up to {MAX_WINDOW}; T drawn up to {MAX_T} (longer where a schedule needs it); 4 activations; "
        "every output/loss pair (bce included); 4 reductions; with and without biases; float64 and float32; rnn, "
        "lstm and gru cells (two in five); padded batches (one in seven); `--fast` in one case of four; 16 oracle "
        "orders; one "
        "case in five with a saturating output; each case checks one of the built-in implementations that "
        "support its spec; summary in `benchmarks/results/false_alarms.json`):",
        "",
        f"**{headline(res)}.**",
        "",
        f"By dtype: {by_text}. Covered: {cov['fast']} cases in fast mode, {cov['cells']} of lstm or gru cells, "
        f"{cov['padded']} padded batches, {cov['saturated']} with a saturating "
        f"output, {cov['long']} with T > 8 (up to {cov['max_T']}), {cov['windows_over_8']} with a window over 8 "
        f"(up to {cov['max_window']}).",
    ]
    if res["inconclusive_reasons"]:
        lines.append("Inconclusive because of: " + "; ".join(
            f"{why.strip()} (x{n})" for why, n in res["inconclusive_reasons"].items()) + ".")
    if res["cases"] < res["planned"]:
        lines.append(f"(The run holds {res['cases']} of the {res['planned']} planned cases; the same command "
                     "resumes it.)")
    text = doc.read_text()
    pattern = re.compile(r"<!-- sweep:begin -->\n.*?<!-- sweep:end -->", re.S)
    body = "\n".join(lines)
    doc.write_text(pattern.sub(lambda _: f"<!-- sweep:begin -->\n{body}\n<!-- sweep:end -->", text))
    print(f"wrote {doc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="false-alarm sweep over correct implementations")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500, help="cases per saved chunk (the unit of resuming)")
    parser.add_argument("--summary", action="store_true", help="only summarize the chunks already done")
    parser.add_argument("--write-docs", action="store_true", help="record the result in docs/verdicts.md")
    args = parser.parse_args(argv)
    if args.summary:
        res = summarize(args.seed, args.cases, args.chunk, args.jobs)
    else:
        res = sweep(args.cases, args.seed, args.jobs, args.chunk)
    out = RESULTS / "false_alarms.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(headline(res))
    for r in res["alarms"][:20]:
        print(f"  {r['status'].upper()} {r['builtin']} {r.get('summary', '')[:300]}\n    {r.get('reproduce', '')}")
    for why, n in res["inconclusive_reasons"].items():
        print(f"  inconclusive x{n}: {why}")
    if args.write_docs:
        write_docs(res)
    return 1 if res["false_alarms"] or res["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
