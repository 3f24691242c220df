"""Scale in the number of cases (issue 14): a passed case takes at most 1 KB in report.json (every other case
keeps its whole record), the command and ``bptt_check.check`` keep no passed CaseResult (a passed case is its
brief record in a spooled CaseLog), report.json and junit.xml are streamed a case at a time and read back
the same way. The memory and time themselves are measured by ``benchmarks/scale.py``, never here."""

import gc
import json
import weakref
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check import cli
from bptt_check import report as rp
from bptt_check.builtin import BUILTINS, truncated
from bptt_check.report.build import BRIEF_BYTES, brief, case_record
from bptt_check.report.log import CaseLog, summary_of
from bptt_check.verdict import pipeline

QUICK = dict(isolate="none", oracles=["autograd"])


def _size(record):
    return len(json.dumps(record, separators=(",", ":")))


# ----------------------------------------------------------------- a passed case is brief

@pytest.mark.parametrize("kw", [
    dict(), dict(mode="many-to-one", truncation="tbptt:2,3"), dict(cell="lstm"), dict(cell="gru", dtype="float32"),
    dict(cell="lstm", dtype="float32", lengths=True), dict(lengths=True, no_output_layer=True),
], ids=str)
def test_a_passed_case_takes_at_most_1kb_and_says_it_is_brief(kw):
    kw = dict(kw)
    if kw.pop("no_output_layer", False):
        kw["output_layer"] = False
    backward = BUILTINS.get(kw.get("cell"), truncated)
    report = bc.check(backward, cases=4, **QUICK, **kw)
    assert report.passed
    for record in report.to_dict()["cases"]:
        assert record["brief"] is True and _size(record) <= BRIEF_BYTES, _size(record)
        assert {"index", "seed", "target", "status", "spec", "shapes", "params", "notes", "error",
                "seconds"} <= set(record)
        assert not {"oracles", "evidence", "diagnosis"} & set(record)
        assert all(set(g) == {"passed", "max_rel_err"} and g["passed"] for g in record["params"].values())
    if kw.get("dtype") == "float32":               # a passed case's notes (the precision it was judged at) stay
        assert all(record["notes"] for record in report.to_dict()["cases"])


def test_brief_cuts_long_notes_and_output_to_fit_and_keeps_everything_else():
    result = bc.check_case(truncated, bc.draw_case(bc.Spec(), 0, 0), **QUICK)
    record = result.to_dict()
    record["stdout"] = "x" * 3000
    record["notes"] = ["a short note", "n" * 2000]
    out = brief(record)
    assert _size(out) <= BRIEF_BYTES
    assert out["stdout"].endswith("…") and out["notes"][1].endswith("…") and out["notes"][0] == "a short note"
    assert {k: out[k] for k in ("index", "seed", "spec", "shapes", "status")} == \
           {k: record[k] for k in ("index", "seed", "spec", "shapes", "status")}
    assert brief(out) == out                                   # idempotent: a brief record stays as it is
    small = brief(result.to_dict())
    assert "stdout" not in small and small["notes"] == []      # nothing to cut: nothing cut


def test_every_case_that_did_not_pass_keeps_its_whole_record():
    bugs = bc.check(lambda p, x, y: {k: 2 * v for k, v in truncated(p, x, y, bc.Spec()).items()}, cases=2, **QUICK)
    for result, record in zip(bugs.cases, bugs.to_dict()["cases"]):
        assert result.status == "failed" and record == result.to_dict() and "brief" not in record
        assert record["evidence"] and all("worst_index" in g for g in record["params"].values())
    for status in ("inconclusive", "error", "timeout"):
        record = dict(bugs.cases[0].to_dict(), status=status)
        assert case_record(record) is record


# ----------------------------------------------------------------- nothing kept whole but what is wrong

def test_check_keeps_a_passed_case_only_as_its_brief_record_and_gives_it_back(monkeypatch):
    made = []
    real = pipeline.check_case

    def spy(*a, **k):
        r = real(*a, **k)
        made.append((weakref.ref(r), r.summary(), r.to_dict()))
        return r

    monkeypatch.setattr(pipeline, "check_case", spy)
    report = bc.check(truncated, cases=5, **QUICK)
    gc.collect()
    assert [ref() for ref, _, _ in made] == [None] * 5          # no passed CaseResult is held
    for got, (_, line, whole) in zip(report.cases, made):       # each given back from its record
        assert got.summary() == line and got.to_dict()["spec"] == whole["spec"]
        assert (got.index, got.seed, got.shapes, got.notes, got.stdout, got.status) == \
               (whole["index"], whole["seed"], whole["shapes"], whole["notes"], whole["stdout"], whole["status"])
        assert {k: (g.passed, g.max_rel_err) for k, g in got.grads.items()} == \
               {k: (g["passed"], float(f"{g['max_rel_err']:.3g}")) for k, g in whole["params"].items()}
        assert got.grads["W"].max_abs_err != got.grads["W"].max_abs_err    # not kept: nan, never a made-up 0
    assert report.cases[-1].index == 4 and [c.index for c in report.cases[1:3]] == [1, 2]
    assert report.counts["passed"] == 5 and report.passed


def test_check_keeps_a_wrong_case_whole():
    wrong = lambda p, x, y: {k: -v for k, v in truncated(p, x, y, bc.Spec()).items()}   # noqa: E731
    report = bc.check(wrong, cases=2, **QUICK)
    assert report.cases[0] is report.cases[0] and report.cases[0].evidence["tier"] == "full"


