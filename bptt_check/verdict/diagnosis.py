"""Why a gradient is wrong: named hypotheses, each tested by recomputing the reference under it (DESIGN §7).

For a failed case, every hypothesis below builds the gradients a backward with
that one mistake would return (``_variants.variant_grads`` with a dial turned,
or a transform of the reference: scaled, transposed, clipped…) and measures
how much of the discrepancy it explains. For a failed gradient n

    fit_n = 1 − ‖got_n − hyp_n‖ / ‖got_n − ref_n‖      (clipped to [0, 1])

so 1 means the hypothesis reproduces the user's numbers and 0 that it explains
nothing. A hypothesis's fit is the mean over the failed gradients, each
weighted by its relative discrepancy ‖got_n − ref_n‖/‖ref_n‖ (capped at 1): the
share of the discrepancy explained, so a gradient off by rounding does not
outvote one off by 100 %. Two kinds:

- *local* mistakes touch one gradient's own accumulation (a dropped term, a
  factor, a transpose): each failed gradient is judged on its own, the others
  keep the reference;
- *global* mistakes change the flow (f′, the recurrent matrix, the windows):
  the hypothesis predicts every gradient, and predicting a failure of a
  gradient that passed halves its fit.

A hypothesis that fits a free constant to the data (a scale factor that is not
a known convention, a clipping threshold seen on one gradient only) keeps 0.9
of its fit. Findings with fit >= ``MIN_FIT`` are reported, best first; ties are
broken by the order of ``CODES`` (the more specific cause first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.backprop import (
    Knobs,
    never_visiting,
    variant_grads,
)
from ..model.cell import cell_of
from ..model.compare import GradResult, compare
from ..model.functions import loss_scale
from ..model.names import describe
from ..model.spec import Truncation
from ..model.tolerance import Tolerance

if TYPE_CHECKING:
    from ..model.cases import Case
    from ..runner.target import Target

Array = np.ndarray

# stable codes; the order breaks ties (the more specific cause first)
CODES = (
    "stale_accumulation",
    "h0_gradient_missing",
    "c0_gradient_missing",
    "missing_first_step",
    "missing_last_step",
    "state_off_by_one",
    "forget_gate_missing",
    "cell_tanh_derivative_missing",
    "gate_order",
    "gru_z_convention",
    "gru_reset_convention",
    "gru_reset_path_dropped",
    "gru_reset_factor_missing",
    "gru_bias_outside_reset",
    "transposed",
    "input_recurrent_swapped",
    "batch_not_summed",
    "scaled",
    "clipped",
    "lengths_ignored",
    "loss_at_last_step_only",
    "loss_at_every_step",
    "no_recurrent_flow",
    "truncation_window",
    "activation_derivative_wrong",
    "output_derivative_wrong",
    "gradient_zero",
    "precision",
)
MIN_FIT = 0.5
FREE_PARAMETER = 0.9       # a hypothesis that fitted a constant keeps this share of its fit
MAX_FULL_SEARCH_T = 12     # longer cases search only the neighbours of the spec's truncation


@dataclass
class Finding:
    """One hypothesis that fits: a stable code, how well (0..1), and a sentence."""

    code: str
    fit: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "fit": round(float(self.fit), 4), "message": self.message}


def describe_lengths(lengths: Any, T: int) -> str:
    """``lengths (3, 5, 2) of T = 5``: a padded batch in a few words."""
    return f"lengths ({', '.join(str(int(n)) for n in np.asarray(lengths))}) of T = {T}"


def _names(ns: list[str]) -> str:
    return describe(ns)


def _verb(ns: list[str], one: str, many: str) -> str:
    return one if len(ns) == 1 else many


class _Scorer:
    """Measures how much of the user's discrepancy a set of hypothetical gradients explains."""

    def __init__(self, got: Mapping[str, Array], ref: Mapping[str, Array],
                 grads: Mapping[str, GradResult], tol: Tolerance, scale_floor: float,
                 allowance: Mapping[str, float] | None = None) -> None:
        self.got = {n: np.asarray(got[n], dtype=np.float64) for n in grads if got.get(n) is not None}
        self.ref = {n: np.asarray(ref[n], dtype=np.float64) for n in grads}
        self.tol = tol
        self.floor = scale_floor
        self.allowance = dict(allowance or {})    # the rounding the case's dtype is allowed, per gradient
        self.failed: list[str] = []
        self.passing: list[str] = []
        self.denominator: dict[str, float] = {}
        # a gradient off by 1e-6 of its norm weighs less than one off by 100%: the fit is the
        # share of the discrepancy explained, not of the gradients
        self.weight: dict[str, float] = {}
        for n, g in grads.items():
            if g.passed:
                self.passing.append(n)
                continue
            gv = self.got.get(n)
            if gv is None or not np.all(np.isfinite(gv)):
                continue                     # missing or nan: nothing to explain numerically
            rn = float(np.linalg.norm(self.ref[n]))
            if gv.shape == self.ref[n].shape:
                d = float(np.linalg.norm(gv - self.ref[n]))
                weight = min(1.0, d / rn) if rn > 0 else 1.0
            else:
                d = float(np.linalg.norm(gv) + rn)
                weight = 1.0
            if d > 0:
                self.failed.append(n)
                self.denominator[n] = d
                self.weight[n] = max(weight, 1e-300)

    def fit_one(self, n: str, hyp: Array | None) -> float:
        if hyp is None or n not in self.denominator:
            return 0.0
        gv = self.got[n]
        hyp = np.asarray(hyp, dtype=np.float64)
        if hyp.shape != gv.shape:
            return 0.0
        return float(np.clip(1.0 - np.linalg.norm(gv - hyp) / self.denominator[n], 0.0, 1.0))

    def local(self, hyp: Mapping[str, Array]) -> tuple[float, list[str]]:
        """Mean fit over the failed gradients, each judged alone; the gradients it explains."""
        fits = {n: self.fit_one(n, hyp.get(n)) for n in self.failed}
        if not fits:
            return 0.0, []
        return self.mean(fits), [n for n, f in fits.items() if f >= 0.9]

    def mean(self, fits: Mapping[str, float]) -> float:
        """The weighted mean fit over the failed gradients (absent ones count as 0)."""
        total = sum(self.weight[n] for n in self.failed)
        return float(sum(self.weight[n] * fits.get(n, 0.0) for n in self.failed) / total) if total else 0.0

    def joint(self, hyp: Mapping[str, Array]) -> tuple[float, list[str]]:
        """Like ``local``, halved for every passing gradient the hypothesis would have failed."""
        fit, explained = self.local(hyp)
        if fit == 0.0:
            return fit, explained
        for n in self.passing:
            if n not in hyp or n not in self.got:
                continue
            r = compare(n, self.got[n], hyp[n], self.tol, scale_floor=self.floor,
                        ref_error=self.allowance.get(n, 0.0))
            if not r.passed:
                fit *= 0.5
        return fit, explained


