"""The exported Hypothesis strategies: keyword-only, validated eagerly, composable; drawn cases have
exactly their shapes, exercise the recurrence, rebuild from their repr, and shrink to the smallest."""

import numpy as np
import pytest
from bugs import mutant
from hypothesis import find, given, settings
from hypothesis import strategies as st

import bptt_check as bc
import bptt_check.strategies  # noqa: F401  (the repr of a drawn case names it)
from bptt_check.strategies import cases, make_case, parameters, shapes, specs


def fails(backward, case):
    return bc.check_case(backward, case, oracles=["autograd"], isolate="thread").status == "failed"


@settings(max_examples=30)
@given(case=cases(spec=specs(losses=["cross_entropy", "half_mse"]), shapes=shapes(T=(1, 5), H=(1, 4))))
def test_drawn_cases_have_their_shapes_and_exercise_the_recurrence(case):
    s = case.shapes
    assert 1 <= s["T"] <= 5 and 1 <= s["H"] <= 4 and case.x.shape == (s["T"], s["B"], s["I"])
    assert case.params["h0"].shape == (s["B"], s["H"]) and (case.params["h0"] != 0).all()
    if s["H"] >= 2:
        assert not np.allclose(case.params["U"], case.params["U"].T)
    if case.spec.loss == "cross_entropy":
        assert s["O"] >= 2 and case.y.dtype.kind == "i" and case.y.max() < s["O"]
    y_lead = (s["B"],) if case.spec.mode == "many-to-one" else (s["T"], s["B"])
    assert case.y.shape[: len(y_lead)] == y_lead


@settings(max_examples=10)
@given(case=cases(spec=bc.Spec(truncation="window:2", mode="many-to-one")))
def test_repr_of_a_drawn_case_rebuilds_it(case):
    again = eval(repr(case))
    assert again.shapes == case.shapes and again.spec == case.spec
    assert all(np.array_equal(again.params[k], case.params[k]) for k in case.params)
    assert np.array_equal(again.x, case.x) and np.array_equal(again.y, case.y)


@settings(max_examples=10)
@given(p=parameters(spec=bc.Spec(bias=False), shapes={"T": 3, "B": 2, "I": 4, "H": 3, "O": 2}))
def test_parameters_strategy(p):
    assert set(p) == {"W", "U", "V", "h0"}
    assert p["W"].shape == (3, 4) and p["U"].shape == (3, 3) and p["V"].shape == (2, 3) and p["h0"].shape == (2, 3)


def test_a_failing_case_shrinks_to_the_smallest_shapes_and_shortest_sequence():
    backward = mutant("no_recurrent_flow")     # only visible once a gradient crosses a step: T >= 2
    smallest = find(cases(spec=bc.Spec()), lambda c: fails(backward, c),
                    settings=settings(database=None, derandomize=True, max_examples=200))
    assert smallest.shapes == {"T": 2, "B": 1, "I": 1, "H": 1, "O": 1}
    assert repr(smallest) == "bptt_check.strategies.make_case(bptt_check.Spec(), seed=0, T=2, B=1, I=1, H=1, O=1)"


def test_truncation_shrinks_with_the_case():
    backward = mutant("window_one_too_long")   # wrong only when the window is shorter than the sequence
    spec_st = specs(modes=["many-to-many"], truncation=st.sampled_from([bc.Truncation("window", k) for k in (1, 2)]),
                    activations=["tanh"], outputs=["identity"], losses=["half_mse"], reductions=["sum"], bias=False)
    smallest = find(cases(spec=spec_st), lambda c: fails(backward, c),
                    settings=settings(database=None, derandomize=True, max_examples=200))
    assert smallest.spec.truncation == bc.Truncation("window", 1)
    assert smallest.shapes["T"] == 3 and smallest.shapes["B"] == smallest.shapes["I"] == 1


@pytest.mark.parametrize("call, words", [
    (lambda: shapes(T=0), "shapes(T=0)"),
    (lambda: shapes(H=(4, 2)), "1 <= lo <= hi"),
    (lambda: specs(modes=["one-to-many"]), "not in many-to-one"),
    (lambda: parameters(spec="many-to-one"), "needs a Spec"),
    (lambda: cases(shapes=[1, 2]), "takes a dict or a strategy"),
    (lambda: make_case(bc.Spec(loss="cross_entropy", output="softmax"), seed=0, T=2, B=1, I=1, H=1, O=1),
     "O >= 2"),
])
def test_arguments_are_validated_when_the_strategy_is_built(call, words):
    with pytest.raises(bc.BPTTCheckError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_strategies_take_keywords_only():
    with pytest.raises(TypeError):
        shapes((1, 3))
    with pytest.raises(TypeError):
        cases(bc.Spec())
