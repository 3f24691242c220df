"""The planted-bug zoo: every bug fails, on exactly the gradients it breaks, and the right cause is named."""

import re
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pytest
from zoo import ALL, BUGS, bptt, grads_text, run_bug, run_zoo, table

import bptt_check as bc
from bptt_check.verdict.diagnosis import CODES

ISSUE_CODES = {"scaled", "transposed", "input_recurrent_swapped", "missing_first_step", "missing_last_step",
               "state_off_by_one", "no_recurrent_flow", "activation_derivative_wrong", "loss_at_last_step_only",
               "loss_at_every_step", "truncation_window", "clipped", "h0_gradient_missing", "stale_accumulation"}
VERDICTS = Path(__file__).resolve().parents[2] / "docs" / "verdicts.md"


@lru_cache(maxsize=1)
def _results():
    # the verdict and the named causes are what the zoo measures; the evidence (prefix re-runs) is tested apart
    return {r.bug.name: r for r in run_zoo(partial(bc.check_case, evidence=None))}


def test_the_zoo_is_big_and_covers_every_named_cause():
    assert len(BUGS) >= 30
    assert len({b.name for b in BUGS}) == len(BUGS)
    assert ISSUE_CODES <= {b.code for b in BUGS} <= set(CODES)
    assert ISSUE_CODES <= set(CODES)
    modes = {b.spec.mode for b in BUGS}
    kinds = {b.spec.truncation.kind for b in BUGS}
    assert modes == {"many-to-one", "many-to-many"} and {"none", "window", "tbptt", "chunk"} <= kinds
    assert {b.spec.dtype for b in BUGS} == {"float64", "float32"}


@pytest.mark.parametrize("spec", sorted({b.spec for b in BUGS}, key=str), ids=str)
def test_the_zoo_backward_without_a_mistake_is_correct(spec):
    # the control: the hand-written base the bugs are planted in passes on the zoo's own specs,
    # so every failure below is the planted mistake's
    for index in (0, 2):
        result = bc.check_case(lambda p, x, y, spec: bptt(p, x, y, spec, {}), bc.draw_case(spec, 0, index))
        assert result.status == "passed", result.summary()


def test_every_bug_fails_on_exactly_its_gradients_and_90_percent_are_named_right():
    # one test for the whole zoo, so that it runs once per session even under xdist (about 12 s)
    results = _results()
    problems = []
    for bug in BUGS:
        r = results[bug.name]
        if not r.caught:
            problems.append(f"{bug.name}: not caught on every case: {r.summaries}")
        elif not r.exact:
            problems.append(f"{bug.name}: expected wrong {grads_text(bug.breaks)}, got {r.summaries}")
    assert not problems, "\n".join(problems)
    wrong = [(r.bug.name, r.bug.code, r.diagnoses) for r in results.values() if not r.diagnosed]
    assert sum(r.diagnosed for r in results.values()) >= 0.9 * len(BUGS), wrong
    # and the table in the docs is the one these results generate
    text = VERDICTS.read_text()
    block = re.search(r"<!-- zoo:begin -->\n(.*?)<!-- zoo:end -->", text, re.S)
    assert block, "docs/verdicts.md lost its zoo markers"
    assert block.group(1).strip() == table(list(results.values())).strip(), \
        "docs/verdicts.md is stale: python scripts/zoo_table.py"


def test_failed_cases_carry_the_diagnosis_in_the_report():
    bug = next(b for b in BUGS if b.name == "window_one_too_long")
    result = bc.check_case(bug.make(), bc.draw_case(bug.spec, bug.seed, bug.cases[0]))
    d = result.to_dict()["diagnosis"]
    assert d and set(d[0]) == {"code", "fit", "message", "grads"} and d[0]["code"] == "truncation_window"
    assert d[0]["grads"] == ["W", "U", "b", "h0", "x"]        # the gradients the cause explains
    assert d[0]["fit"] > 0.99 and "window of 3, spec is a per-step window of 2" in d[0]["message"]
    assert [x["fit"] for x in d] == sorted((x["fit"] for x in d), reverse=True)
    assert "likely truncation_window" in result.summary()


def test_the_zoo_runs_against_any_checker():
    # e.g. a checker that trusts autograd alone (the fast mode plugs in the same way)
    calls = []

    def autograd_only(backward, case):
        calls.append(case.index)
        return bc.check_case(backward, case, oracles=("autograd",))

    bug = next(b for b in BUGS if b.name == "dU_from_t1")
    r = run_bug(bug, autograd_only)
    assert calls == list(bug.cases) and r.caught and r.exact and r.diagnosed

    class Blind:            # a checker that never fails anything catches nothing
        status = "passed"

    r = run_bug(bug, lambda backward, case: Blind())
    assert not r.caught and not r.diagnosed


def test_all_gradient_names_are_known():
    for b in BUGS:
        assert b.breaks <= ALL | {"loss"} and b.breaks        # "loss": a forward finding


def test_a_stale_backward_is_diagnosed_by_calling_it_again():
    bug = next(b for b in BUGS if b.code == "stale_accumulation")
    backward = bug.make()
    case = bc.draw_case(bug.spec, 0, 0)
    first = backward(case.params, case.x, case.y, case.spec)
    second = backward(case.params, case.x, case.y, case.spec)
    truth = bptt(case.params, case.x, case.y, case.spec, {})
    np.testing.assert_allclose(second["U"] - first["U"], truth["U"], rtol=1e-12, atol=1e-14)
