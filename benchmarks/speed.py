"""bptt-check against the fastest torch, side by side in one process and one run.

    python benchmarks/speed.py [--sizes small,medium,large] [--cells rnn] [--rounds N] [--budget S]
                               [--json FILE] [--txt FILE] [--scale-T 50,...] [--scale-H 16,...]
                               [--no-breakdown] [--no-scaling] [--no-detection] [--device cuda]

Everything runs with one thread (torch, and numpy's BLAS in bptt-check and in the backward under test),
float64, on one drawn case per size of the spec many-to-many, tanh, identity output, half_mse, sum,
full BPTT (``speed_torch.py`` has the torch side, per cell).

torch, written the way a careful engineer writes it:
  fused_fwd_bwd     one forward + backward of torch's fused module (nn.RNN + nn.Linear): the floor
  tight_fwd_bwd     one forward + backward of the tight loop (one matmul for every step's input
                    projection, one stacked loss)
  gradcheck_slow    torch.autograd.gradcheck of the tight loop over W, U, b, V, c, h0 (large: estimated
                    from the measured time on c and on b, linear in the number of elements)
  gradcheck_fast    the same with fast_mode=True
bptt-check, as a user runs it (``bptt_check.check_case`` of the built-in backward, the whole check of a
case of a run after its first three: calling the backward once (the first 3 cases of a run also call it
a second time, the determinism check), the oracles, the judging, the settling; the backward runs in this
process (``isolate="thread"``) so that its CPU time is counted — the default worker process adds the
cost ``benchmarks/isolation.py`` measures, about 3 ms per call at large):
  default_check     the default oracles: autograd element-wise, witnessed by 4 joint complex-step directions
  full_elementwise  oracles=("complex-step",): every element by complex step, independent of autograd
  full_elementwise_fd  oracles=("fd",): every element by batched central differences (not at large)
  fast_check        fast=True: 4 joint random projections against the complex step, no torch

Rows are timed in CPU seconds of the process (``time.process_time``: one thread does everything, so this is
the work itself, not the time other jobs on a shared machine hold the core) in interleaved rounds (one run
of each per round; the median over rounds), so that a change of load hits every row alike; the slow rows
(seconds each) are timed separately, fewer times. Then, per size, the ratios with their two baselines and
the targets.

Also:
- the default check's cost broken down (the backward's two calls, reading them, the reference, the
  witness, comparing them, judging, coverage, everything else), per size;
- the default check against T (50 … 2,000 at H = 128) and against H (16 … 512 at T = 200), each beside
  the fused floor, with the fitted exponent of T (1 = linear);
- with ``--device cuda`` and a GPU: the autograd reference on the GPU against the CPU;
- the detection power of the two fast modes on the planted bugs of the tests (gradcheck's fast_mode on
  the backward wrapped in an autograd.Function, against ``--fast``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from speed_torch import CELLS, PARAMS, CellBench, windowed_loss  # noqa: E402

SIZES = {  # (I, H, O, T, B)
    "small": (3, 5, 2, 6, 2),
    "medium": (16, 32, 4, 50, 4),
    "large": (32, 128, 8, 200, 8),
}
# (ratio, size, bound, "min" or "max", the cells it applies to): what issues 11 and 14 ask of the ratios
TARGETS = (
    ("gradcheck_slow / full_elementwise", "medium", 100.0, "min", ("rnn",)),
    ("gradcheck_fast / fast_check", "medium", 3.0, "min", ("rnn",)),
    ("gradcheck_fast / fast_check", "large", 3.0, "min", ("rnn",)),
    ("default_check / fused_fwd_bwd", "large", 4.0, "max", ("rnn", "lstm", "gru")),
)
RATIOS = (  # name: (numerator, denominator)
    ("gradcheck_slow / full_elementwise", "gradcheck_slow", "full_elementwise"),
    ("gradcheck_slow / full_elementwise_fd", "gradcheck_slow", "full_elementwise_fd"),
    ("gradcheck_fast / fast_check", "gradcheck_fast", "fast_check"),
    ("default_check / fused_fwd_bwd", "default_check", "fused_fwd_bwd"),
    ("default_check / tight_fwd_bwd", "default_check", "tight_fwd_bwd"),
)
SCALE_T = (50, 100, 200, 500, 1000, 2000)
# CPU seconds of this process (every thread): everything runs on one thread, one thing at a time, so this
# is the time the work takes, without the time the shared machine's other jobs hold the core
clock = time.process_time
SCALE_H = (16, 32, 64, 128, 256, 512)


def make_case(cell: CellBench, I: int, H: int, O: int, T: int, B: int) -> Any:  # noqa: E741
    import bptt_check as bc

    spec = bc.Spec(sizes=bc.Sizes(T=(T, T), B=(B, B), I=(I, I), H=(H, H), O=(O, O)), **cell.spec)
    case = bc.draw_case(spec, 0, 0)
    assert case.shapes == {"T": T, "B": B, "I": I, "H": H, "O": O}, case.shapes
    return case


# ----------------------------------------------------------------- measuring

def rounds(methods: dict[str, Callable[[], Any]], n: int, budget: float) -> dict[str, list[float]]:
    """Time every method once per round, ``n`` rounds (fewer once the rounds would pass ``budget`` s)."""
    runs: dict[str, list[float]] = {k: [] for k in methods}
    spent = 0.0
    for done in range(1, n + 1):
        start = clock()
        for name, fn in methods.items():
            t0 = clock()
            fn()
            runs[name].append(clock() - t0)
        spent += clock() - start
        if spent + spent / done > budget:
            break
    return runs


def timed(fn: Callable[[], Any], repeat: int, budget: float) -> list[float]:
    """Run ``fn`` up to ``repeat`` times (once more only while the runs so far stay within ``budget`` s)."""
    runs: list[float] = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        runs.append(clock() - t0)
        if sum(runs) + runs[-1] > budget:
            break
    return runs


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def checked(backward: Any, case: Any, **kw: Any) -> Callable[[], Any]:
    import bptt_check as bc

    kw = {"repeat": False, "isolate": "thread", **kw}

    def run() -> Any:
        r = bc.check_case(backward, case, **kw)
        assert r.status == "passed", r.summary()
        off = r.oracles.get("consensus", {}).get("off")
        assert not off, f"the oracles disagreed (a third one was asked): {off}"
        return r

    return run


# ----------------------------------------------------------------- one size

def bench_size(cell: CellBench, size: str, n_rounds: int, budget: float, log: Callable[[str], None]
               ) -> dict[str, Any]:
    import torch

    from bptt_check.oracles import AutogradOracle

    I, H, O, T, B = SIZES[size]  # noqa: E741
    case = make_case(cell, I, H, O, T, B)
    backward = cell.backward()
    loss, leaves = cell.tight(torch, case)
    fused_step, fused_grads = cell.fused(torch, case)
    n_elements = sum(int(v.numel()) for v in leaves)

    # the two torch baselines compute the gradients bptt-check checks
    ref = AutogradOracle(fused=False).gradients(case).grads
    fused_step()
    agree = max(float(np.max(np.abs(g - ref[k]))) / max(float(np.max(np.abs(ref[k]))), 1e-300)
                for k, g in fused_grads().items())
    assert agree < 1e-10, f"the fused torch floor computes other gradients ({agree:.1e})"

    def tight() -> None:
        for v in leaves:
            v.grad = None
        loss(*leaves).backward()

    def gradcheck(fast: bool, inputs: tuple[Any, ...], f: Callable[..., Any]) -> None:
        assert torch.autograd.gradcheck(f, inputs, fast_mode=fast)

    cheap: dict[str, Callable[[], Any]] = {
        "fused_fwd_bwd": fused_step,
        "tight_fwd_bwd": tight,
        "default_check": checked(backward, case),
        "fast_check": checked(backward, case, fast=True),
        "gradcheck_fast": lambda: gradcheck(True, tuple(leaves), loss),
    }
    if size != "large":
        cheap["full_elementwise"] = checked(backward, case, oracles=("complex-step",))
    runs = rounds(cheap, n_rounds, budget)
    notes: dict[str, str] = {}

    if size == "large":   # seconds each: timed on their own
        if cell.name == "rnn":
            runs["full_elementwise"] = timed(checked(backward, case, oracles=("complex-step",)), 2, budget)
        else:   # every element by complex step through the one forward (the generic engine): minutes
            notes["full_elementwise"] = "not run at large for this cell (the generic engine: minutes)"
        # about 2·N forwards: timed on c (O elements) and b (H elements), extended linearly to all N
        def only(name: str) -> Callable[[], None]:
            i = cell.params.index(name)
            fixed = [v.detach() for v in leaves]

            def f(v: Any) -> Any:
                args = list(fixed)
                args[i] = v
                return loss(*args)

            return lambda: gradcheck(False, (leaves[i],), f)

        rc, rb = timed(only("c"), 2, budget), timed(only("b"), 2, budget)
        nc, nb = leaves[cell.params.index("c")].numel(), leaves[cell.params.index("b")].numel()
        tc, tb = statistics.median(rc), statistics.median(rb)
        runs["gradcheck_slow"] = [tc + (tb - tc) / (nb - nc) * (n_elements - nc)]
        notes["gradcheck_slow"] = (f"estimated: measured on c ({nc} elements, {ms(tc)}) and b ({nb}, {ms(tb)}), "
                                   f"extended linearly to all {n_elements} elements")
        notes["full_elementwise_fd"] = "not run at large (minutes)"
    else:
        runs["gradcheck_slow"] = timed(lambda: gradcheck(False, tuple(leaves), loss), 3, budget)
        runs["full_elementwise_fd"] = timed(checked(backward, case, oracles=("fd",)), 3, budget)

    methods = {k: {"median_s": statistics.median(v), "runs_s": v, "note": notes.get(k, "")}
               for k, v in runs.items() if v}
    for k, note in notes.items():
        methods.setdefault(k, {"median_s": None, "runs_s": [], "note": note})
    for k, m in methods.items():
        if m["median_s"] is not None:
            log(f"  {size:<6} {k:<20} {ms(m['median_s']):>10}  ({len(m['runs_s'])} runs) {m['note']}")
    ratios = {}
    for name, a, b in RATIOS:
        ta, tb = methods[a]["median_s"], methods[b]["median_s"]
        if ta is None or tb is None:
            continue
        ratios[name] = {"ratio": ta / tb, a: ta, b: tb}
        log(f"  {size:<6} {name:<36} {ta / tb:8.2f}x   ({a} {ms(ta)} / {b} {ms(tb)})")
    return {"shape": dict(zip(("I", "H", "O", "T", "B"), SIZES[size])), "elements": n_elements,
            "methods": methods, "ratios": ratios, "fused_agrees_with_autograd": agree}


# ----------------------------------------------------------------- where a check's time goes

PARTS = ("backward calls", "reading the calls", "reference", "witness", "directions", "comparing oracles",
         "judging", "coverage", "everything else")
CHECKS = {"default": {}, "full_elementwise": {"oracles": ("complex-step",)}, "fast": {"fast": True}}
RUN = {"repeat": False, "isolate": "thread"}          # a case after the first three of a run, CPU counted here


def breakdown(cell: CellBench, I: int, H: int, O: int, T: int, B: int, runs: int,  # noqa: E741
              check: str = "default") -> dict[str, float]:
    """Median CPU seconds of each stage of a check (``CHECKS``), measured by wrapping the functions doing them:
    the backward's two calls (``Target._once``), reading them (the rest of ``Target.call``), the reference
    (the autograd or complex-step oracle), the witness (the directional oracle), fast mode's directions,
    comparing the oracles (the rest of ``consensus.reference``), judging, coverage, and the rest."""
    import bptt_check as bc
    import bptt_check.oracles.autograd as autograd
    import bptt_check.oracles.complex_step as complex_step
    import bptt_check.oracles.directional as directional
    import bptt_check.runner.target as target
    import bptt_check.verdict.fast as fast
    import bptt_check.verdict.pipeline as pipeline
    import bptt_check.verdict.settle as settle

    case = make_case(cell, I, H, O, T, B)
    backward = cell.backward()
    spent: dict[str, float] = {}
    wrapped = [(target.Target, "_once", "calls"), (target.Target, "call", "call"),
               (autograd.AutogradOracle, "gradients", "reference"),
               (complex_step.ComplexStepOracle, "gradients", "reference"),
               (directional.DirectionalOracle, "directional", "witness"), (fast, "directions", "directions"),
               (pipeline, "reference", "consensus"), (pipeline, "judge", "judging"),
               (settle, "coverage", "coverage")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in wrapped]

    def wrap(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*a: Any, **kw: Any) -> Any:
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] = spent.get(key, 0.0) + clock() - t0
        return inner

    rows = []
    try:
        for obj, name, key in wrapped:
            setattr(obj, name, wrap(getattr(obj, name), key))
        for _ in range(runs):
            spent.clear()
            t0 = clock()
            r = bc.check_case(backward, case, **RUN, **CHECKS[check])
            total = clock() - t0
            assert r.status == "passed", r.summary()
            rows.append({"total": total, **spent})
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    med = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in {k for r in rows for k in r}}
    get = med.get
    parts = {
        "backward calls": get("calls", 0.0),
        "reading the calls": get("call", 0.0) - get("calls", 0.0),
        "reference": get("reference", 0.0),
        "witness": get("witness", 0.0),
        "directions": get("directions", 0.0),
        "comparing oracles": max(0.0, get("consensus", 0.0) - get("reference", 0.0) - get("witness", 0.0)),
        "judging": get("judging", 0.0),
        "coverage": get("coverage", 0.0),
    }
    parts["everything else"] = med["total"] - sum(parts.values())
    parts["total"] = med["total"]
    return parts


# ----------------------------------------------------------------- the default check against T and H

def scaling(cell: CellBench, Ts: tuple[int, ...], Hs: tuple[int, ...], runs: int, budget: float,
            log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"T": [], "H": []}
    for axis, values in (("T", Ts), ("H", Hs)):
        log(f"  default check against {axis} (I 32, O 8, B 8, {'H 128' if axis == 'T' else 'T 200'}):")
        for v in values:
            I, H, O, T, B = 32, (v if axis == "H" else 128), 8, (v if axis == "T" else 200), 8  # noqa: E741
            case = make_case(cell, I, H, O, T, B)
            check = checked(cell.backward(), case)
            fused_step, _ = cell.fused(torch, case)
            check()
            timing = rounds({"check": check, "fused": fused_step}, runs, budget)
            t_check, t_fused = statistics.median(timing["check"]), statistics.median(timing["fused"])
            row = {"I": I, "H": H, "O": O, "T": T, "B": B, "default_check_s": t_check, "fused_fwd_bwd_s": t_fused,
                   "ratio": t_check / t_fused, "per_step_s": t_check / T}
            out[axis].append(row)
            log(f"    {axis} = {v:>5}: default check {ms(t_check):>9} ({t_check / T * 1e6:7.1f} us per step), "
                f"fused {ms(t_fused):>9}, ratio {t_check / t_fused:5.2f}x")
    ts = [r["T"] for r in out["T"]]
    if len(ts) >= 2:
        slope = float(np.polyfit(np.log(ts), np.log([r["default_check_s"] for r in out["T"]]), 1)[0])
        out["T_exponent"] = slope
        log(f"  fitted exponent of T (log time against log T): {slope:.2f} (1 = linear)")
    return out


# ----------------------------------------------------------------- the GPU

def device_rows(cell: CellBench, device: str, runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from bptt_check.oracles import AutogradOracle

    if device.startswith("cuda") and not torch.cuda.is_available():
        log(f"  skipped: {device} asked, but torch.cuda.is_available() is False")
        return {"skipped": "torch.cuda.is_available() is False"}
    rows = []
    for I, H, O, T, B in ((32, 128, 8, 200, 8), (64, 512, 8, 500, 32), (64, 1024, 8, 1000, 64)):  # noqa: E741
        case = make_case(cell, I, H, O, T, B)
        cpu, gpu = AutogradOracle(), AutogradOracle(device=device)
        a, b = cpu.gradients(case), gpu.gradients(case)
        err = max(float(np.max(np.abs(a.grads[k] - b.grads[k]))) / max(float(np.max(np.abs(a.grads[k]))), 1e-300)
                  for k in a.grads)
        t_cpu = statistics.median(timed(functools.partial(cpu.gradients, case), runs, 120.0))
        t_gpu = statistics.median(timed(functools.partial(gpu.gradients, case), runs, 120.0))
        rows.append({"I": I, "H": H, "O": O, "T": T, "B": B, "cpu_s": t_cpu, "device_s": t_gpu, "rel_err": err})
        log(f"    I{I} H{H} O{O} T{T} B{B}: reference on the CPU {ms(t_cpu)}, on {device} {ms(t_gpu)} "
            f"({t_cpu / t_gpu:.1f}x), max rel difference {err:.1e}")
    return {"device": device, "name": torch.cuda.get_device_name(), "rows": rows}


# ----------------------------------------------------------------- detection power

def detection(cases: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from bugs import BUGS, mutant
    from test_fast import MUTANTS

    import bptt_check as bc

    bugs: dict[str, tuple[Callable[..., Any], Any]] = {}
    for name in BUGS:
        spec = bc.Spec(truncation="window:2") if name == "window_one_too_long" else bc.Spec()
        bugs[name] = (mutant(name), spec)
    for name, (fn, spec) in MUTANTS.items():
        bugs[name] = (fn, spec)
    names = (*PARAMS, "x")
    out: dict[str, Any] = {}
    total = {"visible": 0, "gradcheck_fast": 0, "fast_mode": 0}
    for bug, (backward, spec) in bugs.items():
        row: dict[str, Any] = {"visible": 0, "gradcheck_fast": 0, "fast_mode": 0, "missed_by_gradcheck_fast": [],
                               "missed_by_fast_mode": []}
        for i in range(cases):
            case = bc.draw_case(spec, 0, i)
            if bc.check_case(backward, case).status != "failed":
                continue                       # the bug does not show in this case at all
            row["visible"] += 1
            if bc.check_case(backward, case, fast=True).status == "failed":
                row["fast_mode"] += 1
            else:
                row["missed_by_fast_mode"].append(i)
            if _gradcheck_fast_flags(torch, backward, case, names):
                row["gradcheck_fast"] += 1
            else:
                row["missed_by_gradcheck_fast"].append(i)
        for k in total:
            total[k] += row[k]
        out[bug] = row
        log(f"  {bug:<30} visible in {row['visible']:>2}  gradcheck fast_mode {row['gradcheck_fast']:>2}  "
            f"bptt-check --fast {row['fast_mode']:>2}")
    rates = {k: total[k] / total["visible"] for k in ("gradcheck_fast", "fast_mode")} if total["visible"] else {}
    log(f"  detection rate: gradcheck fast_mode {rates.get('gradcheck_fast', 0):.1%}, "
        f"bptt-check --fast {rates.get('fast_mode', 0):.1%} over {total['visible']} (bug, case) pairs")
    return {"cases_per_bug": cases, "bugs": out, "totals": total, "rates": rates,
            "fast_mode_catches_all": all(not r["missed_by_fast_mode"] for r in out.values())}


def _gradcheck_fast_flags(torch: Any, backward: Callable[..., Any], case: Any, names: tuple[str, ...]) -> bool:
    """Whether torch's gradcheck(fast_mode=True) flags ``backward`` (wrapped as an autograd.Function)."""
    from bptt_check.runner.read import to_numpy
    from bptt_check.runner.target import call_backward

    spec = case.spec
    present = [k for k in names if k == "x" or k in case.params]
    assert spec.loss == "half_mse" and spec.output == "identity", "detection cases use half_mse, identity output"
    loss = windowed_loss(torch, spec, case.T, case.B)
    y = torch.tensor(case.y)

    class Wrapped(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *tensors: Any) -> Any:
            ctx.save_for_backward(*tensors)
            p = dict(zip(present, tensors))
            zero = torch.zeros((), dtype=torch.float64)
            return loss(p["W"], p["U"], p.get("b", zero), p["V"], p.get("c", zero), p["h0"], p["x"], y)

        @staticmethod
        def backward(ctx: Any, gout: Any) -> Any:
            arrays = {k: t.detach().numpy().copy() for k, t in zip(present, ctx.saved_tensors)}
            moved = type(case)(spec, case.seed, case.index, case.flavor,
                               {k: arrays[k] for k in case.params}, arrays["x"], case.y)
            g = {k: to_numpy(v) for k, v in call_backward(backward, moved).items()}
            return tuple(gout * torch.tensor(np.asarray(g[k], dtype=np.float64)) for k in present)

    inputs = tuple(torch.tensor(np.asarray(case.x if k == "x" else case.params[k], dtype=np.float64),
                                requires_grad=True) for k in present)
    try:
        return not torch.autograd.gradcheck(Wrapped.apply, inputs, fast_mode=True, raise_exception=False)
    except Exception:
        return True


