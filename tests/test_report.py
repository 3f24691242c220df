"""The report in four formats: JSON valid against its schema; Markdown, JUnit and HTML rendered
from the JSON alone; sizes, counts, self-containment, pictures; the terminal."""

import copy
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from bugs import mutant

import bptt_check as bc
from bptt_check import report as rp
from bptt_check.builtin import truncated
from bptt_check.report import html as rhtml
from bptt_check.report import markdown as rmd
from bptt_check.report import plots
from bptt_check.report import text as tx
from bptt_check.report.junit import render_junit
from bptt_check.report.svg import heatmap_svg
from bptt_check.report.terminal import CaseProgress, print_report

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def run_dict():
    """A real run: a wrong backward in two specs and a right one, as the JSON round-trips it."""
    bugs = str(HERE / "bugs.py")
    cases = []
    cases += bc.check(mutant("du_from_t1"), cases=3, seed=0, target=f"{bugs}:du_from_t1").cases
    cases += bc.check(mutant("window_one_too_long"), cases=2, seed=0, truncation="window:2",
                      target=f"{bugs}:window_one_too_long").cases
    cases += bc.check(truncated, cases=3, seed=0, mode="many-to-one", target="builtin:truncated").cases
    report = bc.Report(cases, 0, ("autograd", "fd"), 1.5, argv=["bptt-check", "x.py:fn", "--cases", "3"])
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


def _synthetic(run_dict, n_cases):
    """A report of n_cases built from the real ones (what a big sweep writes), plus an error,
    a timeout, an inconclusive case and a diagnosis."""
    base = run_dict["cases"]
    cases = []
    for i in range(n_cases):
        cases.append(dict(base[i % len(base)], index=i))      # shallow: the renderers only read
    k, failed = next((k, c) for k, c in enumerate(cases) if c["status"] == "failed")
    cases[k] = failed = copy.deepcopy(failed)
    failed["diagnosis"] = [{"code": "t0_term_missing", "fit": 1e-15, "message": "the t = 0 term of dU is missing"},
                           {"code": "scaled", "fit": 0.3, "message": "dU is 0.9 x the reference"}]
    err = copy.deepcopy(cases[-1])
    err.update(status="error", passed=False, params={}, evidence=None, index=n_cases,
               error={"kind": "exception", "message": "Traceback...\nZeroDivisionError: division by zero\x1b[0m"})
    tmo = copy.deepcopy(err)
    tmo.update(status="timeout", index=n_cases + 1, error={"kind": "timeout", "message": "no answer in 30 s"})
    inc = copy.deepcopy(cases[-1])
    inc.update(status="inconclusive", index=n_cases + 2, notes=["oracles disagree on U (1/9): a relu kink"])
    cases += [err, tmo, inc]
    d = dict(run_dict, cases=cases, interrupted=True)
    counts = {"passed": 0, "failed": 0, "inconclusive": 0, "error": 0, "timeout": 0}
    for c in cases:
        counts[c["status"]] += 1
    d["counts"] = counts
    d["passed"] = False
    return d


