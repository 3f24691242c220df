"""The eps-free Taylor-remainder check, alone and where finite differences are in doubt."""

import numpy as np
import pytest
from bugs import mutant
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check import oracles
from bptt_check.builtin import truncated
from bptt_check.oracles.fd import FiniteDifferenceOracle
from bptt_check.strategies import specs, truncations
from bptt_check.verdict.taylor import random_direction, taylor_check


def _everywhere(case):
    masks = {k: np.ones(v.shape, dtype=bool) for k, v in case.params.items()}
    masks["x"] = np.ones(case.x.shape, dtype=bool)
    return masks


@settings(max_examples=20)
@given(spec=specs(truncation=truncations(), activations=["tanh", "sigmoid", "identity"]),
       seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_the_remainder_shrinks_as_eps_squared_with_the_true_gradient(spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    t = taylor_check(case, truncated(case.params, case.x, case.y, spec), random_direction(_everywhere(case), seed))
    assert t.verdict == "confirmed", (t.order, t.remainders)


@pytest.mark.parametrize("bug, grad", [("du_from_t1", "U"), ("missing_transpose", "W"),
                                       ("tanh_prime_on_preactivation", "x")])
def test_the_remainder_shrinks_only_as_eps_with_a_wrong_gradient(bug, grad):
    case = bc.draw_case(bc.Spec(), 4, 0)
    got = mutant(bug)(case.params, case.x, case.y, case.spec)
    direction = random_direction({grad: np.ones(np.shape(got[grad]), dtype=bool)}, 1)
    t = taylor_check(case, got, direction)
    assert t.verdict == "refuted" and 0.8 < t.order < 1.25, (t.order, t.remainders)
    assert "ε^1" in t.describe() or "ε^0.9" in t.describe()


class _NoisyFD(FiniteDifferenceOracle):
    """Finite differences in doubt: one element of dU carries a planted error."""

    name = "noisy_fd"

    def gradients(self, case):
        r = super().gradients(case)
        r.grads["U"] = r.grads["U"].copy()
        r.grads["U"][0, 1] += 1e-3 * np.abs(r.grads["U"]).max()
        return r


@pytest.fixture
def noisy(monkeypatch):
    monkeypatch.setitem(oracles.ORACLES, "noisy_fd", _NoisyFD)
    return ("autograd", "noisy_fd")


def test_where_the_oracles_disagree_the_taylor_check_confirms_a_right_gradient(noisy):
    r = bc.check_case(truncated, bc.draw_case(bc.Spec(), 0, 0), oracles=noisy)
    assert r.status == "passed", r.summary()
    assert any("Taylor remainder shrinks as ε^2" in n and n.endswith("confirmed") for n in r.notes), r.notes


def test_where_the_oracles_disagree_the_taylor_check_refutes_a_wrong_gradient(noisy):
    def wrong_there(params, x, y, spec):
        g = truncated(params, x, y, spec)
        g["U"][0, 1] += 1e-3 * np.abs(g["U"]).max()
        return g

    # without the Taylor check this would be inconclusive: the only wrong element is a disputed one
    r = bc.check_case(wrong_there, bc.draw_case(bc.Spec(), 0, 0), oracles=noisy)
    assert r.status == "failed" and r.failed_grads == ["U"], r.summary()
    assert any(n.endswith("wrong") and "ε^1" in n for n in r.notes), r.notes
