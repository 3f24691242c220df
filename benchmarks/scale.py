"""Scale in the number of cases (issue 14): peak memory, report size and time of the command against the number
of cases, side by side in one run.

    python benchmarks/scale.py [--cases 1000,10000,30000] [--baseline SRC --baseline-cases 1000,10000]
                               [--json benchmarks/scale.json]

Each row is one fresh command, run the way a user runs a sweep:

    bptt-check bptt_check.builtin.truncated:backward --sizes T=3,B=1,I=1,H=2,O=1 --cases N --progress none

(small cases: T=3, B=1, I=1, H=2, O=1, the default oracles, the backward in its worker process). While it runs
the RSS of the command's process and the PSS of its process tree are sampled every 0.2 s (``/proc``); the peak
RSS of the command's own process is read from the kernel (``VmHWM``) when it ends. Printed per N: the wall time
and ms per case, the peak RSS of the command, its RSS at 10 %, 50 % and 90 % of
the run (flat in N and in time when nothing grows with the cases), the peak PSS of the whole process tree (the
command, the zygote and the worker running the backward: each shared page counted once), the size of
report.json and junit.xml, and the bytes a passed case takes in report.json (the longest record and the mean).

``--baseline SRC`` runs the same commands with another source tree of bptt-check first on the path (e.g.
``git archive <commit> | tar -x -C /tmp/base`` of the code before this change), for the rows
``--baseline-cases``: before and after side by side. Targets: a passed case <= 1 KB in report.json, and
100,000 cases with a peak RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = "bptt_check.builtin.truncated:backward"
SIZES = "T=3,B=1,I=1,H=2,O=1"

# runs the command in this process and reports its peak RSS, as the kernel counted it, to a file
WRAPPER = """
import json, sys
from bptt_check.cli import main
code = main(sys.argv[2:])
hwm = next((int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")), 0)
json.dump({"code": code, "hwm_kb": hwm}, open(sys.argv[1], "w"))
"""


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def _pss_kb(pid: int) -> int:
    """The process's proportional set size: its RSS with each shared page divided among those sharing it (the
    sum over processes is the memory they hold together; a sum of RSS counts torch's and Python's shared
    libraries once per process)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def run(cases: int, src: Path | None = None) -> dict:
    """One fresh command on ``cases`` small cases; its time, memory and report sizes."""
    with tempfile.TemporaryDirectory(prefix="bptt-scale-") as tmp:
        folder = Path(tmp) / "reports"
        result = Path(tmp) / "result.json"
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [TARGET, "--sizes", SIZES, "--cases", str(cases), "--progress", "none", "--report-dir", str(folder)]
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(result), *argv], cwd=tmp, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples: list[tuple[float, int, int]] = []      # (seconds, RSS of the command, PSS of its process tree)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                own = _rss_kb(proc.pid)
                if own:
                    samples.append((time.perf_counter() - start, own, sum(_pss_kb(p) for p in _tree(proc.pid))))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"the command failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
        got = json.loads(result.read_text())
        report = folder / "report.json"
        passed = []
        with report.open("rb") as fh:
            for line in fh:
                if line.startswith(b"    {") and b'"status":"passed"' in line:
                    passed.append(len(line.strip().rstrip(b",")))
        if not passed:                 # a report laid out otherwise (an older bptt-check): read it whole
            data = json.loads(report.read_text())
            passed = [len(json.dumps(c, indent=2)) for c in data["cases"] if c["status"] == "passed"]
        size = report.stat().st_size
        junit = (folder / "junit.xml").stat().st_size
        tail = out.strip().splitlines()

    def at(share: float) -> float:
        if not samples:
            return float("nan")
        t = share * wall
        return min(samples, key=lambda s: abs(s[0] - t))[1] / 1024

    return {
        "cases": cases, "code": got["code"], "wall_s": wall, "ms_per_case": 1000 * wall / cases,
        "peak_rss_mb": got["hwm_kb"] / 1024,
        "peak_tree_pss_mb": max((s[2] for s in samples), default=0) / 1024,
        "rss_mb_at_10_50_90": [at(0.1), at(0.5), at(0.9)],
        "report_json_mb": size / 1e6, "junit_xml_mb": junit / 1e6,
        "passed_record_max_bytes": max(passed), "passed_record_mean_bytes": sum(passed) / len(passed),
        "json_bytes_per_case": size / cases, "headline": tail[-2] if len(tail) >= 2 else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="1000,10000,30000", help="comma-separated numbers of cases, one command each")
    ap.add_argument("--baseline", type=Path, default=None, help="another bptt-check source tree to compare against")
    ap.add_argument("--baseline-cases", default="1000,10000")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here as JSON")
    args = ap.parse_args()
    rows = []
    load = os.getloadavg()[0]
    print(f"scale in the number of cases, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    print(f"command: bptt-check {TARGET} --sizes {SIZES} --cases N --progress none\n")
    head = (f"{'code':<9}{'cases':>8}{'wall s':>9}{'ms/case':>9}{'peak RSS':>10}{'tree PSS':>10}{'RSS 10/50/90 %':>20}"
            f"{'json MB':>9}{'B/case':>8}{'passed max B':>14}")
    print(head)
    plan = [("before", args.baseline, int(n)) for n in args.baseline_cases.split(",")] if args.baseline else []
    plan += [("after", None, int(n)) for n in args.cases.split(",")]
    for name, src, n in plan:
        r = run(n, src)
        r["code_under_test"] = name
        rows.append(r)
        rss = "/".join(f"{v:.0f}" for v in r["rss_mb_at_10_50_90"])
        print(f"{name:<9}{n:>8}{r['wall_s']:>9.1f}{r['ms_per_case']:>9.2f}{r['peak_rss_mb']:>8.0f}MB"
              f"{r['peak_tree_pss_mb']:>8.0f}MB{rss:>18}MB{r['report_json_mb']:>9.1f}{r['json_bytes_per_case']:>8.0f}"
              f"{r['passed_record_max_bytes']:>14}", flush=True)
    after = [r for r in rows if r["code_under_test"] == "after"]
    if len(after) > 1:
        lo, hi = after[0], after[-1]
        print(f"\nafter: {hi['cases']:,} cases vs {lo['cases']:,}: peak RSS {hi['peak_rss_mb']:.0f} MB vs "
              f"{lo['peak_rss_mb']:.0f} MB ({hi['peak_rss_mb'] - lo['peak_rss_mb']:+.0f} MB for "
              f"{hi['cases'] - lo['cases']:,} more cases); a passed case at most "
              f"{max(r['passed_record_max_bytes'] for r in after)} bytes in report.json (target <= 1024)")
    before = [r for r in rows if r["code_under_test"] == "before"]
    for b in before:
        a = next((r for r in after if r["cases"] == b["cases"]), None)
        if a:
            print(f"{b['cases']:,} cases, before -> after: peak RSS {b['peak_rss_mb']:.0f} -> "
                  f"{a['peak_rss_mb']:.0f} MB, "
                  f"report.json {b['report_json_mb']:.1f} -> {a['report_json_mb']:.1f} MB "
                  f"({b['json_bytes_per_case']:.0f} -> {a['json_bytes_per_case']:.0f} bytes a case), "
                  f"wall {b['wall_s']:.1f} -> {a['wall_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "python": sys.version.split()[0],
                                         "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
