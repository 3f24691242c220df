"""The false-alarm sweep: correct backwards on many random cases must never fail.

    python benchmarks/false_alarms.py                    # 10,000 cases on 2 processes
    python benchmarks/false_alarms.py --cases 500 --jobs 1
    python benchmarks/false_alarms.py --write-docs       # record the result in docs/verdicts.md

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="false-alarm sweep over correct implementations")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    work = [(args.seed, i) for i in range(args.cases)]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            rows = []
            for k, row in enumerate(pool.imap_unordered(one, work, chunksize=25), 1):
                rows.append(row)
                if k % 1000 == 0:
                    print(f"  {k}/{len(work)} cases", file=sys.stderr, flush=True)
    else:
        rows = [one(w) for w in work]
    seconds = time.perf_counter() - start
    rows.sort(key=lambda r: r["index"])

    counts = collections.Counter(r["status"] for r in rows)
    alarms = [r for r in rows if r["status"] in ("failed", "error")]
    by = collections.defaultdict(collections.Counter)
    for r in rows:
        by[r["dtype"]][r["status"]] += 1
    inconclusive_why = collections.Counter(
        (r["summary"].split(" — ", 1) + [""])[1].split(":")[0] for r in rows if r["status"] == "inconclusive")
    kinks = sum(any(n.startswith("relu kinks") for n in r["notes"]) for r in rows)
    mixed = sum(any(n.startswith("precision: d") for n in r["notes"]) for r in rows)
    result = {
        "cases": len(rows), "seed": args.seed, "seconds": round(seconds, 1), "counts": dict(counts),
        "by_dtype": {k: dict(v) for k, v in by.items()},
        "false_alarms": len(alarms), "alarms": alarms[:50],
        "inconclusive_reasons": dict(inconclusive_why.most_common()),
        "cases_with_relu_kinks_excluded": kinks, "float64_cases_passed_on_precision": mixed,
        "builtins": dict(collections.Counter(r["builtin"] for r in rows)),
    }
    out = ROOT / "benchmarks" / "results" / "false_alarms.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    line = (f"{len(rows)} correct cases (seed {args.seed}): {counts.get('passed', 0)} passed, "
            f"{counts.get('inconclusive', 0)} inconclusive, {counts.get('failed', 0)} failed, "
            f"{counts.get('error', 0)} errors: {len(alarms)} false alarms; "
            f"{seconds:.0f}s on {args.jobs} process(es)")
    print(line)
    for r in alarms[:20]:
        print("  FALSE ALARM", r["builtin"], r["summary"][:300])
    for why, n in inconclusive_why.most_common():
        print(f"  inconclusive x{n}: {why}")
    if args.write_docs:
        doc = ROOT / "docs" / "verdicts.md"
        by_text = "; ".join(f"{d}: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
                            for d, c in sorted(by.items()))
        body = "\n".join([
            f"`python benchmarks/false_alarms.py --cases {len(rows)} --seed {args.seed} --jobs {args.jobs}` "
            "(random specs over both modes, 11 schedules, 4 activations, 7 output/loss pairs, 4 reductions, "
            "with and without biases, float64 and float32; the built-in implementations that support each spec):",
            "",
            f"**{line}.**",
            "",
            f"By dtype: {by_text}. relu kinks excluded from judgment in {kinks} case(s); "
            f"float64 cases passed on the precision rule: {mixed}.",
        ])
        if inconclusive_why:
            body += "\nInconclusive because: " + "; ".join(f"{why.strip()} (x{n})"
                                                           for why, n in inconclusive_why.most_common()) + "."
        text = doc.read_text()
        pattern = re.compile(r"<!-- sweep:begin -->\n.*?<!-- sweep:end -->", re.S)
        doc.write_text(pattern.sub(lambda _: f"<!-- sweep:begin -->\n{body}\n<!-- sweep:end -->", text))
        print(f"wrote {doc}")
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())
