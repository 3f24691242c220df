"""What running the backward in a worker process costs, measured side by side in one run (issue 13).

    python benchmarks/isolation.py [--calls N] [--cases N] [--repeat R] [--json FILE]

1. **Per call**, on a small case (the default spec's case 0), and on a large one (0.6 MB of arrays each
   way: is a pipe enough, or would shared memory pay?): the bare built-in backward on copies, and
   one call through the runner's Target (``invoke``) with ``isolate="none"`` (this thread, no
   limit), ``"thread"`` (this process, under the limit: what every call did before issue 13) and
   ``"process"`` (a worker process: the default now). Best of R rounds of N calls each.
   Target: ``process`` adds at most 1 ms per call to ``thread``.
2. **Starting**: the zygote (once per harness process), and a new worker for a new backward (fork + load).
3. **The 1,000-case command**: ``bptt-check bptt_check.builtin.truncated:backward --cases 1000`` with
   ``--isolate thread`` (before) and ``--isolate process`` (after), each a fresh command, wall time,
   best of R. Target: after / before at most 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.runner import process
from bptt_check.runner.target import invoke

ROOT = Path(__file__).resolve().parent.parent


def per_call(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


LARGE = bc.Spec(sizes={"T": 200, "B": 8, "I": 32, "H": 128, "O": 8})     # 0.6 MB of arrays each way


def calls(n: int, repeat: int, spec: bc.Spec | None = None) -> dict[str, float]:
    case = bc.draw_case(spec or bc.Spec(), 0, 0)

    def bare():
        truncated({k: v.copy() for k, v in case.params.items()}, case.x.copy(), case.y.copy(), case.spec)

    out = {"bare backward (on copies)": per_call(bare, n, repeat)}
    for isolate in ("none", "thread", "process"):
        invoke(truncated, case, isolate=isolate)                 # warm: the worker exists, the backward is loaded
        out[f'invoke, isolate="{isolate}"'] = per_call(lambda i=isolate: invoke(truncated, case, isolate=i), n, repeat)
    return out


def starting(repeat: int) -> dict[str, float]:
    process.shutdown()
    start = time.perf_counter()
    process.prestart()
    process._get_zygote().fork().kill()                       # ready: the first fork waits for the zygote
    zygote = time.perf_counter() - start
    case = bc.draw_case(bc.Spec(), 0, 0)
    best = float("inf")
    for i in range(repeat):
        def fresh(params, x, y, spec, i=i):                   # a new backward each time: shipped, forked, loaded
            return truncated(params, x, y, spec)
        start = time.perf_counter()
        invoke(fresh, case)
        best = min(best, time.perf_counter() - start)
    return {"zygote start (once per process)": zygote, "a new backward: pickle + fork + load + 1 call": best}


def command(cases: int, isolate: str, repeat: int) -> float:
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bptt_check", "bptt_check.builtin.truncated:backward",
                               "--cases", str(cases), "--isolate", isolate, "--progress", "none",
                               "--report-dir", str(ROOT / "reports" / f"bench-isolation-{isolate}")],
                              capture_output=True, text=True, env=env)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bptt-check --isolate {isolate} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        best = min(best, took)
    return best


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"isolation cost, python {sys.version.split()[0]}, {cpus} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")

    per = calls(args.calls, args.repeat)
    print(f"\n1. per call, small case (default spec, case 0), best of {args.repeat} x {args.calls} calls")
    thread = per['invoke, isolate="thread"']
    for name, t in per.items():
        print(f"   {name:32s} {t * 1e3:8.3f} ms")
    added = per['invoke, isolate="process"'] - thread
    print(f"   process - thread: {added * 1e3:+.3f} ms per call (target <= +1 ms)")

    n_large = max(args.calls // 30, 5)
    large = calls(n_large, args.repeat, LARGE)
    t_large, p_large = large['invoke, isolate="thread"'], large['invoke, isolate="process"']
    print(f"   large case (I32 H128 T200 B8, 0.6 MB of arrays each way), best of {args.repeat} x {n_large} calls: "
          f"thread {t_large * 1e3:.1f} ms, process {p_large * 1e3:.1f} ms")

    start = starting(args.repeat)
    print("\n2. starting")
    for name, t in start.items():
        print(f"   {name:48s} {t * 1e3:8.1f} ms")

    print(f"\n3. the {args.cases}-case command (bptt_check.builtin.truncated:backward), best of {args.repeat}")
    runs = {isolate: command(args.cases, isolate, args.repeat) for isolate in ("thread", "process")}
    for isolate, t in runs.items():
        label = "before (thread, as every call ran until issue 13)" if isolate == "thread" else "after (process)"
        print(f"   --isolate {isolate:8s} {t:7.2f} s   {label}")
    ratio = runs["process"] / runs["thread"]
    print(f"   after / before: {ratio:.2f}x (target <= 1.5x)")

    if args.json:
        Path(args.json).write_text(json.dumps({"per_call_s": per, "per_call_large_s": large,
                                               "process_minus_thread_s": added,
                                               "starting_s": start, "command_s": runs, "command_ratio": ratio,
                                               "cases": args.cases, "calls": args.calls, "repeat": args.repeat},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
