"""The LSTM and GRU zoo (issue 11): every bug fails, on exactly the gradients it breaks, and >= 90% name
the right cause first; the hand-written base without a mistake passes."""

import re
from functools import lru_cache, partial
from pathlib import Path

import pytest
from zoo import run_zoo, table
from zoo_cells import BUGS, gru_bptt, lstm_bptt

import bptt_check as bc
from bptt_check.verdict.diagnosis import CODES

VERDICTS = Path(__file__).resolve().parents[2] / "docs" / "verdicts.md"
CELL_CODES = {"forget_gate_missing", "cell_tanh_derivative_missing", "gate_order", "c0_gradient_missing",
              "gru_z_convention", "gru_reset_convention", "gru_reset_path_dropped", "gru_reset_factor_missing",
              "gru_bias_outside_reset"}


@lru_cache(maxsize=1)
def _results():
    # the verdict and the named causes are what the zoo measures; the evidence (prefix re-runs) is tested apart
    return {r.bug.name: r for r in run_zoo(partial(bc.check_case, evidence=None), bugs=BUGS)}


def test_the_cell_zoo_is_big_and_covers_the_cell_causes():
    assert len(BUGS) >= 15 and len({b.name for b in BUGS}) == len(BUGS)
    assert {b.spec.cell for b in BUGS} == {"lstm", "gru"}
    assert CELL_CODES <= {b.code for b in BUGS} <= set(CODES)


@pytest.mark.parametrize("spec", sorted({b.spec for b in BUGS}, key=str), ids=str)
def test_the_cell_zoo_backward_without_a_mistake_is_correct(spec):
    bptt = lstm_bptt if spec.cell == "lstm" else gru_bptt
    for index in (0, 2):
        result = bc.check_case(lambda p, x, y, spec: bptt(p, x, y, spec, {}), bc.draw_case(spec, 0, index))
        assert result.status == "passed", result.summary()


def test_every_cell_bug_fails_on_exactly_its_gradients_and_90_percent_are_named_right():
    results = _results()
    problems = [f"{b.name}: {results[b.name].summaries}" for b in BUGS
                if not (results[b.name].caught and results[b.name].exact)]
    assert not problems, "\n".join(problems)
    wrong = [(r.bug.name, r.bug.code, r.diagnoses) for r in results.values() if not r.diagnosed]
    assert sum(r.diagnosed for r in results.values()) >= 0.9 * len(BUGS), wrong
    block = re.search(r"<!-- zoo-cells:begin -->\n(.*?)<!-- zoo-cells:end -->", VERDICTS.read_text(), re.S)
    assert block and block.group(1).strip() == table(list(results.values())).strip(), \
        "docs/verdicts.md is stale: python scripts/zoo_table.py"
