"""Issue 16: no false alarms of the correct built-ins over the new flag space (padded batches, no output
layer, bce, ties, float32), and the padded many-to-one bug caught and named on every case.

    python benchmarks/padded_batches.py
"""

import collections
import itertools
import time

import numpy as np

import bptt_check as bc
from bptt_check.builtin import gru, lstm, truncated

BUILTIN = {"rnn": truncated, "lstm": lstm, "gru": gru}
CELLS = ("rnn", "lstm", "gru")
MODES = ("many-to-many", "many-to-one")
TRUNCATIONS = ("none", "window:2", "tbptt:2,3", "chunk:3", "window-loss:2,3")
REDUCTIONS = ("sum", "mean", "mean_time", "mean_batch")
FLAGS = (
    {"lengths": True},
    {"lengths": True, "output_layer": False},
    {"lengths": True, "loss": "bce", "output": "sigmoid"},
    {"loss": "bce", "output": "sigmoid"},
    {"output_layer": False},
    {"lengths": True, "dtype": "float32"},
    {"tie": ("I", "O"), "loss": "cross_entropy", "output": "softmax", "lengths": True},
)


def in_float32(backward):
    """The built-in computing in float32, as a float32 user's backward does."""
    def run(params, x, y, spec, lengths=None):
        low = {k: v.astype(np.float32) for k, v in params.items()}
        y = y if y.dtype.kind in "iu" else y.astype(np.float32)
        return backward(low, x.astype(np.float32), y, spec, lengths=lengths)
    return run


def reads_at_last_step(params, x, y, spec, lengths):
    """The bug: every sequence's many-to-one loss read at T - 1, the lengths ignored."""
    return BUILTIN[spec.cell.partition(":")[0]](params, x, y, spec)


def main() -> None:
    start = time.time()
    counts: collections.Counter[str] = collections.Counter()
    bad = []
    for cell, mode, trunc, red, flags in itertools.product(CELLS, MODES, TRUNCATIONS, REDUCTIONS, FLAGS):
        backward = BUILTIN[cell]
        if flags.get("dtype") == "float32":
            backward = in_float32(backward)
        report = bc.check(backward, cell=cell, mode=mode, truncation=trunc, reduction=red, cases=4, seed=11,
                          **flags)
        counts.update(report.counts)
        bad += [(cell, mode, trunc, red, flags, c.status, c.notes[:1]) for c in report.cases if not c.passed]
    print(f"correct built-ins over the flag space: {dict(counts)} ({time.time() - start:.0f} s)")
    for row in bad[:20]:
        print("  not passed:", row)
    caught = named = total = 0
    for cell, trunc, red in itertools.product(CELLS, TRUNCATIONS, ("sum", "mean", "mean_batch")):
        report = bc.check(reads_at_last_step, cell=cell, mode="many-to-one", truncation=trunc, reduction=red,
                          lengths=True, cases=6, seed=5)
        for c in report.cases:
            total += 1
            caught += c.status == "failed"
            named += bool(c.diagnosis) and c.diagnosis[0]["code"] == "lengths_ignored"
    print(f"many-to-one loss read at T - 1: {caught}/{total} caught, {named}/{total} named lengths_ignored first")


if __name__ == "__main__":
    main()