def _nice_factors(case: Case) -> list[tuple[float, str]]:
    B, T = case.B, case.T
    spec = case.spec
    out: list[tuple[float, str]] = [
        (2.0, "the ½ of the loss is missing (sse computed where the spec says half_mse)"
         if spec.loss == "half_mse" else "twice the reference"),
        (0.5, "an extra ½ (half_mse computed where the spec says sse)"
         if spec.loss == "sse" else "half the reference"),
        (-1.0, "the sign is flipped (the gradient of −L, or target − output where output − target belongs)"),
    ]
    if B > 1:
        out += [(1.0 / B, f"divided by the batch size B = {B}: a mean over the batch where the spec sums"),
                (float(B), f"B = {B} times the reference: a sum over the batch where the spec takes the mean")]
    if T > 1:
        out += [(1.0 / T, f"divided by T = {T}: a mean over time where the spec sums"),
                (float(T), f"T = {T} times the reference: a sum over time where the spec takes the mean")]
    if B > 1 and T > 1:
        out += [(1.0 / (B * T), f"divided by B·T = {B * T}: a mean over batch and time where the spec sums"),
                (float(B * T), f"B·T = {B * T} times the reference: a sum where the spec takes the mean")]
    out += [(-2.0, "−2 times the reference: sign flipped and the ½ missing"),
            (-0.5, "−½ times the reference: sign flipped and an extra ½")]
    return out


def _snap(k: float, nice: list[tuple[float, str]], rtol: float) -> tuple[float, str] | None:
    for value, why in nice:
        if abs(k - value) <= rtol * abs(value):
            return value, why
    return None


