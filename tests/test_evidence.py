"""Evidence for failed cases: the right first bad step, the right shortest failing length, the
temporal map of dU built from the reference's per-step contributions, and the reproducer."""

import numpy as np
import pytest
from bugs import mutant
from hypothesis import given, settings

import bptt_check as bc
from bptt_check import strategies
from bptt_check.builtin import truncated
from bptt_check.model.tolerance import tolerance_for
from bptt_check.oracles import get_oracle
from bptt_check.verdict import evidence as _evidence


def _core_case(spec, *, min_T, seed=5):
    """The first core case (T >= min_T, H >= 2) of a seed."""
    for i in range(0, 64, 2):            # even indices are core cases
        case = bc.draw_case(spec, seed=seed, index=i)
        if case.T >= min_T and case.shapes["H"] >= 2:
            return case
    raise AssertionError("no such case")


def test_dropped_t0_term_names_step_0_and_length_1():
    case = _core_case(bc.Spec(), min_T=4)
    r = bc.check_case(mutant("du_from_t1"), case)
    ev = r.evidence
    assert r.status == "failed" and ev["tier"] == "full"
    att = ev["temporal"]["attribution"]
    assert (att["kind"], att["at"]) == ("step", 0)
    assert att["coef"] == pytest.approx(-1.0, abs=1e-6) and att["explained"] > 0.999
    assert "step-0 term is missing" in att["message"]
    assert (ev["first_bad_step"], ev["first_bad_step_from"]) == (0, "U")
    assert ev["shortest_failing_length"] == 1
    assert ev["steps"]["bad_steps"] == []          # dx is right: only dU carries the bug


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_window_one_step_too_long_names_length_k_plus_2_and_the_cells_beyond(k, reduction):
    spec = bc.Spec(truncation=f"window:{k}", reduction=reduction)
    case = _core_case(spec, min_T=k + 3)
    T = case.T
    r = bc.check_case(mutant("window_one_too_long"), case)
    ev = r.evidence
    # the extra term needs a loss at t >= k+1: the prefix of length k+2 is the first to fail
    assert ev["shortest_failing_length"] == k + 2
    assert [run["failed"] for run in ev["prefix"]["runs"]] == [L >= k + 2 for L in range(1, T + 1)]
    # dx picks up the cells (t, t-k-1): steps 0 .. T-k-2 are wrong, the rest right
    assert ev["steps"]["bad_steps"] == list(range(0, T - k - 1))
    assert ev["first_bad_step"] == 0 and ev["steps"]["last_bad_step"] == T - k - 2
    # observed by growing the sequence: exactly the cells one step before each window
    obs = np.array(ev["temporal"]["observed_x"])
    beyond = np.zeros((T, T), dtype=bool)
    for t in range(k + 1, T):
        beyond[t, t - k - 1] = True
    assert (obs[beyond] > 1e-6).all(), obs
    assert (obs[~beyond] < 1e-9).all(), obs
    # and dU's error is +1 x the contributions one step before each window's start
    att = ev["temporal"]["attribution"]
    assert (att["kind"], att["at"]) == ("beyond", 1) and att["coef"] == pytest.approx(1.0, abs=1e-6)


SPECS = [bc.Spec(mode=m, truncation=t, reduction=red)
         for m in ("many-to-many", "many-to-one")
         for t, red in (("none", "sum"), ("window:2", "mean"), ("tbptt:2,3", "mean_batch"), ("chunk:3", "mean"),
                        ("window-loss:2,3", "sum"))]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_reference_cells_sum_to_the_reference_dU(spec):
    # the temporal map's building blocks: sum over (t, s) of mask * C[t, s] is the oracle's dU
    for index in (0, 2):
        case = bc.draw_case(spec, seed=3, index=index)
        mask = np.array(_evidence.temporal_map(case, {}, {"U": np.zeros_like(case.params["U"])}, None)["mask"])
        _, atoms, total = _evidence._u_cells(case, mask)
        dU = get_oracle("autograd").gradients(case).grads["U"]
        np.testing.assert_allclose(total, dU, rtol=1e-10, atol=1e-12)
        if "all" in atoms:
            np.testing.assert_allclose(atoms["all"][0], dU, rtol=1e-10, atol=1e-12)


