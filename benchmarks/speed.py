"""bptt-check against torch.autograd.gradcheck, side by side in one process and one run.

    python benchmarks/speed.py [--sizes small,medium,large] [--json FILE] [--repeat N] [--threads N]
                               [--no-detection]

Per size (float64, many-to-many, tanh, identity output, half_mse, sum, full BPTT), on one drawn case:

  torch_fwd_bwd         one torch forward + backward of the loss (the floor)
  gradcheck_slow        torch.autograd.gradcheck over W, U, b, V, c, h0 (at large: estimated from
                        the measured time on c and on b, linear in the number of elements)
  gradcheck_fast        the same with fast_mode=True
  default_check         bptt_check.check_case of the built-in backward, default oracles
                        (autograd element-wise + 4 joint complex-step directions as witness)
  full_elementwise      the complex-step oracle, every element of W, U, b, V, c, h0 (independent of autograd)
  full_elementwise_fd   the batched finite-difference oracle, the same elements
  fast_mode             bptt_check.check_case(..., fast=True) of the built-in backward

It prints a table of medians, the error of each oracle against autograd (max over tensors of
max |oracle - autograd| / max |autograd|), the peak memory traced by tracemalloc (numpy's
allocations; torch's own allocator is not traced, so torch methods show none), and the ratios
gradcheck_slow / full_elementwise, default_check / torch_fwd_bwd, gradcheck_fast / fast_mode.

Detection (unless --no-detection): every planted bug of tests/bugs.py and the extra mutants of
tests/test_fast.py, on fixed-seed small cases where the bug is visible (the full element-wise
check fails it), through torch's gradcheck fast_mode (the backward wrapped in an
autograd.Function) and through bptt-check's fast mode: the two detection rates.

Threads: both torch and numpy's BLAS run with --threads (default 1) threads, so the comparison is
not decided by thread contention on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

SIZES = {  # (I, H, O, T, B)
    "small": (3, 5, 2, 6, 2),
    "medium": (16, 32, 4, 50, 4),
    "large": (32, 128, 8, 200, 8),
}
PARAMS = ("W", "U", "b", "V", "c", "h0")


# ----------------------------------------------------------------- the torch side

def torch_loss(torch: Any, spec: Any, T: int, B: int) -> Callable[..., Any]:
    """The spec's (truncated) objective as a torch function of (W, U, b, V, c, h0, x, y)."""
    from bptt_check.model.functions import loss_scale

    scale = loss_scale(spec, T, B)
    windows = spec.windows(T)

    def act(z: Any) -> Any:
        return {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}.get(spec.activation,
                                                                                      lambda v: v)(z)

    def fn(W: Any, U: Any, b: Any, V: Any, c: Any, h0: Any, x: Any, y: Any) -> Any:
        states = [h0]
        for t in range(T):
            states.append(act(x[t] @ W.T + states[-1] @ U.T + b))
        total = 0.0
        for w in windows:
            h = h0 if w.start == 0 else states[w.start].detach()
            for t in range(w.start, max(w.losses) + 1):
                h = states[t + 1] if w.start == 0 else act(x[t] @ W.T + h @ U.T + b)
                if t in w.losses:
                    target = y if spec.mode == "many-to-one" else y[t]
                    total = total + scale * 0.5 * ((h @ V.T + c - target) ** 2).sum()
        return total

    return fn


def make_case(size: str) -> Any:
    import bptt_check as bc

    I, H, O, T, B = SIZES[size]
    spec = bc.Spec(sizes=bc.Sizes(T=(T, T), B=(B, B), I=(I, I), H=(H, H), O=(O, O)))
    case = bc.draw_case(spec, 0, 0)
    assert case.shapes == {"T": T, "B": B, "I": I, "H": H, "O": O}, case.shapes
    return case


# ----------------------------------------------------------------- measuring

def timed(fn: Callable[[], Any], repeat: int, budget: float) -> tuple[list[float], Any]:
    """Run ``fn`` up to ``repeat`` times (once more only while the runs so far stay within ``budget`` s)."""
    runs, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        runs.append(time.perf_counter() - t0)
        if sum(runs) + runs[-1] > budget:
            break
    return runs, value