# ----------------------------------------------------------------- main

def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--cells", default="rnn", help=f"cells to run: {', '.join(CELLS)}")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the fast rows (median)")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="stop repeating a row once its runs would pass this many seconds")
    parser.add_argument("--breakdown-runs", type=int, default=9)
    parser.add_argument("--scale-T", type=_ints, default=SCALE_T)
    parser.add_argument("--scale-H", type=_ints, default=SCALE_H)
    parser.add_argument("--scale-runs", type=int, default=3)
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false")
    parser.add_argument("--no-detection", dest="detection", action="store_false")
    parser.add_argument("--detection-cases", type=int, default=12)
    parser.add_argument("--device", default=None, help="also time the autograd reference on this torch device")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--txt", dest="txt_path", default=None, help="write the printed output here")
    parser.add_argument("--markdown-from", default=None, metavar="JSON",
                        help="print the Markdown tables of docs/speed.md from a recorded run, and stop")
    args = parser.parse_args(argv)
    if args.markdown_from:
        print(markdown(json.loads(Path(args.markdown_from).read_text())))
        return 0
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [s for s in sizes if s not in SIZES] + [c for c in cells if c not in CELLS]
    if bad:
        parser.error(f"unknown size(s) or cell(s) {bad}; sizes: {', '.join(SIZES)}; cells: {', '.join(CELLS)}")

    # one thread everywhere: torch, numpy's BLAS (also inside the backward under test), the oracles
    os.environ["BPTT_CHECK_THREADS"] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    limits = threadpool_limits(limits=1)
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    started = time.time()
    load0 = os.getloadavg()
    log(f"bptt-check speed benchmark: cells {cells}, sizes {sizes}, {args.rounds} rounds, threads 1, "
        f"{os.cpu_count()} cpus, load {load0[0]:.2f}; torch {torch.__version__}, numpy {np.__version__}")
    # warm both sides up (first calls pay for imports and dispatch caches)
    bench_size(CELLS[cells[0]], "small", 1, 10.0, lambda line: None)

    results: dict[str, Any] = {}
    for name in cells:
        cell = CELLS[name]
        res: dict[str, Any] = {"sizes": {}}
        for size in sizes:
            log(f"{name} {size} (I, H, O, T, B = {SIZES[size]}):")
            res["sizes"][size] = bench_size(cell, size, args.rounds, args.budget, log)
        if args.breakdown:
            res["breakdown"] = {}
            for check in CHECKS:
                log(f"{name}: where the {check} check's time goes (median of {args.breakdown_runs} runs):")
                res["breakdown"][check] = {}
                for size in sizes:
                    if check == "full_elementwise" and size == "large":
                        continue               # seconds a run: its reference is all of it
                    parts = breakdown(cell, *SIZES[size], args.breakdown_runs, check)
                    res["breakdown"][check][size] = parts
                    total = parts["total"]
                    log(f"  {size:<6} total {ms(total)}: " + ", ".join(
                        f"{k} {ms(parts[k])} ({parts[k] / total:.0%})" for k in PARTS if parts[k] > 0.005 * total))
        if args.scaling:
            log(f"{name}: the default check against T and H:")
            res["scaling"] = scaling(cell, args.scale_T, args.scale_H, args.scale_runs, args.budget, log)
        if args.device:
            log(f"{name}: the autograd reference on {args.device}:")
            res["device"] = device_rows(cell, args.device, 5, log)
        results[name] = res
    det = None
    if args.detection:
        log("detection power of the fast modes on the planted bugs:")
        det = detection(args.detection_cases, log)
    limits.restore_original_limits()

    out = {
        "schema": 2,
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch.__version__, "threads": 1,
                    "load_before": list(load0), "load_after": list(os.getloadavg())},
        "config": {"rounds": args.rounds, "budget_s": args.budget, "dtype": "float64",
                   "spec": "many-to-many, tanh, identity output, half_mse, sum, full BPTT", "argv": sys.argv[1:]},
        "cells": results,
        "targets": targets(results),
        "detection": det,
        "seconds": time.time() - started,
    }
    log("")
    log(table(out))
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")
        log(f"json: {args.json_path}")
    if args.txt_path:
        Path(args.txt_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.txt_path).write_text("\n".join(lines) + "\n")
    return 0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, res in results.items():
        for ratio, size, bound, kind, applies in TARGETS:
            r = res["sizes"].get(size, {}).get("ratios", {}).get(ratio)
            if r is None or name not in applies:
                continue
            met = r["ratio"] >= bound if kind == "min" else r["ratio"] <= bound
            out.append({"cell": name, "size": size, "ratio": ratio, "value": r["ratio"],
                        "target": f"{'>=' if kind == 'min' else '<='} {bound:g}", "met": met})
    return out


