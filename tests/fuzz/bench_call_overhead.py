"""What calling the backward through the harness costs, measured side by side (not a test).

    .venv/bin/python tests/fuzz/bench_call_overhead.py [cases]

Prints, per case, the time of the bare built-in backward, of ``invoke`` with no limit, with a
limit (the call in a thread), with a limit and the second (nondeterminism) call, and of the whole
``check_case`` with both oracles, each as a ratio to the bare backward.
"""

from __future__ import annotations

import sys
import time

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.runner.target import invoke


def per_case(fn, cases, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for c in cases:
            fn(c)
        best = min(best, (time.perf_counter() - start) / len(cases))
    return best


def main(n: int) -> None:
    cases = [bc.draw_case(bc.Spec(), 0, i) for i in range(n)]
    bc.check_case(truncated, cases[0])                     # warm up: torch import, first calls

    def bare(c):
        truncated({k: v.copy() for k, v in c.params.items()}, c.x.copy(), c.y.copy(), c.spec)

    rows = [
        ("bare backward (on copies)", bare),
        ("invoke, no limit", lambda c: invoke(truncated, c, timeout=None)),
        ("invoke, 30 s limit (thread)", lambda c: invoke(truncated, c, timeout=30)),
        ("invoke, limit + second call", lambda c: invoke(truncated, c, timeout=30, repeat=True)),
        ("check_case (autograd + fd)", lambda c: bc.check_case(truncated, c)),
    ]
    base = None
    print(f"{n} cases of the default spec, best of 3, per case")
    for name, fn in rows:
        t = per_case(fn, cases, repeats=1 if name.startswith("check_case") else 3)
        base = base or t
        print(f"  {name:32s} {t * 1e3:8.3f} ms   x{t / base:6.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
