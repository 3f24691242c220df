"""The pytest plugin end to end, through pytester: fixture, function, marker, options, the terminal
summary, one report per session (also under pytest-xdist), Hypothesis ``@given`` tests."""

import json
import os

import pytest
import torch  # noqa: F401

# pytester's in-process runs unload the modules first imported inside them, and torch cannot be
# imported twice in one process: it is imported here, outside them.

BUGS = os.path.join(os.path.dirname(__file__), "bugs.py")

TESTS = f"""
import importlib.util
import pytest
from bptt_check.builtin import truncated

_spec = importlib.util.spec_from_file_location("bugs", {BUGS!r})
bugs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bugs)


def test_right(bptt):
    report = bptt.check(truncated, truncation="window:2")
    assert report.passed


def test_wrong(bptt):
    bptt.check(bugs.mutant("du_from_t1"))


@pytest.mark.bptt(mode="many-to-one", truncation="tbptt:2,3", cases=2, seed=5)
def test_marker(bptt):
    report = bptt.check(truncated)
    assert len(report.cases) == 2 and report.seed == 5
    assert {{(str(c.spec.truncation), c.spec.mode) for c in report.cases}} == {{("tbptt:2,3", "many-to-one")}}


def test_function_form():
    from bptt_check.plugin import check_backward
    check_backward(truncated, mode="many-to-one")


def test_no_check_here():
    assert True
"""

FAST = ["--bptt-oracle", "autograd", "-p", "no:cacheprovider"]


def report_of(pytester, folder="reports"):
    import jsonschema

    from bptt_check.report import schema

    path = pytester.path / folder / "report.json"
    assert path.is_file(), f"no report at {path}"
    data = json.loads(path.read_text())
    jsonschema.validate(data, schema())            # the session report is a report like the CLI's
    for name in ("report.md", "junit.xml", "report.html"):
        assert (path.parent / name).is_file(), name
    return data


def test_passing_and_failing_backwards_summary_and_one_report(pytester):
    pytester.makepyfile(test_checks=TESTS)
    result = pytester.runpytest("--bptt-cases", "3", *FAST)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "E   *CheckFailed: 3 of 3 case(s) wrong; first: case   0 FAILED       du_from_t1 *",
        "*= bptt-check =*",
        "WRONG GRADIENTS: 4 check(s) in 4 test(s), 11 cases: 8 passed, 3 failed",
        "  test_checks.py::test_wrong: 3/3 cases wrong; last: failed seed 0 index 2 * wrong: U",
        "report: *reports*report.json",
    ])
    data = report_of(pytester)
    assert data["passed"] is False and data["source"] == "pytest"
    assert data["counts"]["passed"] == 8 and data["counts"]["failed"] == 3
    assert set(data["tests"]) == {f"test_checks.py::{n}" for n in ("test_right", "test_wrong", "test_marker",
                                                                   "test_function_form")}
    wrong = [c for c in data["cases"] if c["test"].endswith("test_wrong")]
    assert len(wrong) == 3 and all(not c["params"]["U"]["passed"] and c["params"]["W"]["passed"] for c in wrong)
    assert data["oracles"] == ["autograd"]


def test_failure_message_has_the_wrong_gradient_and_a_reproducer(pytester):
    pytester.makepyfile(test_checks=TESTS)
    result = pytester.runpytest("--bptt-cases", "2", "-k", "wrong", *FAST)
    result.stdout.fnmatch_lines([
        "*dU: * elements off, worst *ratio to reference*",
        "*reproduce in Python: import bptt_check; backward = ...; case = bptt_check.draw_case(bptt_check.Spec(), "
        "seed=0, index=0); print(bptt_check.check_case(backward, case*",
    ])


def test_seed_and_report_dir_options(pytester, tmp_path):
    pytester.makepyfile(test_checks=TESTS)
    out = tmp_path / "elsewhere"
    result = pytester.runpytest("--bptt-cases", "2", "--bptt-seed", "41", "--bptt-report-dir", str(out),
                                "-k", "right", *FAST)
    result.assert_outcomes(passed=1, deselected=4)
    data = json.loads((out / "report.json").read_text())
    assert data["seed"] == 41 and {c["seed"] for c in data["cases"]} == {41} and len(data["cases"]) == 2
    assert not (pytester.path / "reports").exists()


@pytest.mark.parametrize("args, words", [
    (["--bptt-cases", "0"], "must be >= 1"),
    (["--bptt-oracle", "magic"], "unknown oracle"),
])
def test_bad_options_are_usage_errors(pytester, args, words):
    pytester.makepyfile(test_checks=TESTS)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert words in result.stderr.str()


def test_no_check_no_report_no_summary(pytester):
    pytester.makepyfile(test_checks=TESTS)
    result = pytester.runpytest("-k", "no_check", *FAST)
    result.assert_outcomes(passed=1, deselected=4)
    assert "= bptt-check =" not in result.stdout.str()
    assert not (pytester.path / "reports").exists()


