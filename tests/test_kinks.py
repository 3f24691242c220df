"""relu kinks: elements whose finite-difference step straddles a kink are non-differentiable, not failed."""

import numpy as np
import pytest
from bugs import mutant

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.model import kinks as _kinks
from bptt_check.model.forward import forward
from bptt_check.model.functions import loss_scale, step_loss_grad
from bptt_check.oracles import AutogradOracle, FiniteDifferenceOracle


def _kinked_case(seed=0, index=0, truncation="window:2", at=(0, 0, 0)):
    """A relu case with the pre-activation ĥ[t, b, j] put exactly on the kink."""
    spec = bc.Spec(activation="relu", truncation=truncation)
    case = bc.draw_case(spec, seed, index)
    t, b, j = at
    hhat = forward(case.params, case.x, spec).hhat
    if t == 0:
        case.params["b"][j] -= hhat[0, b, j]
    else:   # move x[t, b] along row j of W: only step t's pre-activations move
        w = case.params["W"][j]
        case.x[t, b] -= hhat[t, b, j] * w / (w @ w)
    hhat = forward(case.params, case.x, spec).hhat
    assert abs(hhat[t, b, j]) < 1e-15
    return case


def _relu_prime_at_zero_is_one(params, x, y, spec):
    """The other subgradient convention: relu'(0) = 1 (z >= 0)."""
    W, U, V = params["W"], params["U"], params["V"]
    T, B, _ = x.shape
    tr = forward(params, x, spec)
    scale = loss_scale(spec, T, B)
    g = {k: np.zeros_like(v) for k, v in params.items()}
    g["x"] = np.zeros_like(x)
    for w in spec.windows(T):
        dh_next = np.zeros_like(tr.h[0])
        for t in reversed(range(w.start, max(w.losses) + 1)):
            dh = dh_next
            if t in w.losses:
                dyhat = scale * step_loss_grad(spec, tr.yhat[t], y[t])
                g["V"] += dyhat.T @ tr.h[t + 1]
                g["c"] += dyhat.sum(axis=0)
                dh = dh + dyhat @ V
            dhhat = dh * (tr.hhat[t] >= 0)
            g["W"] += dhhat.T @ x[t]
            g["U"] += dhhat.T @ tr.h[t]
            g["b"] += dhhat.sum(axis=0)
            g["x"][t] += dhhat @ W
            dh_next = dhhat @ U
        if w.start == 0:
            g["h0"] += dh_next
    return g


@pytest.mark.parametrize("at", [(0, 0, 0), (2, 0, 1)])
def test_kink_elements_are_exactly_where_the_oracles_disagree(at):
    case = _kinked_case(at=at)
    kinks = _kinks.kink_elements(case)
    auto, fd = AutogradOracle().gradients(case).grads, FiniteDifferenceOracle().gradients(case).grads
    assert any(m.any() for m in kinks.values())
    for k, m in kinks.items():
        disagree = ~np.isclose(fd[k], auto[k], rtol=1e-5, atol=1e-6 * np.abs(auto[k]).max())
        # a pre-activation exactly at 0: every element that moves it sees both slopes
        np.testing.assert_array_equal(m, disagree, err_msg=k)
    assert not kinks["V"].any() and not kinks["c"].any()   # the output layer never moves a pre-activation


def test_a_correct_backward_passes_with_a_note_and_the_rest_is_still_checked():
    case = _kinked_case()
    r = bc.check_case(truncated, case)
    assert r.status == "passed", r.summary()
    assert any(n.startswith("relu kinks:") and "non-differentiable" in n for n in r.notes)
    # a real mistake elsewhere still fails
    r = bc.check_case(mutant("du_from_t1"), case)
    assert r.status == "failed" and r.failed_grads == ["U"]


def test_either_subgradient_convention_at_the_kink_passes():
    case = _kinked_case()
    assert bc.check_case(_relu_prime_at_zero_is_one, case).status == "passed"


def test_no_kinks_for_smooth_activations_or_generic_cases():
    for activation in ("tanh", "sigmoid", "identity"):
        case = bc.draw_case(bc.Spec(activation=activation), 0, 0)
        assert not any(m.any() for m in _kinks.kink_elements(case).values())
    flagged = sum(int(m.sum()) for i in range(8)
                  for m in _kinks.kink_elements(bc.draw_case(bc.Spec(activation="relu"), 1, i)).values())
    assert flagged == 0


def test_blocked_batches_give_the_same_kinks(monkeypatch):
    case = _kinked_case(truncation="tbptt:2,3", at=(2, 0, 1))
    whole = _kinks.kink_elements(case)
    monkeypatch.setattr(_kinks, "BLOCK", 3)
    blocked = _kinks.kink_elements(case)
    for k in whole:
        np.testing.assert_array_equal(whole[k], blocked[k])


def test_a_float32_pre_activation_near_the_kink_never_fails_a_correct_backward():
    spec = bc.Spec(activation="relu", dtype="float32")
    statuses = []
    for index in (0, 2, 4):
        case = bc.draw_case(spec, 0, index)
        hhat = forward({k: v.astype(np.float64) for k, v in case.params.items()},
                              case.x.astype(np.float64), spec).hhat
        case.params["b"][0] = np.float32(case.params["b"][0] - hhat[0, 0, 0])   # within float32 rounding of 0
        assert _kinks.near_kinks(case)
        r = bc.check_case(truncated, case)
        statuses.append(r.status)
        assert r.status in ("passed", "inconclusive"), r.summary()
    assert bc.check_case(mutant("no_recurrent_flow"), case).status in ("failed", "inconclusive")