ROWS = ("fused_fwd_bwd", "tight_fwd_bwd", "gradcheck_slow", "gradcheck_fast", "default_check", "full_elementwise",
        "full_elementwise_fd", "fast_check")


def _times(res: dict[str, Any], sizes: list[str], method: str) -> list[str]:
    """The median time of one row at each size, for a table."""
    cells = []
    for s in sizes:
        r = res["sizes"][s]["methods"].get(method)
        cells.append("-" if r is None or r["median_s"] is None else
                     ms(r["median_s"]) + (" (est.)" if r["note"].startswith("estimated") else ""))
    return cells


def table(out: dict[str, Any]) -> str:
    lines = []
    for name, res in out["cells"].items():
        sizes = list(res["sizes"])
        lines.append(f"{name}: | method | " + " | ".join(sizes) + " |")
        lines.append("| --- |" + " --- |" * len(sizes))
        lines += [f"| {m} | " + " | ".join(_times(res, sizes, m)) + " |" for m in ROWS]
        for key, _, _ in RATIOS:
            cells = [f"{res['sizes'][s]['ratios'][key]['ratio']:.1f}x" if key in res["sizes"][s]["ratios"] else "-"
                     for s in sizes]
            lines.append(f"| **{key}** | " + " | ".join(cells) + " |")
    if out["targets"]:
        lines.append("")
        lines.append("| target | measured | |")
        lines.append("| --- | --- | --- |")
        for t in out["targets"]:
            lines.append(f"| {t['cell']} {t['size']}: {t['ratio']} {t['target']} | {t['value']:.2f}x | "
                         f"{'met' if t['met'] else 'MISSED'} |")
    det = out.get("detection")
    if det:
        lines.append("")
        lines.append(f"Detection over {det['totals']['visible']} (planted bug, case) pairs: gradcheck fast_mode "
                     f"{det['rates'].get('gradcheck_fast', 0):.0%}, bptt-check --fast "
                     f"{det['rates'].get('fast_mode', 0):.0%}.")
    return "\n".join(lines)


