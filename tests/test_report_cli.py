"""The report through the command line: four formats by default, --format, the reproducer
line re-runs exactly one case, and ``bptt-check show``."""

import json
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bptt_check", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_wrong_backward_writes_four_formats_and_the_reproducer_replays_one_case(tmp_path):
    out = tmp_path / "r"
    proc = run(f"{HERE / 'bugs.py'}:window_one_too_long", "--truncation", "window:2", "--cases", "3",
               "--report-dir", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    root = ET.parse(out / "junit.xml").getroot()
    assert int(root.get("failures")) == report["counts"]["failed"] >= 1
    # the terminal: compact table, then per failure the three lines and how to reproduce
    assert "wrong case" in proc.stdout and "time: first bad step 0" in proc.stdout
    assert "fails from sequence length 4 on" in proc.stdout and "reproduce in a shell:\nbptt-check" in proc.stdout
    assert report["command"].startswith("bptt-check ") and "--truncation window:2" in report["command"]

    failed = next(c for c in report["cases"] if c["status"] == "failed")
    line = failed["evidence"]["reproducer"]["cli"]
    args = shlex.split(line)[1:] + ["--report-dir", str(tmp_path / "again"), "--format", "json"]
    again = run(*args)
    assert again.returncode == 1, again.stdout + again.stderr
    replay = json.loads((tmp_path / "again" / "report.json").read_text())
    assert [c["index"] for c in replay["cases"]] == [failed["index"]]
    assert replay["cases"][0]["params"] == failed["params"]          # the same case, bit for bit
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["report.json"]


def test_show_re_renders_an_earlier_report(tmp_path):
    out = tmp_path / "r"
    proc = run(f"{HERE / 'bugs.py'}:du_from_t1", "--cases", "2", "--report-dir", str(out), "--format", "json")
    assert proc.returncode == 1
    shown = run("show", str(out / "report.json"), "--format", "md,junit")
    assert shown.returncode == 1, shown.stderr
    assert "WRONG GRADIENTS" in shown.stdout and "the step-0 term is missing" in shown.stdout
    assert "by target and spec" in shown.stdout
    assert (out / "report.md").is_file() and (out / "junit.xml").is_file() and not (out / "report.html").exists()
    missing = run("show", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2 and "no report at" in missing.stderr


def test_bad_format_is_a_usage_error(tmp_path):
    proc = run("--format", "json,pdf", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "choose from json, md, junit, html" in proc.stderr
    assert not (tmp_path / "r").exists()
