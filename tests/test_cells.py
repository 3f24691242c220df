"""Any cell (issue 11): LSTM, GRU and cells of your own, in every mode, against every oracle."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check import cli
from bptt_check.builtin import BUILTINS, gru, lstm
from bptt_check.model.backprop import variant_grads
from bptt_check.model.cell import cell_of
from bptt_check.model.forward import forward
from bptt_check.oracles import AutogradOracle, ComplexStepOracle, FiniteDifferenceOracle
from bptt_check.oracles.complex_step import literal_complex_step
from bptt_check.strategies import specs, truncations
from bptt_check.verdict.precision import float64_rounding

CELLS = ["lstm", "gru", "gru:z=n", "gru:reset=before", "gru:z=n,reset=before"]


def _builtin(spec: bc.Spec):
    return lstm if spec.cell == "lstm" else gru


@settings(max_examples=30, deadline=None)
@given(spec=specs(cells=CELLS, truncation=truncations()), seed=st.integers(0, 2**16), index=st.integers(0, 15))
def test_the_cell_built_ins_match_both_oracles_in_every_mode(spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    result = bc.check_case(_builtin(spec), case, oracles=("autograd", "fd"))
    assert result.status == "passed", result.summary()
    assert np.all(case.params["h0"] != 0) and (spec.cell != "lstm" or np.all(case.params["c0"] != 0))


@settings(max_examples=25, deadline=None)
@given(spec=specs(cells=CELLS, truncation=truncations()), seed=st.integers(0, 2**16), index=st.integers(0, 15))
# issue 12 (a flaky suite): a softmax output cancels in autograd's float64 beyond its 8·ε·T estimate (dc 4.8e-17
# off against 3.1e-17 allowed); the case's own float64 rounding is allowed on top, as in test_oracles.py
@example(spec=bc.Spec(mode="many-to-one", output="softmax", cell="gru"), seed=174, index=1)
def test_the_one_reverse_recursion_and_the_complex_step_are_autograd_for_every_cell(spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    truth = AutogradOracle().gradients(case)
    recursion = variant_grads(case)
    cs = ComplexStepOracle().gradients(case)
    assert cs.method == "complex"
    rounding = {k: 4 * e for k, e in float64_rounding(case, truth.grads).items()}
    for k, r in truth.grads.items():
        scale = max(1.0, np.abs(r).max())
        np.testing.assert_allclose(recursion[k], r, rtol=1e-10, atol=1e-12 * scale, err_msg=k)
        np.testing.assert_allclose(cs.grads[k], r, rtol=1e-10, atol=1e-12 * scale, err_msg=k)
        assert np.all(np.abs(cs.grads[k] - r) <= cs.error[k] + truth.error[k] + rounding.get(k, 0.0)), k


@pytest.mark.parametrize("cell", ["lstm", "gru:reset=before"])
def test_the_batched_complex_step_is_the_literal_one(cell):
    case = bc.draw_case(bc.Spec(cell=cell, truncation="tbptt:2,3"), 4, 0)
    lit = literal_complex_step(case)
    cs = ComplexStepOracle().gradients(case)
    fd = FiniteDifferenceOracle().gradients(case)
    for k in lit:
        np.testing.assert_allclose(cs.grads[k], lit[k], rtol=1e-13, atol=1e-15, err_msg=k)
        assert np.all(np.abs(fd.grads[k] - lit[k]) <= fd.error[k] + 1e-15), k


@pytest.mark.parametrize("cell", CELLS)
def test_a_window_at_least_T_long_is_full_bptt_and_a_window_start_detaches_every_state_part(cell):
    spec = bc.Spec(cell=cell)
    case = bc.draw_case(spec, 7, 0)
    full = _builtin(spec)(case.params, case.x, case.y, spec)
    long = _builtin(spec)(case.params, case.x, case.y, spec.replace(truncation=f"window:{case.T}"))
    for k in full:
        np.testing.assert_allclose(long[k], full[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # chunk k equals full BPTT chunk by chunk, every part of the carried state a constant initial state
    chunked = spec.replace(truncation="chunk:3")
    expected = _builtin(spec)(case.params, case.x, case.y, chunked)
    states = forward(case.params, case.x, spec).states
    parts = [f"{p}0" for p in cell_of(spec).states]
    total = {k: np.zeros_like(v) for k, v in expected.items()}
    for first in range(0, case.T, 3):
        last = min(first + 3, case.T)
        params = dict(case.params, **{name: s[first] for name, s in zip(parts, states)})
        g = _builtin(spec)(params, case.x[first:last], case.y[first:last], spec)
        for name in g:
            if name == "x":
                total["x"][first:last] += g["x"]
            elif name not in parts or first == 0:
                total[name] += g[name]
    for k in expected:
        np.testing.assert_allclose(total[k], expected[k], rtol=1e-11, atol=1e-13, err_msg=k)


def test_a_gru_written_for_one_convention_passes_declared_and_the_undeclared_mismatch_is_named():
    fully_gated = bc.Spec(cell="gru:z=n")
    assert bc.check(gru, fully_gated, cases=4).passed      # declared: right

    def written_for_z_n(params, x, y, spec):                # the same code, checked as torch's GRU
        return gru(params, x, y, fully_gated.replace(mode=spec.mode, truncation=spec.truncation))

    r = bc.check_case(written_for_z_n, bc.draw_case(bc.Spec(cell="gru"), 0, 0))
    assert r.status == "failed" and r.diagnosis[0]["code"] == "gru_z_convention", r.summary()
    assert "declare --cell gru:z=n" in r.diagnosis[0]["message"]

    def written_reset_before(params, x, y, spec):
        return gru(params, x, y, spec.replace(cell="gru:reset=before"))

    r = bc.check_case(written_reset_before, bc.draw_case(bc.Spec(cell="gru"), 0, 0))
    assert r.status == "failed" and r.diagnosis[0]["code"] == "gru_reset_convention", r.summary()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fast_mode_works_for_the_cells(cell):
    spec = bc.Spec(cell=cell, truncation="window:3")
    assert bc.check(_builtin(spec), spec, cases=4, fast=True).passed

    def dU_from_t1(params, x, y, spec):
        g = _builtin(spec)(params, x, y, spec)
        p0 = dict(params)
        tr = forward(params, x[:1], spec)
        g1 = _builtin(spec)(p0, x[:1], y if spec.mode == "many-to-one" else y[:1], spec)
        assert tr is not None and g1 is not None
        g["U"] = g["U"] * 1.001
        return g

    r = bc.check_case(dU_from_t1, bc.draw_case(spec, 0, 0), fast=True)
    assert r.status == "failed" and r.failed_grads == ["U"], r.summary()


def test_the_main_job_checks_the_lstm_and_gru_built_ins(tmp_path):
    from bptt_check.cli import main

    assert main(["--cell", "lstm", "--cases", "2", "--report-dir", str(tmp_path), "--progress", "none"]) == 0
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert {c["spec"]["cell"] for c in report["cases"]} == {"lstm"} and report["targets"] == ["builtin:lstm"]
    assert {"lstm", "gru"} <= set(BUILTINS)


def test_bad_cells_say_what_to_do():
    with pytest.raises(bc.UsageError, match="unknown cell 'lsmt'"):
        bc.Spec(cell="lsmt")
    with pytest.raises(bc.UsageError, match="options are z=h|n and reset"):
        bc.Spec(cell="gru:zz=n")
    with pytest.raises(bc.UsageError, match="activations are fixed"):
        bc.Spec(cell="gru", activation="relu")

    class Half:
        def parameters(self, I, H):
            return {"W": (H, I)}

    with pytest.raises(bc.UsageError, match="lacks states, step"):
        bc.Spec(cell=Half())


# ----------------------------------------------------------------- a cell of your own

CELL_SOURCE = '''
import torch

class MinGRU:
    """z = σ(x Wzᵀ + h Uzᵀ + bz), h' = (1 − z) h + z tanh(x Wᵀ + h Uᵀ + b)."""
    def parameters(self, I, H):
        return {"W": (H, I), "U": (H, H), "b": (H,), "Wz": (H, I), "Uz": (H, H), "bz": (H,)}
    def states(self, B, H):
        return {"h": (B, H)}
    def step(self, p, x, states):
        h, = states
        z = torch.sigmoid(x @ p["Wz"].mT + h @ p["Uz"].mT + p["bz"])
        n = torch.tanh(x @ p["W"].mT + h @ p["U"].mT + p["b"])
        return ((1 - z) * h + z * n,)

