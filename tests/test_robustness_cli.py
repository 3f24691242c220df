"""The command line when the backward misbehaves, when the command line is bad, and when runs are killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import bptt_check as bc
from bptt_check import cli
from bptt_check.api import RUN_TWICE

HERE = Path(__file__).parent
FUZZ = HERE / "fuzz"
sys.path.insert(0, str(FUZZ))

REPORT_FILES = sorted(['junit.xml', 'report.html', 'report.json', 'report.md'])   # and no temporary file


from bad_usage import BAD_USAGE  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FUZZ), os.environ.get("PYTHONPATH", "")])}

# a TARGET whose misbehaviour is picked by its input: each case gets one, and keeps it for both calls
MIXED = '''
import misbehaviours as mb

BUILDERS = [mb.raises, mb.returns_none, mb.drops, mb.batch_major_x, mb.as_dtype, mb.poisons, mb.sgd_step,
            mb.stale_accumulation, mb.prints, mb.as_matrix, mb.returns_sequence, mb.adds]
_planted = {}


def pick(x):
    return int(abs(float(x.sum())) * 1e6) % len(BUILDERS)


def backward(params, x, y, spec):
    key = x.tobytes()
    if key not in _planted:
        _planted[key] = BUILDERS[pick(x)]()
    return _planted[key].backward(params, x, y, spec)
'''

SLOW = '''
import time
from bptt_check.builtin import truncated


def backward(params, x, y, spec):
    time.sleep(0.03)
    return truncated(params, x, y, spec)
'''


def _run(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "bptt_check", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=ENV)


def _harness_lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.strip()]


def test_misbehaving_cases_become_findings_exit_1_and_stdout_stays_clean(tmp_path):
    target = tmp_path / "mixed.py"
    target.write_text(MIXED)
    proc = _run(f"{target}:backward", "--cases", 24, "--seed", 3, "--oracle", "autograd",
                "--report-dir", tmp_path / "r")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    lines = _harness_lines(proc.stdout)
    # 24 case lines, then the failure table and the three lines per failure, then the total
    status_line = re.compile(r"case +\d+ (PASSED|FAILED|ERROR|TIMEOUT|INCONCLUSIVE) ")
    assert [bool(status_line.match(ln)) for ln in lines].count(True) == 24, proc.stdout
    assert all(status_line.match(ln) for ln in lines[:24]), proc.stdout
    assert lines[-2].startswith(("WRONG GRADIENTS: 24 cases", "BACKWARD ERRORS: 24 cases")), lines[-2]
    assert lines[-1].startswith("report: ")
    assert "this line is not the harness's" not in proc.stdout          # the backward's prints were captured

    sys.path.insert(0, str(tmp_path))
    try:
        import mixed
    finally:
        sys.path.remove(str(tmp_path))
    spec = bc.Spec()
    kinds = set()
    for c in report["cases"]:
        case = bc.draw_case(spec, 3, c["index"])
        planted = mixed.BUILDERS[mixed.pick(case.x)]()
        # the run calls twice on its first RUN_TWICE cases (the determinism check), once after
        here = bc.check_case(planted.backward, case, oracles=("autograd",), repeat=c["index"] < RUN_TWICE)
        assert c["status"] == here.status, c["index"]
        if here.error:
            assert c["error"]["kind"] == here.error["kind"] and c["error"]["keys"] == here.error["keys"]
            kinds.add(here.error["kind"])
        if planted.stdout:
            assert planted.stdout in c["stdout"]
    assert len(kinds) >= 6, kinds
    assert report["passed"] is False and report["interrupted"] is False


def test_a_hanging_backward_times_out_per_case_and_the_run_goes_on(tmp_path):
    target = tmp_path / "hang.py"
    target.write_text("def backward(params, x, y):\n    while True:\n        pass\n")
    start = time.perf_counter()
    proc = _run(f"{target}:backward", "--cases", 4, "--timeout", "0.2", "--report-dir", tmp_path / "r")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["counts"]["timeout"] == 4 and [c["status"] for c in report["cases"]] == ["timeout"] * 4
    assert all(c["error"]["kind"] == "timeout" for c in report["cases"])
    assert "did not return within 0.2 s" in proc.stdout and time.perf_counter() - start < 60


# ----------------------------------------------------------------- bad specs and command lines

@pytest.mark.parametrize("make, words", BAD_USAGE, ids=[w for _, w in BAD_USAGE])
def test_bad_specs_and_command_lines_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, make, words):
    argv = make(tmp_path)
    if "--report-dir" not in argv:
        argv += ["--report-dir", str(tmp_path / "reports")]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE, (argv, out, err)
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("bptt-check: error: ") and out == ""
    assert not (tmp_path / "reports").exists()


def test_bad_command_line_exit_status_through_a_process(tmp_path):
    proc = _run("--truncation", "tbptt:4,2", "--report-dir", tmp_path / "r")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# ----------------------------------------------------------------- killed mid-way

def _start(tmp_path, report_dir, cases=2000):
    target = tmp_path / "slow.py"
    target.write_text(SLOW)
    return subprocess.Popen([sys.executable, "-m", "bptt_check", f"{target}:backward", "--cases", str(cases),
                             "--oracle", "fd", "--report-dir", str(report_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_for_cases(proc, n, limit=120.0):
    """Read stdout until n case lines came (in a thread: a pipe read has no timeout)."""
    lines: list[str] = []
    done = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if sum(ln.startswith("case ") for ln in lines) >= n:
                done.set()
                return
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    assert done.wait(limit), "the run printed no cases"
    return lines


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_leaves_a_complete_partial_report_marked_interrupted(tmp_path, sig, code):
    folder = tmp_path / "r"
    proc = _start(tmp_path, folder)
    seen = _wait_for_cases(proc, 3)
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    printed = [ln for ln in seen + rest.splitlines() if ln.startswith("case ")]
    report = json.loads((folder / "report.json").read_text())
    assert report["interrupted"] is True and report["passed"] is False
    assert 3 <= len(report["cases"]) == len(printed) < 2000
    assert all(c["status"] == "passed" for c in report["cases"])
    assert f"interrupted by {signal.Signals(sig).name}" in err
    assert sorted(f.name for f in folder.iterdir()) == REPORT_FILES                  # no temporary file


def test_a_killed_run_leaves_the_previous_report_untouched(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    previous = json.dumps({"previous": True}) + "\n"
    (folder / "report.json").write_text(previous)
    proc = _start(tmp_path, folder)
    _wait_for_cases(proc, 2)
    proc.kill()                                                                    # no chance to write anything
    proc.communicate(timeout=60)
    assert (folder / "report.json").read_text() == previous


def test_two_concurrent_runs_into_one_folder_leave_one_complete_report(tmp_path):
    folder = tmp_path / "r"
    procs = [subprocess.Popen([sys.executable, "-m", "bptt_check", "bptt_check.builtin.truncated:backward",
                               "--cases", "4", "--seed", str(seed), "--oracle", "fd", "--report-dir",
                               str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for seed in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
    report = json.loads((folder / "report.json").read_text())
    assert report["seed"] in (1, 2) and len(report["cases"]) == 4
    assert all(c["seed"] == report["seed"] for c in report["cases"])
    assert sorted(f.name for f in folder.iterdir()) == REPORT_FILES


# ----------------------------------------------------------------- hostile TARGETs (issue 13)

import hostile  # noqa: E402


@pytest.mark.parametrize("row", hostile.ROWS, ids=[r.behaviour for r in hostile.ROWS])
def test_a_hostile_target_cannot_take_the_command_down_or_sway_it(row, tmp_path, monkeypatch, capsys):
    argv, folder = hostile.prepare(row, tmp_path)
    start = time.perf_counter()
    if row.process:                          # what it does would reach this process: a command of its own
        proc = _run(*argv, cwd=tmp_path, timeout=120)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:                                    # the worker process protects this one
        monkeypatch.chdir(tmp_path)
        code = cli.main(argv)
        out, err = capsys.readouterr()
    run = hostile.result(row, code, out, err, folder, time.perf_counter() - start)
    assert code == row.exit, f"exit {code}, expected {row.exit}\n{out[-3000:]}\n{err[-3000:]}"
    row.check(run)
    if run.report is not None:
        assert sorted(f.name for f in folder.iterdir()) == REPORT_FILES       # complete, no temporary file


def test_hostile_rows_are_the_docs_table():
    text = (HERE.parent / "docs" / "robustness.md").read_text(encoding="utf-8")
    for row in hostile.ROWS:
        assert f"| {row.behaviour} | {row.exit} | {row.claim} |" in text, row.behaviour


def test_threads_printing_while_calls_run_in_this_process_do_not_crash_it():
    """--isolate thread: sys.stdout is swapped around each call while another thread prints through it
    (the object swapped out was freed under that thread: SIGSEGV, exit 139)."""
    script = (
        "import threading, time, bptt_check as bc\n"
        "from bptt_check.builtin import truncated\n"
        "def spam():\n"
        "    end = time.time() + 0.3\n"
        "    while time.time() < end:\n"
        "        print('spam from a thread')\n"
        "def backward(params, x, y, spec):\n"
        "    threading.Thread(target=spam, daemon=True).start()\n"
        "    return truncated(params, x, y, spec)\n"
        "r = bc.check(backward, cases=30, oracles=('autograd',), isolate='thread')\n"
        "import sys; print('RESULT', r.passed, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=300, env=ENV)
    assert proc.returncode == 0 and "RESULT True" in proc.stderr, (proc.returncode, proc.stderr[-2000:])


def test_output_cut_short_by_a_closed_pipe_ends_quietly_with_the_runs_own_status(tmp_path):
    target = tmp_path / "wrong.py"
    target.write_text(hostile.CORRECT + "def backward(params, x, y, spec):\n" + hostile.WRONG)
    for argv, status in (([f"{target}:backward"], 1),):
        proc = subprocess.Popen([sys.executable, "-m", "bptt_check", *argv, "--cases", "6", "--oracle", "autograd",
                                 "--progress", "lines", "--report-dir", str(tmp_path / "r")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        proc.stdout.readline()                   # like `| head -1`: one line, then the reader is gone
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == status, err
        assert err == "", err
        assert json.loads((tmp_path / "r" / "report.json").read_text())["passed"] is (status == 0)


def test_a_report_that_cannot_be_written_prints_the_verdict_then_exits_2(tmp_path, capsys):
    folder = tmp_path / "r"
    (folder / "report.html").mkdir(parents=True)            # a folder where a report file goes
    (folder / "report.json").write_text('{"old": true}')
    code = cli.main(["bptt_check.builtin.truncated:backward", "--cases", "2", "--oracle", "autograd",
                     "--report-dir", str(folder)])
    out, err = capsys.readouterr()
    assert code == 2 and "OK: 2 cases" in out
    assert err.startswith("bptt-check: cannot write the report: ") and len(err.strip().splitlines()) == 1, err
    assert "report.html" in err
    assert (folder / "report.json").read_text() == '{"old": true}'              # the old set is left as it was
    assert sorted(f.name for f in folder.iterdir()) == ["report.html", "report.json"]


def test_a_full_disk_leaves_the_previous_report_set_intact(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "r"
    assert cli.main(["bptt_check.builtin.truncated:backward", "--cases", "1", "--oracle", "autograd",
                     "--report-dir", str(folder)]) == 0
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    import errno

    import bptt_check.report.io as io_module

    real = io_module.os.fsync
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) == 3:                       # the third file of the set
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(io_module.os, "fsync", full)
    capsys.readouterr()
    code = cli.main([f"{HERE / 'bugs.py'}:du_from_t1", "--cases", "1", "--oracle", "autograd",
                     "--report-dir", str(folder)])
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert code == 2 and "WRONG GRADIENTS" in out and "No space left on device" in err
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before           # not one file changed


def test_a_run_replaces_the_whole_set_never_new_json_beside_an_old_page(tmp_path):
    folder = tmp_path / "r"
    assert cli.main(["bptt_check.builtin.truncated:backward", "--cases", "1", "--oracle", "autograd",
                     "--report-dir", str(folder)]) == 0
    assert sorted(f.name for f in folder.iterdir()) == REPORT_FILES
    code = cli.main([f"{HERE / 'bugs.py'}:du_from_t1", "--cases", "1", "--oracle", "autograd", "--format", "json",
                     "--report-dir", str(folder)])
    assert code == 1
    assert sorted(f.name for f in folder.iterdir()) == ["report.json"]         # the passing page is gone
    assert json.loads((folder / "report.json").read_text())["passed"] is False


def test_the_report_line_shows_the_folder_as_typed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["bptt_check.builtin.truncated:backward", "--cases", "1", "--oracle", "autograd",
                     "--report-dir", "out", "--isolate", "none"])
    out, _ = capsys.readouterr()
    assert code == 0 and "report: out/report.json, " in out           # shown as typed, written where typed
    assert (tmp_path / "out" / "report.json").is_file()


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe not utf-8", "is not UTF-8"),
    (b'{"tool": "bptt-check", "cases": "many"}', "does not follow the report schema"),
    (b'{"tool": "bptt-check", "cases": []}', "the field 'schema' is missing"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"tool": "bptt-check", "cases": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b'{"tool": "bptt-check", "cases": [], "seconds": NaN}', "not strict JSON"),
])
def test_show_refuses_a_malformed_report_with_one_line(tmp_path, capsys, content, words):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    code = cli.main(["show", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1, (code, err[:500])


def test_show_refuses_wrong_types_deep_in_a_real_report(tmp_path, capsys):
    folder = tmp_path / "r"
    cli.main([f"{HERE / 'bugs.py'}:du_from_t1", "--cases", "1", "--oracle", "autograd", "--report-dir", str(folder)])
    data = json.loads((folder / "report.json").read_text())
    capsys.readouterr()
    assert cli.main(["show", str(folder)]) == 1
    data["cases"][0]["params"]["U"]["worst_index"] = ["a", "b"]
    (folder / "report.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert cli.main(["show", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "cases[0].params.U.worst_index[0]: expected integer, got a string" in err