def _describe(tr: Truncation) -> str:
    if tr.kind == "none":
        return "full BPTT (no truncation)"
    if tr.kind == "window":
        return f"a per-step window of {tr.k1}"
    if tr.kind == "chunk":
        return f"chunk {tr.k1}"
    if tr.kind == "tbptt":
        return f"TBPTT({tr.k1},{tr.k2})"
    return f"window-loss({tr.k1},{tr.k2})"


def _truncation_candidates(case: Case) -> list[Truncation]:
    """Neighbouring schedules, nearest to the spec's first."""
    spec, T = case.spec, case.T
    tr = spec.truncation
    top = T + 1
    cands: list[tuple[float, Truncation]] = [(0.5 if tr.kind != "none" else 99, Truncation())]

    def dist(alt: Truncation) -> float:
        d = abs(alt.k1 - tr.k1) + abs(alt.k2 - tr.k2)
        return d if alt.kind == tr.kind else 1 + d + (0.5 if alt.kind == "tbptt" else 0.0)

    for k in range(1, top):
        cands.append((0.0, Truncation("window", k)))
        cands.append((0.0, Truncation("chunk", k)))
        for k2 in range(k, top):
            cands.append((0.0, Truncation("tbptt", k, k2)))
        if tr.kind == "window-loss":
            for k2 in range(1, top):
                cands.append((0.0, Truncation("window-loss", k, k2)))
    scored = [(dist(t) if d == 0.0 else d, i, t) for i, (d, t) in enumerate(cands)]
    scored.sort(key=lambda s: (s[0], s[1]))
    out = [t for d, _, t in scored if t != tr]
    if T > MAX_FULL_SEARCH_T:
        out = [t for t in out if dist(t) <= 3 or t.kind == "none"]
    return out


