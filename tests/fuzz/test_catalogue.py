"""Every row of the catalogue behind the docs table gets exactly its finding."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import misbehaviours as mb
import pytest

import bptt_check as bc
from bptt_check.runner.read import headline

ROOT = Path(__file__).resolve().parents[2]
DOC_SPEC = bc.Spec(sizes={"T": 5, "B": 2, "I": 3, "H": 4, "O": 6})     # the docs table's case


@pytest.mark.parametrize("row", mb.CATALOGUE, ids=[r.behaviour for r in mb.CATALOGUE])
def test_catalogue_row_gets_its_finding(row):
    planted = row.build()
    spec = DOC_SPEC.replace(**row.spec) if row.spec else DOC_SPEC
    result = bc.check_case(planted.backward, bc.draw_case(spec, 1, 0), oracles=("autograd",),
                           timeout=0.2 if planted.hangs else 30.0)
    if planted.status == "passed":
        assert result.status in mb.ACCEPTED and result.error is None, result.summary()
    elif planted.status == "failed":
        assert result.status == "failed" and result.error is None and result.failed_grads, result.summary()
    else:
        assert result.status == planted.status and result.error["kind"] == planted.kind, result.summary()
        for needle in planted.needles:
            assert needle in result.error["message"], (needle, result.error["message"])
        assert headline(result.error)
    if planted.note:
        assert any(planted.note in n for n in result.notes), result.notes
    if planted.stdout:
        assert planted.stdout in result.stdout
    json.dumps(result.to_dict(), allow_nan=False)


def test_the_docs_table_is_generated_from_this_catalogue():
    spec = importlib.util.spec_from_file_location("gen_robustness_table", ROOT / "docs" / "gen_robustness_table.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = (ROOT / "docs" / "robustness.md").read_text()
    assert gen.render(text) == text, "docs/robustness.md is out of date: run  python docs/gen_robustness_table.py"
    for row in mb.CATALOGUE:
        assert f"| {row.behaviour} |" in text