def test_marker_is_registered_and_checked(pytester):
    pytester.makepyfile(test_m="""
        import pytest
        from bptt_check.builtin import truncated

        @pytest.mark.bptt(window=3)
        def test_typo(bptt):
            bptt.check(truncated)
    """)
    result = pytester.runpytest("--strict-markers", *FAST)
    result.assert_outcomes(failed=1)
    assert "test_m.py::test_typo: @pytest.mark.bptt got ['window']; it takes activation, bias, cases" in \
        result.stdout.str()
    help_ = pytester.runpytest("--markers")
    help_.stdout.fnmatch_lines(["*@pytest.mark.bptt(**spec): spec defaults*"])


GIVEN = f"""
import importlib.util
from hypothesis import given, settings
from bptt_check import Spec
from bptt_check.plugin import check_backward
from bptt_check.strategies import cases

_spec = importlib.util.spec_from_file_location("bugs", {BUGS!r})
bugs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bugs)
no_recurrent_flow = bugs.mutant("no_recurrent_flow")      # needs T >= 2 to show

@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(case=cases(spec=Spec()))
def test_with_the_fixture(bptt, case):
    bptt.check_case(no_recurrent_flow, case)

@settings(max_examples=5, deadline=None, derandomize=True, database=None)
@given(case=cases(spec=Spec(mode="many-to-one")))
def test_with_the_function(case):
    from bptt_check.builtin import truncated
    check_backward(truncated, cases=1)
"""


def test_given_tests_work_shrink_and_print_the_reproducer(pytester):
    pytester.makepyfile(test_given=GIVEN)
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "FailedHealthCheck" not in out and "function-scoped fixture" not in out
    # the smallest failing case: two steps (the bug needs a recurrence), every other size 1, seed 0
    reproducer = "bptt_check.strategies.make_case(bptt_check.Spec(), seed=0, T=2, B=1, I=1, H=1, O=1)"
    again = f"*reproduce in Python: *case = {reproducer}; print(bptt_check.check_case(backward, case*"
    result.stdout.fnmatch_lines([again, f"*case={reproducer}*"])
    data = report_of(pytester)
    mine = data["tests"]["test_given.py::test_with_the_fixture"]
    assert mine["counts"]["failed"] >= 1 and mine["cases_kept"] <= 100


CONFTEST_LOGGING_WRITES = """
import os
import bptt_check.session as session

def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        with open("main.pid", "w") as fh:
            fh.write(str(os.getpid()))

_real = session.write_reports

def _logged(*args, **kwargs):
    with open("writes.log", "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return _real(*args, **kwargs)

session.write_reports = _logged
"""


