"""Every reproducer bptt-check prints runs when pasted: into a fresh shell (the command lines) or a
fresh Python session (the snippets and their one-line forms), from the folder the check ran in.

Collected from everywhere one is printed — report.json, report.md, report.html, junit.xml and the
terminal of a CLI run; the message of ``assert_backward`` (full and ``fast=True``); the pytest
plugin's failure; a case made by the Hypothesis strategies — and each is run in a new process. A
reproduced case must come back with the same status. A backward that cannot be named (a closure)
gets a snippet whose one ``backward = ...`` line says what to replace: with that line replaced, it runs.
"""

import html
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch  # noqa: F401   (pytester's in-process run must not import torch a second time)
from bugs import mutant

import bptt_check as bc
from bptt_check.model.reproducer import REPLACE, target_name
from bptt_check.report import text as tx

HERE = Path(__file__).resolve().parent

MODULE = f'''
import sys
import numpy as np
sys.path.insert(0, {str(HERE)!r})
from bugs import mutant

_wrong = mutant("du_from_t1")


def backward(params, x, y, spec):
    if x.shape[0] == 1:
        raise IndexError("index 7 is out of bounds")
    return _wrong(params, x, y, spec)
'''


def _env():
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    return env


def _run_all(snippets, cwd):
    """Run each (kind, text) in a new process, all at once; their outputs, in order."""
    procs = []
    for kind, text in snippets:
        argv = ["bash", "-c", text] if kind == "shell" else [sys.executable, "-c", text]
        procs.append(subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        outs.append((p.returncode, out))
    return outs


def _status_line(out):
    m = re.search(r"case +(\d+) (FAILED|ERROR|PASSED|TIMEOUT|INCONCLUSIVE)", out)
    return m and (int(m.group(1)), m.group(2).lower())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("cli")
    (where / "my_rnn.py").write_text(MODULE)
    proc = subprocess.run(["bptt-check", "my_rnn:backward", "--cases", "10", "--report-dir", "r"], cwd=where,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return where, proc.stdout


def _cli_reproducers(cli_run):
    """Every reproducer of the run, (text, kind, status of its case), from every place one is printed."""
    where, stdout = cli_run
    report = json.loads((where / "r" / "report.json").read_text())
    bad = tx.bad_cases(report)
    assert {c["status"] for c in bad} == {"failed", "error"}
    found = {}        # text -> kind

    def add(kind, text):
        found.setdefault(text.strip(), kind)

    for c in bad:
        rep = tx.reproducer_of(c, report)
        add("shell", rep["cli"])
        add("python", rep["python"])
        add("python", rep["oneline"])
    md = (where / "r" / "report.md").read_text()
    for _fence, lang, body in re.findall(r"^(`{3,})(bash|python)\n(.*?)^\1$", md, re.MULTILINE | re.DOTALL):
        add("shell" if lang == "bash" else "python", body)
    page = (where / "r" / "report.html").read_text()
    for pre in re.findall(r"<pre[^>]*>(.*?)</pre>", page, re.DOTALL):
        text = html.unescape(pre)
        if text.startswith("bptt-check "):
            add("shell", text)
        elif text.startswith("import bptt_check"):
            add("python", text)
    for code in re.findall(r"<code>(.*?)</code>", page):
        text = html.unescape(code)
        add("shell" if text.startswith("bptt-check ") else "python", text)
    for node in ET.parse(where / "r" / "junit.xml").getroot().iter():
        for line in (node.text or "").splitlines():
            if line.startswith("reproduce: "):
                text = line.removeprefix("reproduce: ")
                add("shell" if text.startswith("bptt-check ") else "python", text)
    for line in stdout.splitlines():
        if line.startswith("bptt-check "):
            add("shell", line)
    status = {c["index"]: c["status"] for c in report["cases"]}
    out = []
    for text, kind in found.items():
        index = re.search(r"(?:--case |index=)(\d+)", text)
        if index:           # (the run's own command, in the page's header, is no reproducer)
            out.append((text, kind, status[int(index.group(1))]))
    assert len({t for t, k, _ in out if k == "shell"}) >= 2 and len(out) >= 6, out
    return out, where


def _check_reproduced(snippets, where):
    for (text, kind, status), (_rc, out) in zip(snippets, _run_all([(k, t) for t, k, _ in snippets], where)):
        got = _status_line(out)
        assert got is not None, (kind, text, out[-2000:])
        assert got[1] == status, (text, out[-2000:])
        assert "Traceback" not in out or got[1] == "error", (text, out[-2000:])


def test_each_form_of_reproducer_of_a_cli_run_runs_when_pasted(cli_run):
    """One of each form (shell line, snippet, one line) for a failed and an erroring case."""
    snippets, where = _cli_reproducers(cli_run)
    forms = {}
    for text, kind, status in snippets:
        form = (kind, "\n" in text, status)
        forms.setdefault(form, (text, kind, status))
    assert len(forms) == 6, sorted(forms)
    # the three forms on a failed case, the shell line on an erroring one (the rest: -m slow)
    keep = [("shell", False, "failed"), ("python", True, "failed"), ("python", False, "failed"),
            ("shell", False, "error")]
    _check_reproduced([forms[k] for k in keep], where)


@pytest.mark.slow
def test_every_reproducer_of_a_cli_run_runs_when_pasted(cli_run):
    """Every distinct reproducer printed in report.json, .md, .html, junit.xml and the terminal."""
    snippets, where = _cli_reproducers(cli_run)
    _check_reproduced(snippets, where)


def test_assert_backward_and_fast_mode_print_runnable_reproducers(tmp_path, monkeypatch):
    (tmp_path / "my_rnn2.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_rnn2

    assert target_name(my_rnn2.backward) == "my_rnn2:backward"
    messages = []
    for fast in (False, True):
        with pytest.raises(bc.CheckFailed) as info:
            bc.assert_backward(my_rnn2.backward, cases=3, fast=fast)
        messages.append(str(info.value))
    assert "fast=True" in messages[1] and "--fast" in messages[1]
    snippets = []
    for msg in messages[1:]:        # fast mode's (the full check's forms are run from the CLI's report above)
        for kind, label in (("shell", "reproduce in a shell: "), ("python", "reproduce in Python: ")):
            line = next(ln for ln in msg.splitlines() if ln.strip().startswith(label.strip()))
            snippets.append((kind, line.split(label, 1)[1]))
    assert "reproduce in a shell: bptt-check my_rnn2:backward " in messages[0]
    outs = _run_all(snippets, tmp_path)
    for (_kind, text), (_rc, out) in zip(snippets, outs):
        assert _status_line(out) == (0, "failed"), (text, out[-2000:])


def test_a_backward_that_cannot_be_named_says_what_to_replace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wrong = mutant("du_from_t1")                        # a closure: no module-level name
    assert target_name(wrong) is None
    with pytest.raises(bc.CheckFailed) as info:
        bc.assert_backward(wrong, cases=1)
    msg = str(info.value)
    assert "reproduce in a shell" not in msg
    line = next(ln for ln in msg.splitlines() if "reproduce in Python: " in ln).split("reproduce in Python: ", 1)[1]
    assert "backward = ...;" in line and line.endswith(REPLACE.split("  # ")[1] + ": it cannot be imported by name")
    report = bc.check(wrong, cases=1)
    rep = report.cases[0].evidence["reproducer"]
    assert rep["cli"] is None and "replace ... with your backward" in rep["note"]
    define = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from bugs import mutant; "
              "backward = mutant('du_from_t1')")
    snippets = [("python", rep["python"].replace(rep["python"].splitlines()[1], define))]
    for (_kind, text), (_rc, out) in zip(snippets, _run_all(snippets, tmp_path)):
        assert _status_line(out) == (0, "failed"), (text, out[-2000:])


PLUGGED = f'''
import sys
sys.path.insert(0, {str(HERE)!r})
from bugs import mutant

wrong = mutant("du_from_t1")


def test_wrong(bptt):
    bptt.check(wrong, cases=2)
'''


def test_the_plugins_failure_prints_a_runnable_reproducer(pytester):
    pytester.makepyfile(test_plugged=PLUGGED)
    result = pytester.runpytest("-p", "no:cacheprovider", "-n0", "--bptt-oracle", "autograd")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    lines = [re.sub(r"^E\s+", "", ln) for ln in out.splitlines() if "reproduce in " in ln]
    shell = next(ln.split("reproduce in a shell: ", 1)[1] for ln in lines if "reproduce in a shell: " in ln)
    python = next(ln.split("reproduce in Python: ", 1)[1] for ln in lines if "reproduce in Python: " in ln)
    assert "test_plugged:wrong" in shell
    snippets = [("shell", shell), ("python", python)]
    for (_kind, text), (_rc, got) in zip(snippets, _run_all(snippets, pytester.path)):
        assert _status_line(got) == (0, "failed"), (text, got[-2000:])


def test_a_case_made_by_the_strategies_replays_from_its_message(tmp_path):
    from bptt_check.strategies import make_case

    case = make_case(bc.Spec(), seed=3, T=3, B=1, I=2, H=2, O=1)
    wrong = mutant("du_from_t1")
    result = bc.check_case(wrong, case)
    assert result.status == "failed"
    with pytest.raises(bc.CheckFailed) as info:
        bc.api.raise_if_wrong([result], case=case.reproducer())
    line = next(ln for ln in str(info.value).splitlines() if "reproduce in Python: " in ln)
    code = line.split("reproduce in Python: ", 1)[1]
    assert "bptt_check.strategies.make_case(" in code
    define = f"import sys; sys.path.insert(0, {str(HERE)!r}); from bugs import mutant; backward = mutant('du_from_t1')"
    snippets = [("python", code.replace("backward = ...", define).split("  # ")[0])]
    (rc, out), = _run_all(snippets, tmp_path)
    assert _status_line(out) == (0, "failed"), (code, out[-2000:])
