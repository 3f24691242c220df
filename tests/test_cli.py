"""The command line end to end, through a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bptt_check.cli import main
from bptt_check.model.names import ORDER

HERE = Path(__file__).parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bptt_check", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_main_job_checks_every_mode_and_exits_0(tmp_path):
    proc = run("--cases", "3", "--report-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is True
    specs = {(c["spec"]["mode"], c["spec"]["truncation"]) for c in report["cases"]}
    assert {"many-to-one", "many-to-many"} <= {m for m, _ in specs}
    assert len({t for _, t in specs if t != "none"}) >= 3
    for case in report["cases"]:
        assert {"passed", "status", "spec", "seed", "params"} <= case.keys()
        for name, g in case["params"].items():
            assert name in ORDER                      # W, U, b, bu, V, c, h0, c0, x: the rnn, lstm and gru built-ins
            # a passed case's record is brief (issue 14: <= 1 KB): per gradient passed and max_rel_err
            brief = {"passed", "max_rel_err"} if case["status"] == "passed" and case.get("brief") else set()
            assert (brief or {"passed", "max_abs_err", "max_rel_err", "worst_index"}) <= g.keys()
    assert "OK:" in proc.stdout and proc.stdout.count("PASSED") == len(report["cases"])


def test_wrong_target_exits_1_with_exactly_its_wrong_gradients(tmp_path):
    proc = run(f"{HERE / 'bugs.py'}:du_from_t1", "--cases", "2", "--report-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is False
    for case in report["cases"]:
        assert case["status"] == "failed"
        wrong = {k for k, g in case["params"].items() if not g["passed"]}
        assert wrong == {"U"}
    assert "WRONG GRADIENTS" in proc.stdout


def test_target_as_module_path_with_spec_flags(tmp_path):
    proc = run("bptt_check.builtin.truncated:backward", "--mode", "many-to-one", "--truncation", "tbptt:2,3",
               "--activation", "sigmoid", "--loss", "cross_entropy", "--output", "softmax", "--no-bias",
               "--cases", "4", "--seed", "7", "--report-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    spec = report["cases"][0]["spec"]
    assert spec["truncation"] == "tbptt:2,3" and spec["bias"] is False and spec["loss"] == "cross_entropy"
    assert report["seed"] == 7 and "b" not in report["cases"][0]["params"]


@pytest.mark.parametrize("args, words", [
    (["nowhere.py:fn"], "does not exist"),
    (["bptt_check:no_such_function"], "has no attribute 'no_such_function'"),
    (["bptt_check:__version__"], "not a function"),
    (["no_such_module_xyz:fn"], "no module named"),
    (["justaname"], "must be path/to/file.py:function"),
    (["--truncation", "tbptt:4,2"], "k2 must be >= k1"),
    (["--truncation", "window:0"], "must be >= 1"),
    (["--activation", "gelu"], "invalid choice"),
    (["--cases", "0"], "must be >= 1"),
    (["--oracle", "magic"], "unknown oracle"),
])
def test_bad_usage_exits_2_with_one_clear_line(tmp_path, capsys, args, words):
    # in process: argument handling needs no interpreter of its own (the end-to-end runs above have one)
    code = main([*args, "--report-dir", str(tmp_path / "r")])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert words in out.err and len(out.err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_target_module_that_fails_to_import_shows_its_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import numpy\nraise RuntimeError('boom at import')\n")
    proc = run(f"{bad}:backward", "--report-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "RuntimeError: boom at import" in proc.stderr
