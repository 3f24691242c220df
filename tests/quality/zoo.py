"""The planted-bug zoo: deliberately broken backward passes, as data.

Each ``Bug`` is a backward with one mistake, the spec it claims to implement,
the set of gradients the mistake breaks (on the zoo's cases) and the diagnosis
code the harness should name. The backwards are written here, by hand, in the
style of the code people actually write (one loop over steps, ``+=``
accumulation, a comment per node); they share nothing with the harness's own
diagnosis machinery, so a correct diagnosis is evidence, not an echo.

``run_zoo(checker)`` runs every bug against any checker with the signature of
``bptt_check.check_case`` (``checker(backward, case) -> result`` with
``.status``, and optionally ``.failed_grads`` and ``.diagnosis``), so the same
zoo measures the fast mode's detection power. ``python scripts/zoo_table.py``
renders the table in ``docs/verdicts.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import bptt_check as bc
from bptt_check.model.forward import total_loss
from bptt_check.model.functions import act, loss_scale, output
from bptt_check.model.spec import Window

ALL = frozenset({"W", "U", "b", "V", "c", "h0", "x"})
PARAMS = ALL - {"x"}
UPSTREAM = frozenset({"W", "U", "b", "h0", "x"})    # everything behind the recurrent flow
CELL = frozenset({"W", "U", "b"})
SQUARE = bc.Sizes(T=(5, 7), B=(2, 3), I=(3, 3), H=(3, 3), O=(2, 2))     # I = H: W and U have one shape
WIDE = bc.Sizes(T=(5, 7), B=(2, 3), I=(2, 3), H=(3, 4), O=(2, 2))       # B >= 2, O != H
FIXED = bc.Sizes(T=(6, 6), B=(2, 2), I=(3, 3), H=(4, 4), O=(2, 2))      # every case has the same shapes
LONG = bc.Sizes(T=(14, 16))                                             # beyond the spec's neighbours


# ----------------------------------------------------------------- a hand-written BPTT with dials

def _dloss(spec: bc.Spec, yhat: np.ndarray, target: np.ndarray, m: dict[str, Any]) -> np.ndarray:
    """dE_t/dŷ_t per sample."""
    if spec.loss == "cross_entropy":
        p = np.exp(yhat - yhat.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        if not m.get("ce_no_onehot"):
            p[np.arange(p.shape[0]), target] -= 1.0          # softmax(ŷ) − onehot(target)
        return p
    yv = output(spec.output, yhat)
    dy = yv - target
    if m.get("sign_flipped"):
        dy = target - yv
    if (spec.loss == "sse") != bool(m.get("half_vs_sse")):
        dy = 2.0 * dy                                         # d‖y − Y‖² = 2(y − Y)
    if spec.output == "identity" or m.get("no_output_derivative"):
        return dy
    if spec.output == "softmax":
        return yv * (dy - (dy * yv).sum(axis=-1, keepdims=True))
    if m.get("g_prime_on_logits"):
        yv = yhat                                             # g' written in terms of y, fed ŷ
    if spec.output == "tanh":
        return dy * (1.0 - yv ** 2)
    return dy * yv * (1.0 - yv)                               # sigmoid


def _dact(spec: bc.Spec, hhat: np.ndarray, h: np.ndarray, hprev: np.ndarray, m: dict[str, Any]) -> np.ndarray:
    """f'(ĥ_t), or the planted mistake."""
    how = m.get("dact", "right")
    if how == "missing":
        return np.ones_like(h)
    if how == "one_minus_h":
        return 1.0 - h                                        # tanh' written 1 − h: the square forgotten
    v = {"right": h, "on_pre": hhat, "prev": hprev}.get(how, h)
    if spec.activation == "tanh":
        return 1.0 - v ** 2                                   # tanh' = 1 − h²
    if spec.activation == "sigmoid":
        if how == "at_output":
            s = 1.0 / (1.0 + np.exp(-h))
            return s * (1.0 - s)                              # σ'(h) instead of σ'(ĥ)
        return v * (1.0 - v)                                  # σ' = h(1 − h)
    if spec.activation == "relu":
        return (hhat > 0).astype(h.dtype)
    return np.ones_like(h)


