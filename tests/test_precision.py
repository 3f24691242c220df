"""Precision policy: float32 backwards against a float64 reference, float32 hiding in a float64 spec."""

import numpy as np
import pytest
from bugs import mutant
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import jacobian, truncated
from bptt_check.model.functions import loss_scale, step_loss_grad
from bptt_check.model.tolerance import TOLERANCES, U32, tolerance_for
from bptt_check.strategies import specs, truncations


def test_tolerances_are_data_keyed_by_dtype_and_float32_grows_with_T():
    assert set(TOLERANCES) == {"float64", "float32"}
    assert tolerance_for("float64", 50) == tolerance_for("float64") == TOLERANCES["float64"]
    t3, t30 = tolerance_for("float32", 3), tolerance_for("float32", 30)
    assert t3.rtol == pytest.approx(64 * U32 * 4) and t30.rtol == pytest.approx(64 * U32 * 31)
    assert t30.atol > t3.atol and t30.rounding == t3.rounding > 0


@settings(max_examples=30)
@given(spec=specs(truncation=truncations(), dtypes=["float32"]), seed=st.integers(0, 2**16),
       index=st.integers(0, 15), which=st.sampled_from([truncated, jacobian]))
@example(spec=bc.Spec(mode="many-to-one", truncation="window:4", activation="relu", loss="cross_entropy",
                      bias=False, dtype="float32"), seed=152, index=8, which=jacobian)   # unjudged: the reason first
def test_a_correct_float32_backward_passes_with_a_precision_note(spec, seed, index, which):
    case = bc.draw_case(spec, seed, index)
    assert case.x.dtype == np.float32
    r = bc.check_case(which, case)
    assert r.status in ("passed", "inconclusive"), r.summary()
    assert any(n.startswith("precision: float32 backward judged") for n in r.notes)
    if r.status == "inconclusive":   # only for a stated reason, never a silent pass
        assert r.notes[0].startswith(("coverage:", "precision: float32 rounding", "a relu pre-activation",
                                      "oracles disagree")), r.notes


@pytest.mark.parametrize("bug, code", [("du_from_t1", "missing_first_step"), ("missing_transpose", "transposed"),
                                       ("window_one_too_long", "truncation_window")])
def test_a_wrong_float32_backward_still_fails_and_is_diagnosed(bug, code):
    spec = bc.Spec(dtype="float32", truncation="window:2")
    for index in (0, 2):
        r = bc.check_case(mutant(bug), bc.draw_case(spec, 1, index))
        assert r.status == "failed", r.summary()
        assert r.diagnosis[0]["code"] == code


def _float32_states(bug=None, with_loss=False):
    """A float64-spec backward whose forward stores h_t and ĥ_t in float32 arrays (a textbook's time layers);
    ``with_loss``: it reports its loss too (then it is adapted: the protocol has no loss)."""
    def backward(params, x, y, spec):
        W, U, V, b, c = params["W"], params["U"], params["V"], params["b"], params["c"]
        T, B, _ = x.shape
        h = np.zeros((T + 1, B, U.shape[0]), dtype=np.float32)
        hhat = np.zeros((T, B, U.shape[0]), dtype=np.float32)
        h[0] = params["h0"]
        yhat = []
        for t in range(T):
            hhat[t] = x[t] @ W.T + h[t] @ U.T + b
            h[t + 1] = np.tanh(hhat[t])
            yhat.append(h[t + 1] @ V.T + c)
        scale = loss_scale(spec, T, B)
        g = {k: np.zeros_like(v) for k, v in params.items()}
        g["x"] = np.zeros_like(x)
        dh_next = np.zeros_like(params["h0"])
        for t in reversed(range(T)):
            dyhat = scale * step_loss_grad(spec, yhat[t], y[t])
            g["V"] += dyhat.T @ h[t + 1]
            g["c"] += dyhat.sum(axis=0)
            dhhat = (dh_next + dyhat @ V) * (1.0 - h[t + 1] ** 2)
            g["W"] += dhhat.T @ x[t]
            if not (bug == "du_from_t1" and t == 0):
                g["U"] += dhhat.T @ h[t]
            g["b"] += dhhat.sum(axis=0)
            g["x"][t] += dhhat @ W
            dh_next = dhhat @ U
        g["h0"] += dh_next
        if with_loss:
            g["loss"] = scale * sum(0.5 * float(((yhat[t] - y[t]) ** 2).sum()) for t in range(T))
        return g
    if with_loss:
        return bc.adapt(backward, bc.Layout(args=("params", "x", "y", "spec")))
    return backward


def test_a_float64_spec_with_float32_states_passes_with_a_precision_note():
    report = bc.check(_float32_states(), cases=8, seed=0)
    assert report.passed and report.counts["failed"] == 0, [c.summary() for c in report.cases]
    noted = [c for c in report.cases if any("match the float64 reference only to float32 precision" in n
                                            for n in c.notes)]
    assert len(noted) >= 6          # the T = 1 edge may be exact enough for float64


def test_float32_states_do_not_hide_a_real_mistake():
    report = bc.check(_float32_states("du_from_t1"), cases=4, seed=0)
    for c in report.cases:
        assert c.status == "failed" and "U" in c.failed_grads
        assert c.diagnosis[0]["code"] == "missing_first_step"


def test_float32_arrays_returned_in_a_float64_spec_are_named_in_the_note():
    def float32_out(params, x, y, spec):      # the whole backward in float32
        low = {k: v.astype(np.float32) for k, v in params.items()}
        return truncated(low, x.astype(np.float32), y.astype(np.float32), spec)

    r = bc.check_case(float32_out, bc.draw_case(bc.Spec(), 0, 0))
    assert r.status == "passed", r.summary()
    assert any("your backward returned float32 arrays" in n for n in r.notes), r.notes


def test_a_small_unexplained_error_beyond_float32_precision_still_fails():
    def off(params, x, y, spec):
        g = truncated(params, x, y, spec)
        g["W"] = g["W"] * (1 + 1e-3)
        return g

    r = bc.check_case(off, bc.draw_case(bc.Spec(), 0, 0))
    assert r.status == "failed" and r.failed_grads == ["W"]


def test_a_gradient_float32_cannot_resolve_is_not_judged():
    # a saturated tanh output: 1 − y² cancels, float32 keeps no digit of the gradient
    spec = bc.Spec(dtype="float32", output="tanh", mode="many-to-one")
    case = bc.draw_case(spec, 0, 0)
    case.params["c"][:] = np.float32(9.5)
    r = bc.check_case(truncated, case)
    assert r.status == "inconclusive", r.summary()
    assert any(n.startswith("precision: float32 rounding on this case is as large as") for n in r.notes)