class _Diagnosis:
    def __init__(self, case: Case, scorer: _Scorer, target: Target | None,
                 repeat: Mapping[str, Any] | None = None) -> None:
        self.case = case
        self.s = scorer
        self.target = target
        self.repeat = repeat
        self.found: dict[str, Finding] = {}
        self._cache: dict[Knobs, dict[str, Array]] = {}

    def variant(self, k: Knobs) -> dict[str, Array]:
        """The gradients a backward with the mistake ``k`` returns, as the backward's layout returns them
        (an adapter's shared h0 summed, a second bias, a declared clip applied to the variant itself)."""
        if k not in self._cache:
            grads = variant_grads(self.case, k)
            self._cache[k] = self.target.lower(self.case, grads) if self.target is not None and grads else grads
        return self._cache[k]

    def add(self, code: str, fit: float, message: str) -> None:
        if fit <= 0.0:
            return
        old = self.found.get(code)
        if old is None or fit > old.fit:
            self.found[code] = Finding(code, float(fit), message)

    # ------------------------------------------------------------- local mistakes

    def scaled(self) -> None:
        s = self.s
        nice = _nice_factors(self.case)
        snap_rtol = 1e-3 if self.case.spec.dtype == "float32" else 1e-5
        hyp: dict[str, Array] = {}
        factor: dict[str, tuple[float, str | None]] = {}
        for n in s.failed:
            r, g = s.ref[n], s.got[n]
            if g.shape != r.shape:
                continue
            rr = float(np.vdot(r, r))
            if rr == 0.0:
                continue
            k = float(np.vdot(g, r)) / rr
            if abs(k) < 1e-12:
                continue
            snapped = _snap(k, nice, snap_rtol)
            if snapped is not None:
                k = snapped[0]
            hyp[n] = k * r
            factor[n] = (k, snapped[1] if snapped else None)
        if not hyp:
            return
        fit, explained = s.local(hyp)
        if not explained:
            return
        if any(factor[n][1] is None for n in explained):
            fit *= FREE_PARAMETER
        groups: dict[float, list[str]] = {}
        for n in explained:
            groups.setdefault(round(factor[n][0], 12), []).append(n)
        parts = []
        for k, ns in groups.items():
            why = factor[ns[0]][1]
            parts.append(f"{_names(ns)} {'are' if len(ns) > 1 else 'is'} {k:.6g}× the reference"
                         + (f": {why}" if why else " (no convention I know gives this factor)"))
        self.add("scaled", fit, "; ".join(parts))

    def transposed(self) -> None:
        hyp = {n: self.s.ref[n].T for n in ("W", "U", "V") if n in self.s.ref}
        fit, explained = self.s.local(hyp)
        if explained:
            self.add("transposed", fit, f"{_names(explained)} returned transposed "
                     "(the gradient of a (out, in) matrix laid out as (in, out))")

    def swapped_returns(self) -> None:
        ref = self.s.ref
        if "W" in ref and "U" in ref:
            fit, explained = self.s.local({"W": ref["U"], "U": ref["W"]})
            if explained:
                self.add("input_recurrent_swapped", fit,
                         "dW and dU are exchanged: the input matrix's gradient was returned as the "
                         "recurrent one's and vice versa (seed 001 calls the input matrix U)")

    def dropped_steps(self) -> None:
        T = self.case.T
        first = self.variant(Knobs(skip_steps=frozenset({0})))
        fit, explained = self.s.local(first)
        if explained:
            self.add("missing_first_step", fit,
                     f"{_names(explained)} {_verb(explained, 'lacks', 'lack')} the t = 0 term "
                     "(the sum over steps starts at t = 1); with h0 ≠ 0 that term is not zero")
        starts = frozenset(w.start for w in self.case.windows)
        if starts != {0}:
            v = self.variant(Knobs(skip_steps=starts))
            fit, explained = self.s.local(v)
            if explained:
                self.add("missing_first_step", fit,
                         f"{_names(explained)} {_verb(explained, 'lacks', 'lack')} the term of each "
                         f"window's first step (steps {sorted(starts)})")
        if T > 1:
            last = self.variant(Knobs(skip_steps=frozenset({T - 1})))
            fit, explained = self.s.local(last)
            if explained:
                self.add("missing_last_step", fit,
                         f"{_names(explained)} {_verb(explained, 'lacks', 'lack')} the t = T−1 = {T - 1} term "
                         "(the loop over steps stops one early)")
            never = never_visiting(self.case.windows, T - 1)
            v = self.variant(Knobs(windows=never))
            fit, explained = self.s.joint(v)
            if explained:
                self.add("missing_last_step", fit,
                         f"the backward never visits the last step t = {T - 1}: its loss and its "
                         f"step are left out ({_names(explained)} wrong)")

    def state_shift(self) -> None:
        v = self.variant(Knobs(state_shift=True))
        fit, explained = self.s.local(v)
        if explained:
            what = []
            if "U" in explained:
                what.append("dU uses h_t where h_{t−1} belongs (dU += dĥ_tᵀ h_t)")
            if "V" in explained:
                what.append("dV uses h_{t−1} where h_t belongs (dV += dŷ_tᵀ h_{t−1})")
            self.add("state_off_by_one", fit, "; ".join(what) or
                     f"{_names(explained)} pair each step with the neighbouring state")

    def batch(self) -> None:
        v = self.variant(Knobs(per_sample=True))
        best: dict[str, tuple[float, str]] = {}
        for n in self.s.failed:
            ps = v.get(f"{n}@b")
            if ps is None:
                continue
            options = [(ps, "one row per sample, not summed")]
            if self.case.B > 1:
                options += [(ps[0], "only the first sample"), (ps[-1], "only the last sample")]
            for hyp, how in options:
                f = self.s.fit_one(n, hyp)
                if f > best.get(n, (0.0, ""))[0]:
                    best[n] = (f, how)
        if not best or not self.s.failed:
            return
        fit = self.s.mean({n: f for n, (f, _) in best.items()})
        explained = [n for n, (f, _) in best.items() if f >= 0.9]
        if explained:
            hows = sorted({best[n][1] for n in explained})
            self.add("batch_not_summed", fit,
                     f"{_names(explained)} not summed over the batch ({'; '.join(hows)}, B = {self.case.B})")

    def zeros(self) -> None:
        s = self.s
        for name, what in (("h0", "the initial state (dh_{−1} = dĥ_0 U)"),
                           ("c0", "the initial cell state (dc_{−1} = dc_0 ⊙ f_0)")):
            fit = s.fit_one(name, np.zeros_like(s.ref[name])) if name in s.failed else 0.0
            if fit >= 0.9:
                self.add(f"{name}_gradient_missing", s.mean({name: fit}),
                         f"d{name} is zero: the gradient flowing into {what} is never returned"
                         + ("" if len(s.failed) == 1 else f"; other gradients are wrong too ({_names(s.failed)})"))
        others = {n: np.zeros_like(s.ref[n]) for n in s.failed if n not in ("h0", "c0")}
        fit, explained = s.local(others)
        if explained:
            self.add("gradient_zero", fit, f"{_names(explained)} {'are' if len(explained) > 1 else 'is'} "
                     "all zeros: never computed, or overwritten")

    def clipped(self) -> None:
        s = self.s
        if not s.failed:
            return
        params = [n for n in s.ref if n != "x"]
        # element-wise: np.clip(g, -c, c) on every parameter gradient
        c = max(float(np.max(np.abs(s.got[n]))) for n in s.failed)
        if c > 0:
            hyp = {n: np.clip(s.ref[n], -c, c) for n in s.ref}
            fit, explained = s.local(hyp)
            if explained:
                self.add("clipped", fit, f"{_names(explained)} clipped element-wise at ±{c:.4g} "
                         "(undeclared gradient clipping; declare it, or check without it)")
        # global norm over the parameter gradients: every one scaled by min(1, c/‖g‖)
        total = float(np.sqrt(sum(np.vdot(s.ref[n], s.ref[n]) for n in params)))
        ks = []
        for n in s.failed:
            if n in params and s.got[n].shape == s.ref[n].shape:
                rr = float(np.vdot(s.ref[n], s.ref[n]))
                if rr > 0:
                    ks.append(float(np.vdot(s.got[n], s.ref[n])) / rr)
        if ks and total > 0:
            k = float(np.median(ks))
            if 0 < k < 1:
                hyp = {n: k * s.ref[n] for n in params}
                fit, explained = s.joint(hyp)
                if explained:
                    self.add("clipped", fit, f"every parameter gradient is scaled by {k:.4g}: clipped to a "
                             f"global norm of {k * total:.4g} (the true norm is {total:.4g})")
        # per tensor: each gradient whose norm exceeds c rescaled to norm c
        norms = [float(np.linalg.norm(s.got[n])) for n in s.failed if n in params]
        if norms:
            c = float(np.median(norms))
            hyp = {n: s.ref[n] * min(1.0, c / max(float(np.linalg.norm(s.ref[n])), 1e-300)) for n in params}
            fit, explained = s.joint(hyp)
            if explained:
                if len(explained) < 2:
                    fit *= FREE_PARAMETER
                self.add("clipped", fit, f"{_names(explained)} rescaled to norm {c:.4g}: clipped per tensor")

    # ------------------------------------------------------------- flow mistakes

    def flow(self) -> None:
        case, s = self.case, self.s
        spec = case.spec
        cell = cell_of(spec)
        for knob, code, msg in cell.mistakes():       # the mistakes a backward of this very cell makes
            v = self.variant(Knobs(cell=knob))
            if v:
                fit, _ = s.joint(v)
                self.add(code, fit, msg)
        for recur, code, msg in (
            ("UT", "transposed", "the recurrent flow uses Uᵀ where U belongs: dh_{t−1} = dĥ_t Uᵀ instead of dĥ_t U"),
            ("W", "input_recurrent_swapped", "the recurrent flow uses the input matrix W where U belongs: "
                                             "dh_{t−1} = dĥ_t W"),
            ("zero", "no_recurrent_flow", "no gradient flows back through the recurrence: dh from step t+1 is "
                                          "never added to step t's (and h0 gets none)"),
            ("zero_inside", "no_recurrent_flow", "no gradient flows back through the recurrence: dh from step t+1 "
                                                 "is never added to step t's"),
        ):
            v = self.variant(Knobs(recur=recur))
            if v:
                fit, explained = s.joint(v)
                self.add(code, fit, msg)
        v = self.variant(Knobs(swap_input_recurrent=True))
        if v:
            fit, _ = s.joint(v)
            self.add("input_recurrent_swapped", fit,
                     "the backward's model exchanges W and U: it treats W as the recurrent matrix and U as "
                     "the input one (the seed 001 naming)")
        act = spec.activation
        form = {"tanh": "1 − h²", "sigmoid": "h(1 − h)", "relu": "[h > 0]"}.get(act, "1")
        if act != "identity" and cell.name == "rnn":
            for dact, msg in (
                ("formula_on_pre", f"{act}′ written as {form} but fed the pre-activation ĥ_t instead of h_t"),
                ("at_output", f"{act}′ evaluated at the output h_t = {act}(ĥ_t) instead of at ĥ_t"),
                ("missing", f"the {act}′ factor is missing: dĥ_t = dh_t"),
                ("previous_state", f"{act}′ taken one step early ({form} with h_{{t−1}})"),
                ("next_state", f"{act}′ taken one step late ({form} with h_{{t+1}})"),
            ):
                fit, _ = s.joint(self.variant(Knobs(dact=dact)))
                self.add("activation_derivative_wrong", fit, msg)
        outs = []
        if spec.loss == "cross_entropy":
            outs.append(("ce_no_onehot", "the softmax cross-entropy gradient lacks the −onehot(target) term: "
                                         "dŷ = softmax(ŷ) instead of softmax(ŷ) − onehot"))
        elif spec.output != "identity":
            outs.append(("no_output_derivative", f"the output function's derivative ({spec.output}′) is missing: "
                                                 "dŷ = y − Y"))
            if spec.output in ("tanh", "sigmoid"):
                outs.append(("formula_on_logits", f"{spec.output}′ fed the logits ŷ instead of the output y"))
        for dout, msg in outs:
            fit, _ = s.joint(self.variant(Knobs(dout=dout)))
            self.add("output_derivative_wrong", fit, msg)

    def loss_steps(self) -> None:
        case, s = self.case, self.s
        spec, T, B = case.spec, case.T, case.B
        if T < 2:
            return
        if spec.mode == "many-to-many":
            for sc in {loss_scale(spec, T, B), loss_scale(spec.replace(mode="many-to-one"), T, B)}:
                fit, _ = s.joint(self.variant(Knobs(mode="many-to-one", scale=sc)))
                self.add("loss_at_last_step_only", fit,
                         "only the loss at the last step is back-propagated (many-to-one), but the spec "
                         "is many-to-many: the output-layer gradient is missing at the intermediate steps")
        else:
            base = loss_scale(spec, T, B)
            for sc in {base, base / T}:
                fit, _ = s.joint(self.variant(Knobs(mode="many-to-many", scale=sc)))
                self.add("loss_at_every_step", fit,
                         "a loss is back-propagated at every step (many-to-many, the target reused), but the "
                         "spec is many-to-one: only the last step has a loss")

    def lengths(self) -> None:
        """A padded batch treated as full-length sequences: the many-to-one loss read at T − 1 (in the
        padding), or the many-to-many losses of padded steps counted."""
        case = self.case
        if case.lengths is None or int(np.min(case.lengths)) >= case.T:
            return
        fit, _ = self.s.joint(self.variant(Knobs(ignore_lengths=True)))
        if case.spec.mode == "many-to-many" and case.spec.reduction == "mean":
            # the padded steps' losses counted, divided by the number of real ones (a token mean)
            token = 1.0 / float(np.sum(case.lengths))
            fit = max(fit, self.s.joint(self.variant(Knobs(ignore_lengths=True, scale=token)))[0])
        short = describe_lengths(case.lengths, case.T)
        if case.spec.mode == "many-to-one":
            msg = (f"the loss of every sequence is read at the last step T − 1 = {case.T - 1}, in the padding of "
                   f"the shorter sequences ({short}): each sequence's loss belongs at its own last step ℓ − 1")
        else:
            msg = (f"losses at padded steps are counted ({short}): sequence b has losses only at t < ℓ_b "
                   "(mask the loss, and its gradient, with the lengths)")
        self.add("lengths_ignored", fit, msg)

    def truncation(self) -> None:
        case, s = self.case, self.s
        spec, T = case.spec, case.T
        own = tuple(case.windows)
        seen = {own}
        for alt in _truncation_candidates(case):
            try:
                windows = tuple(spec.replace(truncation=alt).windows(T, case.lengths))
            except Exception:  # noqa: BLE001 - a candidate the spec rejects is simply skipped
                continue
            if windows in seen:
                continue
            seen.add(windows)
            fit, _ = s.joint(self.variant(Knobs(windows=windows)))
            if fit > 0:
                self.add("truncation_window", fit,
                         f"looks like {_describe(alt)}, spec is {_describe(spec.truncation)} "
                         f"(--truncation {alt})")
            if fit > 0.9999:
                break

    def precision(self) -> None:
        if self.case.spec.dtype != "float64":
            return
        for how, msg in (("h", "the states h_t are stored in float32"),
                         ("h+hhat", "the states h_t and pre-activations ĥ_t are stored in float32")):
            fit, _ = self.s.joint(self.variant(Knobs(states32=how)))
            self.add("precision", fit, f"matches the reference computed as if {msg}: a precision loss, "
                                       "not a wrong formula")

    def stale(self) -> None:
        """A second call's gradients (the run-twice check's, or a new call): gradients that grow by
        exactly the true one, or double, were not zeroed between calls."""
        again_grads = self.repeat
        if again_grads is None:
            if self.target is None:
                return
            again_grads = self.target.call(self.case).grads
        if again_grads is None:
            return
        s = self.s
        diffs, fits_ref, fits_first = [], [], []
        for n in s.ref:
            a, b = again_grads.get(n), s.got.get(n)
            if a is None or b is None or np.shape(a) != b.shape or b.shape != s.ref[n].shape:
                continue
            d = np.asarray(a, dtype=np.float64) - b
            diffs.append(float(np.linalg.norm(d)))
            rn = float(np.linalg.norm(s.ref[n]))
            bn = float(np.linalg.norm(b))
            if rn > 0:
                fits_ref.append(1.0 - float(np.linalg.norm(d - s.ref[n])) / rn)
            if bn > 0:
                fits_first.append(1.0 - float(np.linalg.norm(d - b)) / bn)
        if not any(diffs):
            return
        for fits, msg in ((fits_ref, "grew by exactly the true gradient"),
                          (fits_first, "doubled")):
            if fits:
                fit = float(np.clip(min(fits), 0.0, 1.0))
                self.add("stale_accumulation", fit,
                         f"a second call on the same inputs returned gradients that {msg}: the backward "
                         "accumulates into buffers that are not zeroed between calls")

    def run(self) -> list[Finding]:
        if not self.s.failed:
            return []
        for step in (self.stale, self.zeros, self.dropped_steps, self.state_shift, self.transposed,
                     self.swapped_returns, self.batch, self.scaled, self.clipped, self.lengths, self.loss_steps,
                     self.flow, self.truncation, self.precision):
            step()
        order = {c: i for i, c in enumerate(CODES)}
        kept = [f for f in self.found.values() if f.fit >= MIN_FIT]
        kept.sort(key=lambda f: (-round(f.fit, 3), order.get(f.code, len(order))))
        return kept