class ReluCell:
    def parameters(self, I, H):
        return {"W": (H, I), "U": (H, H)}
    def states(self, B, H):
        return {"h": (B, H)}
    def step(self, p, x, states):
        return (torch.relu(x @ p["W"].mT + states[0] @ p["U"].mT),)
'''

BACKWARD_SOURCE = '''
import numpy as np

def backward(params, x, y, spec):
    """By hand, for MinGRU: any window schedule, many-to-many or many-to-one, half_mse, identity output."""
    W, U, b, Wz, Uz, bz, V, c = (params[k] for k in ("W", "U", "b", "Wz", "Uz", "bz", "V", "c"))
    T, B, _ = x.shape
    scale = 1.0 / B if spec.reduction == "mean_batch" else 1.0
    hs, zs, ns = [params["h0"]], [], []
    for t in range(T):
        z = 1 / (1 + np.exp(-(x[t] @ Wz.T + hs[-1] @ Uz.T + bz)))
        n = np.tanh(x[t] @ W.T + hs[-1] @ U.T + b)
        zs.append(z)
        ns.append(n)
        hs.append((1 - z) * hs[-1] + z * n)
    g = {k: np.zeros_like(v) for k, v in params.items()}
    g["x"] = np.zeros_like(x)
    for w in spec.windows(T):
        dh_next = np.zeros_like(hs[0])
        for t in reversed(range(w.start, max(w.losses) + 1)):
            dh = dh_next
            if t in w.losses:
                target = y if spec.mode == "many-to-one" else y[t]
                dyhat = scale * (hs[t + 1] @ V.T + c - target)
                g["V"] += dyhat.T @ hs[t + 1]
                g["c"] += dyhat.sum(0)
                dh = dh + dyhat @ V
            z, n, hp = zs[t], ns[t], hs[t]
            dz = dh * (n - hp) * z * (1 - z)
            dn = dh * z * (1 - n ** 2)
            g["Wz"] += dz.T @ x[t]; g["Uz"] += dz.T @ hp; g["bz"] += dz.sum(0)
            g["W"] += dn.T @ x[t]; g["U"] += dn.T @ hp; g["b"] += dn.sum(0)
            g["x"][t] += dz @ Wz + dn @ W
            dh_next = dh * (1 - z) + dz @ Uz + dn @ U
        if w.start == 0:
            g["h0"] += dh_next
    return g
