"""The false-alarm sweep: correct backwards on many random cases must never fail.

    python benchmarks/false_alarms.py                    # 10,000 cases on 2 processes
    python benchmarks/false_alarms.py --cases 500 --jobs 1
    python benchmarks/false_alarms.py --write-docs       # record the result in docs/verdicts.md
    python benchmarks/false_alarms.py --docs-from benchmarks/results/false_alarms.json   # re-render only

Every case draws its spec at random (mode, truncation schedule, activation, output and loss,
reduction, biases, float64/float32; seeded, so a run is reproducible) and checks one of the
hand-written implementations that support it (``bptt_check.builtin``) with ``check_case`` and both
oracles. A false alarm is a ``failed`` or ``error`` verdict on a correct implementation. Results go
to ``benchmarks/results/false_alarms.json``; every false alarm is listed with its reproducer.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRUNCATIONS = ("none", "window:1", "window:2", "window:3", "tbptt:2,3", "tbptt:1,2", "tbptt:3,5", "chunk:2",
               "chunk:3", "window-loss:2,3", "window-loss:3,2")
OUTPUT_LOSS = (("identity", "half_mse"), ("identity", "sse"), ("tanh", "half_mse"), ("sigmoid", "sse"),
               ("softmax", "half_mse"), ("softmax", "cross_entropy"), ("identity", "cross_entropy"))


def spec_for(seed: int, index: int):
    import bptt_check as bc

    rng = np.random.default_rng([seed, index, 7])
    output, loss = OUTPUT_LOSS[rng.integers(len(OUTPUT_LOSS))]
    return bc.Spec(
        mode=("many-to-one", "many-to-many")[rng.integers(2)],
        truncation=TRUNCATIONS[rng.integers(len(TRUNCATIONS))],
        activation=("tanh", "sigmoid", "relu", "identity")[rng.integers(4)],
        output=output, loss=loss,
        reduction=("sum", "mean", "mean_batch", "mean_time")[rng.integers(4)],
        bias=bool(rng.integers(2)),
        dtype=("float64", "float32")[rng.integers(2)],
    )


def one(args: tuple[int, int]) -> dict:
    import bptt_check as bc
    from bptt_check.builtin import BUILTINS, supports

    seed, index = args
    spec = spec_for(seed, index)
    names = [n for n in BUILTINS if supports(n, spec)]
    name = names[index % len(names)]
    case = bc.draw_case(spec, seed, index)
    r = bc.check_case(BUILTINS[name], case)
    notes = [n for n in r.notes if not n.startswith("precision: float32 backward judged")]
    return {"index": index, "builtin": name, "status": r.status, "spec": str(spec), "flavor": case.flavor,
            "dtype": spec.dtype, "activation": spec.activation, "summary": r.summary() if r.status != "passed"
            else "", "notes": notes, "seconds": r.seconds}


def sweep(cases: int, seed: int, jobs: int) -> dict:
    start = time.perf_counter()
    work = [(seed, i) for i in range(cases)]
    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            rows = []
            for k, row in enumerate(pool.imap_unordered(one, work, chunksize=25), 1):
                rows.append(row)
                if k % 1000 == 0:
                    print(f"  {k}/{len(work)} cases", file=sys.stderr, flush=True)
    else:
        rows = [one(w) for w in work]
    rows.sort(key=lambda r: r["index"])
    counts = collections.Counter(r["status"] for r in rows)
    alarms = [r for r in rows if r["status"] in ("failed", "error")]
    by: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        by[r["dtype"]][r["status"]] += 1
    inconclusive_why = collections.Counter(
        (r["summary"].split(" — ", 1) + [""])[1].split(":")[0] for r in rows if r["status"] == "inconclusive")
    return {
        "cases": len(rows), "seed": seed, "jobs": jobs, "seconds": round(time.perf_counter() - start, 1),
        "counts": dict(counts), "by_dtype": {k: dict(v) for k, v in by.items()},
        "false_alarms": len(alarms), "alarms": alarms[:50],
        "inconclusive_reasons": dict(inconclusive_why.most_common()),
        "cases_with_relu_kinks_excluded": sum(any(n.startswith("relu kinks") for n in r["notes"]) for r in rows),
        "float64_cases_passed_on_precision": sum(any(n.startswith("precision: d") for n in r["notes"]) for r in rows),
        "builtins": dict(collections.Counter(r["builtin"] for r in rows)),
    }


def headline(res: dict) -> str:
    n = res["counts"]
    return (f"{res['cases']} correct cases (seed {res['seed']}): {n.get('passed', 0)} passed, "
            f"{n.get('inconclusive', 0)} inconclusive, {n.get('failed', 0)} failed, {n.get('error', 0)} errors: "
            f"{res['false_alarms']} false alarms; {res['seconds']:.0f}s on {res['jobs']} process(es)")


def write_docs(res: dict) -> None:
    doc = ROOT / "docs" / "verdicts.md"
    by_text = "; ".join(f"{d}: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
                        for d, c in sorted(res["by_dtype"].items()))
    lines = [
        f"`python benchmarks/false_alarms.py --cases {res['cases']} --seed {res['seed']} --jobs {res['jobs']}` "
        "(random specs over both modes, 11 schedules, 4 activations, 7 output/loss pairs, 4 reductions, "
        "with and without biases, float64 and float32; each case checks one of the built-in "
        "implementations that support its spec, against both oracles; "
        "raw result in `benchmarks/results/false_alarms.json`):",
        "",
        f"**{headline(res)}.**",
        "",
        f"By dtype: {by_text}. relu kinks excluded from judgment in {res['cases_with_relu_kinks_excluded']} "
        f"case(s); float64 cases passed on the precision rule: {res['float64_cases_passed_on_precision']}.",
    ]
    if res["inconclusive_reasons"]:
        lines.append("Inconclusive because of: " + "; ".join(
            f"{why.strip()} (x{n})" for why, n in res["inconclusive_reasons"].items()) + ".")
    text = doc.read_text()
    pattern = re.compile(r"<!-- sweep:begin -->\n.*?<!-- sweep:end -->", re.S)
    body = "\n".join(lines)
    doc.write_text(pattern.sub(lambda _: f"<!-- sweep:begin -->\n{body}\n<!-- sweep:end -->", text))
    print(f"wrote {doc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="false-alarm sweep over correct implementations")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help="record the result in docs/verdicts.md")
    parser.add_argument("--docs-from", metavar="JSON", help="only render a saved result into the docs")
    args = parser.parse_args(argv)
    out = ROOT / "benchmarks" / "results" / "false_alarms.json"
    if args.docs_from:
        res = json.loads(Path(args.docs_from).read_text())
        res.setdefault("jobs", args.jobs)
    else:
        res = sweep(args.cases, args.seed, args.jobs)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
    print(headline(res))
    for r in res["alarms"][:20]:
        print("  FALSE ALARM", r["builtin"], r["summary"][:300])
    for why, n in res["inconclusive_reasons"].items():
        print(f"  inconclusive x{n}: {why}")
    if args.write_docs or args.docs_from:
        write_docs(res)
    return 1 if res["false_alarms"] else 0


if __name__ == "__main__":
    sys.exit(main())
