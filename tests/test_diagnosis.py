"""Diagnosis (DESIGN §7): named causes, their fit, the report and the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
from bugs import mutant
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.model.backprop import Knobs, variant_grads
from bptt_check.oracles import AutogradOracle
from bptt_check.strategies import specs, truncations
from bptt_check.verdict.diagnosis import CODES, MIN_FIT

HERE = Path(__file__).parent


@settings(max_examples=25)
@given(spec=specs(truncation=truncations()), seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_the_variant_without_a_mistake_is_the_true_gradient(spec, seed, index):
    # every hypothesis is "the reference with one dial turned": with no dial turned it must be exact
    case = bc.draw_case(spec, seed, index)
    truth = AutogradOracle().gradients(case).grads
    v = variant_grads(case, Knobs(per_sample=True))
    for k, r in truth.items():
        np.testing.assert_allclose(v[k], r, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(r).max()), err_msg=k)
    for k in ("W", "U", "V"):
        np.testing.assert_allclose(v[f"{k}@b"].sum(axis=0), v[k], rtol=1e-10, atol=1e-13)


def _diagnosis(backward, spec, seed=0, index=0):
    result = bc.check_case(backward, bc.draw_case(spec, seed, index))
    assert result.status == "failed", result.summary()
    return result.diagnosis


def _scaled(factor):
    def backward(params, x, y, spec):
        return {k: factor * v for k, v in truncated(params, x, y, spec).items()}
    return backward


@pytest.mark.parametrize("factor, words", [
    (2.0, "the ½ of the loss is missing"),
    (-1.0, "the sign is flipped"),
    ("1/B", "a mean over the batch where the spec sums"),
    ("T", "a sum over time where the spec takes the mean"),
])
def test_scaled_names_the_convention_behind_the_factor(factor, words):
    spec = bc.Spec(sizes=bc.Sizes(B=(3, 3), T=(5, 5)))
    value = {"1/B": 1 / 3, "T": 5.0}.get(factor, factor)
    d = _diagnosis(_scaled(value), spec)
    assert d[0]["code"] == "scaled" and d[0]["fit"] > 0.999
    assert words in d[0]["message"] and f"{value:.6g}×" in d[0]["message"]


def test_an_unknown_factor_is_still_scaled_but_says_so():
    d = _diagnosis(_scaled(1.37), bc.Spec())
    assert d[0]["code"] == "scaled" and "1.37×" in d[0]["message"] and "no convention" in d[0]["message"]
    assert d[0]["fit"] == pytest.approx(0.9, abs=1e-3)      # a fitted constant keeps 0.9


def test_a_global_norm_clip_is_told_apart_from_a_scale():
    def clipped(params, x, y, spec):
        g = truncated(params, x, y, spec)
        norm = np.sqrt(sum((g[k] ** 2).sum() for k in params))
        return {k: v * (0.25 / norm) if k in params else v for k, v in g.items()}

    d = _diagnosis(clipped, bc.Spec())
    assert d[0]["code"] == "clipped" and "global norm of 0.25" in d[0]["message"]


def test_the_truncation_window_that_fits_is_named():
    def chunk3(params, x, y, spec):
        return truncated(params, x, y, spec.replace(truncation="chunk:3"))

    d = _diagnosis(chunk3, bc.Spec(truncation="tbptt:3,5"))
    assert d[0]["code"] == "truncation_window"
    assert "looks like chunk 3, spec is TBPTT(3,5)" in d[0]["message"]


def test_random_noise_is_not_given_a_name():
    def noisy(params, x, y, spec):
        g = truncated(params, x, y, spec)
        rng = np.random.default_rng(0)
        return {k: v + 0.1 * np.abs(v).max() * rng.standard_normal(v.shape) for k, v in g.items()}

    d = _diagnosis(noisy, bc.Spec())
    assert all(f["fit"] < 0.9 for f in d), d


def test_fits_are_in_range_sorted_known_and_json_shaped():
    for bug in ("du_from_t1", "missing_transpose", "no_recurrent_flow", "tanh_prime_on_preactivation"):
        d = _diagnosis(mutant(bug), bc.Spec(truncation="window:2"), seed=3, index=2)
        assert d, bug
        assert [f["fit"] for f in d] == sorted((f["fit"] for f in d), reverse=True)
        for f in d:
            assert {"code", "fit", "message", "grads"} <= set(f) <= {"code", "fit", "message", "grads", "step"}
            assert f["code"] in CODES and set(f["grads"]) <= {"W", "U", "b", "V", "c", "h0", "x"}
            assert MIN_FIT <= f["fit"] <= 1.0 and f["message"]
        assert len({f["code"] for f in d}) == len(d)          # one entry per code: its best variant


def test_a_passing_case_has_no_diagnosis_and_the_backward_is_called_twice_only():
    calls = []

    def counted(params, x, y, spec):
        calls.append(1)
        return truncated(params, x, y, spec)

    r = bc.check_case(counted, bc.draw_case(bc.Spec(), 0, 0), isolate="thread")     # counts calls in this process
    # twice: the run-twice determinism check; nothing more for a passing case
    assert r.status == "passed" and r.diagnosis == [] and r.to_dict()["diagnosis"] == [] and len(calls) == 2


def test_the_stale_accumulation_test_reuses_the_run_twice_call():
    calls = []
    bug = mutant("du_from_t1")

    def counted(params, x, y, spec):
        calls.append(1)
        return bug(params, x, y, spec)

    r = bc.check_case(counted, bc.draw_case(bc.Spec(), 0, 0), evidence=None, isolate="thread")
    assert r.status == "failed" and len(calls) == 2           # the diagnosis makes no third call
    assert r.diagnosis[0]["code"] == "missing_first_step"   # deterministic: no stale_accumulation


def test_stale_buffers_are_an_error_finding_named_stale_accumulation():
    buffers = {}

    def stale(params, x, y, spec):
        g = truncated(params, x, y, spec)
        for k, v in g.items():
            buffers[k] = buffers.get(k, 0) + v      # never zeroed between calls
        return {k: v.copy() for k, v in buffers.items()}

    r = bc.check_case(stale, bc.draw_case(bc.Spec(), 0, 0))
    assert r.status == "error" and r.error["kind"] == "nondeterministic"
    assert r.diagnosis and r.diagnosis[0]["code"] == "stale_accumulation" and r.diagnosis[0]["fit"] > 0.99


def test_a_broken_diagnosis_never_hides_the_verdict(monkeypatch):
    import bptt_check.verdict.diagnosis as diag

    def boom(*args, **kwargs):
        raise RuntimeError("planted")

    monkeypatch.setattr(diag, "diagnose", boom)
    r = bc.check_case(mutant("du_from_t1"), bc.draw_case(bc.Spec(), 0, 0))
    assert r.status == "failed" and r.failed_grads == ["U"] and r.diagnosis == []
    assert any("diagnosis failed (RuntimeError: planted)" in n for n in r.notes)


def test_the_command_line_prints_the_best_diagnosis_and_writes_it(tmp_path, capsys):
    from bptt_check.cli import main

    code = main([f"{HERE / 'bugs.py'}:du_from_t1", "--cases", "2", "--report-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1, out
    failed_lines = [line for line in out.splitlines() if "FAILED" in line]
    assert failed_lines and all("likely missing_first_step (fit 1.00): dU lacks the t = 0 term" in line
                                for line in failed_lines), out
    report = json.loads((tmp_path / "report.json").read_text())
    for case in report["cases"]:
        assert case["diagnosis"][0]["code"] == "missing_first_step"
