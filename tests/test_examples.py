"""The example styles: each passes as written, and fails on exactly the right gradients
with one planted bug (a one-line change of its source). Also: each plugs in with <= 15 lines,
and the command line takes an example as TARGET with the spec it declares."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bptt_check as bc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example -> (the line as written, the planted bug, the gradients it must break, when the bug can hide)
BUGS = {
    "charrnn_column": (
        "dh_next = Whh.T @ draw", "dh_next = Whh @ draw",          # a missing transpose
        {"W", "U", "b"}, lambda s: s["H"] == 1 or s["T"] == 1),
    "batch_major_inout": (
        "db += draw.sum(axis=0)", "db += (dh_out[:, s] + dprev).sum(axis=0)",   # tanh' forgotten for b
        {"b"}, lambda s: False),
    "word_ids_truncated": (
        "range(t, max(0, t - TRUNCATE) - 1, -1)", "range(t, max(0, t - TRUNCATE), -1)",   # window one short
        # the dropped step k = t - 3 feeds dU through s_{k-1}: zero (h0 = 0) unless k >= 1, i.e. T >= 5
        lambda s: {"W", "U"} if s["T"] >= 5 else {"W"}, lambda s: False),
    "self_updating_classifier": (
        "dW_rec += draw.T @ hs[t]", "dW_rec += draw.T @ hs[t + 1]",   # the state after the step, not before
        {"U"}, lambda s: False),
    "torch_fused_function": (
        "else h0", "else torch.zeros_like(h0)",                     # the t = 0 term of dU dropped
        {"U"}, lambda s: False),
    "lstm_course_style": (
        "dprev_c = dc * f", "dprev_c = dc",                         # the forget gate left off the cell path
        {"W", "U", "b", "h0", "x"}, lambda s: s["T"] == 1),       # (one step: c0 = 0 is not returned)
    "gru_torch_conventions": (
        "dgh = np.hstack([dr, dz, dn * r])", "dgh = np.hstack([dr, dz, dn])",   # the reset factor forgotten
        lambda s: {"W", "U", "b", "bu", "h0", "x"} if s["T"] > 1 else {"U", "bu", "h0"}, lambda s: False),
    # issue 16: real code as it comes
    "padded_classifier": (
        "    last = lengths   ", "    last = np.full(N, T)   ",     # the class read at T - 1, in the padding
        {"W", "U", "b", "V", "c", "h0", "x"}, lambda s: False),
    "masked_tagger": (
        "(sigmoid(scores) - y) * mask[..., None] / n_tokens", "(sigmoid(scores) - y) / n_tokens",   # unmasked
        {"W", "U", "b", "V", "c", "h0", "x"}, lambda s: False),
    "state_regressor": (
        "dz = dh * (1 - h[t + 1] ** 2)", "dz = dh * (1 - h[t] ** 2)",   # tanh' of the state before the step
        {"W", "U", "b", "h0", "x"}, lambda s: False),
    "word_lm_tied": (
        "dWhh += h[:, t].T @ dz", "dWhh += h[:, t + 1].T @ dz",   # the state after the step, not before
        {"U"}, lambda s: False),
    "recurrent_grad_only": (
        "    for t in reversed(range(T)):", "    for t in reversed(range(1, T)):",   # the t = 0 term dropped
        {"U"}, lambda s: False),
}
CAUSES = {"lstm_course_style": "forget_gate_missing", "gru_torch_conventions": "gru_reset_factor_missing",
          "padded_classifier": "lengths_ignored", "masked_tagger": "lengths_ignored",
          "recurrent_grad_only": "missing_first_step", "word_lm_tied": "state_off_by_one"}


def load(name, replace=None):
    source = (EXAMPLES / f"{name}.py").read_text()
    if replace is not None:
        old, new = replace
        assert source.count(old) == 1, f"{name}: the line to mutate must occur exactly once"
        source = source.replace(old, new)
    spec = importlib.util.spec_from_loader(f"example_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(EXAMPLES / f"{name}.py"), "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("name", sorted(BUGS))
def test_example_passes_as_written(name):
    report = bc.check(load(name).backward, cases=8, seed=0)
    assert report.passed and report.counts["passed"] == 8, report.summary()


@pytest.mark.parametrize("name", sorted(BUGS))
def test_example_with_a_planted_bug_fails_on_exactly_its_gradients(name):
    old, new, wrong, hides = BUGS[name]
    report = bc.check(load(name, (old, new)).backward, cases=8, seed=0)
    assert not report.passed
    failed = [c for c in report.cases if c.status == "failed"]
    assert len(failed) >= 5, report.summary()
    for case in report.cases:
        if case.status == "failed":
            expected = wrong(case.shapes) if callable(wrong) else wrong
            assert set(case.failed_grads) == expected, case.summary()
            if name in CAUSES:
                assert case.diagnosis[0]["code"] == CAUSES[name], case.summary()
        else:
            assert case.status == "passed" and hides(case.shapes), case.summary()


@pytest.mark.parametrize("name", sorted(BUGS))
def test_example_plugs_in_with_at_most_15_lines(name):
    source = (EXAMPLES / f"{name}.py").read_text()
    block = re.search(r"# --- plug in\n(.*?)# --- end plug in", source, re.S)
    assert block, f"{name}: no plug-in block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) <= 15, f"{name}: {len(lines)} lines"


def test_a_forward_bug_is_reported_as_a_forward_bug_not_a_backward_bug():
    # the loss is summed over the batch, while the code (and its gradients) average it
    module = load("batch_major_inout", ("loss = -log_probs[n, t, y].sum() / N", "loss = -log_probs[n, t, y].sum()"))
    report = bc.check(module.backward, cases=8, seed=0)
    assert not report.passed
    for case in report.cases:
        if case.shapes["B"] == 1:        # sum and mean over one sample agree
            assert case.status == "passed", case.summary()
            continue
        assert case.status == "error" and case.error["kind"] == "forward", case.summary()
        message = case.error["message"]
        assert "forward bug" in message and "summed over the batch (reduction='sum'" in message
        assert case.grads == {}          # the backward was not judged
    assert sum(c.status == "error" for c in report.cases) >= 4


def test_declared_clip_is_reported_as_a_note():
    report = bc.check(load("charrnn_column").backward, cases=2, seed=0)
    assert all(any(n.startswith("clipped at ±5 (declared)") for n in c.notes) for c in report.cases)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bptt_check", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_cli_takes_an_example_with_its_declared_spec_and_typed_flags_override_it(tmp_path):
    target = f"{EXAMPLES / 'word_ids_truncated.py'}:backward"
    ok = run_cli(target, "--cases", "3", "--report-dir", str(tmp_path / "a"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    spec = json.loads((tmp_path / "a" / "report.json").read_text())["cases"][0]["spec"]
    assert spec["truncation"] == "window:3" and spec["loss"] == "cross_entropy" and spec["bias"] is False
    # the code truncates at 3; asking for window:2 on the command line must find it wrong on W and U
    wrong = run_cli(target, "--cases", "3", "--truncation", "window:2", "--report-dir", str(tmp_path / "b"),
                    cwd=tmp_path)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    cases = json.loads((tmp_path / "b" / "report.json").read_text())["cases"]
    failed = [c for c in cases if c["status"] == "failed"]
    assert failed and all({k for k, g in c["params"].items() if not g["passed"]} == {"W", "U"} for c in failed)


def test_cli_target_may_be_a_factory_returning_an_adapted_backward(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "def make():\n"
        "    import self_updating_classifier as m\n"
        "    return m.backward\n")
    proc = run_cli("mine.py:make", "--cases", "2", "--report-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = json.loads((tmp_path / "r" / "report.json").read_text())["cases"][0]["spec"]
    assert spec["mode"] == "many-to-one" and spec["reduction"] == "mean_batch"


def test_ci_recipe_runs_its_check_command_and_has_the_publishing_steps(tmp_path):
    workflow = (EXAMPLES / "ci" / "bptt-check.yml").read_text()
    for needed in ('>> "$GITHUB_STEP_SUMMARY"', "reports/report.md", "reports/junit.xml", "actions/upload-artifact",
                   "reports/report.html", "if: always()"):
        assert needed in workflow, needed
    target = re.search(r"^\s+TARGET: (\S+)$", workflow, re.M).group(1)
    command = re.search(r"^\s+run: bptt-check (.*)$", workflow, re.M).group(1).split()
    args = [target if a == '"$TARGET"' else "7" if a == '"$GITHUB_RUN_NUMBER"' else a for a in command]
    # the workflow runs in the repository root; the last --cases / --report-dir win
    proc = run_cli(*args, "--cases", "2", "--report-dir", str(tmp_path), cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["seed"] == 7 and len(data["cases"]) == 2