def test_xdist_two_workers_nothing_lost_report_written_once_by_the_main_process(pytester):
    pytester.makeconftest(CONFTEST_LOGGING_WRITES)
    pytester.makepyfile(test_checks=TESTS)
    pytester.makepyfile(test_more="""
        import pytest
        from bptt_check.builtin import truncated

        @pytest.mark.parametrize("i", range(6))
        def test_many(bptt, i):
            bptt.check(truncated, seed=i)
    """)
    pytester.makepyfile(test_crash="""
        import os

        def test_worker_dies():
            os._exit(1)                   # the test itself, in its xdist worker (not a backward)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--bptt-cases", "2", *FAST)
    result.assert_outcomes(passed=10, failed=2)
    data = report_of(pytester)
    # the crashed worker's test is missing from the report: the report says so, and fails
    assert data["passed"] is False
    assert data["incomplete"]["crashed_tests"] == ["test_crash.py::test_worker_dies"]
    result.stdout.fnmatch_lines(["*test_crash.py::test_worker_dies: its pytest-xdist worker crashed*"])
    assert len(data["tests"]) == 10
    assert len(data["cases"]) == 10 * 2                        # 2 cases per check, one check per test
    keys = [(c["test"], c["seed"], c["index"]) for c in data["cases"]]
    assert len(set(keys)) == len(keys)                         # nothing twice
    # records from more than one worker; xdist replaces the crashed worker (gw2), which may run tests too
    workers = {c["worker"] for c in data["cases"]}
    assert len(workers) >= 2 and workers <= {"gw0", "gw1", "gw2"}, workers
    writes = (pytester.path / "writes.log").read_text().split("\n")[:-1]
    main_pid = (pytester.path / "main.pid").read_text()
    assert writes == [main_pid]                                # once, by the main process
    result.stdout.fnmatch_lines(["INCOMPLETE: 10 check(s) in 10 test(s), 20 cases: 18 passed, 2 failed"])


def test_records_are_strict_json_plain_data():
    import bptt_check as bc
    from bptt_check.builtin import truncated
    from bptt_check.session import TestContext

    result = bc.check_case(truncated, bc.draw_case(bc.Spec(), 0, 0), oracles=["autograd"])
    result.oracles["reference"]["odd"] = float("nan")          # a non-finite number anywhere
    ctx = TestContext("t.py::test", worker="gw1")
    ctx.add([result])
    text = json.dumps(ctx.payload(), allow_nan=False)           # raises on NaN or non-JSON types
    record = json.loads(text)["cases"][0]
    assert record["oracles"]["reference"]["odd"] is None and record["worker"] == "gw1"
    assert record["test"] == "t.py::test" and record["params"]["U"]["passed"] is True


# ----------------------------------------------------------------- run options, isolation (issue 13)

RUN_OPTIONS = """
import os, time
from bptt_check.builtin import truncated


def pid_backward(params, x, y, spec):
    print("pid", os.getpid())
    return truncated(params, x, y, spec)


def hanging(params, x, y, spec):
    while True:
        time.sleep(0.01)


def test_where(bptt):
    report = bptt.check(pid_backward, cases=1)
    assert report.cases[0].stdout.startswith("pid ")
    with open("pids.txt", "a") as fh:
        fh.write(f"{os.getpid()} {report.cases[0].stdout.split()[1]}\\n")


def test_hangs(bptt):
    bptt.check(hanging, cases=2)
"""


def _pids(pytester):
    return [tuple(line.split()) for line in (pytester.path / "pids.txt").read_text().splitlines()]


def test_run_options_are_honoured_fast_is_a_flag(pytester):
    pytester.makepyfile(test_run=RUN_OPTIONS)
    result = pytester.runpytest("--bptt-fast", "--bptt-directions", "7", "--bptt-timeout", "0.3", *FAST)
    result.assert_outcomes(passed=1, failed=1)
    data = report_of(pytester)
    hung = [c for c in data["cases"] if c["test"].endswith("test_hangs")]
    assert [c["status"] for c in hung] == ["timeout", "timeout"]
    assert "did not return within 0.3 s" in hung[0]["error"]["message"]
    right = [c for c in data["cases"] if c["test"].endswith("test_where")]
    assert right[0]["oracles"]["fast"]["directions"] == 7                 # --bptt-directions, in --bptt-fast mode
    from bptt_check.verdict.pipeline import FAST_ORACLES

    assert data["oracles"] == list(FAST_ORACLES)
    harness, backward = _pids(pytester)[0]
    assert harness != backward                         # the backward ran in a worker process


def test_isolate_thread_runs_the_backward_in_the_test_process(pytester):
    pytester.makepyfile(test_run=RUN_OPTIONS)
    result = pytester.runpytest("--bptt-isolate", "thread", "-k", "where", *FAST)
    result.assert_outcomes(passed=1, deselected=1)
    harness, backward = _pids(pytester)[0]
    assert harness == backward


@pytest.mark.parametrize("args, words", [
    (["--bptt-report-dir", "afile"], "--bptt-report-dir: report folder"),
    (["--bptt-isolate", "vm"], "isolate must be one of process, thread, none"),
    (["--bptt-fast", "1"], "file or directory not found: 1"),       # a flag: it takes no value
    (["--bptt-directions", "0"], "must be >= 1"),
])
def test_run_options_are_checked_at_start(pytester, args, words):
    pytester.makepyfile(test_run=RUN_OPTIONS)
    (pytester.path / "afile").write_text("x")
    result = pytester.runpytest(*args, *FAST)
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED), result.ret
    assert words in result.stderr.str() + result.stdout.str()
    assert not (pytester.path / "reports").exists()


def test_a_backward_that_ends_its_process_fails_only_its_test(pytester):
    pytester.makepyfile(test_exit="""
        import os
        from bptt_check.builtin import truncated

        def test_quits(bptt):
            bptt.check(lambda params, x, y: os._exit(0), cases=2)

        def test_after(bptt):
            bptt.check(truncated, cases=1)
    """)
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, failed=1)
    data = report_of(pytester)
    quits = [c for c in data["cases"] if c["test"].endswith("test_quits")]
    assert [c["error"]["kind"] for c in quits] == ["crashed", "crashed"] and data["passed"] is False


def test_a_session_report_that_cannot_be_written_says_so_and_fails_the_session(pytester):
    pytester.makepyfile(test_checks=TESTS)
    (pytester.path / "reports" / "report.html").mkdir(parents=True)      # a folder where a report file goes
    result = pytester.runpytest("--bptt-cases", "1", "-k", "right", *FAST)
    result.stdout.fnmatch_lines(["OK: 1 check(s) in 1 test(s)*", "bptt-check: cannot write the report: *report.html*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert sorted(p.name for p in (pytester.path / "reports").iterdir()) == ["report.html"]   # nothing half-written
