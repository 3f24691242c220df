"""Render the planted-bug zoos' tables into docs/verdicts.md (between the zoo and zoo-cells markers).

    python scripts/zoo_table.py            # run the zoo, rewrite the table
    python scripts/zoo_table.py --check    # exit 1 if the docs are stale
    python scripts/zoo_table.py --wide     # also run every bug on 4 seeds x 8 cases (all flavors) and print a summary
    python scripts/zoo_table.py --fast     # also measure fast mode's detection power on the zoo
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "quality"))

import zoo  # noqa: E402
import zoo_cells  # noqa: E402

DOC = ROOT / "docs" / "verdicts.md"


def wide(seeds: range = range(1, 5), cases: tuple[int, ...] = tuple(range(8))) -> str:
    """Every bug on more seeds and every case flavor (T = 1, H = 1, B = 1 edges included)."""
    total = failed = right = exact = 0
    misses = collections.Counter()
    wrong = collections.Counter()
    for seed in seeds:
        bugs = [dataclasses.replace(b, seed=seed, cases=cases) for b in zoo.BUGS]
        for r in zoo.run_zoo(bugs=bugs):
            total += len(r.statuses)
            for st, flavor in zip(r.statuses, r.flavors):
                if st != "failed":
                    misses[(r.bug.name, f"{st} on a {flavor} case")] += 1
            for f, d in zip(r.failed, r.diagnoses):
                failed += 1
                right += d == r.bug.code
                exact += f == r.bug.breaks
                if d != r.bug.code:
                    wrong[(r.bug.name, d)] += 1
    lines = [f"{len(zoo.BUGS)} bugs x {len(seeds)} seeds x {len(cases)} cases = {total} cases: "
             f"{failed} failed ({failed / total:.1%}); of the failed, {right / failed:.1%} with the right "
             f"diagnosis first, {exact / failed:.1%} on exactly the declared gradients"]
    lines += [f"  not failed: {k[0]}, {k[1]} x{v}" for k, v in sorted(misses.items())]
    lines += [f"  other diagnosis first: {k[0]} -> {k[1]} x{v}" for k, v in sorted(wrong.items(), key=str)]
    return "\n".join(lines)


def fast_power(seeds: range = range(0, 5)) -> str:
    """Fast mode (k sign-random directions, element-wise only where one disagrees) on the zoo.

    A (bug, case) counts as detected when fast mode does not pass a case the full element-wise
    check fails; the gradients it names are compared with the full check's.
    """
    import bptt_check as bc

    def wrong(result: object) -> frozenset[str] | None:
        if result.status == "failed":
            return frozenset(result.failed_grads)
        if result.status == "error":
            return frozenset(result.error.get("keys", ()))
        return None

    pairs = detected = same = 0
    missed = collections.Counter()
    for seed in seeds:
        for bug in zoo.BUGS:
            backward = bug.make()
            for index in bug.cases:
                case = bc.draw_case(bug.spec, seed, index)
                full = wrong(bc.check_case(backward, case, evidence=None))
                if full is None:
                    continue
                pairs += 1
                quick = wrong(bc.check_case(backward, case, fast=True))
                if quick is None:
                    missed[bug.name] += 1
                else:
                    detected += 1
                    same += quick == full
    lines = [f"fast mode (--fast, 4 directions) on {len(zoo.BUGS)} bugs x {len(seeds)} seeds: detected "
             f"{detected}/{pairs} (bug, case) pairs the full check fails ({detected / pairs:.1%}); "
             f"on {same}/{detected} it names exactly the same gradients"]
    lines += [f"  missed: {name} x{n}" for name, n in sorted(missed.items())]
    return "\n".join(lines)


def _put(text: str, name: str, body: str) -> str:
    pattern = re.compile(f"<!-- {name}:begin -->\n.*?<!-- {name}:end -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC}: markers <!-- {name}:begin --> ... <!-- {name}:end --> not found")
    return pattern.sub(lambda _: f"<!-- {name}:begin -->\n{body}\n<!-- {name}:end -->", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the docs are up to date")
    parser.add_argument("--wide", action="store_true", help="also run the wide robustness sweep into the docs")
    parser.add_argument("--fast", action="store_true", help="also measure fast mode's detection power into the docs")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table = zoo.table(zoo.run_zoo())
    print(table.splitlines()[-1], f"({time.perf_counter() - start:.1f}s)")
    text = DOC.read_text()
    new = _put(text, "zoo", table)
    cells = zoo.table(zoo.run_zoo(bugs=zoo_cells.BUGS))
    print("cells:", cells.splitlines()[-1])
    new = _put(new, "zoo-cells", cells)
    if args.wide:
        summary = wide()
        print(summary)
        new = _put(new, "wide", "```\n" + summary + "\n```")
    if args.fast:
        summary = fast_power()
        print(summary)
        new = _put(new, "fast", "```\n" + summary + "\n```")
    if args.check:
        if new != text:
            print("docs/verdicts.md is stale: run python scripts/zoo_table.py", file=sys.stderr)
            return 1
    elif new != text:
        DOC.write_text(new)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
