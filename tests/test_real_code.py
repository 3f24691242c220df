"""Issue 16: real code as it comes — padded batches, sizes, and the model around the cell.

The math of a padded batch (DESIGN §12) is checked against its definition (each sequence alone),
every oracle and built-in is checked on it, and each Layout item is exercised by code written the
way real code writes it, passing as written and failing on exactly its gradients with one bug.
"""

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import gru, lstm, truncated
from bptt_check.model.cases import draw_case
from bptt_check.model.functions import loss_weights
from bptt_check.model.spec import Sizes
from bptt_check.oracles import get_oracle
from bptt_check.report import text as tx
from bptt_check.report import write_reports
from bptt_check.strategies import specs, truncations

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_examples import load  # noqa: E402


def _rel(a, r):
    scale = float(np.max(np.abs(r), initial=0.0))
    return float(np.max(np.abs(np.asarray(a) - r), initial=0.0)) / (scale or 1.0)


# ----------------------------------------------------------------- padded batches: the math

@settings(max_examples=25, deadline=None)
@given(spec=specs(truncation=truncations(), activations=["tanh", "sigmoid"], lengths=True, output_layer=None,
                  cells=("rnn", "lstm", "gru")),
       seed=st.integers(0, 2**16), index=st.integers(0, 15))
# issue 12 (a flaky suite): dh0 of a sigmoid many-to-one case vanished to 1.8e-7 over 7 steps; a finite
# difference's error is absolute, 8e-6 of that scale, within its own error estimate (5e-5 of it)
@example(spec=bc.Spec(mode="many-to-one", activation="sigmoid", bias=False, lengths=True, output_layer=False),
         seed=0, index=2)
def test_every_oracle_and_builtin_agree_on_padded_batches(spec, seed, index):
    case = draw_case(spec, seed, index)
    auto = get_oracle("autograd").gradients(case).grads
    builtin = {"rnn": truncated, "lstm": lstm, "gru": gru}[spec.cell.partition(":")[0]]
    mine = builtin(case.params, case.x, case.y, spec, lengths=case.lengths)
    for name in ("complex-step", "fd"):
        res = get_oracle(name).gradients(case)
        other = res.grads
        for k in auto:
            scale = float(np.max(np.abs(auto[k]), initial=0.0)) or 1.0
            own = float(np.max(res.error[k], initial=0.0)) / scale      # the oracle's own error, of this scale
            assert _rel(other[k], auto[k]) <= 1e-7 + own, (name, k, spec, case.lengths)
    for k in auto:
        assert _rel(mine[k], auto[k]) <= 1e-10, ("builtin", k, spec, case.lengths)
        # padded steps of x get gradient 0
    t = np.arange(case.T)[:, None]
    assert np.all(auto["x"][t >= case.lengths[None, :]] == 0)


