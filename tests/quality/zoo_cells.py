"""The planted-bug zoo of the LSTM and GRU cells (issue 11): hand-written backwards with one mistake each.

Written here, by hand, in the style of course code (explicit gates, ``+=`` accumulation), sharing
nothing with the harness's own cells or diagnosis: a correct diagnosis is evidence, not an echo. The
``Bug`` record and the runner are the rnn zoo's (``zoo.py``), so the same checkers and table apply.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from zoo import Bug, run_bug, table  # noqa: F401  (re-exported for the test and the docs script)

import bptt_check as bc
from bptt_check.model.functions import loss_scale, output
from bptt_check.model.spec import Window

LSTM_ALL = frozenset({"W", "U", "b", "V", "c", "h0", "c0", "x"})
LSTM_UPSTREAM = frozenset({"W", "U", "b", "h0", "c0", "x"})
GRU_ALL = frozenset({"W", "U", "b", "bu", "V", "c", "h0", "x"})
GRU_UPSTREAM = frozenset({"W", "U", "b", "bu", "h0", "x"})
SIZES = bc.Sizes(T=(5, 7), B=(2, 3), I=(2, 3), H=(3, 4), O=(2, 2))


def _sig(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _dloss(spec: bc.Spec, yhat: np.ndarray, target: np.ndarray, m: dict[str, Any]) -> np.ndarray:
    """dE_t/dŷ_t for the squared errors with an identity output, or softmax cross-entropy."""
    if spec.loss == "cross_entropy":
        p = np.exp(yhat - yhat.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        p[np.arange(p.shape[0]), target] -= 1.0
        return p
    dy = output(spec.output, yhat) - target
    return 2.0 * dy if (spec.loss == "sse") != bool(m.get("half_vs_sse")) else dy


def _output_back(spec: bc.Spec, t: int, yhats: list[np.ndarray], y: np.ndarray, hs: list[np.ndarray],
                 V: np.ndarray, c_out: np.ndarray | None, scale: float, m: dict[str, Any],
                 grads: dict[str, np.ndarray]) -> np.ndarray:
    """The output layer at loss step t, backwards: dV and dc accumulated, dL/dh_t through it returned."""
    target = y if spec.mode == "many-to-one" else y[t]
    dyhat = scale * _dloss(spec, yhats[t], target, m)
    grads["V"] += dyhat.T @ hs[t + 1]
    if c_out is not None:
        grads["c"] += dyhat.sum(axis=0)
    return dyhat @ V


def _windows(spec: bc.Spec, T: int, m: dict[str, Any]) -> list[Window]:
    return spec.replace(truncation=m.get("truncation", spec.truncation), mode=m.get("mode", spec.mode)).windows(T)


def lstm_bptt(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, spec: bc.Spec,
              m: dict[str, Any]) -> dict[str, np.ndarray]:
    """LSTM BPTT over the spec's windows (gates i, f, g, o), with the mistakes named in ``m`` planted."""
    W, U, V = params["W"], params["U"], params["V"]
    b, c_out = params.get("b"), params.get("c")
    T, B, _ = x.shape
    H = U.shape[1]
    hs, cs, gates = [params["h0"]], [params["c0"]], []
    for t in range(T):
        z = x[t] @ W.T + hs[-1] @ U.T + (b if b is not None else 0.0)
        i, f, g, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sig(z[:, 3 * H:])
        cs.append(f * cs[-1] + i * g)
        hs.append(o * np.tanh(cs[-1]))
        gates.append((i, f, g, o))
    yhats = [h @ V.T + (c_out if c_out is not None else 0.0) for h in hs[1:]]
    scale = loss_scale(spec, T, B) * m.get("factor", 1.0)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["x"] = np.zeros_like(x)
    U_back = U.reshape(4, H, H).transpose(0, 2, 1).reshape(4 * H, H) if m.get("recur_transposed") else U
    for w in _windows(spec, T, m):
        dh_next, dc_next = np.zeros_like(hs[0]), np.zeros_like(cs[0])
        for t in reversed(range(w.start, max(w.losses) + 1)):
            dh, dc = dh_next, dc_next
            if t in w.losses:
                dh = dh + _output_back(spec, t, yhats, y, hs, V, c_out, scale, m, grads)
            i, f, g, o = gates[t]
            tc = np.tanh(cs[t + 1])
            do = dh * tc
            dc = dc + dh * o * (1.0 if m.get("no_tanh_c_prime") else 1.0 - tc ** 2)
            di, dg, df = dc * g, dc * i, dc * cs[t]
            blocks = {"i": di * i * (1 - i), "f": df * f * (1 - f), "g": dg * (1 - g ** 2), "o": do * o * (1 - o)}
            dz = np.concatenate([blocks[k] for k in m.get("order", "ifgo")], axis=1)
            grads["W"] += dz.T @ x[t]
            if not (m.get("dU_skip_t0") and t == 0):
                grads["U"] += dz.T @ (hs[t + 1] if m.get("dU_uses_h_t") else hs[t])
            if b is not None:
                grads["b"] += dz.sum(axis=0)
            grads["x"][t] += dz @ W
            if m.get("no_recurrent_flow"):
                dh_next, dc_next = np.zeros_like(dh), np.zeros_like(dc)
            else:
                dh_next = dz @ U_back
                dc_next = dc if m.get("no_forget_on_c") else dc * f
        if w.start == 0:
            grads["h0"] += dh_next
            grads["c0"] += dc_next
    if m.get("h0_zero"):
        grads["h0"] = np.zeros_like(grads["h0"])
    if m.get("c0_zero"):
        grads["c0"] = np.zeros_like(grads["c0"])
    return grads


