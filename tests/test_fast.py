"""Fast mode (--fast): k Rademacher projections against the complex step, element-wise only on a mismatch.

Besides the planted bugs of ``bugs.py``, ``MUTANTS`` are subtle ones (small relative errors, one
element, one tensor, one step) of the kind a tolerance inflated by the sum of the direction's
entries lets through; ``benchmarks/speed.py`` measures both detection rates on all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bugs import BUGS, mutant
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.strategies import specs, truncations

HERE = Path(__file__).parent


def _edit(name, change):
    """The correct truncated backward with ``change(grads, params, x)`` applied to its result."""
    def backward(params, x, y, spec):
        g = truncated(params, x, y, spec)
        change(g, params, x)
        return g

    backward.__name__ = name
    return backward


def _scale(key, factor):
    def change(g, params, x):
        g[key] = g[key] * factor
    return change


def _one_element(g, params, x):
    g["U"][0, -1] += 1e-4 * np.max(np.abs(g["U"]))


def _last_step_dx(g, params, x):
    g["x"][-1] = 0.0


def _one_row_sign(g, params, x):
    g["W"][0] = -g["W"][0]


MUTANTS = {
    # name: (backward, spec it is checked in)
    "dc_rel_1e-4": (_edit("dc_rel_1e-4", _scale("c", 1 + 1e-4)), bc.Spec()),
    "dU_rel_1e-5": (_edit("dU_rel_1e-5", _scale("U", 1 + 1e-5)), bc.Spec()),
    "dU_one_element_1e-4": (_edit("dU_one_element_1e-4", _one_element), bc.Spec()),
    "dh0_halved": (_edit("dh0_halved", _scale("h0", 0.5)), bc.Spec()),
    "dx_last_step_dropped": (_edit("dx_last_step_dropped", _last_step_dx), bc.Spec()),
    "dW_first_row_sign": (_edit("dW_first_row_sign", _one_row_sign), bc.Spec()),
}


def _planted():
    for bug in BUGS:
        spec = bc.Spec(truncation="window:2") if bug == "window_one_too_long" else bc.Spec()
        yield bug, mutant(bug), spec
    for name, (fn, spec) in MUTANTS.items():
        yield name, fn, spec


@pytest.mark.parametrize("name, backward, spec", list(_planted()), ids=[n for n, _, _ in _planted()])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fast_mode_finds_each_planted_bug_where_the_full_check_does(name, backward, spec, activation):
    spec = spec.replace(activation=activation)
    seen = 0
    for i in range(8):
        case = bc.draw_case(spec, 0, i)
        # the verdicts and the failed gradients are compared; the evidence (prefix re-runs) is not
        full = bc.check_case(backward, case, evidence=None)
        fast = bc.check_case(backward, case, fast=True, evidence=None)
        if full.status == "failed":
            seen += 1
            assert fast.status == "failed", (full.summary(), fast.summary(), fast.notes)
            # localized to exactly the same gradients, element-wise
            assert set(fast.failed_grads) == set(full.failed_grads), (full.summary(), fast.summary())
        else:
            assert fast.status != "failed", (full.summary(), fast.summary(), fast.notes)
    assert seen >= 3, "the bug should show in most fixed-seed cases"


@settings(max_examples=30, deadline=None)
@given(spec=specs(truncation=truncations()), seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_fast_mode_never_fails_a_correct_backward(spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    result = bc.check_case(truncated, case, fast=True)
    assert result.status in ("passed", "inconclusive"), (result.summary(), result.notes)
    fast = result.oracles["fast"]
    assert fast["directions"] == 4
    if spec.activation != "relu":
        assert result.status == "passed"
        assert fast["method"] == "tangent"
        # the joint directions pass, nothing is localized
        assert fast["joint"]["failed_directions"] == 0 and not fast["tensors"]
        assert fast["joint"]["max_deviation"] <= 1e-3 * fast["joint"]["tolerance"]


def test_a_mismatch_in_x_is_localized_to_its_block_of_steps():
    spec = bc.Spec(sizes=bc.Sizes(T=(24, 24)))
    case = bc.draw_case(spec, 1, 0)
    result = bc.check_case(MUTANTS["dx_last_step_dropped"][0], case, fast=True)
    assert result.failed_grads == ["x"]
    g = result.grads["x"]
    assert g.worst_index[0] == case.T - 1 and g.size == case.x.size
    info = result.oracles["fast"]["tensors"]["x"]
    assert info["localized"] and info["element_wise"] == "complex-step"
    assert info["elements_checked"] < case.x.size / 4          # only the failing blocks of steps
    assert any("steps 21-23" in n for n in result.notes), result.notes


def test_a_single_wrong_element_is_caught_with_every_seed():
    # Rademacher weights have modulus 1: one element off by more than c·‖τ‖₂ shows in every direction
    for seed in range(6):
        case = bc.draw_case(bc.Spec(), seed, 0)
        result = bc.check_case(MUTANTS["dU_one_element_1e-4"][0], case, fast=True)
        assert result.failed_grads == ["U"], result.summary()
        assert result.grads["U"].worst_index == [0, case.shapes["H"] - 1]
        fast = result.oracles["fast"]
        assert fast["joint"]["failed_directions"] == 4
        assert fast["tensors"]["U"]["failed_directions"] == 4 and fast["tensors"]["U"]["localized"]
        assert all(fast["tensors"][k]["failed_directions"] == 0 for k in ("W", "b", "V", "c", "h0", "x"))


def test_missing_and_misshapen_gradients_are_reported_without_projection():
    def backward(params, x, y, spec):
        g = truncated(params, x, y, spec)
        del g["U"]
        g["W"] = g["W"].T
        return g

    case = bc.draw_case(bc.Spec(), 0, 0)
    result = bc.check_case(backward, case, fast=True)
    # a result that breaks the protocol is a finding about the backward, before any projection
    assert result.status == "error" and result.error["kind"] == "missing_key"
    assert set(result.error["keys"]) == {"U", "W"}
    assert "missing gradient 'U'" in result.error["message"] and "transposed" in result.error["message"]


def test_noise_within_the_tolerance_passes():
    rng = np.random.default_rng(0)

    def noisy(params, x, y, spec):
        g = truncated(params, x, y, spec)
        return {k: v * (1 + 1e-9 * rng.standard_normal(v.shape)) for k, v in g.items()}

    for i in range(6):
        assert bc.check_case(noisy, bc.draw_case(bc.Spec(), 2, i), fast=True).status == "passed"


def test_fast_mode_on_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bptt_check", f"{HERE / 'bugs.py'}:du_from_t1", "--fast",
                           "--cases", "3", "--directions", "6", "--report-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["oracles"] == ["directional", "complex-step"]
    for case in report["cases"]:
        assert case["status"] == "failed"
        assert {k for k, g in case["params"].items() if not g["passed"]} == {"U"}
        assert case["oracles"]["fast"]["directions"] == 6


def test_a_directional_reference_is_refused_on_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bptt_check", "--oracle", "directional", "--cases", "1",
                           "--report-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "first oracle is the reference" in proc.stderr
