"""A backward may do anything: the harness keeps working, says what happened, loses nothing (in process).

The command line under faults (killed runs, concurrent runs, usage errors) is in
``test_robustness_cli.py``; the fuzz suite and the catalogue behind the docs table in ``fuzz/``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from bugs import mutant

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.report import io as _io
from bptt_check.runner import call as _call
from bptt_check.runner.target import CallOutcome, invoke

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import misbehaviours as mb  # noqa: E402

AUTOGRAD = ("autograd",)
SPEC = bc.Spec(sizes={"T": 5, "B": 2, "I": 3, "H": 4, "O": 6})     # every size different: hints are unambiguous


def case(index=0, spec=SPEC, seed=1):
    return bc.draw_case(spec, seed, index)


# ----------------------------------------------------------------- invoke, the API issue 6 builds on

def test_invoke_calls_once_by_default_and_returns_float_copies():
    calls = []

    def backward(params, x, y, spec):
        calls.append(1)
        return truncated(params, x, y, spec)

    c = case()
    out = invoke(backward, c)
    assert isinstance(out, CallOutcome) and out.status == "ok" and out.error is None
    assert len(calls) == 1 and out.repeat is None
    ref = truncated({k: v.copy() for k, v in c.params.items()}, c.x.copy(), c.y.copy(), c.spec)
    assert set(out.grads) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(out.grads[k], ref[k])

    calls.clear()
    out = invoke(backward, c, repeat=True)
    assert len(calls) == 2 and out.repeat is not None and out.error is None


def test_invoke_never_raises_for_what_the_backward_does():
    for row in mb.CATALOGUE:
        planted = row.build()
        out = invoke(planted.backward, case(spec=SPEC.replace(**row.spec)), timeout=0.2, repeat=True)
        assert out.status in ("ok", "error", "timeout"), row.behaviour
        if planted.kind is not None:
            assert out.error is not None and out.error["kind"] == planted.kind, (row.behaviour, out.error)


def test_the_gradients_of_a_misbehaving_call_are_still_compared():
    result = bc.check_case(mb.sgd_step("U").backward, case(), oracles=AUTOGRAD)
    assert result.status == "error" and result.error["kind"] == "mutated_input"
    assert set(result.grads) == {"W", "U", "b", "V", "c", "h0", "x"}
    assert "the (first call's) gradients match the reference" in result.notes


def test_a_mutation_behind_another_fault_is_kept_as_a_note():
    def backward(params, x, y, spec):
        x *= 2.0
        raise RuntimeError("after scaling x")

    result = bc.check_case(backward, case(), oracles=AUTOGRAD)
    assert result.error["kind"] == "exception" and "RuntimeError: after scaling x" in result.error["message"]
    assert any(n.startswith("also: your backward changed x in place") for n in result.notes)


# ----------------------------------------------------------------- exceptions

def test_exception_message_is_the_users_traceback_without_harness_frames():
    def helper(params):
        return params["nope"]

    def backward(params, x, y):
        return helper(params)

    result = bc.check_case(backward, case(), oracles=AUTOGRAD)
    msg = result.error["message"]
    assert result.status == "error" and result.error["kind"] == "exception"
    assert "in backward" in msg and "in helper" in msg and msg.rstrip().endswith("KeyError: 'nope'")
    assert "_call.py" not in msg and "threading.py" not in msg
    assert "exception: KeyError: 'nope' (at " in result.summary() and result.summary().endswith(" in helper)")


def test_deep_recursion_is_trimmed_to_the_innermost_frames():
    def backward(params, x, y, depth=0):
        if depth > 60:
            raise ValueError("deep")
        return backward(params, x, y, depth + 1)

    msg = bc.check_case(backward, case(), oracles=AUTOGRAD).error["message"]
    assert msg.startswith("  ... 50 outer frames not shown") and msg.endswith("ValueError: deep")
    assert len(msg) < 2000


def test_wrong_signature_is_a_usage_error_before_any_case():
    with pytest.raises(bc.BPTTCheckError, match=r"cannot be called as backward\(params, x, y\)"):
        bc.check(lambda params, x: {}, cases=1)
    with pytest.raises(bc.BPTTCheckError, match="must be callable"):
        bc.check(42, cases=1)


def test_a_keyboard_interrupt_from_the_harness_still_stops_the_run_without_a_limit():
    def backward(params, x, y):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):            # timeout 0: called in this thread, Ctrl-C is Ctrl-C
        invoke(backward, case(), timeout=0)
    out = invoke(backward, case(), timeout=5)         # in the call's thread it can only be the backward's own
    assert out.error["kind"] == "exception" and "KeyboardInterrupt" in out.error["message"]


# ----------------------------------------------------------------- timeouts, threads

def test_a_hang_in_python_is_stopped_and_says_where_it_was():
    start = time.perf_counter()
    report = bc.check(mb.hangs_in_python().backward, SPEC, cases=3, oracles=AUTOGRAD, timeout=0.1)
    took = time.perf_counter() - start
    assert [c.status for c in report.cases] == ["timeout"] * 3 and not report.passed
    assert report.counts["timeout"] == 3 and took < 3.0
    msg = report.cases[0].error["message"]
    assert "did not return within 0.1 s" in msg and "while True" in msg and "it was stopped" in msg
    assert not any("abandoned" in t.name for t in threading.enumerate())   # the stopped calls' threads ended


def test_a_blocking_call_is_abandoned_and_the_run_goes_on():
    start = time.perf_counter()
    result = bc.check_case(mb.hangs_sleeping(1.0).backward, case(), oracles=AUTOGRAD, timeout=0.1)
    assert time.perf_counter() - start < 0.8
    assert result.status == "timeout" and "could not be stopped" in result.error["message"]
    assert "time.sleep" in result.error["message"]


@pytest.mark.parametrize("limit", [None, 0, float("inf")])
def test_no_limit_calls_the_backward_in_the_callers_thread(limit):
    seen = []

    def backward(params, x, y, spec):
        seen.append(threading.current_thread())
        print("direct")
        return truncated(params, x, y, spec)

    result = bc.check_case(backward, case(), oracles=AUTOGRAD, timeout=limit)
    assert result.status == "passed" and seen == [threading.current_thread()] * 2
    assert result.stdout == "direct\n"


def test_timeouts_work_outside_the_main_thread_and_in_parallel():
    """pytest-xdist workers, thread pools: no signal.alarm, each call has its own limit and stdout."""
    def job(i):
        if i % 2:
            return bc.check_case(mb.hangs_in_python().backward, case(i), oracles=AUTOGRAD, timeout=0.1)
        return bc.check_case(mb.prints(f"job {i}").backward, case(i), oracles=AUTOGRAD, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(job, range(8)))
    for i, r in enumerate(results):
        if i % 2:
            assert r.status == "timeout"
        else:
            assert r.status == "passed" and r.stdout == f"job {i}\n", (i, r.stdout)


def test_timeout_must_be_a_number_of_seconds():
    for bad in (-1, "soon", float("nan")):
        with pytest.raises(bc.BPTTCheckError, match="timeout must be"):
            bc.check(truncated, cases=1, timeout=bad)


# ----------------------------------------------------------------- stdout

def _no_abandoned_calls():
    for t in threading.enumerate():
        if t.name == "bptt-check-backward (abandoned)":
            t.join(5)


def test_printing_is_captured_per_case_and_sys_stdout_is_restored(capsys):
    _no_abandoned_calls()   # while a timed-out call still runs, its output stays captured
    before = sys.stdout
    report = bc.check(mb.prints("noise from the backward").backward, SPEC, cases=2, oracles=AUTOGRAD,
                      on_case=lambda r: print("harness line", r.index))
    assert sys.stdout is before
    out = capsys.readouterr().out
    assert out == "harness line 0\nharness line 1\n"
    assert all(c.stdout == "noise from the backward\n" for c in report.cases)
    assert report.to_dict()["cases"][0]["stdout"] == "noise from the backward\n"


def test_a_flood_of_output_is_capped():
    def backward(params, x, y, spec):
        for _ in range(20000):
            print("x" * 20)
        return truncated(params, x, y, spec)

    result = bc.check_case(backward, case(), oracles=AUTOGRAD)
    assert result.status == "passed" and len(result.stdout) < _call._MAX_STDOUT + 100
    assert "more characters not kept" in result.stdout


# ----------------------------------------------------------------- the result

@pytest.mark.parametrize("planted, words", [
    (mb.transposed("W"), "'W': expected shape (4, 3), got (3, 4) — transposed?"),
    (mb.transposed("V"), "'V': expected shape (6, 4), got (4, 6) — transposed?"),
    (mb.batch_major_x(), "'x': expected shape (5, 2, 3), got (2, 5, 3) — batch-major?"),
    (mb.per_time_step("U"), "'U': expected shape (4, 4), got (5, 4, 4) — one gradient per time step? sum the 5"),
    (mb.h0_summed_over_batch(), "'h0': expected shape (2, 4), got (4,) — summed over the batch?"),
    (mb.keepdims("c"), "'c': expected shape (6,), got (1, 6) — an extra axis of length 1 (keepdims?)"),
    (mb.flattened("W"), "'W': expected shape (4, 3), got (12,) — same number of elements, different layout"),
])
def test_shape_findings_name_key_expected_received_and_the_likely_mix_up(planted, words):
    result = bc.check_case(planted.backward, case(), oracles=AUTOGRAD)
    assert result.error["kind"] == "shape" and words in result.error["message"], result.error
    assert result.error["keys"] == [words.split("'")[1]]


def test_per_sequence_gradients_are_told_apart_from_per_step_ones():
    def backward(params, x, y, spec):
        g = truncated(params, x, y, spec)
        return {**g, "b": np.stack([g["b"] / 2] * 2)}

    msg = bc.check_case(backward, case(), oracles=AUTOGRAD).error["message"]
    assert "'b': expected shape (4,), got (2, 4) — one gradient per sequence? sum over the batch of 2" in msg


def test_non_finite_findings_say_where_and_how_many():
    result = bc.check_case(mb.poisons("U", 3).backward, case(), oracles=AUTOGRAD)
    assert result.error["kind"] == "non_finite"
    assert "'U' has 3 nan of 16 elements, first at (0, 0)" in result.error["message"]

    def backward(params, x, y, spec):
        g = truncated(params, x, y, spec)
        g["x"][3, 1, 2] = np.inf
        g["x"][1, 0, 0] = -np.inf
        g["x"][1, 0, 1] = np.nan
        return g

    msg = bc.check_case(backward, case(), oracles=AUTOGRAD).error["message"]
    assert "'x' has 1 nan and 2 inf of 30 elements, first at (1, 0, 0), at time steps 1, 3" in msg


def test_several_faults_are_all_named_and_the_kind_is_the_first_in_order():
    def backward(params, x, y, spec):
        g = truncated(params, x, y, spec)
        del g["U"]
        g["W"] = g["W"].T
        g["b"] = g["b"].astype(int)
        g["extra"] = 1
        return g

    err = bc.check_case(backward, case(), oracles=AUTOGRAD).error
    assert err["kind"] == "missing_key"
    msg = err["message"]
    assert msg.index("missing gradient 'U'") < msg.index("unexpected key 'extra'") < msg.index("'W': expected") \
        < msg.index("'b' has integer dtype")
    assert err["keys"] == ["U", "extra", "W", "b"]


def test_torch_tensors_are_accepted_on_any_device_and_requiring_grad():
    torch = pytest.importorskip("torch")

    def backward(params, x, y, spec):
        g = truncated(params, x, y, spec)
        out = {k: torch.tensor(v, requires_grad=True) * 1.0 for k, v in g.items()}   # non-leaf, has grad_fn
        out["U"] = torch.tensor(g["U"]).to_sparse()
        out["V"] = torch.tensor(g["V"]).T.contiguous().T                             # a strided view
        return out

    result = bc.check_case(backward, case(), oracles=AUTOGRAD)
    assert result.status == "passed", result.summary()


def test_float32_results_under_a_float64_spec_are_compared_with_a_note():
    def backward(params, x, y, spec):
        return {k: v.astype(np.float32) for k, v in truncated(params, x, y, spec).items()}

    result = bc.check_case(backward, case(), oracles=AUTOGRAD)
    assert any("float32 under a float64 spec" in n for n in result.notes), result.notes


# ----------------------------------------------------------------- in place, a second call

def test_mutation_message_says_your_backward_changed_W_in_place():
    err = bc.check_case(mb.sgd_step("W").backward, case(), oracles=AUTOGRAD).error
    assert err["kind"] == "mutated_input" and err["keys"] == ["W"]
    assert err["message"].startswith("your backward changed W in place — W: 12 of 12 elements changed")


def test_mutation_of_an_integer_target_is_detected():
    spec = SPEC.replace(loss="cross_entropy", output="softmax")
    err = bc.check_case(mb.changes_targets().backward, case(spec=spec), oracles=AUTOGRAD).error
    assert err["kind"] == "mutated_input" and err["keys"] == ["y"]


def test_stale_accumulation_is_nondeterministic_with_the_factor():
    err = bc.check_case(mb.stale_accumulation().backward, case(), oracles=AUTOGRAD).error
    assert err["kind"] == "nondeterministic"
    assert err["message"].startswith("a second call on the same inputs returned 2× the first")


def test_random_noise_is_nondeterministic_and_one_ulp_is_only_a_note():
    assert bc.check_case(mb.random_noise(0.01).backward, case(), oracles=AUTOGRAD).error["kind"] == \
        "nondeterministic"
    result = bc.check_case(mb.one_ulp_on_second_call().backward, case(), oracles=AUTOGRAD)
    assert result.status == "passed" and any("not bit-for-bit reproducible" in n for n in result.notes)


# ----------------------------------------------------------------- runs, reports, replay

def test_a_run_with_misbehaving_cases_goes_on_and_is_not_passed():
    calls = [0]

    def backward(params, x, y, spec):
        calls[0] += 1
        if calls[0] % 3 == 0:
            raise ValueError("every third call")
        return truncated(params, x, y, spec)

    report = bc.check(backward, SPEC, cases=6, oracles=AUTOGRAD)
    assert len(report.cases) == 6 and not report.passed
    statuses = {c.status for c in report.cases}
    assert statuses <= {"passed", "error"} and "error" in statuses
    kinds = {c.error["kind"] for c in report.cases if c.error}
    assert kinds <= {"exception", "nondeterministic"}
    assert report.summary().startswith("BACKWARD ERRORS: 6 cases")
    json.dumps(report.to_dict(), allow_nan=False)
    with pytest.raises(bc.BPTTCheckError, match="(exception|nondeterministic)"):
        bc.assert_backward(backward, SPEC, cases=3, oracles=AUTOGRAD)


def test_an_interrupted_report_is_marked_and_never_passed():
    r = bc.check(truncated, SPEC, cases=1, oracles=AUTOGRAD)
    partial = bc.Report(r.cases, 0, AUTOGRAD, interrupted=True)
    d = partial.to_dict()
    assert d["interrupted"] is True and d["passed"] is False and partial.summary().startswith("INTERRUPTED")
    assert r.to_dict()["interrupted"] is False and r.passed


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(a.dtype).encode())
    return h.hexdigest()


def test_every_case_replays_bit_for_bit_from_the_seed_in_the_report():
    seen: list[str] = []

    def recording(params, x, y, spec):
        seen.append(_digest(*params.values(), x, y))
        return mutant("du_from_t1")(params, x, y, spec)

    specs = [bc.Spec(truncation="tbptt:2,3"), bc.Spec(mode="many-to-one", dtype="float32", bias=False),
             bc.Spec(loss="cross_entropy", output="softmax", truncation="window:2")]
    for spec in specs:
        seen.clear()
        report = json.loads(json.dumps(bc.check(recording, spec, cases=9, seed=12345,
                                                on_case=lambda r: seen.append("|")).to_dict()))
        # the first call of each case (it is called again, and on prefixes for the evidence)
        first = [group.strip(",").split(",")[0] for group in ",".join(seen).split("|") if group.strip(",")]
        assert len(first) == 9
        for i, c in enumerate(report["cases"]):
            seen.clear()
            again = bc.check_case(recording, bc.draw_case(bc.Spec.from_dict(c["spec"]), c["seed"], c["index"]))
            assert seen[0] == first[i]                                  # the same inputs, bit for bit
            replayed = json.loads(json.dumps(again.to_dict()))
            for d in (c, replayed):
                d.pop("seconds")
            assert replayed == c                                         # the same verdict, numbers and all


# ----------------------------------------------------------------- report files

def _writer(path, tag, n):
    for i in range(n):
        payload = {"tag": tag, "i": i, "blob": [tag * 1000 + i] * 20000}
        with _io.report_lock(Path(path).parent):
            _io.write_json(path, payload)


def test_concurrent_writers_never_leave_a_partial_or_mixed_file(tmp_path):
    path = tmp_path / "r" / "report.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), t, 15)) for t in (1, 2)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):
        if path.exists():
            data = json.loads(path.read_text())          # never half a file
            assert len(data["blob"]) == 20000 and set(data["blob"]) == {data["tag"] * 1000 + data["i"]}
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert json.loads(path.read_text())["i"] == 14
    assert [f.name for f in path.parent.iterdir()] == ["report.json"]          # no temporary file left
    assert reads > 0


def test_report_folder_problems_are_found_before_anything_is_created(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "is a file" in _io.writable_folder_problem(tmp_path / "afile" / "reports")
    assert _io.writable_folder_problem(tmp_path / "new" / "deeper") is None
    assert not (tmp_path / "new").exists()