def bptt(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, spec: bc.Spec,
         m: dict[str, Any]) -> dict[str, np.ndarray]:
    """Truncated BPTT over the spec's windows, with the mistakes named in ``m`` planted."""
    W, U, V = params["W"], params["U"], params["V"]
    b, c, h0 = params.get("b"), params.get("c"), params["h0"]
    T, B, _ = x.shape
    # forward: ĥ_t = x_t Wᵀ + h_{t−1} Uᵀ + b, h_t = f(ĥ_t), ŷ_t = h_t Vᵀ + c
    hs = [h0]
    hhats = []
    yhats = []
    for t in range(T):
        hhat = x[t] @ W.T + hs[-1] @ U.T + (b if b is not None else 0.0)
        hhats.append(hhat)
        hs.append(act(spec.activation, hhat))
        yhats.append(hs[-1] @ V.T + (c if c is not None else 0.0))
    scale = loss_scale(spec, T, B) * m.get("factor", 1.0)
    trunc = m.get("truncation", spec.truncation)
    mode = m.get("mode", spec.mode)
    windows = spec.replace(truncation=trunc, mode=mode).windows(T)
    if m.get("loop_skips_last"):
        windows = [Window(w.start, tuple(t for t in w.losses if t != T - 1)) for w in windows]
        windows = [w for w in windows if w.losses]
    dW, dU, dV = np.zeros_like(W), np.zeros_like(U), np.zeros_like(V)
    db = np.zeros_like(b) if b is not None else None
    dc = np.zeros((B, *c.shape)) if (c is not None and m.get("dc_not_summed")) else (
        np.zeros_like(c) if c is not None else None)
    dh0 = np.zeros_like(h0)
    dx = np.zeros_like(x)
    for w in windows:
        dh_next = np.zeros_like(h0)
        for t in reversed(range(w.start, max(w.losses) + 1)):
            dh = dh_next
            if t in w.losses:
                # E_t and the dense layer ŷ_t = h_t Vᵀ + c
                target = y if spec.mode == "many-to-one" else y[t]
                dyhat = scale * _dloss(spec, yhats[t], target, m)
                if not (m.get("dV_skip_t0") and t == 0):
                    dV += dyhat.T @ (hs[t] if m.get("dV_uses_prev") else hs[t + 1])
                if dc is not None:
                    dc += dyhat if m.get("dc_not_summed") else dyhat.sum(axis=0)
                dh = dh + dyhat @ V
            # h_t = f(ĥ_t)
            dhhat = dh * _dact(spec, hhats[t], hs[t + 1], hs[t], m)
            # ĥ_t = x_t Wᵀ + h_{t−1} Uᵀ + b
            skip = (m.get("cell_skip_t0") and t == 0) or (m.get("cell_skip_last") and t == T - 1)
            if not skip:
                dW += dhhat.T @ x[t]
                if m.get("states_without_h0"):
                    outs = hs[1:]                                     # h_0 … h_{T−1}, h0 not kept
                    dU += dhhat.T @ outs[t - 1]                       # t = 0: outs[−1], the last state
                elif not (m.get("dU_skip_t0") and t == 0):
                    dU += dhhat.T @ (hs[t + 1] if m.get("dU_uses_h_t") else hs[t])
                if db is not None:
                    db += dhhat[0] if m.get("db_first_sample") else dhhat.sum(axis=0)
            dx[t] += dhhat @ W
            recur = m.get("recur", "U")
            if recur == "zero":
                dh_next = np.zeros_like(dh_next)
            else:
                dh_next = dhhat @ {"U": U, "UT": U.T, "W": W}[recur]
        if w.start == 0:
            dh0 += dh_next
    grads = {"W": dW, "U": dU, "V": dV, "h0": dh0, "x": dx}
    if db is not None:
        grads["b"], grads["c"] = db, dc
    if m.get("dU_transposed"):
        grads["U"] = dU.T
    if m.get("dV_transposed"):
        grads["V"] = dV.T
    if m.get("swap_dW_dU"):
        grads["W"], grads["U"] = dU, dW
    if m.get("h0_zero"):
        grads["h0"] = np.zeros_like(dh0)
    if m.get("dx_zero"):
        grads["x"] = np.zeros_like(dx)
    if "clip" in m:
        for k in PARAMS & grads.keys():
            np.clip(grads[k], -m["clip"], m["clip"], out=grads[k])      # Karpathy-style, undeclared
    if "clip_norm" in m:
        norm = np.sqrt(sum(float((grads[k] ** 2).sum()) for k in PARAMS & grads.keys()))
        if norm > m["clip_norm"]:
            for k in PARAMS & grads.keys():
                grads[k] = grads[k] * (m["clip_norm"] / norm)         # torch clip_grad_norm_ style
    return grads


