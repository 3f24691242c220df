"""The staged verdict (issue 10): every path through one Target, fast mode as the first stage of the same
pipeline, the error classes, the public surface, and the defects the old structure caused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from bugs import mutant

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.model import kinks as kinks_module
from bptt_check.model.forward import forward
from bptt_check.oracles import AutogradOracle, FiniteDifferenceOracle
from bptt_check.runner.target import Target


def _shared_h0(bug: str | None = None):
    """A backward in a layout with one learned h0 (H,) for the whole batch (h0='shared')."""
    inner = mutant(bug) if bug else truncated

    def backward(params, x, y, spec):
        p = dict(params, h0=np.tile(params["h0"], (x.shape[1], 1)))
        g = inner(p, x, y, spec)
        g["h0"] = g["h0"].sum(axis=0)
        return g

    return bc.adapt(backward, bc.Layout(h0="shared", args=("params", "x", "y", "spec")))


def _core(spec: bc.Spec, seed: int = 5):
    for i in range(0, 40, 2):
        case = bc.draw_case(spec, seed, i)
        if case.T >= 4 and case.B >= 2 and case.shapes["H"] >= 2:
            return case
    raise AssertionError("no core case")


# ----------------------------------------------------------------- defects of the old structure


def test_evidence_for_an_adapted_backward_re_runs_it_through_its_layout():
    # defect 1: the prefix re-runs bypassed the adapter and blamed U, h0 and x at every length
    case = _core(bc.Spec())
    r = bc.check_case(_shared_h0("du_from_t1"), case)
    assert r.status == "failed" and r.failed_grads == ["U"], r.summary()
    runs = r.evidence["prefix"]["runs"]
    assert all("error" not in run for run in runs), runs
    failing = [run for run in runs if run["failed"]]
    assert failing and all(run["wrong"] == ["U"] for run in failing), runs
    assert r.evidence["shortest_failing_length"] == 1


def test_a_prefix_carries_nothing_of_the_whole_case_over():
    case = bc.draw_case(bc.Spec(), 0, 0)
    case.extra["returns"] = {"stale": (1,)}
    assert case.prefix(2).extra == {"prefix": 2}


def test_fast_mode_on_an_adapted_backward_runs_its_directions_through_the_layout():
    # defect 2: fast=True on an adapted backward silently ran the full autograd path
    case = _core(bc.Spec())
    good = bc.check_case(_shared_h0(), case, fast=True)
    assert good.status == "passed", good.summary()
    fast = good.oracles["fast"]
    assert fast["joint"]["failed_directions"] == 0 and fast["joint"]["usable_directions"] == 4
    assert set(good.grads) == {"W", "U", "b", "V", "c", "h0", "x"} and good.grads["h0"].size == case.shapes["H"]
    bad = bc.check_case(_shared_h0("du_from_t1"), case, fast=True)
    assert bad.status == "failed" and bad.failed_grads == ["U"], bad.summary()
    assert bad.oracles["fast"]["tensors"]["U"]["localized"]


def test_fast_mode_checks_a_clipping_layout_element_wise_and_says_so():
    c = 0.05

    def clipped(params, x, y):
        return {k: np.clip(v, -c, c) if k != "x" else v for k, v in truncated(params, x, y, bc.Spec()).items()}

    r = bc.check_case(bc.adapt(clipped, bc.Layout(clip=c)), bc.draw_case(bc.Spec(), 2, 0), fast=True)
    assert r.status == "passed", r.summary()
    assert any("declares a clip" in n and "element-wise" in n for n in r.notes), r.notes


def test_fast_mode_diagnoses_and_collects_evidence_like_the_full_check():
    # defect 3: fast mode returned before the diagnosis and the evidence
    case = _core(bc.Spec())
    r = bc.check_case(mutant("du_from_t1"), case, fast=True)
    assert r.status == "failed" and r.failed_grads == ["U"]
    assert r.diagnosis and r.diagnosis[0]["code"] == "missing_first_step", r.diagnosis
    att = r.evidence["temporal"]["attribution"]
    assert (att["kind"], att["at"]) == ("step", 0)
    assert r.evidence["prefix"]["oracle"] == "complex-step"        # the oracle that really ran
    assert "fast=True" in r.evidence["reproducer"]["python"]


def test_the_kinks_take_the_finite_difference_oracles_own_step():
    # defect 4: the kinks imported a step the FD oracle did not define and reached ~6,000x further
    spec = bc.Spec(activation="relu")
    case = bc.draw_case(spec, 0, 0)
    hhat = forward(case.params, case.x, spec).hhat
    case.params["b"][0] -= hhat[0, 0, 0] - 1e-7          # a pre-activation 1e-7 from the kink
    assert abs(forward(case.params, case.x, spec).hhat[0, 0, 0] - 1e-7) < 1e-12
    flagged = kinks_module.kink_elements(case)
    fd = FiniteDifferenceOracle().gradients(case)
    assert FiniteDifferenceOracle().eps == kinks_module.EPS_FD
    assert not any(m.any() for m in flagged.values())    # 1e-7 is far outside 2 FD steps of 1e-9
    auto = AutogradOracle().gradients(case).grads
    for k in auto:
        np.testing.assert_allclose(fd.grads[k], auto[k], rtol=1e-6, atol=1e-9 * np.abs(auto[k]).max(), err_msg=k)


# ----------------------------------------------------------------- one Target for every call


def test_every_call_of_the_backward_goes_through_the_target(monkeypatch):
    calls = {"backward": 0, "target": 0}
    original = Target.call

    def counted(self, case, *, repeat=False):
        calls["target"] += 2 if repeat else 1
        return original(self, case, repeat=repeat)

    monkeypatch.setattr(Target, "call", counted)
    bug = mutant("du_from_t1")

    def backward(params, x, y, spec):
        calls["backward"] += 1
        return bug(params, x, y, spec)

    r = bc.check_case(backward, _core(bc.Spec()), isolate="thread")   # first call, repeat, prefix re-runs
    assert r.status == "failed" and len(r.evidence["prefix"]["runs"]) > 2
    assert calls["backward"] == calls["target"] > 2


def test_the_stages_apply_their_adjustments_as_values_not_by_editing_notes():
    # a disputed element settled by the Taylor check: the dispute's own notes go, its verdict stays
    class Noisy(FiniteDifferenceOracle):
        name = "noisy"

        def gradients(self, case):
            r = super().gradients(case)
            r.grads["U"] = r.grads["U"].copy()
            r.grads["U"][0, 1] += 1e-3 * np.abs(r.grads["U"]).max()
            return r

    from bptt_check import oracles

    oracles.ORACLES["noisy"] = Noisy
    try:
        r = bc.check_case(truncated, bc.draw_case(bc.Spec(), 0, 0), oracles=("autograd", "noisy"))
    finally:
        del oracles.ORACLES["noisy"]
    assert r.status == "passed"
    assert not any(n.startswith("oracles disagree on") or n.endswith("were not judged") for n in r.notes), r.notes
    assert any(n.startswith("U: the oracles disagree on 1 element(s)") and n.endswith("confirmed") for n in r.notes)


# ----------------------------------------------------------------- errors and the public surface


@pytest.mark.parametrize("call", [
    lambda: bc.Spec(activation="gelu"),
    lambda: bc.Truncation.parse("tbptt:4,2"),
    lambda: bc.Layout(vectors="col"),
    lambda: bc.check(truncated, cases=0),
    lambda: bc.check(truncated, cases=1, seed=-1),
    lambda: bc.check(truncated, cases=1, directions=0),
    lambda: bc.check(truncated, cases=1, oracles=("magic",)),
    lambda: bc.check(truncated, cases=1, timeout=-1),
    lambda: bc.check(lambda params, x: {}, cases=1),
    lambda: bc.check(truncated, cases=1, modes="x"),
])
def test_bad_usage_raises_usage_error(call):
    with pytest.raises(bc.UsageError) as info:
        call()
    assert isinstance(info.value, bc.BPTTCheckError) and not isinstance(info.value, bc.CheckFailed)


def test_a_wrong_backward_raises_check_failed_with_the_report():
    with pytest.raises(bc.CheckFailed) as info:
        bc.assert_backward(mutant("du_from_t1"), cases=2, seed=1)
    err = info.value
    assert isinstance(err, bc.BPTTCheckError) and not isinstance(err, bc.UsageError)
    assert isinstance(err.report, bc.Report) and err.report.counts["failed"] == 2
    again = err.with_context(extra=1)
    assert type(again) is bc.CheckFailed and again.report is err.report and "extra=1" in str(again)


def test_the_public_surface_is_small_and_import_does_not_load_torch():
    assert set(bc.__all__) == {
        "__version__", "check", "check_case", "assert_backward", "draw_case", "Case", "CaseResult", "GradResult",
        "Report", "Spec", "Sizes", "Truncation", "Layout", "adapt", "adapt_torch", "adapt_module",
        "BPTTCheckError", "UsageError", "CheckFailed"}
    code = "import sys, bptt_check, bptt_check.strategies, bptt_check.builtin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