def test_the_command_keeps_no_case_result(monkeypatch, tmp_path):
    held = []
    real = pipeline.check_case

    def spy(*a, **k):
        r = real(*a, **k)
        held.append(weakref.ref(r))
        return r

    monkeypatch.setattr(pipeline, "check_case", spy)
    code = cli.main(["bptt_check.builtin.truncated:backward", "--cases", "12", "--isolate", "none", "--oracle",
                     "autograd", "--progress", "none", "--report-dir", str(tmp_path)])
    gc.collect()
    assert code == 0 and len(held) == 12 and all(ref() is None for ref in held)
    lines = (tmp_path / "report.json").read_text().splitlines()
    cases = lines[lines.index('  "cases": [') + 1:-2]                 # one case a line
    assert len(cases) == 12 and all(len(ln.strip().rstrip(",")) <= BRIEF_BYTES for ln in cases)
    assert json.loads((tmp_path / "report.json").read_text())["cases"][3]["index"] == 3


# ----------------------------------------------------------------- the spooled log

def test_case_log_spools_to_disk_and_reads_back_in_any_order():
    records = [{"index": i, "status": "passed", "spec": {"mode": "many-to-many"}, "target": "t", "text": "é" * i}
               for i in range(40)]
    log = CaseLog(records, memory=300)                           # past 300 bytes the spool is a file on disk
    assert log._file._rolled
    assert len(log) == 40 and log[0] == records[0] and log[-1] == records[-1] and log[5:8] == records[5:8]
    seen = []
    for i, r in enumerate(log):                                  # reads in between do not disturb the walk
        seen.append(r)
        assert log[39 - i] == records[39 - i]
    assert seen == records and [json.loads(ln) for ln in log.lines()] == records
    with pytest.raises(IndexError):
        log[40]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["passed", "failed", "error"])),
                max_size=30))
def test_the_kept_summary_equals_one_pass_and_places_every_case(items):
    records = [{"index": i, "target": t, "status": s, "seconds": 0.5, "spec": {"mode": "many-to-one", "dtype": t}}
               for i, (t, s) in enumerate(items)]
    kept, once = CaseLog(records).summary, summary_of(records)
    assert kept == once
    placed = sorted(i for g in kept.groups.values() for i in g.positions())
    assert placed == list(range(len(records)))
    assert all(records[i]["target"] == g.target for g in kept.groups.values() for i in g.positions())
    assert list(kept.bad) == [i for i, r in enumerate(records) if r["status"] != "passed"]


# ----------------------------------------------------------------- the files, streamed and read back

@pytest.fixture(scope="module")
def mixed():
    """A right and a wrong backward, interleaved as a plugin session may record them (groups not contiguous)."""
    right = bc.check(truncated, cases=2, **QUICK, target="builtin:truncated").to_dict()["cases"]
    wrong = bc.check(lambda p, x, y: {k: 2 * v for k, v in truncated(p, x, y, bc.Spec()).items()}, cases=2,
                     **QUICK, target="bugs.py:twice").to_dict()["cases"]
    cases = [right[0], wrong[0], right[1], wrong[1]]
    return rp.report_dict(cases, seed=0, oracles=["autograd"], seconds=1.0, argv=["bptt-check"])


def test_json_is_one_case_a_line_and_reads_back_lazily(mixed, tmp_path):
    text = rp.render(mixed, "json")
    assert text == rp.render(dict(mixed, cases=CaseLog(mixed["cases"])), "json")    # a list or a log: the same
    lines = text.splitlines()
    start = lines.index('  "cases": [')
    assert [json.loads(ln.strip().rstrip(",")) for ln in lines[start + 1:-2]] == mixed["cases"]
    assert json.loads(text) == mixed
    (tmp_path / "report.json").write_text(text)
    lazy = rp.open_report(tmp_path)
    assert isinstance(lazy["cases"], CaseLog) and list(lazy["cases"]) == mixed["cases"]
    assert rp.load_report(tmp_path) == mixed


def test_a_schema_2_report_laid_out_by_json_dumps_still_shows(mixed, tmp_path, capsys):
    """What bptt-check wrote before: schema 2, every case whole, the file indented by json.dumps."""
    whole = [bc.check_case(truncated, bc.draw_case(bc.Spec(), 0, 0), **QUICK).to_dict(), mixed["cases"][1]]
    old = dict(mixed, schema=2, cases=whole)
    (tmp_path / "report.json").write_text(json.dumps(old, indent=2))
    assert list(rp.open_report(tmp_path)["cases"]) == whole
    assert cli.main(["show", str(tmp_path)]) == 1
    assert "1 wrong case" in capsys.readouterr().out


def test_junit_groups_interleaved_cases_by_target_and_spec(mixed):
    root = ET.fromstring(rp.render(mixed, "junit"))
    suites = root.findall("testsuite")
    assert [s.get("name").split(" [")[0] for s in suites] == ["builtin:truncated", "bugs.py:twice"]
    assert [[tc.get("name").split(" [")[0] for tc in s.findall("testcase")] for s in suites] == \
           [["case 0", "case 1"], ["case 0", "case 1"]]
    assert [s.get("failures") for s in suites] == ["0", "2"] and root.get("tests") == "4"
    assert len(suites[1].findall(".//failure")) == 2


def test_the_schema_takes_a_brief_passed_case_and_only_that(mixed):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(mixed, rp.schema())
    assert rp.schema_problem(mixed) is None
    passed = next(c for c in mixed["cases"] if c.get("brief"))
    for bad in (dict(passed, status="failed"), dict(passed, params={"W": {"passed": False, "max_rel_err": 1.0}})):
        broken = dict(mixed, cases=[bad])
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, rp.schema())
        assert rp.schema_problem(broken) is not None