def mean_loss_sum_grads() -> Callable[..., Any]:
    """A training step that reports its loss averaged over time while its gradients are those of the sum
    (the spec's): adapted, since the protocol has no loss; the loss is checked first."""
    def step(params, x, y, spec):
        grads = bptt(params, x, y, spec, {})
        T = x.shape[0]
        loss = total_loss(params, x, y, spec) / T                       # the bug: a mean over time
        return {"loss": loss, **grads}

    return bc.adapt(step, bc.Layout(args=("params", "x", "y", "spec")))


def planted(**m: Any) -> Callable[[], Callable[..., dict[str, np.ndarray]]]:
    """A factory of backwards with the mistakes ``m``."""
    def make():
        def backward(params, x, y, spec):
            return bptt(params, x, y, spec, m)
        return backward
    return make


def stale_buffers() -> Callable[..., dict[str, np.ndarray]]:
    """Gradients accumulated into buffers that live across calls and are never zeroed.

    Returned as it would be met in a training loop: already called once, on other data of
    the same shapes.
    """
    buffers: dict[str, np.ndarray] = {}

    def backward(params, x, y, spec):
        g = bptt(params, x, y, spec, {})
        for k, v in g.items():
            if k not in buffers:
                buffers[k] = np.zeros_like(v)
            buffers[k] += v                      # the bug: never reset between calls
        return {k: v.copy() for k, v in buffers.items()}

    warm = bc.draw_case(bc.Spec(sizes=FIXED), seed=99, index=0)
    backward(warm.params, warm.x, warm.y, warm.spec)
    return backward


# ----------------------------------------------------------------- the zoo

@dataclass(frozen=True)
class Bug:
    name: str
    what: str                          # the mistake, in one line
    make: Callable[[], Callable[..., Any]]
    spec: bc.Spec
    breaks: frozenset[str]             # the gradients it breaks on the zoo's cases
    code: str                          # the diagnosis the harness should name
    seed: int = 0
    cases: tuple[int, ...] = (0, 2)    # case indices (0, 2, 4, 6 are "core" flavors: T >= 3, H >= 2)


def _s(**kw: Any) -> bc.Spec:
    return bc.Spec(**kw)