def gru_bptt(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, spec: bc.Spec,
             m: dict[str, Any]) -> dict[str, np.ndarray]:
    """GRU BPTT (torch's: reset after, h = z h + (1 − z) n), with the mistakes named in ``m`` planted.

    ``m["model"]`` = "z_flipped" / "reset_before": the backward (and forward) of another convention.
    """
    W, U, V = params["W"], params["U"], params["V"]
    b, bu, c_out = params.get("b"), params.get("bu"), params.get("c")
    T, B, _ = x.shape
    H = U.shape[1]
    model = m.get("model", "")
    zeros3 = np.zeros(3 * H)
    b_, bu_ = (b if b is not None else zeros3), (bu if bu is not None else zeros3)
    hs, steps = [params["h0"]], []
    for t in range(T):
        hp = hs[-1]
        gi = x[t] @ W.T + b_
        gh = hp @ U.T + bu_
        r, z = _sig(gi[:, :H] + gh[:, :H]), _sig(gi[:, H:2 * H] + gh[:, H:2 * H])
        if model == "reset_before":
            rec = (r * hp) @ U[2 * H:].T + bu_[2 * H:]
            n = np.tanh(gi[:, 2 * H:] + rec)
        else:
            n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        hs.append((1 - z) * hp + z * n if model == "z_flipped" else z * hp + (1 - z) * n)
        steps.append((r, z, n, gh[:, 2 * H:]))
    yhats = [h @ V.T + (c_out if c_out is not None else 0.0) for h in hs[1:]]
    scale = loss_scale(spec, T, B)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["x"] = np.zeros_like(x)
    U_back = U.reshape(3, H, H).transpose(0, 2, 1).reshape(3 * H, H) if m.get("recur_transposed") else U
    for w in _windows(spec, T, m):
        dh_next = np.zeros_like(hs[0])
        for t in reversed(range(w.start, max(w.losses) + 1)):
            dh = dh_next
            if t in w.losses:
                dh = dh + _output_back(spec, t, yhats, y, hs, V, c_out, scale, m, grads)
            r, z, n, hn = steps[t]
            hp = hs[t]
            if model == "z_flipped":
                dn, dz, dprev = dh * z, dh * (n - hp), dh * (1 - z)
            else:
                dn, dz, dprev = dh * (1 - z), dh * (hp - n), dh * z
            dan = dn * (1 - n ** 2)
            daz = dz * z * (1 - z)
            if model == "reset_before":
                drh = dan @ U_back[2 * H:]
                dar = drh * hp * r * (1 - r)
                dprev = dprev + drh * r
                grads["U"][:2 * H] += np.hstack([dar, daz]).T @ hp
                grads["U"][2 * H:] += dan.T @ (r * hp)
                dbu = np.hstack([dar, daz, dan])
                dprev = dprev + np.hstack([dar, daz]) @ U_back[:2 * H]
            else:
                seen = hn - (bu_[2 * H:] if m.get("bias_outside_reset") else 0.0)
                dar = dan * seen * r * (1 - r)
                dgh_n = dan if m.get("no_r_factor") else dan * r
                dgh = np.hstack([dar, daz, dgh_n])
                if not (m.get("dU_skip_t0") and t == 0):
                    grads["U"] += dgh.T @ hp
                dbu = np.hstack([dar, daz, dan if m.get("bias_outside_reset") else dgh_n])
                dprev = dprev + dgh @ U_back
                if m.get("r_path_dropped"):
                    dprev = dprev - dar @ U_back[:H]
            dgi = np.hstack([dar, daz, dan])
            grads["W"] += dgi.T @ x[t]
            if b is not None:
                grads["b"] += dgi.sum(axis=0)
                grads["bu"] += dbu.sum(axis=0)
            grads["x"][t] += dgi @ W
            dh_next = dprev
        if w.start == 0:
            grads["h0"] += dh_next
    if m.get("h0_zero"):
        grads["h0"] = np.zeros_like(grads["h0"])
    return grads


def _planted(bptt: Any, **m: Any) -> Any:
    def make():
        def backward(params, x, y, spec):
            return bptt(params, x, y, spec, m)
        return backward
    return make


def _lstm(**kw: Any) -> bc.Spec:
    return bc.Spec(cell="lstm", sizes=SIZES, **kw)


def _gru(**kw: Any) -> bc.Spec:
    return bc.Spec(cell="gru", sizes=SIZES, **kw)