@settings(max_examples=20, deadline=None)
@given(spec=specs(truncation=st.sampled_from([bc.Truncation(), bc.Truncation("window", 2),
                                               bc.Truncation("chunk", 3)]),
                  reductions=["sum"], lengths=True),
       seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_a_padded_batch_is_the_sum_of_its_sequences_each_alone(spec, seed, index):
    """Summed over the batch, a padded batch's gradient is that of each sequence on its own ℓ_b steps."""
    case = draw_case(spec, seed, index)
    auto = get_oracle("autograd").gradients(case).grads
    total = {k: np.zeros_like(v) for k, v in auto.items()}
    for b, n in enumerate(case.lengths):
        params = dict(case.params, h0=case.params["h0"][b:b + 1])
        y = case.y[b:b + 1] if spec.mode == "many-to-one" else case.y[:n, b:b + 1]
        alone = bc.Case(spec.replace(lengths=False), 0, 0, "core", params, case.x[:n, b:b + 1], y)
        g = get_oracle("autograd").gradients(alone).grads
        for k, v in g.items():
            if k == "h0":
                total["h0"][b] = v[0]
            elif k == "x":
                total["x"][:n, b] = v[:, 0]
            else:
                total[k] += v
    for k in auto:
        assert _rel(total[k], auto[k]) <= 1e-12, (k, spec, case.lengths)


def test_the_mean_over_a_padded_batch_is_over_the_real_tokens():
    spec = bc.Spec(lengths=True, reduction="mean")
    lengths = np.array([3, 1, 4])
    w = loss_weights(spec, 4, 3, lengths)
    assert w.sum() == pytest.approx(1.0) and np.all(w[w > 0] == 1 / 8) and w[1:, 1].sum() == 0
    w = loss_weights(spec.replace(reduction="mean_time"), 4, 3, lengths)
    assert np.allclose(w.sum(axis=0), 1.0)                               # each sequence by its own length
    w = loss_weights(spec.replace(mode="many-to-one", reduction="mean"), 4, 3, lengths)
    assert np.allclose(w[lengths - 1, np.arange(3)], 1 / 3) and w.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("mode, truncation", [("many-to-many", "none"), ("many-to-one", "none"),
                                              ("many-to-many", "tbptt:2,3"), ("many-to-one", "window-loss:2,3")])
def test_drawn_lengths_mix_full_and_shorter_sequences(mode, truncation):
    spec = bc.Spec(mode=mode, truncation=truncation, lengths=True)
    for i in range(24):
        case = draw_case(spec, 3, i)
        n = case.lengths
        aligned = truncation.startswith("window-loss") and mode == "many-to-one"
        full = case.T - case.T % 2 if aligned else case.T      # the longest a loss can count at
        assert n.shape == (case.B,) and n.min() >= 1 and n.max() <= case.T
        assert n.min() < case.T, "every padded case has some padding"
        if case.B >= 2:
            assert n.max() == full, "and, with two or more sequences, one full-length sequence"
        if truncation.startswith("window-loss") and mode == "many-to-one":
            assert np.all(n % 2 == 0), "a many-to-one loss counts only at a window's end"


# ----------------------------------------------------------------- the variable-length bug

def _reads_at_T_minus_1(params, x, y, spec, lengths):
    """A padded-batch backward that reads every sequence's loss at T - 1 (the bug of issue 16)."""
    return truncated(params, x, y, spec)


@pytest.mark.parametrize("truncation", ["none", "window:2", "tbptt:2,3"])
def test_the_loss_read_in_the_padding_is_caught_on_every_case_and_named(truncation):
    report = bc.check(_reads_at_T_minus_1, mode="many-to-one", truncation=truncation, lengths=True, cases=12)
    assert report.counts["failed"] == 12, report.summary()
    for case in report.cases:
        assert case.diagnosis[0]["code"] == "lengths_ignored", case.summary()
        assert "in the padding" in case.diagnosis[0]["message"]
        assert case.lengths is not None and f"lengths=({','.join(map(str, case.lengths))})" in case.summary()


def test_losses_counted_at_padded_steps_are_named_token_mean_included():
    def counts_padding(params, x, y, spec, lengths):
        return truncated(params, x, y, spec)

    for reduction in ("sum", "mean"):
        report = bc.check(counts_padding, lengths=True, reduction=reduction, cases=6)
        assert report.counts["failed"] == 6
        assert all(c.diagnosis[0]["code"] == "lengths_ignored" for c in report.cases), report.summary()


def test_a_backward_without_a_lengths_parameter_is_told_how_to_take_them():
    def no_lengths(params, x, y, spec):
        return truncated(params, x, y, spec)

    with pytest.raises(bc.UsageError, match="no parameter named 'lengths'"):
        bc.check(no_lengths, lengths=True, cases=1)


def test_a_forward_that_ignores_the_lengths_is_named_in_the_forward_finding():
    module = load("padded_classifier")

    def forward_at_T(params, x, y, lengths):         # reads every sentence at T - 1
        Wx, Wh, b, Wy, by, h0 = (params[k] for k in ("Wx", "Wh", "b", "Wy", "by", "h0"))
        h = h0
        for t in range(x.shape[1]):
            h = np.tanh(x[:, t] @ Wx + h @ Wh + b)
        s = h @ Wy + by
        logp = s - s.max(1, keepdims=True) - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
        return -logp[np.arange(len(y)), y].mean()

    adapted = bc.adapt(module.classifier_backward, module.backward.layout, forward=forward_at_T,
                       spec=module.backward.bptt_spec)
    report = bc.check(adapted, cases=4)
    assert all(c.status == "error" and c.error["kind"] == "forward" for c in report.cases), report.summary()
    assert all("lengths" in c.error["message"] and "were ignored" in c.error["message"] for c in report.cases)


def test_the_report_shows_the_lengths_and_marks_the_padding(tmp_path):
    report = bc.check(_reads_at_T_minus_1, mode="many-to-one", lengths=True, cases=2)
    data = json.loads(json.dumps(report.to_dict()))
    case = data["cases"][0]
    assert case["lengths"] == [int(n) for n in report.cases[0].lengths]
    assert case["evidence"]["temporal"]["sequence_lengths"] == case["lengths"]
    write_reports(report.to_dict(), tmp_path, formats=("md", "html"))
    md = (tmp_path / "report.md").read_text()
    assert f"lengths=({','.join(map(str, case['lengths']))})" in md
    padded = [c for c in data["cases"] if "a padded step: sequence" in tx.worst_line(c)]
    assert padded, "the worst dx element in a sequence's padding is said to be one"


# ----------------------------------------------------------------- sizes

def test_declared_sizes_are_respected_by_the_edge_rotation():
    spec = bc.Spec(sizes={"T": 3, "H": (2, 4), "B": (2, 3)})
    shapes = [draw_case(spec, 0, i).shapes for i in range(16)]
    assert all(s["T"] == 3 and 2 <= s["H"] <= 4 and s["B"] >= 2 for s in shapes)
    # undeclared sizes still get their edges
    assert any(draw_case(bc.Spec(), 0, i).shapes["T"] == 1 for i in range(8))


def test_sizes_parse_and_print():
    s = Sizes.parse("T=3:8,B=2")
    assert s.T == (3, 8) and s.B == (2, 2) and s.H == Sizes().H
    assert Sizes.parse(s.text()) == s
    for bad in ("T=3:x", "Q=2", "T=3,T=4", "T", "T=0:2", "T=5:2"):
        with pytest.raises(bc.UsageError):
            Sizes.parse(bad)


def test_tied_sizes_are_drawn_equal_and_impossible_ties_are_refused():
    spec = bc.Spec(tie=("I", "O"), loss="cross_entropy", output="softmax")
    assert all(c.shapes["I"] == c.shapes["O"] >= 2 for c in (draw_case(spec, 1, i) for i in range(12)))
    with pytest.raises(bc.UsageError, match="do not overlap"):
        draw_case(bc.Spec(tie=("I", "O"), sizes={"I": 1, "O": 3}), 0, 0)
    with pytest.raises(bc.UsageError):
        bc.Spec(tie=("I",))


def test_a_shape_error_on_untied_sizes_says_tie_them():
    module = load("word_lm_tied", ('tie=("I", "O"))', "tie=())"))
    report = bc.check(module.backward, cases=6)
    errors = [c for c in report.cases if c.status == "error"]
    assert errors and all(c.shapes["I"] != c.shapes["O"] for c in errors)
    assert all("does your code assume I = O? tie them" in c.summary() for c in errors), report.summary()
    assert all(c.status == "passed" for c in report.cases if c.shapes["I"] == c.shapes["O"])


def test_the_command_line_sets_sizes_ties_lengths_and_no_output_layer(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bptt_check", "--sizes", "T=4:5,B=2", "--tie", "I,O",
                           "--lengths", "--cases", "3", "--mode", "many-to-one", "--cell", "rnn",
                           "--report-dir", str(tmp_path), "--progress", "none"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = json.loads((tmp_path / "report.json").read_text())["cases"]
    assert cases and all(4 <= c["shapes"]["T"] <= 5 and c["shapes"]["B"] == 2 and c["lengths"] for c in cases)
    assert all(c["shapes"]["I"] == c["shapes"]["O"] for c in cases)
    spec = bc.Spec.from_dict(cases[0]["spec"])
    assert {"--lengths", "--tie", "--sizes"} <= set(spec.cli_args())
    proc = subprocess.run([sys.executable, "-m", "bptt_check", "--no-output-layer", "--cases", "2",
                           "--report-dir", str(tmp_path / "b"), "--progress", "none"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all("V" not in c["params"] for c in json.loads((tmp_path / "b" / "report.json").read_text())["cases"])


# ----------------------------------------------------------------- the model around the cell

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_builtins_pass_without_an_output_layer_and_with_bce(cell):
    builtin = {"rnn": truncated, "lstm": lstm, "gru": gru}[cell]
    for kw in ({"output_layer": False}, {"loss": "bce", "output": "sigmoid"}):
        report = bc.check(builtin, cell=cell, cases=4, **kw)
        assert report.counts["passed"] == 4, report.summary()


def test_bce_with_a_missing_sigmoid_is_caught():
    def bce_as_mse(params, x, y, spec):      # dŷ = ŷ − y: the logits, not σ(ŷ), compared with the targets
        return truncated(params, x, y, spec.replace(loss="half_mse", output="identity"))

    report = bc.check(bce_as_mse, loss="bce", output="sigmoid", cases=6)
    assert report.counts["failed"] == 6


def test_an_unused_parameter_must_have_a_zero_gradient():
    good = bc.check(load("state_regressor").backward, cases=4)
    assert good.passed and all("by" in c.grads and c.grads["by"].passed for c in good.cases)
    bad = bc.check(load("state_regressor", ("dby = np.zeros_like(by)", "dby = 0.01 * by")).backward, cases=4)
    assert all(c.failed_grads == ["by"] for c in bad.cases), bad.summary()
    assert all(any("takes no part in the loss" in n for n in c.notes) for c in bad.cases)


def test_an_unused_gradient_may_be_left_out():
    module = load("state_regressor")

    def without_by(params, x, y):
        g = module.state_regressor_grads(params, x, y)
        del g["by"]
        return g

    report = bc.check(bc.adapt(without_by, module.backward.layout, spec=module.backward.bptt_spec), cases=3)
    assert report.passed, report.summary()


def test_gradients_not_returned_are_noted_not_missing():
    report = bc.check(load("recurrent_grad_only").backward, cases=2)
    assert report.passed and all(list(c.grads) == ["U"] for c in report.cases)
    assert "not returned (declared by Layout.returns): W, b, V, c, h0, x" in report.cases[0].notes


def test_a_global_norm_clip_is_judged_and_a_bug_under_it_fails_every_case():
    good = bc.check(load("trainer_weight_decay").backward, cases=8)
    assert good.passed, good.summary()
    notes = [n for c in good.cases for n in c.notes if n.startswith("global-norm clip")]
    assert any("scaled by" in n for n in notes) and any("not exercised" in n for n in notes)
    bad = bc.check(load("trainer_weight_decay", ("dU += dz.T @ h[t]", "dU += dz.T @ h[t + 1]")).backward, cases=8)
    assert bad.counts["failed"] == 8, bad.summary()
    for c in bad.cases:
        clipped = any("scaled by" in n for n in c.notes)
        # under an active clip one wrong gradient changes the global norm, so every gradient moves
        assert set(c.failed_grads) == ({"W", "U", "b", "V", "c", "h0"} if clipped else {"U"}), c.summary()


def test_the_clip_itself_wrong_is_caught_where_it_should_not_scale():
    bad = bc.check(load("trainer_weight_decay", ("scale = min(1.0, self.max_norm / norm)",
                                                 "scale = self.max_norm / norm")).backward, cases=8)
    for c in bad.cases:
        clipped = any("scaled by" in n for n in c.notes)
        assert c.status == ("passed" if clipped else "failed"), c.summary()
    assert bad.counts["failed"] >= 2


class _Net:
    """Gradients left on the object after the step (``self.grads``), a plain constant argument."""

    def __init__(self, sizes):
        self.W = np.zeros((sizes["H"], sizes["I"]))

    def step(self, x, y, smoothing):
        grads = truncated({k: getattr(self, k) for k in ("W", "U", "b", "V", "c", "h0")}, x, y, bc.Spec())
        self.grads = {k: (1.0 - smoothing) * v for k, v in grads.items() if k != "x"}


@pytest.mark.parametrize("smoothing, passes", [(0.0, True), (0.5, False)])
def test_gradients_read_from_an_attribute_and_constant_arguments(smoothing, passes):
    adapted = bc.adapt_module(_Net, step="step", grads="attribute:grads",
                              layout=bc.Layout(args=("x", "y", smoothing)))
    report = bc.check(adapted, cases=3)
    assert report.passed is passes, report.summary()
    if not passes:
        assert all(c.diagnosis[0]["code"] == "scaled" for c in report.cases)


def test_arrays_shared_between_nested_objects_stay_shared():
    module = load("trainer_weight_decay")
    seen = []
    original = module.Trainer.train_step

    def spy(self, x, y):
        seen.append(all(p is q for p, q in zip(self.params, (self.cell.W, self.cell.U, self.cell.b,
                                                              self.head.V, self.head.c, self.h0))))
        return original(self, x, y)

    module.Trainer.train_step = spy
    try:                                       # the spy reports to this process: the backward runs in it
        assert bc.check(module.backward, cases=2, isolate="thread").passed
    finally:
        module.Trainer.train_step = original
    assert seen and all(seen)


def _list_backward(params, xs, ys):
    """A backward over a list of unpadded sequences, one at a time (h0 one row per sequence)."""
    W, U, b, V, c = (params[k] for k in ("W", "U", "b", "V", "c"))
    g = {k: np.zeros_like(v) for k, v in params.items()}
    dxs = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        h = [params["h0"][i]]
        for t in range(len(x)):
            h.append(np.tanh(W @ x[t] + U @ h[-1] + b))
        dx = np.zeros_like(x)
        dh_next = np.zeros_like(h[0])
        for t in reversed(range(len(x))):
            e = V @ h[t + 1] + c - y[t]
            g["V"] += np.outer(e, h[t + 1])
            g["c"] += e
            dz = (V.T @ e + dh_next) * (1 - h[t + 1] ** 2)
            g["W"] += np.outer(dz, x[t])
            g["U"] += np.outer(dz, h[t])
            g["b"] += dz
            dx[t] = W.T @ dz
            dh_next = U.T @ dz
        g["h0"][i] = dh_next
        dxs.append(dx)
    g["x"] = dxs
    return g


def test_a_list_of_unpadded_sequences():
    adapted = bc.adapt(_list_backward, bc.Layout(batch="list"), loss="half_mse")
    assert adapted.bptt_spec.lengths
    report = bc.check(adapted, cases=6)
    assert report.passed, report.summary()
    # dx of each sequence one step off: exactly dx is wrong, and the element is named in your layout
    def shifted(params, xs, ys):
        g = _list_backward(params, xs, ys)
        g["x"] = [np.roll(d, 1, axis=0) for d in g["x"]]
        return g

    bad = bc.check(bc.adapt(shifted, bc.Layout(batch="list"), loss="half_mse"), cases=6)
    assert all(c.failed_grads == ["x"] for c in bad.cases), bad.summary()
    assert any("dx[" in n and "(sequence" in n for c in bad.cases for n in c.notes)


def test_code_that_reads_its_weights_from_module_globals(tmp_path):
    """The recipe of docs/plugging-in.md: set the module's globals from the case, then call it."""
    legacy = types.ModuleType("legacy_rnn")
    exec(
        "import numpy as np\n"
        "Wxh = Whh = bh = Why = by = None\n"
        "def lossFun(inputs, targets, hprev):\n"
        "    hs = {-1: hprev}\n"
        "    for t in range(len(inputs)):\n"
        "        hs[t] = np.tanh(Wxh @ inputs[t] + Whh @ hs[t - 1] + bh)\n"
        "    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)\n"
        "    dbh, dby, dhnext = np.zeros_like(bh), np.zeros_like(by), np.zeros_like(hprev)\n"
        "    for t in reversed(range(len(inputs))):\n"
        "        dy = Why @ hs[t] + by - targets[t]\n"
        "        dWhy += np.outer(dy, hs[t]); dby += dy\n"
        "        dhraw = (Why.T @ dy + dhnext) * (1 - hs[t] ** 2)\n"
        "        dbh += dhraw; dWxh += np.outer(dhraw, inputs[t]); dWhh += np.outer(dhraw, hs[t - 1])\n"
        "        dhnext = Whh.T @ dhraw\n"
        "    return dWxh, dWhh, dWhy, dbh, dby, dhnext\n", legacy.__dict__)

    def call_legacy(params, x, y):
        for name, value in params.items():
            setattr(legacy, name, value)              # the globals its code reads
        return legacy.lossFun(x, y, params["h0"])

    adapted = bc.adapt(call_legacy, bc.Layout(names={"W": "Wxh", "U": "Whh", "b": "bh", "V": "Why", "c": "by"},
                                              batch=None, returns=("dWxh", "dWhh", "dWhy", "dbh", "dby", "dh0")),
                       loss="half_mse")
    assert bc.check(adapted, cases=4).passed