'''


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    (folder / "mycells.py").write_text(textwrap.dedent(CELL_SOURCE))
    (folder / "mingru.py").write_text(textwrap.dedent(BACKWARD_SOURCE))
    sys.path.insert(0, str(folder))
    import mingru
    import mycells

    yield folder, mycells, mingru
    sys.path.remove(str(folder))


def test_a_cell_of_your_own_with_its_hand_written_backward_passes_in_every_mode(mine):
    _, mycells, mingru = mine
    for mode in ("many-to-many", "many-to-one"):
        for truncation in ("none", "window:2", "tbptt:2,3", "chunk:3"):
            spec = bc.Spec(cell=mycells.MinGRU(), mode=mode, truncation=truncation)
            report = bc.check(mingru.backward, spec, cases=4)
            assert report.passed and report.counts["passed"] == 4, report.summary()
    assert bc.check(mingru.backward, bc.Spec(cell=mycells.MinGRU()), cases=3, fast=True).passed


def test_a_planted_bug_in_your_cells_backward_fails_on_exactly_its_gradients(mine):
    _, mycells, mingru = mine

    def dz_sign(params, x, y, spec):          # dbz with the wrong sign
        g = mingru.backward(params, x, y, spec)
        g["bz"] = -g["bz"]
        return g

    report = bc.check(dz_sign, bc.Spec(cell=mycells.MinGRU()), cases=4)
    for case in report.cases:
        assert case.status == "failed" and case.failed_grads == ["bz"], case.summary()
        assert case.diagnosis[0]["code"] == "scaled" and "sign" in case.diagnosis[0]["message"]


def test_a_cell_that_is_not_analytic_falls_back_to_finite_differences_and_says_so(mine):
    _, mycells, _ = mine
    case = bc.draw_case(bc.Spec(cell=mycells.ReluCell()), 0, 0)
    res = ComplexStepOracle().gradients(case)
    assert res.method == "fd" and "not analytic" in res.notes[0]
    truth = AutogradOracle().gradients(case).grads
    for k in truth:
        np.testing.assert_allclose(res.grads[k], truth[k], rtol=1e-6, atol=1e-8, err_msg=k)


def test_the_command_line_takes_your_cell_and_its_reproducer_runs(mine, tmp_path, capsys):
    folder, _, _ = mine
    cell = f"{folder / 'mycells.py'}:MinGRU"
    # the command's own code in this process; the reproducers below run in fresh ones, as pasted
    code = cli.main([f"{folder / 'mingru.py'}:backward", "--cell", cell, "--cases", "3", "--report-dir", str(tmp_path),
                     "--progress", "none"])
    assert code == 0, capsys.readouterr()
    broken = folder / "broken.py"
    broken.write_text((folder / "mingru.py").read_text().replace("g[\"bz\"] += dz.sum(0)", "g[\"bz\"] -= dz.sum(0)"))
    code = cli.main([f"{broken}:backward", "--cell", cell, "--cases", "1", "--report-dir", str(tmp_path),
                     "--progress", "none"])
    assert code == 1, capsys.readouterr()
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    case = report["cases"][0]
    assert case["spec"]["cell"] == cell and [k for k, g in case["params"].items() if not g["passed"]] == ["bz"]
    replay = subprocess.run(case["evidence"]["reproducer"]["cli"], shell=True, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert replay.returncode == 1 and "FAILED" not in replay.stderr, replay.stdout + replay.stderr
    snippet = subprocess.run([sys.executable, "-c", case["evidence"]["reproducer"]["python"]], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    assert snippet.returncode == 0 and "FAILED" in snippet.stdout, snippet.stdout + snippet.stderr


# ----------------------------------------------------------------- real LSTM code: gate orders, (in, out), c0

@pytest.mark.parametrize("order", ["ifgo", "ifog", "fgio", "oigf"])
@pytest.mark.parametrize("weights", ["out_in", "in_out"])
def test_an_lstm_in_any_gate_order_and_orientation_passes_and_its_wrong_block_is_located(order, weights):
    canonical = "ifgo"
    perm = [canonical.index(g) for g in order]               # the canonical block of each of your blocks

    def to_canonical(a, H):
        blocks = np.split(a if weights == "out_in" or a.ndim == 1 else a.T, 4)
        inverse = [blocks[order.index(g)] for g in canonical]
        return np.concatenate(inverse)

    def to_user(a):
        blocks = np.split(a, 4)
        mine = np.concatenate([blocks[i] for i in perm])
        return mine if weights == "out_in" or a.ndim == 1 else mine.T

    def make(bug):
        def user(params, x, y, spec):
            H = params["h0"].shape[1]
            p = {k: (to_canonical(v, H) if k in ("Wx", "Wh", "bias") else v) for k, v in params.items()}
            flip = (lambda a: a.T) if weights == "in_out" else (lambda a: a)
            p = {"W": p["Wx"], "U": p["Wh"], "b": p["bias"], "V": flip(p["V"]), "c": p["c"], "h0": p["h0"],
                 "c0": np.zeros_like(p["h0"])}
            g = lstm(p, x, y, spec)
            out = {"Wx": to_user(g["W"]), "Wh": to_user(g["U"]), "bias": to_user(g["b"]), "V": flip(g["V"]),
                   "c": g["c"], "h0": g["h0"], "x": g["x"]}
            if bug:
                out["Wx"] = out["Wx"].copy()
                out["Wx"][(0, -1) if weights == "out_in" else (-1, 0)] += 1.0     # your first gate row, last input
            return out
        return bc.adapt(user, bc.Layout(names={"W": "Wx", "U": "Wh", "b": "bias"}, weights=weights, gates=order,
                                        c0="zero", args=("params", "x", "y", "spec")), cell="lstm")

    case = bc.draw_case(bc.Spec(cell="lstm"), 3, 0)
    good = bc.check_case(make(False), case)
    assert good.status == "passed", good.summary()
    assert set(good.grads) == {"W", "U", "b", "V", "c", "h0", "x"}           # c0 = 0 is not returned
    bad = bc.check_case(make(True), case)
    assert bad.status == "failed" and bad.failed_grads == ["W"], bad.summary()
    last = case.shapes["I"] - 1
    where = f"Wx[0, {last}]" if weights == "out_in" else f"Wx[{last}, 0]"
    assert any(f"its worst element is {where}" in n for n in bad.notes), bad.notes


def test_a_gate_order_that_names_other_gates_is_refused():
    with pytest.raises(bc.UsageError, match="permutation of 'ifgo'"):
        bc.Layout(gates="ifgx")
    adapted = bc.adapt(lambda p, x, y: {}, bc.Layout(gates="zrn"), cell="lstm")
    r = bc.check_case(adapted, bc.draw_case(bc.Spec(cell="lstm"), 0, 0))
    assert r.status == "error" and "does not name the lstm cell's gates" in r.error["message"]
