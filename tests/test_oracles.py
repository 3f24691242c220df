"""The batched oracles (complex step, finite differences, directional) and their consensus."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.oracles import (
    ORACLES,
    AutogradOracle,
    ComplexStepOracle,
    DirectionalOracle,
    FiniteDifferenceOracle,
    OracleResult,
    generic,
)
from bptt_check.oracles.batched import Trajectory
from bptt_check.oracles.complex_step import literal_complex_step
from bptt_check.oracles.directional import joint_projections, projections
from bptt_check.strategies import DEFAULT_TRUNCATIONS, specs, truncations
from bptt_check.verdict.consensus import reference
from bptt_check.verdict.precision import float64_rounding

KEYS = ("W", "U", "b", "V", "c", "h0", "x")


def _rel(a, r):
    """max |a - r| relative to the reference's own scale (max |r|)."""
    scale = float(np.max(np.abs(r), initial=0.0))
    return float(np.max(np.abs(a - r), initial=0.0)) / (scale or 1.0)


@settings(max_examples=40, deadline=None)
@given(spec=specs(truncation=truncations(), activations=["tanh", "sigmoid", "identity"]),
       seed=st.integers(0, 2**16), index=st.integers(0, 15))
# issue 12: a saturated tanh output (1 − y² cancels) put autograd 1.4e-9 (relative to scale) and 1e-16
# (absolute, beyond its 8·ε·T estimate) away from the complex step, 1 Hypothesis seed in 20
@example(spec=bc.Spec(mode="many-to-one", activation="identity", output="tanh", bias=False), seed=2244, index=9)
# and a bce loss (the generic engine's finite differences): dh0, 1e3 times smaller than the case's other
# gradients, 6.6e-8 off relative to its own scale — within the difference's own error estimate
@example(spec=bc.Spec(mode="many-to-one", activation="tanh", loss="bce", bias=False), seed=2, index=0)
def test_complex_step_and_fd_agree_with_autograd_element_wise(spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    auto = AutogradOracle().gradients(case)
    cs = ComplexStepOracle().gradients(case)
    fd = FiniteDifferenceOracle().gradients(case)
    # the vanilla engine (tangent propagation), or the one forward on complex copies beyond it (bce)
    assert cs.method == ("complex" if generic.needed(spec) else "tangent") and fd.method == "fd"
    assert auto.grads.keys() == cs.grads.keys() == fd.grads.keys()
    # what float64 itself resolves on this case (the same formulas in extended precision): every float64
    # evaluation, autograd's included, is off by about that much where an output saturates
    rounding = {k: 4 * e for k, e in float64_rounding(case, auto.grads).items()}
    for k in auto.grads:
        scale = float(np.max(np.abs(auto.grads[k]), initial=0.0)) or 1.0
        assert _rel(cs.grads[k], auto.grads[k]) <= 1e-10 + rounding[k] / scale, (k, spec)
        # a difference quotient's error is absolute (ε·|L| over the step): a gradient small next to the loss
        # is known to fewer digits of its own scale, as its error estimate says
        fd_err = float(np.max(fd.error[k], initial=0.0))
        assert _rel(fd.grads[k], auto.grads[k]) <= 1e-8 + (rounding[k] + fd_err) / scale, (k, spec)
        # each oracle's own error estimate covers its actual error (autograd's estimate and rounding included)
        assert np.all(np.abs(cs.grads[k] - auto.grads[k]) <= cs.error[k] + auto.error[k] + rounding[k]), k
        assert np.all(np.abs(fd.grads[k] - auto.grads[k]) <= fd.error[k] + auto.error[k] + rounding[k]), k


@pytest.mark.parametrize("truncation", DEFAULT_TRUNCATIONS)
@pytest.mark.parametrize("mode", ["many-to-one", "many-to-many"])
def test_every_schedule_in_both_modes(mode, truncation):
    for i, (act, out, loss) in enumerate([("tanh", "identity", "half_mse"), ("sigmoid", "softmax", "cross_entropy"),
                                          ("identity", "tanh", "sse"), ("tanh", "sigmoid", "half_mse")]):
        case = bc.draw_case(bc.Spec(mode=mode, truncation=truncation, activation=act, output=out, loss=loss,
                                    reduction=("sum", "mean", "mean_batch", "mean_time")[i]), 4, i)
        auto = AutogradOracle().gradients(case)
        fd = FiniteDifferenceOracle().gradients(case)
        for strategy in ("elements", "preactivations"):
            cs = ComplexStepOracle(strategy=strategy).gradients(case)
            assert cs.grads.keys() == auto.grads.keys()
            for k in auto.grads:
                assert _rel(cs.grads[k], auto.grads[k]) <= 1e-10, (k, case.spec, strategy)
                assert np.all(np.abs(cs.grads[k] - auto.grads[k]) <= cs.error[k] + auto.error[k]), k
        for k in auto.grads:
            assert _rel(fd.grads[k], auto.grads[k]) <= 1e-8, (k, case.spec)


@pytest.mark.parametrize("spec", [
    bc.Spec(),
    bc.Spec(mode="many-to-one", truncation="tbptt:2,3", activation="sigmoid", output="softmax",
            loss="cross_entropy", reduction="mean"),
    bc.Spec(truncation="window-loss:2,3", output="tanh", loss="sse", bias=False),
])
def test_the_fast_complex_step_is_the_literal_one(spec):
    # Im L(θ + iε e_k)/ε evaluated in complex128 one element at a time, against the tangent propagation
    case = bc.draw_case(spec, 7, 0)
    lit = literal_complex_step(case)
    for strategy in ("elements", "preactivations"):
        cs = ComplexStepOracle(strategy=strategy).gradients(case)
        assert cs.notes == [f"by {strategy}"]
        for k in lit:
            assert _rel(cs.grads[k], lit[k]) <= 1e-13, (k, strategy)


@pytest.mark.parametrize("truncation", ["none", "window:2", "tbptt:2,4"])
def test_block_size_does_not_change_results(truncation):
    case = bc.draw_case(bc.Spec(truncation=truncation, sizes=bc.Sizes(T=(9, 9), H=(4, 4), B=(3, 3))), 3, 0)
    for make in (lambda bf: ComplexStepOracle(block_floats=bf, strategy="elements"),
                 lambda bf: ComplexStepOracle(block_floats=bf, strategy="preactivations"),
                 lambda bf: FiniteDifferenceOracle(block_floats=bf)):
        whole = make(10**7).gradients(case)
        for bf in (1, 7, 40):
            split = make(bf).gradients(case)
            for k in whole.grads:
                np.testing.assert_allclose(split.grads[k], whole.grads[k], rtol=1e-13, atol=1e-15)


def test_auto_picks_the_cheaper_strategy():
    short = bc.draw_case(bc.Spec(sizes=bc.Sizes(T=(4, 4), H=(8, 8), I=(8, 8))), 0, 0)
    long = bc.draw_case(bc.Spec(sizes=bc.Sizes(T=(60, 60), H=(2, 2), I=(1, 1))), 0, 0)
    assert ComplexStepOracle().gradients(short).notes == ["by preactivations"]
    assert ComplexStepOracle().gradients(long).notes == ["by elements"]
    with pytest.raises(bc.BPTTCheckError, match="unknown complex-step strategy"):
        ComplexStepOracle(strategy="fastest")


def test_richardson_extrapolation_is_at_least_as_close():
    case = bc.draw_case(bc.Spec(activation="sigmoid", output="tanh"), 2, 2)
    auto = AutogradOracle().gradients(case)
    coarse = FiniteDifferenceOracle(eps=1e-3).gradients(case)
    rich = FiniteDifferenceOracle(eps=1e-3, richardson=True).gradients(case)
    assert rich.method == "fd+richardson"
    for k in auto.grads:
        assert _rel(rich.grads[k], auto.grads[k]) < 1e-3 * max(_rel(coarse.grads[k], auto.grads[k]), 1e-12), k
        # a coarse step: the estimate still covers the truncation error it makes
        assert np.all(np.abs(coarse.grads[k] - auto.grads[k]) <= coarse.error[k] + auto.error[k]), k


def _case_on_a_kink():
    """A relu case whose unit 0 of sample 0 sits exactly on the kink at step 0."""
    case = bc.draw_case(bc.Spec(activation="relu"), 0, 0)
    p = case.params
    z = case.x[0] @ p["W"].T + p["h0"] @ p["U"].T
    p["b"][0] = -z[0, 0]
    return case


def test_relu_falls_back_to_finite_differences_and_flags_the_kink():
    case = _case_on_a_kink()
    res = ComplexStepOracle().gradients(case)
    assert res.method == "fd" and "not analytic" in res.notes[0]
    assert res.kinks["b"][0] and not res.kinks["b"][1:].any()
    assert res.kinks["W"][0].all()                       # every input weight of that unit moves it
    # through the check: those elements are non-differentiable and not judged (a note says so);
    # the rest of each tensor is, so a right backward passes
    result = bc.check_case(truncated, case, oracles=("autograd", "fd"))
    assert result.status == "passed", result.summary()
    assert any("kink" in n and "not judged" in n for n in result.notes), result.notes
    assert result.oracles["consensus"]["kinks"]["b"] >= 1


def test_relu_away_from_kinks_agrees_with_autograd():
    for i in range(4):
        case = bc.draw_case(bc.Spec(activation="relu", truncation="chunk:2"), 5, i)
        auto = AutogradOracle().gradients(case)
        fd = FiniteDifferenceOracle().gradients(case)
        for k in auto.grads:
            ok = ~fd.kinks.get(k, np.zeros(auto.grads[k].shape, dtype=bool))
            assert _rel(fd.grads[k][ok], auto.grads[k][ok]) <= 1e-8


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_directional_derivatives_are_projections_of_the_gradient(activation):
    for i in range(4):
        case = bc.draw_case(bc.Spec(activation=activation, truncation="tbptt:2,3"), 6, i)
        auto = AutogradOracle().gradients(case)
        d = DirectionalOracle(k=3, joint=False).directional(case)
        assert d.method == ("tangent" if activation == "tanh" else "fd")
        for k, v in d.directions.items():
            assert v.shape == (3, *auto.grads[k].shape) and set(np.unique(v)) <= {-1.0, 1.0}
            ref = projections(auto.grads[k], v)
            assert np.max(np.abs(d.values[k] - ref)) <= 1e-8 * max(np.max(np.abs(ref)), 1e-300), k
        again = DirectionalOracle(k=3, joint=False).directional(case)    # reproducible from the case's seed and index
        assert all(np.array_equal(again.directions[k], d.directions[k]) for k in d.directions)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_joint_directions_project_the_whole_gradient(activation):
    for i in range(4):
        case = bc.draw_case(bc.Spec(activation=activation, truncation="window:2"), 8, i)
        auto = AutogradOracle().gradients(case)
        d = DirectionalOracle(k=3).directional(case)
        assert d.joint and set(d.values) == {"*"} and set(d.directions) == set(KEYS)
        ref = joint_projections(auto.grads, d.directions)
        assert np.max(np.abs(d.values["*"] - ref)) <= 1e-8 * np.max(np.abs(ref)), (i, d.values["*"], ref)


def test_default_oracles_are_autograd_witnessed_by_directions():
    case = bc.draw_case(bc.Spec(truncation="window:2"), 0, 0)
    result = bc.check_case(truncated, case)
    assert result.status == "passed"
    assert result.oracles["reference"] == {"name": "autograd"}
    agree = result.oracles["directional_vs_autograd"]
    assert set(agree) == {"all"} and agree["all"]["agree"] and agree["all"]["directions"] == 4
    assert agree["all"]["max_abs_err"] < 1e-3 * agree["all"]["tolerance"]


def test_three_element_wise_oracles_agree_on_a_correct_backward():
    case = bc.draw_case(bc.Spec(mode="many-to-one", truncation="tbptt:2,3"), 1, 2)
    result = bc.check_case(truncated, case, oracles=("fd", "complex-step", "autograd"))
    assert result.status == "passed", result.summary()
    assert result.oracles["reference"] == {"name": "fd"}
    assert all(a["agree"] for a in result.oracles["complex-step_vs_fd"].values())
    assert not result.oracles["consensus"]["off"]


class _Broken:
    """An oracle off by a lot at U[0, 1] (an exact one, or one posing as finite differences)."""

    name = "broken"

    def __init__(self, method=""):
        self.method = method

    def gradients(self, case):
        res = AutogradOracle().gradients(case)
        grads = {k: v.copy() for k, v in res.grads.items()}
        grads["U"][0, 1] += 1.0 + abs(grads["U"][0, 1])
        return OracleResult(self.name, grads, res.error, res.loss, method=self.method)


@pytest.fixture
def broken(monkeypatch):
    def register(method=""):
        monkeypatch.setitem(ORACLES, "broken", lambda: _Broken(method))
    return register


@pytest.mark.parametrize("method, reason", [("", "model"), ("fd", "step")])
def test_consensus_says_which_oracle_is_off_and_why(broken, method, reason):
    broken(method)
    case = bc.draw_case(bc.Spec(), 0, 0)
    # two oracles: a third (the complex step) is asked to arbitrate
    ref = reference(case, ["autograd", "broken"])
    assert ref.disputed["U"][0, 1] and ref.disputed["U"].sum() == 1
    assert set(ref.off) == {"broken"} and ref.off["broken"]["elements"] == {"U": 1}
    assert ref.off["broken"]["reason"].startswith(reason)
    assert "complex-step" in " ".join(ref.notes)
    # through the check: the backward is right; the eps-free Taylor check settles the disputed
    # element for it, and the report's consensus says who is off
    result = bc.check_case(truncated, case, oracles=("autograd", "broken"))
    assert result.status == "passed", result.summary()
    assert any("Taylor remainder" in n and "confirmed" in n for n in result.notes), result.notes
    assert set(result.oracles["consensus"]["off"]) == {"broken"}


def test_a_directional_witness_catches_a_reference_modelling_another_function(broken):
    broken("")
    case = bc.draw_case(bc.Spec(), 0, 1)
    ref = reference(case, ["broken", "directional"])
    assert not ref.agreement["directional_vs_broken"]["all"]["agree"]
    assert set(ref.off) == {"broken"} and ref.off["broken"]["elements"] == {"U": 1}
    assert ref.disputed["U"].sum() == 1 and not any(ref.disputed[k].any() for k in KEYS if k != "U")
    result = bc.check_case(truncated, case, oracles=("broken", "directional"))
    assert result.status == "passed" and any("confirmed" in n for n in result.notes), result.summary()
    assert set(result.oracles["consensus"]["off"]) == {"broken"}


def test_a_directional_first_oracle_is_refused():
    with pytest.raises(bc.BPTTCheckError, match="must give every element"):
        reference(bc.draw_case(bc.Spec(), 0, 0), ["directional", "autograd"])


def test_the_trajectory_is_the_numpy_forward():
    case = bc.draw_case(bc.Spec(truncation="chunk:2"), 0, 0)
    traj = Trajectory.of(case)
    from bptt_check.model.forward import forward

    tr = forward(case.params, case.x, case.spec)
    assert np.array_equal(traj.h, tr.h) and np.array_equal(traj.yhat, tr.yhat)
    assert traj.names() == list(KEYS)
