"""Blind spots made impossible: the generator exercises the recurrence; a vanished gradient is inconclusive."""

import numpy as np
import pytest
from bugs import mutant

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.model.coverage import coverage, threshold

SCHEDULES = ["window:1", "window:3", "tbptt:2,4", "tbptt:3,5", "chunk:3", "window-loss:2,3", "window-loss:3,2"]


@pytest.mark.parametrize("truncation", SCHEDULES)
@pytest.mark.parametrize("mode", ["many-to-one", "many-to-many"])
def test_truncation_bites_in_every_case_but_the_deliberate_edges(mode, truncation):
    spec = bc.Spec(mode=mode, truncation=truncation)
    for index in range(24):
        case = bc.draw_case(spec, 5, index)
        if case.flavor in ("T=1", "window>=T"):
            continue
        assert case.T >= 3 and any(w.start > 0 for w in case.windows), (case.flavor, case.T)
        assert np.all(case.params["h0"] != 0)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "identity"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_drawn_cases_are_covered_and_replay_bit_for_bit(activation, dtype):
    spec = bc.Spec(activation=activation, dtype=dtype, mode="many-to-one", truncation="tbptt:3,5")
    covered = 0
    for index in range(16):
        case = bc.draw_case(spec, 9, index)
        covered += coverage(case).value >= threshold(dtype, case.T)
        again = bc.draw_case(spec, 9, index)
        for k in case.params:
            np.testing.assert_array_equal(case.params[k], again.params[k])
        np.testing.assert_array_equal(case.x, again.x)
    assert covered >= 15   # a relu edge (H = 1, B = 1) may stay dead after every redraw


def test_a_softmax_output_always_has_two_classes():
    # with one class the softmax is constant: every gradient is zero and any backward passes
    for index in range(16):
        assert bc.draw_case(bc.Spec(output="softmax"), 0, index).shapes["O"] >= 2


def _vanishing(bug=None):
    case = bc.draw_case(bc.Spec(mode="many-to-one", sizes=bc.Sizes(T=(8, 8))), 0, 0)
    case.params["U"] *= 1e-3      # the gradient dies within two steps back
    case.params["W"] *= 1e-3
    return case


def test_a_vanished_gradient_is_inconclusive_not_passed():
    case = _vanishing()
    assert coverage(case).value < threshold("float64", case.T)
    r = bc.check_case(truncated, case)
    assert r.status == "inconclusive" and r.notes[0].startswith("coverage:"), r.summary()
    # the blind spot it guards: dU without its t = 0 term is within tolerance here
    r = bc.check_case(mutant("du_from_t1"), case)
    assert r.status == "inconclusive", r.summary()


def test_a_covered_case_is_not_downgraded():
    case = bc.draw_case(bc.Spec(mode="many-to-one"), 0, 0)
    assert coverage(case).value > 1e-3
    assert bc.check_case(truncated, case).status == "passed"