L, G = lstm_bptt, gru_bptt
BUGS: tuple[Bug, ...] = (
    # lstm
    Bug("lstm_forget_missing_on_c", "dc_{t−1} = dc_t (f_t left off the cell-state path)",
        _planted(L, no_forget_on_c=True), _lstm(), LSTM_UPSTREAM, "forget_gate_missing"),
    Bug("lstm_tanh_c_prime_missing", "dc_t += dh_t ⊙ o_t (tanh′(c_t) missing)", _planted(L, no_tanh_c_prime=True),
        _lstm(), LSTM_UPSTREAM, "cell_tanh_derivative_missing"),
    Bug("lstm_gates_ifog_in_backward", "dz stacked (i, f, o, g) against a forward in (i, f, g, o)",
        _planted(L, order="ifog"), _lstm(), LSTM_UPSTREAM, "gate_order"),
    Bug("lstm_gates_fgio_in_backward", "dz stacked (f, g, i, o)", _planted(L, order="fgio"), _lstm(),
        LSTM_UPSTREAM, "gate_order"),
    Bug("lstm_c0_gradient_missing", "dc0 returned as zeros", _planted(L, c0_zero=True), _lstm(),
        frozenset({"c0"}), "c0_gradient_missing"),
    Bug("lstm_h0_gradient_missing", "dh0 returned as zeros", _planted(L, h0_zero=True), _lstm(),
        frozenset({"h0"}), "h0_gradient_missing"),
    Bug("lstm_dU_from_t1", "dU summed from t = 1", _planted(L, dU_skip_t0=True), _lstm(), frozenset({"U"}),
        "missing_first_step"),
    Bug("lstm_recurrent_transposed", "dh_{t−1} = Σ_g dz_g U_gᵀ", _planted(L, recur_transposed=True), _lstm(),
        LSTM_UPSTREAM, "transposed"),
    Bug("lstm_no_recurrent_flow", "nothing carried from t+1 to t", _planted(L, no_recurrent_flow=True), _lstm(),
        LSTM_UPSTREAM, "no_recurrent_flow"),
    Bug("lstm_dU_uses_h_t", "dU += dzᵀ h_t", _planted(L, dU_uses_h_t=True), _lstm(), frozenset({"U"}),
        "state_off_by_one"),
    Bug("lstm_half_missing", "dE/dy = 2(y − Y) for half_mse", _planted(L, half_vs_sse=True), _lstm(), LSTM_ALL,
        "scaled"),
    Bug("lstm_window_one_too_long", "window:2 implemented as window:3",
        _planted(L, truncation=bc.Truncation("window", 3)), _lstm(truncation="window:2"),
        LSTM_UPSTREAM, "truncation_window"),
    Bug("lstm_last_step_only", "many-to-many spec, only E_{T−1} back-propagated", _planted(L, mode="many-to-one"),
        _lstm(), LSTM_ALL, "loss_at_last_step_only"),
    # gru
    Bug("gru_z_flipped", "the fully gated h = (1 − z) h + z n, against torch's", _planted(G, model="z_flipped"),
        _gru(), GRU_ALL, "gru_z_convention"),
    Bug("gru_reset_before", "reset before the matmul, (r⊙h) U_nᵀ, against torch's", _planted(G, model="reset_before"),
        _gru(), GRU_ALL, "gru_reset_convention"),
    Bug("gru_r_path_dropped", "dh_{t−1} lacks dr̂ U_r", _planted(G, r_path_dropped=True), _gru(),
        frozenset({"W", "U", "b", "bu", "h0", "x"}), "gru_reset_path_dropped"),
    Bug("gru_reset_factor_missing", "d(h U_nᵀ + bu_n) = dn̂, r forgotten", _planted(G, no_r_factor=True), _gru(),
        GRU_UPSTREAM, "gru_reset_factor_missing"),
    Bug("gru_bias_outside_reset", "dbu_n = dn̂ and dr from h U_nᵀ alone", _planted(G, bias_outside_reset=True),
        _gru(), GRU_UPSTREAM, "gru_bias_outside_reset"),
    Bug("gru_dU_from_t1", "dU summed from t = 1", _planted(G, dU_skip_t0=True), _gru(), frozenset({"U"}),
        "missing_first_step"),
    Bug("gru_h0_gradient_missing", "dh0 returned as zeros", _planted(G, h0_zero=True), _gru(), frozenset({"h0"}),
        "h0_gradient_missing"),
    Bug("gru_recurrent_transposed", "dh_{t−1} = Σ_g dĝ U_gᵀ", _planted(G, recur_transposed=True), _gru(),
        GRU_UPSTREAM, "transposed"),
    Bug("gru_tbptt_k2_short", "tbptt:2,4 implemented as tbptt:2,3",
        _planted(G, truncation=bc.Truncation("tbptt", 2, 3)), _gru(truncation="tbptt:2,4"), GRU_UPSTREAM,
        "truncation_window"),
    Bug("gru_m2o_every_step", "many-to-one spec, a loss at every step", _planted(G, mode="many-to-many"),
        _gru(mode="many-to-one"), GRU_ALL, "loss_at_every_step"),
)
