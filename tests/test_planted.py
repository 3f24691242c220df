"""Planted bugs the check must catch, on exactly the gradients they break."""

import pytest
from bugs import mutant

import bptt_check as bc

UPSTREAM = {"W", "U", "b", "h0", "x"}   # everything behind the recurrent flow; V and c are untouched


@pytest.mark.parametrize("bug, spec, wrong", [
    ("du_from_t1", bc.Spec(), {"U"}),
    ("du_from_t1", bc.Spec(mode="many-to-one"), {"U"}),
    ("missing_transpose", bc.Spec(), UPSTREAM),
    ("no_recurrent_flow", bc.Spec(truncation="tbptt:2,4"), UPSTREAM),
    ("tanh_prime_on_preactivation", bc.Spec(), UPSTREAM),
    # many-to-one with chunks: the one loss window starts after 0, so h0 gets (and keeps) no gradient
    ("tanh_prime_on_preactivation", bc.Spec(mode="many-to-one", truncation="chunk:3"), UPSTREAM - {"h0"}),
    ("window_one_too_long", bc.Spec(truncation="window:2"), UPSTREAM),
])
def test_planted_bug_fails_on_exactly_its_gradients(bug, spec, wrong):
    # index 0 is a core case: T >= 3, H >= 2, B >= 1, longer than the window
    case = bc.draw_case(spec, seed=5, index=0)
    assert case.T >= 3 and case.shapes["H"] >= 2
    result = bc.check_case(mutant(bug), case)
    assert result.status == "failed"
    assert set(result.failed_grads) == wrong, result.summary()
    for name in wrong:
        g = result.grads[name]
        assert g.mismatched > 0 and g.max_abs_err > g.atol


@pytest.mark.parametrize("bug", ["du_from_t1", "missing_transpose", "no_recurrent_flow",
                                 "tanh_prime_on_preactivation"])
def test_every_planted_bug_fails_a_whole_run(bug):
    report = bc.check(mutant(bug), bc.Spec(), cases=8, seed=0)
    assert not report.passed
    assert report.counts["failed"] >= 6   # only degenerate edges (T = 1, H = 1) may hide a bug


def test_dropped_t0_term_is_caught_because_h0_is_never_zero():
    for i in range(16):
        case = bc.draw_case(bc.Spec(), seed=123, index=i)
        assert (case.params["h0"] != 0).all()
        assert bc.check_case(mutant("du_from_t1"), case).failed_grads == ["U"]


def test_assert_backward_raises_with_a_reproducer():
    with pytest.raises(bc.BPTTCheckError) as info:
        bc.assert_backward(mutant("du_from_t1"), cases=3, seed=9)
    text = str(info.value)
    assert "dU:" in text and "draw_case(bptt_check.Spec(), seed=9, index=0)" in text and "seed=9" in text


def test_assert_backward_passes_a_correct_backward():
    from bptt_check.builtin import truncated

    report = bc.assert_backward(truncated, cases=4, seed=1, truncation="chunk:2")
    assert report.passed
