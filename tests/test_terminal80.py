"""The terminal at 80 columns, as a user sees it: ``bptt-check`` runs in a pseudo-terminal 80 columns
wide and its output is replayed on a small terminal emulator (``tests/vt.py``).

- a wrong case prints one short line above the progress bar, and only the first few do;
- the wrong-case table wraps between words only (no ``my_rnn_bu|g.py``);
- a reproduce command is one line the terminal wraps for the eye, never a line broken by the
  program: copied, it is the command in report.json, and it runs;
- when the backward raised, the user's file, line and line of code are shown;
- text from the user's code reaches the terminal without escape sequences or control characters.
"""

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from bugs import mutant
from vt import Screen, run_in_pty

import bptt_check as bc
from bptt_check.report import text as tx
from bptt_check.report.terminal import BAR_LINES_LIMIT, print_failures

HERE = Path(__file__).resolve().parent
COLS = 80

# a newcomer's module: dU drops its t = 0 term, and T = 1 sequences index past an array
MODULE = f'''
import sys
import numpy as np
sys.path.insert(0, {str(HERE)!r})
from bugs import mutant

_wrong = mutant("du_from_t1")


def backward(params, x, y, spec):
    if x.shape[0] == 1:
        return {{"W": np.zeros(3)[7]}}
    return _wrong(params, x, y, spec)
'''


def _env():
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def test_a_failing_run_at_80_columns(tmp_path, monkeypatch):
    (tmp_path / "my_rnn_bug.py").write_text(MODULE)
    rc, out = run_in_pty(["bptt-check", "my_rnn_bug.py:backward", "--cases", "40", "--report-dir", "r"],
                         cols=COLS, cwd=str(tmp_path), env=_env())
    assert rc == 1, out[-3000:]
    screen = Screen(COLS).feed(out)
    rows, lines = screen.lines(), screen.logical()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    bad = tx.bad_cases(report)
    assert len(bad) == 40 and {c["status"] for c in bad} == {"failed", "error"}

    # above the bar: a heading, then at most BAR_LINES_LIMIT short lines, each on one row
    above = [t for t, n in lines if re.match(r"  case +\d+ (FAILED|ERROR)", t)]
    assert 1 <= len(above) <= BAR_LINES_LIMIT, above
    assert all(len(t) <= COLS for t in above)
    assert len(rows) <= 130, len(rows)            # 40 wrong cases; the issue saw 1,186 rows for 200

    # every line the program wrote fits in 80 columns, except the commands to paste
    commands = [t for t, n in lines if t.startswith("bptt-check ")]
    clis = {c["evidence"]["reproducer"]["cli"] for c in bad if c.get("evidence")}
    assert commands and set(commands) <= clis | {tx.reproduce_line(c, report) for c in bad}, commands
    assert any(n > 1 for t, n in lines if t in commands)          # long: wrapped by the terminal only
    assert [t for t, n in lines if n > 1 and t not in commands] == []

    # the table: every word whole (or cut with "…" when a column is too narrow, never split)
    monkeypatch.chdir(tmp_path)           # paths in the table are relative to where the command ran
    vocab = set()
    for c in bad:
        ev = c.get("evidence") or {}
        for piece in (tx.shapes_text(c["shapes"]), tx.wrong_text(c), str(c["index"]), str(ev.get("first_bad_step")),
                      str(ev.get("shortest_failing_length"))):
            vocab.update(re.split(r"\s+", piece))
    vocab.update("case shapes wrong first bad step fails from T".split())
    words = [w for t in rows if t.startswith("│") or t.startswith("┃") for cell in t.strip("│┃").split("│")
             for w in cell.replace("┃", " ").split()]
    assert words
    broken = [w for w in words
              if w not in vocab and not (w.endswith("…") and any(v.startswith(w[:-1]) for v in vocab))]
    assert broken == [], broken

    # the user's frame when the backward raised: file, line and the line of code
    text = "\n".join(t for t, _ in lines)
    assert re.search(r'at my_rnn_bug\.py:\d+ in backward: return \{"W": np\.zeros\(3\)\[7\]\}', text), text[-4000:]
    assert "timeout: timeout" not in text and "error: exception: IndexError" in text

    # the command, copied from the screen, runs in a fresh shell and checks that case again
    again = subprocess.run(commands[0] + " --report-dir again --format json", shell=True, cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr
    index = int(shlex.split(commands[0])[-1])
    replay = json.loads((tmp_path / "again" / "report.json").read_text())["cases"]
    original = next(c for c in report["cases"] if c["index"] == index)
    assert [c["index"] for c in replay] == [index] and replay[0]["params"] == original["params"]


HOSTILE = "boom\x1b[2J\x1b[31m red\x1b]0;title\x07\r overwritten\x08\x00 \u202eevil\ud800 *bold* <b>|x|</b>"


def _hostile(params, x, y):
    raise ValueError(HOSTILE)


def _wrong(params, x, y, spec):
    return mutant("du_from_t1")(params, x, y, spec)


def test_user_text_reaches_the_terminal_without_escapes_or_controls():
    report = bc.check(_hostile, cases=2, timeout=None)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    from rich.console import Console

    buf = io.StringIO()
    print_failures(data, Console(file=buf, width=COLS, force_terminal=False, color_system=None))
    for out in (buf.getvalue(), report.summary(), report.cases[0].summary()):
        assert "boom" in out and "red" in out and "evil" in out, out
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\ud800-\udfff]", out), repr(out)
    assert tx.plain(HOSTILE) == "boom red overwritten \u202eevil\ud800 *bold* <b>|x|</b>".replace(
        "\u202e", "").replace("\ud800", "\ufffd")


def test_report_summary_says_what_is_wrong_where_and_how_to_replay(tmp_path):
    report = bc.check(_wrong, cases=2)
    out = report.summary()
    first, *rest = out.splitlines()
    assert first.startswith("WRONG GRADIENTS: 2 cases, 0 passed, 2 failed")
    assert "  wrong: dU" in out and "  worst: dU[" in out and "first bad step 0" in out
    assert "missing_first_step" in out and "reproduce in Python:" in out
    raised = bc.check(_raises, cases=1).summary()
    assert re.search(r"at \S*test_terminal80\.py:\d+ in _raises: return \{\"W\": np\.zeros\(3\)\[7\]\}", raised), raised
    assert bc.check(_wrong, cases=1).headline().startswith("WRONG GRADIENTS: 1 cases")


def _raises(params, x, y):
    return {"W": np.zeros(3)[7]}


def test_a_timeout_names_its_kind_once():
    import time

    def slow(params, x, y):
        time.sleep(0.5)

    r = bc.check_case(slow, bc.draw_case(bc.Spec(), 0, 0), timeout=0.05)
    d = r.to_dict()
    assert r.status == "timeout"
    assert "timeout: timeout" not in tx.error_line(d) and tx.error_line(d).startswith("timeout: the backward")
    assert "TIMEOUT" in r.summary() and "timeout:" not in r.summary()
    assert "in slow" in tx.frame_line(d)