@settings(max_examples=25)
@given(case=strategies.cases())
def test_property_reference_cells_sum_to_dU_and_a_dropped_step_is_found(case):
    # any spec, any case: sum of mask * C[t, s] is the oracle's dU ...
    mask = np.array(_evidence.temporal_map(case, {}, {"U": np.zeros_like(case.params["U"])}, None)["mask"])
    _, atoms, total = _evidence._u_cells(case, mask)
    dU = get_oracle("autograd").gradients(case).grads["U"]
    np.testing.assert_allclose(total, dU, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(dU).max()))
    # ... and removing one step's contribution is attributed to that step (when U can tell)
    steps = [k for k in atoms if k.startswith("step:")]
    if case.shapes["H"] >= 2 and steps:
        key = steps[len(steps) // 2]
        att = _evidence.attribute(-atoms[key][0], atoms)
        assert att is not None and att["explained"] > 0.999
        assert att["key"] == key or att["runner_up"]["explained"] > 0.999   # another atom equal to it


def test_observed_cells_vanish_where_dx_is_right_under_a_mean_reduction():
    # prefix lengths change the 1/T weight; rows are rescaled to the full case's units
    spec = bc.Spec(reduction="mean")
    case = _core_case(spec, min_T=4)
    r = bc.check_case(mutant("du_from_t1"), case)
    obs = np.array(r.evidence["temporal"]["observed_x"])
    assert obs.shape == (case.T, case.T) and obs.max() < 1e-9


def test_a_correct_backward_gets_no_evidence_and_pays_nothing(monkeypatch):
    called = []
    monkeypatch.setattr(_evidence, "collect", lambda *a, **k: called.append(1))
    report = bc.check(truncated, cases=4, seed=0, truncation="window:2")
    assert report.passed and not called
    assert all(c.evidence is None and c.to_dict()["evidence"] is None for c in report.cases)


def test_only_the_first_failed_cases_get_the_full_evidence(monkeypatch):
    monkeypatch.setattr(_evidence, "EVIDENCE_LIMIT", 2)
    report = bc.check(mutant("missing_transpose"), cases=5, seed=0)
    tiers = [c.evidence["tier"] for c in report.cases if c.status == "failed"]
    assert tiers[:2] == ["full", "full"] and set(tiers[2:]) == {"cheap"} and len(tiers) >= 4
    cheap = next(c.evidence for c in report.cases if c.evidence and c.evidence["tier"] == "cheap")
    assert cheap["prefix"] is None and cheap["temporal"] is None and "re-run" in cheap["skipped"]
    assert cheap["reproducer"]["python"] and cheap["heatmaps"]


def test_sampled_prefixes_still_find_the_shortest_failing_length(monkeypatch):
    monkeypatch.setattr(_evidence, "MAX_PREFIXES", 3)
    spec = bc.Spec(truncation="window:1")
    case = _core_case(spec, min_T=7)
    ev = bc.check_case(mutant("window_one_too_long"), case).evidence
    assert len(ev["prefix"]["lengths"]) < case.T
    assert ev["shortest_failing_length"] == 3


def test_steps_from_dx_names_the_planted_step():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 2, 3))
    got = ref.copy()
    got[2, 1, 0] += 1e-3
    got[4, 0, 2] -= 1e-2
    tol = tolerance_for("float64")
    steps = _evidence.steps_from_dx(got, ref, tol.atol * np.abs(ref).max(), tol.rtol)
    assert steps["bad_steps"] == [2, 4]
    assert (steps["first_bad_step"], steps["last_bad_step"]) == (2, 4)
    assert np.argmax(steps["rel_error"]) == 4


def test_attribution_refuses_what_it_cannot_tell():
    atoms = {"step:0": (np.array([[1.0]]), np.ones((1, 1)))}
    assert _evidence.attribute(np.array([[0.5]]), atoms) is None     # 1x1: every atom fits
    atoms = {"step:0": (np.eye(2), np.ones((2, 2)))}
    assert _evidence.attribute(np.zeros((2, 2)), atoms) is None      # nothing to explain
    assert _evidence.attribute(np.array([[0.0, 1.0], [-1.0, 0.0]]), atoms) is None   # orthogonal: explains 0


def test_heatmap_pools_large_gradients_keeping_the_worst_element():
    ref = np.ones((100, 70))
    got = ref.copy()
    got[63, 5] = 2.0
    hm = _evidence.heatmap(got, ref, 1e-9)
    grid = np.array(hm["log10_rel"])
    assert grid.shape[0] <= _evidence.HEATMAP_SIDE and grid.shape[1] <= _evidence.HEATMAP_SIDE
    assert grid.max() == pytest.approx(0.0)                 # rel err 1 survives the max-pooling
    assert hm["shape"] == [100, 70] and hm["pooled"] == [3, 2]


def test_the_python_reproducer_replays_the_same_failure(tmp_path):
    bugs = str((__import__("pathlib").Path(__file__).parent / "bugs.py").resolve())
    spec = bc.Spec(mode="many-to-one", truncation="window:3", activation="sigmoid", reduction="mean",
                   sizes=bc.Sizes(T=(5, 6)))
    report = bc.check(mutant("missing_transpose"), spec, cases=3, seed=11, target=f"{bugs}:missing_transpose")
    failed = [c for c in report.cases if c.status == "failed"]
    assert failed
    rep = failed[-1].evidence["reproducer"]
    assert rep["note"] and "size ranges" in rep["note"]          # non-default sizes: the snippet, not the CLI
    out = {}
    code = rep["python"].replace("print(", "out['summary'] = (")
    exec(compile(code, "<reproducer>", "exec"), {"out": out})
    assert out["summary"] == failed[-1].summary().replace(f"{bugs}:missing_transpose ", "")


def test_evidence_of_a_broken_gradient_is_still_valid_json():
    import json

    def nan_u(params, x, y, spec):
        g = truncated(params, x, y, spec)
        g["U"] = g["U"] * np.nan
        g["W"] = g["W"].T          # and a shape problem
        return g

    r = bc.check_case(nan_u, _core_case(bc.Spec(), min_T=3))
    # a gradient that cannot be compared is a finding about the backward (issue 7), not evidence
    assert r.status == "error" and r.error["kind"] == "shape" and {"U", "W"} <= set(r.error["keys"])
    assert "nan" in r.error["message"] and "transposed" in r.error["message"]
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["evidence"] is None