BUGS: tuple[Bug, ...] = (
    # convention factors
    Bug("half_missing", "dE/dy = 2(y − Y) for half_mse", planted(half_vs_sse=True), _s(), ALL, "scaled"),
    Bug("extra_half_for_sse", "dE/dy = y − Y for sse", planted(half_vs_sse=True), _s(loss="sse"), ALL, "scaled"),
    Bug("mean_where_sum", "divides by the batch size; spec sums", planted(factor=0.5), _s(sizes=FIXED), ALL,
        "scaled"),
    Bug("sum_where_mean", "sums over the batch; spec mean_batch", planted(factor=2.0),
        _s(reduction="mean_batch", sizes=FIXED), ALL, "scaled"),
    Bug("sign_flipped", "dE/dy = Y − y", planted(sign_flipped=True), _s(), ALL, "scaled"),
    # layout
    Bug("dU_transposed", "returns dUᵀ", planted(dU_transposed=True), _s(), frozenset({"U"}), "transposed"),
    Bug("dV_transposed", "returns dVᵀ (shape (H, O))", planted(dV_transposed=True), _s(sizes=WIDE),
        frozenset({"V"}), "transposed"),
    Bug("recurrent_transposed", "dh_{t−1} = dĥ_t Uᵀ", planted(recur="UT"), _s(), UPSTREAM, "transposed"),
    Bug("dW_dU_swapped", "returns dU as dW and dW as dU", planted(swap_dW_dU=True), _s(sizes=SQUARE),
        frozenset({"W", "U"}), "input_recurrent_swapped"),
    Bug("recurrent_uses_W", "dh_{t−1} = dĥ_t W", planted(recur="W"), _s(sizes=SQUARE), UPSTREAM,
        "input_recurrent_swapped"),
    # steps
    Bug("dU_from_t1", "dU summed from t = 1 (seed 000 with h0 = 0)", planted(dU_skip_t0=True), _s(),
        frozenset({"U"}), "missing_first_step"),
    Bug("cell_from_t1", "dW, dU, db accumulated from t = 1", planted(cell_skip_t0=True), _s(), CELL,
        "missing_first_step"),
    Bug("dV_missing_t0", "dV misses the t = 0 term", planted(dV_skip_t0=True), _s(), frozenset({"V"}),
        "missing_first_step"),
    Bug("cell_skips_last", "dW, dU, db skip t = T−1", planted(cell_skip_last=True), _s(), CELL,
        "missing_last_step"),
    Bug("loop_skips_last", "for t in reversed(range(T − 1))", planted(loop_skips_last=True), _s(), ALL,
        "missing_last_step"),
    Bug("dU_uses_h_t", "dU += dĥ_tᵀ h_t", planted(dU_uses_h_t=True), _s(), frozenset({"U"}), "state_off_by_one"),
    Bug("dV_uses_h_prev", "dV += dŷ_tᵀ h_{t−1}", planted(dV_uses_prev=True), _s(), frozenset({"V"}),
        "state_off_by_one"),
    Bug("no_recurrent_flow", "dh from t+1 never added", planted(recur="zero"), _s(), UPSTREAM, "no_recurrent_flow"),
    Bug("no_recurrent_flow_m2o", "dh from t+1 never added (many-to-one)", planted(recur="zero"),
        _s(mode="many-to-one"), UPSTREAM, "no_recurrent_flow"),
    # derivatives
    Bug("tanh_prime_on_pre", "tanh' = 1 − ĥ² (pre-activation)", planted(dact="on_pre"), _s(), UPSTREAM,
        "activation_derivative_wrong"),
    Bug("sigmoid_prime_at_output", "σ'(h_t) instead of σ'(ĥ_t)", planted(dact="at_output"),
        _s(activation="sigmoid"), UPSTREAM, "activation_derivative_wrong"),
    Bug("tanh_prime_missing", "no f' factor", planted(dact="missing"), _s(), UPSTREAM,
        "activation_derivative_wrong"),
    Bug("tanh_prime_one_step_early", "tanh' = 1 − h_{t−1}²", planted(dact="prev"), _s(truncation="window:3"),
        UPSTREAM, "activation_derivative_wrong"),
    Bug("relu_prime_missing", "no relu' factor", planted(dact="missing"), _s(activation="relu"), UPSTREAM,
        "activation_derivative_wrong"),
    Bug("softmax_ce_no_onehot", "dŷ = softmax(ŷ), the −onehot missing", planted(ce_no_onehot=True),
        _s(loss="cross_entropy", output="softmax"), ALL, "output_derivative_wrong"),
    Bug("tanh_output_derivative_missing", "dŷ = y − Y for a tanh output", planted(no_output_derivative=True),
        _s(output="tanh"), ALL, "output_derivative_wrong"),
    Bug("sigmoid_output_prime_on_logits", "σ' = ŷ(1 − ŷ) for a sigmoid output", planted(g_prime_on_logits=True),
        _s(output="sigmoid", loss="sse", mode="many-to-one"), ALL, "output_derivative_wrong"),
    # what the loss covers
    Bug("last_step_only", "many-to-many spec, only E_{T−1} back-propagated", planted(mode="many-to-one"), _s(),
        ALL, "loss_at_last_step_only"),
    Bug("every_step_m2o", "many-to-one spec, a loss at every step", planted(mode="many-to-many"),
        _s(mode="many-to-one"), ALL, "loss_at_every_step"),
    # truncation
    Bug("window_one_too_long", "window:2 implemented as window:3", planted(truncation=bc.Truncation("window", 3)),
        _s(truncation="window:2"), UPSTREAM, "truncation_window"),
    Bug("window_one_too_short", "window:3 implemented as window:2", planted(truncation=bc.Truncation("window", 2)),
        _s(truncation="window:3"), UPSTREAM, "truncation_window"),
    Bug("chunk_for_tbptt", "TBPTT(3,5) implemented as chunk 3", planted(truncation=bc.Truncation("chunk", 3)),
        _s(truncation="tbptt:3,5"), UPSTREAM - {"h0"}, "truncation_window"),
    Bug("ignores_truncation", "window:2 spec, full BPTT done", planted(truncation=bc.Truncation()),
        _s(truncation="window:2"), UPSTREAM, "truncation_window"),
    Bug("tbptt_k2_short", "tbptt:2,4 implemented as tbptt:2,3", planted(truncation=bc.Truncation("tbptt", 2, 3)),
        _s(truncation="tbptt:2,4"), UPSTREAM, "truncation_window"),
    Bug("m2o_tbptt_k2_long", "many-to-one tbptt:2,3 implemented as tbptt:2,4",
        planted(truncation=bc.Truncation("tbptt", 2, 4)), _s(mode="many-to-one", truncation="tbptt:2,3"),
        UPSTREAM - {"h0"}, "truncation_window"),
    Bug("window_loss_k2_short", "window-loss:2,3 implemented as window-loss:2,2",
        planted(truncation=bc.Truncation("window-loss", 2, 2)), _s(truncation="window-loss:2,3"),
        ALL - {"h0"}, "truncation_window"),
    # batch, zeros
    Bug("db_first_sample", "db from the first sample only", planted(db_first_sample=True), _s(sizes=FIXED),
        frozenset({"b"}), "batch_not_summed"),
    Bug("dc_not_summed", "dc returned per sample (B, O)", planted(dc_not_summed=True), _s(sizes=FIXED),
        frozenset({"c"}), "batch_not_summed"),
    Bug("h0_gradient_missing", "dh0 returned as zeros", planted(h0_zero=True), _s(), frozenset({"h0"}),
        "h0_gradient_missing"),
    Bug("dx_zero", "dx returned as zeros", planted(dx_zero=True), _s(), frozenset({"x"}), "gradient_zero"),
    # clipping, state across calls, float32
    Bug("clip_elementwise", "np.clip(dθ, −0.05, 0.05), undeclared", planted(clip=0.05), _s(sizes=FIXED), PARAMS,
        "clipped"),
    Bug("clip_global_norm", "clip_grad_norm_(θ, 0.1), undeclared", planted(clip_norm=0.1), _s(sizes=FIXED), PARAMS,
        "clipped"),
    Bug("stale_accumulation", "dθ += … into buffers never zeroed between calls", stale_buffers, _s(sizes=FIXED), ALL,
        "stale_accumulation"),
    # real-code patterns (issue 12)
    Bug("states_without_h0", "states kept without h0: dU's t = 0 term uses h[t−1] = h[−1], the last state",
        planted(states_without_h0=True), _s(), frozenset({"U"}), "initial_state_wrong"),
    Bug("tanh_prime_one_minus_h", "tanh' written 1 − h (the square forgotten)", planted(dact="one_minus_h"), _s(),
        UPSTREAM, "activation_derivative_wrong"),
    Bug("window_loss_code_full_spec", "window-loss:2,3 code checked as full BPTT",
        planted(truncation=bc.Truncation("window-loss", 2, 3)), _s(), ALL, "truncation_window"),
    Bug("window_code_full_spec", "per-step window:5 code checked as full BPTT (T = 14–16)",
        planted(truncation=bc.Truncation("window", 5)), _s(sizes=LONG), UPSTREAM, "truncation_window"),
    Bug("chunk_code_full_spec", "chunk:6 code checked as full BPTT (T = 14–16)",
        planted(truncation=bc.Truncation("chunk", 6)), _s(sizes=LONG), UPSTREAM, "truncation_window"),
    Bug("mean_loss_sum_grads", "the reported loss is a mean over time, the gradients are of the sum",
        mean_loss_sum_grads, _s(), frozenset({"loss"}), "loss_gradient_mismatch"),
    Bug("float32_dU_from_t1", "dU summed from t = 1, in float32", planted(dU_skip_t0=True), _s(dtype="float32"),
        frozenset({"U"}), "missing_first_step"),
    Bug("float32_recurrent_transposed", "dh_{t−1} = dĥ_t Uᵀ, in float32", planted(recur="UT"),
        _s(dtype="float32", truncation="chunk:3"), UPSTREAM, "transposed"),
)