def test_json_validates_against_its_schema(run_dict):
    jsonschema = pytest.importorskip("jsonschema")
    schema = rp.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(run_dict, schema)
    failed = [c for c in run_dict["cases"] if c["status"] == "failed"]
    assert failed and all(c["evidence"]["reproducer"]["cli"] for c in failed)
    assert {"command", "created", "specs", "targets", "tolerances", "oracles", "seconds"} <= run_dict.keys()
    # the schema is not a rubber stamp
    broken = copy.deepcopy(run_dict)
    broken["cases"][0]["status"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_synthetic_report_with_every_status_validates(run_dict):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(_synthetic(run_dict, 12), rp.schema())


def test_write_reports_writes_the_four_formats_from_the_json_alone(run_dict, tmp_path):
    paths = rp.write_reports(run_dict, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["junit.xml", "report.html", "report.json", "report.md"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp files left
    again = json.loads((tmp_path / "report.json").read_text())
    assert again == run_dict
    # rendered from the reloaded JSON: the same files (JSON is the source of truth)
    assert rmd.render_markdown(again) == (tmp_path / "report.md").read_text()
    assert render_junit(again) == (tmp_path / "junit.xml").read_text()


def test_junit_parses_with_counts_matching_the_json(run_dict):
    big = _synthetic(run_dict, 40)
    for d in (run_dict, big):
        root = ET.fromstring(render_junit(d))
        n = d["counts"]
        assert root.tag == "testsuites"
        assert int(root.get("tests")) == len(d["cases"]) == len(root.findall(".//testcase"))
        assert int(root.get("failures")) == n["failed"] == len(root.findall(".//testcase/failure"))
        assert int(root.get("errors")) == n["error"] + n.get("timeout", 0) == len(root.findall(".//testcase/error"))
        assert int(root.get("skipped")) == n["inconclusive"] == len(root.findall(".//testcase/skipped"))
        assert sum(int(s.get("tests")) for s in root.findall("testsuite")) == len(d["cases"])
    fail = ET.fromstring(render_junit(run_dict)).find(".//failure")
    assert fail.get("message").startswith("wrong: dU")
    assert "first bad step 0" in fail.text and "--case" in fail.text


def test_markdown_names_gradient_element_and_step(run_dict):
    md = rmd.render_markdown(run_dict)
    assert md.startswith("# ❌ bptt-check: WRONG GRADIENTS")
    n_bad = sum(c["status"] == "failed" for c in run_dict["cases"])
    assert n_bad >= 3 and f"## Wrong cases ({n_bad})" in md and "report.html" in md
    assert "wrong: dU 16/16" in md or "wrong: dU" in md
    assert "worst: dU[" in md and "first bad step 0" in md
    assert "the step-0 term is missing" in md
    assert "the windows reach 1 step too far back" in md and "fails from sequence length 4 on" in md
    assert "| index | yours | reference | abs | rel |" in md
    assert "atol\\*scale + rtol\\*\\|r\\|" in md                      # escaped: no italics
    assert "```bash\nbptt-check " in md and "--case 0" in md
    assert "data:image" not in md and "<img" not in md


def test_markdown_stays_small_for_thousands_of_cases(run_dict):
    big = _synthetic(run_dict, 5000)
    md = rmd.render_markdown(big)
    assert len(md.encode()) <= 1 << 20 and len(md) <= rmd.MAX_CHARS
    assert "… and" in md and "more wrong cases" in md
    assert "was interrupted" in md
    assert rmd.md("t0_term_missing") in md              # a diagnosis, when present, is shown (escaped)
    assert "1 error, 1 timeout" in md
    small = rmd.render_markdown(_synthetic(run_dict, 12))
    assert "ZeroDivisionError" in small and "timeout: no answer in 30 s" in small
    assert "timeout: timeout" not in small and "\x1b" not in small          # the kind once; no terminal escapes


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.imgs, self.sections = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
            if key in a:
                self.refs.append(a[key])
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag in ("img", "svg"):
            self.imgs.append((self.sections[-1] if self.sections else None, a.get("data-kind"), a.get("data-param")))


def test_html_is_self_contained_with_one_image_per_checked_matrix(run_dict):
    page = rhtml.render_html(run_dict)
    p = _Refs()
    p.feed(page)
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert p.refs and all(r.startswith(("data:", "#")) for r in p.refs), [r[:40] for r in p.refs]
    assert "url(" not in page and "@import" not in page and "http://" not in page and "https://" not in page
    failed = [c for c in run_dict["cases"] if c["status"] == "failed"]
    assert len(p.sections) == len(failed)
    for c in failed:
        sid = tx.case_id(c)
        heat = [param for s, kind, param in p.imgs if s == sid and kind == "heatmap"]   # inline SVG
        assert sorted(heat) == sorted(c["params"]), (sid, heat)
        assert [k for s, k, _ in p.imgs if s == sid].count("temporal") == 1
        assert [k for s, k, _ in p.imgs if s == sid].count("steps") == 1
    assert "the step-0 term is missing" in page and "Reproduce this case alone" in page


def test_html_without_matplotlib_says_what_is_missing(run_dict, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    page = rhtml.render_html(run_dict)
    assert "<img" not in page and "bptt-check[plots]" in page
    assert "worst: dU[" in page                              # the tables are still there
    assert '<svg data-kind="heatmap" data-param="U"' in page  # and the heatmaps (SVG, no matplotlib)


def test_html_of_a_big_run_draws_only_the_first_cases(run_dict, monkeypatch):
    monkeypatch.setattr(rhtml, "PLOT_LIMIT", 0)      # the matplotlib pictures are tested elsewhere
    big = _synthetic(run_dict, 300)
    page = rhtml.render_html(big)
    p = _Refs()
    p.feed(page)
    assert len(p.sections) == rhtml.DETAIL_LIMIT
    assert "t0_term_missing" in page and "ZeroDivisionError" in page and "interrupted" in page
    assert "\x1b" not in page


def test_pictures_are_real_pngs_and_svgs(run_dict):
    pytest.importorskip("matplotlib")
    c = next(c for c in run_dict["cases"] if c["status"] == "failed" and "window" in c["spec"]["truncation"])
    ev = c["evidence"]
    for png in (plots.temporal_png(ev["temporal"], ev), plots.steps_png(c)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    for name in c["params"]:
        svg = ET.fromstring(heatmap_svg(name, ev["heatmaps"][name], c["params"][name]))
        cells = [r for r in svg.iter("rect") if r.find("title") is not None]
        grid = ev["heatmaps"][name]["log10_rel"]
        assert len(cells) == len(grid) * len(grid[0])        # one cell per (pooled) element
        bad = c["params"][name]["mismatched"] > 0
        assert ("wrong" in svg.find("text").text) == bad


def test_a_failing_renderer_leaves_the_previous_file_whole(run_dict, tmp_path, monkeypatch):
    rp.write_reports(run_dict, tmp_path, ["json"])
    before = "<html>the previous run's page</html>"
    (tmp_path / "report.html").write_text(before)

    def boom(report):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(rhtml, "render_html", boom)
    with pytest.raises(RuntimeError):
        rp.write_reports(dict(run_dict, seed=99), tmp_path, ["json", "html"])
    assert (tmp_path / "report.html").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_parse_formats():
    assert rp.parse_formats("json, md") == ("json", "md")
    assert rp.parse_formats("all") == rp.FORMATS
    with pytest.raises(bc.BPTTCheckError, match="choose from json, md, junit, html"):
        rp.parse_formats("json,pdf")


def test_load_report_says_what_is_wrong(tmp_path):
    with pytest.raises(bc.BPTTCheckError, match="no report at"):
        rp.load_report(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(bc.BPTTCheckError, match="is not JSON"):
        rp.load_report(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{}")
    with pytest.raises(bc.BPTTCheckError, match="not a bptt-check report"):
        rp.load_report(tmp_path / "y.json")


def test_terminal_renders_table_and_three_lines(run_dict):
    from rich.console import Console

    buf = io.StringIO()
    print_report(_synthetic(run_dict, 30), Console(file=buf, width=200))
    out = buf.getvalue()
    assert "WRONG GRADIENTS" in out or "INTERRUPTED" in out
    assert "wrong case" in out and "first bad step" in out
    assert "worst: dU[" in out and "time: first bad step 0" in out and "reproduce in a shell:\nbptt-check" in out
    assert "diagnosis: t0_term_missing" in out and "ZeroDivisionError" in out and "\x1b" not in out


class _R:
    def __init__(self, status):
        self.status = status

        self.target, self.spec = "x.py:f", "many-to-many"

    def summary(self, brief=False):
        return f"case {self.status.upper()}"


def test_progress_modes():
    buf = io.StringIO()
    with CaseProgress(3, mode="lines", file=buf) as p:
        for s in ("passed", "failed", "passed"):
            p.update(_R(s))
    assert buf.getvalue().count("PASSED") == 2 and "FAILED" in buf.getvalue()
    buf = io.StringIO()
    with CaseProgress(3, mode="bar", file=buf) as p:
        for s in ("passed", "failed", "passed"):
            p.update(_R(s))
    assert "FAILED" in buf.getvalue() and "PASSED" not in buf.getvalue() and p.bad == 1
    assert CaseProgress(1, file=io.StringIO()).mode == "lines"      # not a terminal: one line per case