def diagnose(case: Case, got: Mapping[str, Any], ref: Mapping[str, Array], grads: Mapping[str, GradResult],
             tol: Tolerance, *, scale_floor: float = 0.0, allowance: Mapping[str, float] | None = None,
             target: Target | None = None, repeat: Mapping[str, Any] | None = None) -> list[Finding]:
    """The named hypotheses that explain a failed case, best first (empty when none fits).

    ``got``: the user's gradients; ``ref``: the reference; ``grads``: the comparison per
    gradient (which failed); ``tol``, ``scale_floor`` and ``allowance`` (absolute rounding
    allowed per gradient): how the case was judged. ``repeat``: the gradients of a second call on
    the same inputs (the run-twice check makes one); without it, with ``target``, the backward
    is called once more to test for stale accumulation.
    """
    scorer = _Scorer(got, ref, grads, tol, scale_floor, allowance)
    return _Diagnosis(case, scorer, target, repeat).run()


def stale_diagnosis(case: Case, got: Mapping[str, Any], ref: Mapping[str, Array], grads: Mapping[str, GradResult],
                    tol: Tolerance, repeat: Mapping[str, Any]) -> list[Finding]:
    """Only the stale-accumulation hypothesis, for a backward whose two calls disagreed."""
    d = _Diagnosis(case, _Scorer(got, ref, grads, tol, 0.0, None), None, repeat)
    d.stale()
    return sorted((f for f in d.found.values() if f.fit >= MIN_FIT), key=lambda f: -f.fit)


__all__ = ["CODES", "MIN_FIT", "Finding", "diagnose", "stale_diagnosis"]