# ----------------------------------------------------------------- running it

@dataclass
class BugResult:
    bug: Bug
    statuses: list[str] = field(default_factory=list)
    flavors: list[str] = field(default_factory=list)
    failed: list[frozenset[str]] = field(default_factory=list)       # per failed case
    diagnoses: list[str | None] = field(default_factory=list)        # best code per failed case
    summaries: list[str] = field(default_factory=list)

    @property
    def caught(self) -> bool:
        """Every case of the bug failed (or was an error finding: a gradient of the wrong shape,
        two calls that disagree)."""
        return bool(self.statuses) and all(s in ("failed", "error") for s in self.statuses)

    @property
    def exact(self) -> bool:
        """Every failed case failed on exactly the gradients the bug breaks."""
        return self.caught and all(f == self.bug.breaks for f in self.failed)

    @property
    def diagnosed(self) -> bool:
        return self.caught and all(d == self.bug.code for d in self.diagnoses)

    @property
    def gradients(self) -> frozenset[str]:
        return frozenset().union(*self.failed) if self.failed else frozenset()


def run_bug(bug: Bug, checker: Callable[..., Any] = bc.check_case) -> BugResult:
    out = BugResult(bug)
    backward = bug.make()
    for index in bug.cases:
        case = bc.draw_case(bug.spec, bug.seed, index)
        result = checker(backward, case)
        out.statuses.append(result.status)
        out.flavors.append(case.flavor)
        out.summaries.append(result.summary() if hasattr(result, "summary") else str(result.status))
        if result.status in ("failed", "error"):
            names = getattr(result, "failed_grads", None)
            if result.status == "error":          # the gradients the finding names
                names = (getattr(result, "error", None) or {}).get("keys", names)
            out.failed.append(frozenset(names) if names is not None else frozenset())
            diag = getattr(result, "diagnosis", None) or []
            out.diagnoses.append(diag[0]["code"] if diag else None)
    return out


