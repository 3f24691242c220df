"""Every built-in implementation against both oracles, over hypothesis-drawn specs and shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import BUILTINS, supports
from bptt_check.strategies import specs, truncations


def _check_one(name, spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    result = bc.check_case(BUILTINS[name], case, oracles=("autograd", "fd"))   # both oracles of issue 2
    if spec.activation == "relu" and result.status == "inconclusive":
        # dead relu units can stop the gradient before a window's start: no mismatch, but
        # nothing proven about the early steps either, and the verdict says so
        assert result.notes[0].startswith("coverage") and not result.failed_grads, result.summary()
        return
    assert result.status == "passed", result.summary()
    # the recurrence was exercised
    if case.shapes["H"] >= 2:
        U = case.params["U"]
        assert not np.allclose(U, U.T)
    assert np.all(case.params["h0"] != 0)


@pytest.mark.parametrize("name", ["many_to_one", "many_to_many"])
@settings(max_examples=25)
@given(spec=specs(truncation=st.just(bc.Truncation())), seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_full_bptt_builtins_match_both_oracles(name, spec, seed, index):
    spec = spec.replace(mode="many-to-one" if name == "many_to_one" else "many-to-many")
    _check_one(name, spec, seed, index)


@pytest.mark.parametrize("name", ["truncated", "jacobian"])
@settings(max_examples=40)
@given(spec=specs(truncation=truncations()), seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_schedule_builtins_match_both_oracles_in_every_mode(name, spec, seed, index):
    _check_one(name, spec, seed, index)


@pytest.mark.parametrize("truncation", ["none", "window:1", "window:3", "tbptt:2,3", "tbptt:1,4", "chunk:2",
                                        "chunk:3", "window-loss:2,3", "window-loss:3,2"])
@pytest.mark.parametrize("mode", ["many-to-one", "many-to-many"])
def test_every_named_schedule_with_every_applicable_builtin(mode, truncation):
    spec = bc.Spec(mode=mode, truncation=truncation)
    names = [n for n in BUILTINS if supports(n, spec)]
    assert "truncated" in names and "jacobian" in names
    for name in names:
        report = bc.check(BUILTINS[name], spec, cases=8, seed=3, oracles=("autograd", "fd"))
        assert report.passed and report.counts["passed"] == 8, [c.summary() for c in report.cases]


def test_full_bptt_builtins_refuse_a_truncated_spec():
    with pytest.raises(bc.BPTTCheckError, match="use the 'truncated' or 'jacobian' built-in"):
        BUILTINS["many_to_many"]({}, np.zeros((2, 1, 1)), None, bc.Spec(truncation="window:1"))


def test_oracles_agree_with_each_other_element_wise():
    from bptt_check.oracles import AutogradOracle, FiniteDifferenceOracle

    for i in range(8):
        case = bc.draw_case(bc.Spec(truncation="tbptt:2,3", activation="sigmoid", output="softmax"), 11, i)
        a = AutogradOracle().gradients(case)
        f = FiniteDifferenceOracle().gradients(case)
        assert a.grads.keys() == f.grads.keys() == {"W", "U", "b", "V", "c", "h0", "x"}
        for k in a.grads:
            np.testing.assert_allclose(f.grads[k], a.grads[k], rtol=1e-6, atol=1e-8)
