"""How close correct float32 backwards come to the float32 tolerance (the margin behind TOLERANCES["float32"]).

    python benchmarks/float32_margin.py      # the largest error / allowed over 1,500 random cases

For random float32 specs (T up to 12) both float32 built-ins (``truncated`` and ``jacobian``,
two independent algorithms) are compared element-wise with the float64 autograd reference; the
ratio error / allowed must stay far below 1. A wrong formula is off by O(1), so the bound can be
this tight without crying wolf.
"""

from __future__ import annotations

import numpy as np

import bptt_check as bc
from bptt_check.builtin import jacobian, truncated
from bptt_check.model.tolerance import ZERO_FLOOR, tolerance_for
from bptt_check.oracles import AutogradOracle
from bptt_check.verdict.precision import UNJUDGEABLE, rounding_allowance

TRUNCATIONS = ("none", "window:1", "window:2", "tbptt:2,3", "chunk:3", "window-loss:2,3", "window-loss:3,2")
OUTPUT_LOSS = (("identity", "half_mse"), ("softmax", "cross_entropy"), ("sigmoid", "sse"), ("tanh", "half_mse"),
               ("softmax", "half_mse"), ("identity", "sse"))


def main(cases: int = 1500) -> None:
    worst = []
    for i in range(cases):
        rng = np.random.default_rng([i, 3])
        output, loss = OUTPUT_LOSS[rng.integers(len(OUTPUT_LOSS))]
        spec = bc.Spec(mode=("many-to-one", "many-to-many")[rng.integers(2)],
                       truncation=TRUNCATIONS[rng.integers(len(TRUNCATIONS))],
                       activation=("tanh", "sigmoid", "relu", "identity")[rng.integers(4)],
                       output=output, loss=loss, reduction=("sum", "mean", "mean_batch", "mean_time")[rng.integers(4)],
                       bias=bool(rng.integers(2)), dtype="float32", sizes=bc.Sizes(T=(3, 12)))
        case = bc.draw_case(spec, 17, i)
        ref = AutogradOracle().gradients(case).grads
        tol = tolerance_for("float32", case.T)
        allow = rounding_allowance(case, ref, tol)
        floor = ZERO_FLOOR * max(float(np.abs(v).max()) for v in ref.values())
        for fn in (truncated, jacobian):
            got = fn(case.params, case.x, case.y, spec)
            for k, r in ref.items():
                scale = max(float(np.abs(r).max()), floor, 1e-300)
                if allow.get(k, 0.0) >= UNJUDGEABLE * float(np.abs(r).max()):
                    continue            # the check leaves such a gradient unjudged
                allowed = tol.atol * scale + tol.rtol * np.abs(r) + allow.get(k, 0.0)
                ratio = float((np.abs(got[k].astype(np.float64) - r) / allowed).max())
                worst.append((ratio, fn.__name__.split(".")[-1], k, str(spec), case.T))
    worst.sort(key=lambda w: -w[0])
    print(f"{len(worst)} gradients ({cases} cases x 2 built-ins): largest error / allowed = {worst[0][0]:.3g}")
    for w in worst[:5]:
        print("  ", w)


if __name__ == "__main__":
    main()