def markdown(out: dict[str, Any]) -> str:
    """The tables of docs/speed.md, from a recorded run."""
    targets = {(t["cell"], t["size"], t["ratio"]): t for t in out["targets"]}
    lines: list[str] = []
    for name, res in out["cells"].items():
        sizes = list(res["sizes"])
        heads = [f"{s} (I{SIZES[s][0]} H{SIZES[s][1]} O{SIZES[s][2]} T{SIZES[s][3]} B{SIZES[s][4]})" for s in sizes]
        lines += [f"**{name}**: CPU time of each row (median)", "",
                  "| row | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(sizes)]
        lines += [f"| `{m}` | " + " | ".join(_times(res, sizes, m)) + " |" for m in ROWS]
        lines += ["", "| ratio (numerator / denominator) | " + " | ".join(sizes) + " | target |",
                  "| --- |" + " --- |" * (len(sizes) + 1)]
        for key, a, b in RATIOS:
            cells, goal = [], ""
            for s in sizes:
                r = res["sizes"][s]["ratios"].get(key)
                if r is None:
                    cells.append("-")
                    continue
                t = targets.get((name, s, key))
                mark = "" if t is None else (" ✓" if t["met"] else " ✗")
                cells.append(f"**{r['ratio']:.1f}x**{mark} ({ms(r[a])} / {ms(r[b])})")
                if t is not None:
                    goal += f"{s} {t['target']}x; "
            lines.append(f"| {key} | " + " | ".join(cells) + f" | {goal.rstrip('; ') or '-'} |")
        for check, by_size in res.get("breakdown", {}).items():
            bsizes = list(by_size)
            lines += ["", f"Where the {check.replace('_', ' ')} check's time goes (median CPU time):", "",
                      "| stage | " + " | ".join(bsizes) + " |", "| --- |" + " --- |" * len(bsizes)]
            for part in (*PARTS, "total"):
                if all(by_size[s][part] <= 0.005 * by_size[s]["total"] for s in bsizes):
                    continue
                lines.append(f"| {part} | " + " | ".join(
                    f"{ms(by_size[s][part])} ({by_size[s][part] / by_size[s]['total']:.0%})" for s in bsizes) + " |")
        sc = res.get("scaling")
        if sc:
            for axis, fixed in (("T", "H 128"), ("H", "T 200")):
                lines += ["", f"The default check against {axis} (I 32, O 8, B 8, {fixed}):", "",
                          f"| {axis} | default check | per step | fused nn.RNN fwd+bwd | ratio |",
                          "| --- | --- | --- | --- | --- |"]
                for r in sc[axis]:
                    lines.append(f"| {r[axis]} | {ms(r['default_check_s'])} | {r['per_step_s'] * 1e6:.0f} us | "
                                 f"{ms(r['fused_fwd_bwd_s'])} | {r['ratio']:.2f}x |")
            if "T_exponent" in sc:
                lines.append(f"\nFitted exponent of T: **{sc['T_exponent']:.2f}** (1 = linear).")
    det = out.get("detection")
    if det:
        lines += ["", "| planted bug | visible in | gradcheck fast_mode | bptt-check --fast |",
                  "| --- | --- | --- | --- |"]
        for bug, r in det["bugs"].items():
            lines.append(f"| {bug} | {r['visible']} | {r['gradcheck_fast']} | {r['fast_mode']} |")
        lines.append(f"| **total ({det['totals']['visible']} pairs)** | | "
                     f"**{det['rates'].get('gradcheck_fast', 0):.1%}** | **{det['rates'].get('fast_mode', 0):.1%}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