def traced_peak(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def error_vs(grads: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for k in PARAMS:
        if k in grads:
            scale = float(np.max(np.abs(ref[k]), initial=0.0)) or 1.0
            worst = max(worst, float(np.max(np.abs(grads[k] - ref[k]), initial=0.0)) / scale)
    return worst


def bench_size(size: str, repeat: int, budget: float, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    import bptt_check as bc
    from bptt_check.builtin import truncated
    from bptt_check.oracles import AutogradOracle, ComplexStepOracle, FiniteDifferenceOracle

    case = make_case(size)
    T, B = case.T, case.B
    fn = torch_loss(torch, case.spec, T, B)
    x, y = torch.tensor(case.x), torch.tensor(case.y)
    leaves = [torch.tensor(case.params[k], requires_grad=True) for k in PARAMS]
    n_elements = sum(int(v.numel()) for v in leaves)
    ref = AutogradOracle().gradients(case).grads
    methods: dict[str, dict[str, Any]] = {}

    def record(name: str, runs: list[float], error: float | None, peak: float | None, note: str = "") -> None:
        methods[name] = {"median_s": statistics.median(runs), "runs_s": runs, "error_vs_autograd": error,
                         "peak_mib": peak, "note": note}
        err = "-" if error is None else f"{error:.1e}"
        log(f"  {size:<6} {name:<20} {statistics.median(runs):>10.4f} s  err {err:>8}  "
            f"({len(runs)} run{'s' if len(runs) > 1 else ''}) {note}")

    def fwd_bwd() -> None:
        for v in leaves:
            v.grad = None
        fn(*leaves, x, y).backward()

    runs, _ = timed(fwd_bwd, max(repeat, 5), budget)
    record("torch_fwd_bwd", runs, 0.0, None, "autograd itself")

    def gradcheck(fast: bool, inputs: tuple[Any, ...], f: Callable[..., Any]) -> bool:
        return bool(torch.autograd.gradcheck(f, inputs, fast_mode=fast))

    def full_fn(*p: Any) -> Any:
        return fn(*p, x, y)

    inputs = tuple(leaves)
    runs, ok = timed(lambda: gradcheck(True, inputs, full_fn), repeat, budget)
    assert ok
    record("gradcheck_fast", runs, None, None, "fast_mode=True")

    if size == "large":
        # too slow to run whole (about 2·N forwards): time it on c (8 elements) and b (H elements),
        # then extend linearly to all N elements
        def only(name: str) -> Callable[[], bool]:
            i = PARAMS.index(name)
            fixed = [v.detach() for v in leaves]

            def f(v: Any) -> Any:
                args = list(fixed)
                args[i] = v
                return fn(*args, x, y)
            return lambda: gradcheck(False, (leaves[i],), f)
        rc, _ = timed(only("c"), repeat, budget)
        rb, _ = timed(only("b"), repeat, budget)
        nc, nb = leaves[PARAMS.index("c")].numel(), leaves[PARAMS.index("b")].numel()
        tc, tb = statistics.median(rc), statistics.median(rb)
        slope = (tb - tc) / (nb - nc)
        est = tc + slope * (n_elements - nc)
        record("gradcheck_slow", [est], None, None,
               f"ESTIMATED: measured on c ({nc} elements, {tc:.2f} s) and b ({nb}, {tb:.2f} s), "
               f"extended linearly to all {n_elements} elements")
        methods["gradcheck_slow"]["estimated"] = True
        methods["gradcheck_slow"]["measured"] = {"c": rc, "b": rb}
    else:
        runs, ok = timed(lambda: gradcheck(False, inputs, full_fn), repeat, budget)
        assert ok
        record("gradcheck_slow", runs, None, None, "fast_mode=False")
        methods["gradcheck_slow"]["estimated"] = False

    def default() -> Any:
        r = bc.check_case(truncated, case)
        assert r.status == "passed", r.summary()
        return r

    runs, _ = timed(default, max(repeat, 5), budget)
    record("default_check", runs, None, traced_peak(default),
           "built-in backward; autograd witnessed by 4 joint complex-step directions")

    def peak(make: Callable[..., Any], runs: list[float], whole: bool = False) -> tuple[float, str]:
        """Peak traced memory; for a long per-element method, of one block of each kind (b, h0) plus the
        results (its blocks are all alike)."""
        if whole or min(runs) < 10.0:
            return traced_peak(lambda: make(PARAMS).gradients(case)), ""
        results = 3 * 8 * n_elements / 2**20
        return (traced_peak(lambda: make(("b", "h0")).gradients(case)) + results,
                "; peak memory measured on b and h0 (one block of each kind) plus the result arrays")

    def cs(wrt: tuple[str, ...]) -> Any:
        return ComplexStepOracle(wrt=wrt)

    def fd(wrt: tuple[str, ...]) -> Any:
        return FiniteDifferenceOracle(wrt=wrt)

    runs, res = timed(lambda: cs(PARAMS).gradients(case), repeat, budget)
    mem, how = peak(cs, runs, whole=True)
    record("full_elementwise", runs, error_vs(res.grads, ref), mem,
           f"complex step (tangent propagation, {res.notes[-1]}), every element" + how)

    runs, res = timed(lambda: fd(PARAMS).gradients(case), repeat, budget)
    mem, how = peak(fd, runs)
    record("full_elementwise_fd", runs, error_vs(res.grads, ref), mem,
           "batched central differences, every element" + how)

    def fast() -> Any:
        r = bc.check_case(truncated, case, fast=True)
        assert r.status == "passed", r.summary()
        return r

    runs, _ = timed(fast, max(repeat, 5), budget)
    record("fast_mode", runs, None, traced_peak(fast), "built-in backward; 4 joint directions, no torch")

    med = {k: v["median_s"] for k, v in methods.items()}
    ratios = {
        "gradcheck_slow / full_elementwise": med["gradcheck_slow"] / med["full_elementwise"],
        "gradcheck_slow / full_elementwise_fd": med["gradcheck_slow"] / med["full_elementwise_fd"],
        "default_check / torch_fwd_bwd": med["default_check"] / med["torch_fwd_bwd"],
        "gradcheck_fast / fast_mode": med["gradcheck_fast"] / med["fast_mode"],
    }
    for k, v in ratios.items():
        log(f"  {size:<6} {k:<38} {v:8.2f}")
    shape = dict(zip(("I", "H", "O", "T", "B"), SIZES[size]))
    return {"shape": shape, "elements": n_elements, "methods": methods, "ratios": ratios}


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
        row = {"visible": 0, "gradcheck_fast": 0, "fast_mode": 0, "missed_by_gradcheck_fast": [],
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
    missed = {b: r["missed_by_gradcheck_fast"] for b, r in out.items() if r["missed_by_gradcheck_fast"]}
    caught_all_missed = all(not r["missed_by_fast_mode"] for r in out.values())
    log(f"  detection rate: gradcheck fast_mode {rates.get('gradcheck_fast', 0):.1%}, "
        f"bptt-check --fast {rates.get('fast_mode', 0):.1%} over {total['visible']} (bug, case) pairs")
    return {"cases_per_bug": cases, "bugs": out, "totals": total, "rates": rates,
            "missed_by_gradcheck_fast": missed, "fast_mode_catches_all": caught_all_missed}


def _gradcheck_fast_flags(torch: Any, backward: Callable[..., Any], case: Any, names: tuple[str, ...]) -> bool:
    """Whether torch's gradcheck(fast_mode=True) flags ``backward`` (wrapped as an autograd.Function)."""
    from bptt_check.runner.read import to_numpy
    from bptt_check.runner.target import call_backward

    spec = case.spec
    present = [k for k in names if k == "x" or k in case.params]
    T, B = case.T, case.B
    loss = torch_loss(torch, spec, T, B) if spec.loss == "half_mse" and spec.output == "identity" else None
    assert loss is not None, "detection cases use half_mse with identity output"
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

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (median); at least 5 for the "
                        "sub-second methods")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="stop repeating a method once its runs would pass this many seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    parser.add_argument("--no-detection", dest="detection", action="store_false")
    parser.add_argument("--detection-cases", type=int, default=12)
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        parser.error(f"unknown size(s) {bad}; choose from {', '.join(SIZES)}")

    os.environ["BPTT_CHECK_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.time()
    load0 = os.getloadavg()
    log(f"bptt-check speed benchmark: sizes {sizes}, repeat {args.repeat}, threads {args.threads}, "
        f"{os.cpu_count()} cpus, load {load0[0]:.2f}")
    # warm both sides up (first calls pay for imports and dispatch caches)
    bench_size("small", 1, args.budget, lambda line: None)

    results: dict[str, Any] = {}
    for size in sizes:
        log(f"size {size} {SIZES[size]} (I, H, O, T, B):")
        results[size] = bench_size(size, args.repeat, args.budget, log)
    det = detection(args.detection_cases, log) if args.detection else None

    out = {
        "schema": 1,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": torch.__version__, "threads": args.threads,
                    "load_before": list(load0), "load_after": list(os.getloadavg())},
        "config": {"repeat": args.repeat, "budget_s": args.budget, "spec": str(make_case("small").spec),
                   "dtype": "float64"},
        "sizes": results,
        "detection": det,
        "seconds": time.time() - started,
    }
    log("")
    log(table(out))
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")
        log(f"json: {args.json_path}")
    return 0


def table(out: dict[str, Any]) -> str:
    sizes = list(out["sizes"])
    lines = ["| method | " + " | ".join(sizes) + " |", "| --- |" + " --- |" * len(sizes)]
    order = ("torch_fwd_bwd", "gradcheck_slow", "gradcheck_fast", "default_check", "full_elementwise",
             "full_elementwise_fd", "fast_mode")
    for m in order:
        cells = []
        for s in sizes:
            r = out["sizes"][s]["methods"][m]
            cell = f"{r['median_s']:.3g} s"
            if r.get("estimated"):
                cell += " (est.)"
            if r["error_vs_autograd"] is not None and m.startswith("full"):
                cell += f", err {r['error_vs_autograd']:.0e}"
            if r["peak_mib"] is not None and m.startswith("full"):
                cell += f", {r['peak_mib']:.0f} MiB"
            cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for key in ("gradcheck_slow / full_elementwise", "gradcheck_slow / full_elementwise_fd",
                "default_check / torch_fwd_bwd", "gradcheck_fast / fast_mode"):
        lines.append(f"| **{key}** | " + " | ".join(f"{out['sizes'][s]['ratios'][key]:.1f}x" for s in sizes) + " |")
    det = out.get("detection")
    if det:
        lines.append("")
        lines.append(f"Detection over {det['totals']['visible']} (planted bug, case) pairs: gradcheck fast_mode "
                     f"{det['rates'].get('gradcheck_fast', 0):.0%}, bptt-check --fast "
                     f"{det['rates'].get('fast_mode', 0):.0%}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