def run_zoo(checker: Callable[..., Any] = bc.check_case, bugs: Sequence[Bug] = BUGS) -> list[BugResult]:
    """Run every bug against ``checker`` (any callable like ``bptt_check.check_case``)."""
    return [run_bug(b, checker) for b in bugs]


ORDER = ("W", "U", "b", "V", "c", "h0", "x", "loss")


def grads_text(names: frozenset[str]) -> str:
    return ", ".join(n if n == "loss" else f"d{n}" for n in ORDER if n in names) or "—"


def table(results: Sequence[BugResult]) -> str:
    """The zoo as a Markdown table: bug → caught? → gradients → diagnosis."""
    lines = ["| bug | mistake | spec | caught | wrong gradients (expected) | diagnosis (expected) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        b = r.bug
        caught = f"{sum(s in ('failed', 'error') for s in r.statuses)}/{len(r.statuses)}"
        grads = grads_text(r.gradients)
        grads += "" if r.exact else f" ({grads_text(b.breaks)})"
        codes = sorted({d or "none" for d in r.diagnoses}) or ["—"]
        diag = ", ".join(f"`{c}`" for c in codes)
        diag += "" if r.diagnosed else f" (`{b.code}`)"
        lines.append(f"| `{b.name}` | {b.what} | {b.spec} | {caught} | {grads} | {diag} |")
    n = len(results)
    lines.append("")
    lines.append(f"{sum(r.caught for r in results)}/{n} bugs caught on every case, "
                 f"{sum(r.exact for r in results)}/{n} on exactly the gradients they break, "
                 f"{sum(r.diagnosed for r in results)}/{n} with the right diagnosis first.")
    return "\n".join(lines)
