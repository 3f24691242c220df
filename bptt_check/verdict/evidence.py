"""Evidence for a failed case: where it is wrong, since which time step, and how to replay it.

Everything here runs only for a case that already failed, so a passing run pays nothing.
Two tiers:

- cheap (every failed case): per-element log relative error maps of every gradient (pooled
  to at most ``HEATMAP_SIDE`` per axis), the per-time-step error of dL/dx when the backward
  returned it (and the steps where it exceeds tolerance), and a reproducer (Python snippet
  and CLI line that re-run only this case);
- full (the first ``EVIDENCE_LIMIT`` failed cases of a run): the same case re-run on the
  prefixes of its sequence (``Case.prefix``) against the reference oracle, giving the
  shortest failing sequence length and, when dx was returned, the error of each (loss step,
  step) cell observed by growing the sequence one step at a time; and the temporal
  attribution of the recurrent matrix's error to the reference's per-step contributions.

The temporal map of the recurrent matrix U. The reference dU is a sum of cells
C[t, s] = δ_sᵀ h_{s-1}: the gradient of the loss at step t reaching step s (s <= t), counted
once per window that holds t and reaches s. The user's dU is one matrix, so its error
R = dU_yours - dU_ref cannot be split into cells by observation. It is compared with a few
temporal "atoms" made of reference cells — the whole of step s (column s), the cells one or
two steps before each window's start (a window reaching too far), the cells at each window's
start (a window one step short), all cells alike (a constant factor: not a temporal error) —
and the atom that explains R best (R ≈ coef · atom) is reported with the share of ‖R‖² it
explains. A dropped t = 0 term shows as column 0 with coef −1, explaining 100 %.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..model.backprop import backprop
from ..model.cases import Case
from ..model.cell import summed
from ..model.forward import forward
from ..model.functions import loss_scale
from ..model.reproducer import reproducer
from ..model.spec import Window
from ..model.tolerance import Tolerance, allowed, floor_of, scale_of
from ..oracles import get_oracle
from ..runner.adapters import CANONICAL_NOTATION, Notation
from ..runner.target import Target
from .diagnosis import moved_input

EVIDENCE_LIMIT = 25      # failed cases per run that get the full (prefix) evidence
HEATMAP_SIDE = 48        # error maps are max-pooled to at most this many cells per axis
MAX_PREFIXES = 48        # prefix lengths evaluated at most (more: sampled, then bisected)
ATTRIBUTION_MIN = 0.98   # share of ‖R‖² an atom must explain to be reported
MAX_ATTRIBUTION_WORK = 2e9


# ----------------------------------------------------------------- public entry

def collect(target: Target, case: Case, result: Any, got: Mapping[str, np.ndarray],
            ref_grads: Mapping[str, np.ndarray], ref_error: Mapping[str, Any], tol: Tolerance, *,
            oracles: Sequence[str], full: bool = True, run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The evidence dict attached to a failed :class:`CaseResult` (``result.evidence``); ``run``: how the
    case was checked (``fast``, ``directions``), for the reproducer."""
    ev: dict[str, Any] = {"tier": "full" if full else "cheap"}
    ev["heatmaps"] = {name: heatmap(got[name], ref_grads[name], g.atol)
                      for name, g in result.grads.items()
                      if g.problem is None and name in got}
    ev["steps"] = None
    gx = result.grads.get("x")
    if gx is not None and gx.problem is None and "x" in got:
        ev["steps"] = steps_from_dx(got["x"], ref_grads["x"], gx.atol, tol.rtol, ref_error.get("x", 0.0))
    ev["prefix"] = None
    ev["temporal"] = None
    if full:
        ev["prefix"] = prefix_runs(target, case, result, got, ref_grads, ref_error, oracles=oracles, tol=tol)
        ev["temporal"] = temporal_map(case, got, ref_grads, ev["prefix"], grad=_notation(target).grad("U"))
    else:
        ev["skipped"] = SKIPPED
    return _finish(ev, reproducer(case.spec, case.seed, case.index, result.target, oracles, **(run or {})),
                   getattr(result, "diagnosis", None) or [])


SKIPPED = (f"prefix search and temporal map are computed for the first {EVIDENCE_LIMIT} "
           "failed cases of a run; re-run this case alone to get them")


def _finish(ev: dict[str, Any], rep: dict[str, Any], diagnosis: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    ev["first_bad_step"], ev["first_bad_step_from"] = _headline_step(ev, diagnosis)
    ev["shortest_failing_length"] = ev["prefix"]["shortest_failing_length"] if ev["prefix"] else None
    ev["reproducer"] = rep
    return ev


def _notation(target: Target) -> Notation:
    """How the backward names things (its layout's names), for the evidence's sentences."""
    return Notation(target.adapted.layout) if target.adapted is not None else CANONICAL_NOTATION


def cheapen(ev: dict[str, Any] | None, diagnosis: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any] | None:
    """The cheap evidence of a case that got the full one: what :func:`collect` gives with ``full=False``
    (the prefix search and the temporal map dropped, ``skipped`` saying so). Joining the shards of a sweep
    uses it: each shard gives the full evidence to its own first failed cases, the joined report to the
    first of the whole sweep, as one run would."""
    if not ev or ev.get("tier") != "full":
        return ev
    out = {"tier": "cheap", "heatmaps": ev["heatmaps"], "steps": ev["steps"], "prefix": None, "temporal": None,
           "skipped": SKIPPED}
    return _finish(out, ev["reproducer"], diagnosis)


def _headline_step(ev: dict[str, Any], diagnosis: Sequence[Mapping[str, Any]] = ()) -> tuple[int | None, str | None]:
    tm = ev.get("temporal") or {}
    att = tm.get("attribution")
    if att and att.get("kind") in ("step", "state"):
        return int(att["at"]), "U"
    steps = ev.get("steps")
    if steps and steps["bad_steps"]:
        return int(steps["first_bad_step"]), "x"
    if diagnosis and diagnosis[0].get("step") is not None:       # the best named cause sits at a step
        return int(diagnosis[0]["step"]), "diagnosis"
    return None, None


# ----------------------------------------------------------------- element maps

def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    if a.ndim == 2:
        return a
    return a.reshape(a.shape[0], -1)       # x (T, B, I): one row per time step


def _pool_max(a: np.ndarray, side: int) -> np.ndarray:
    rows = -(-a.shape[0] // side) if a.shape[0] > side else 1
    cols = -(-a.shape[1] // side) if a.shape[1] > side else 1
    if rows == 1 and cols == 1:
        return a
    pr, pc = -a.shape[0] % rows, -a.shape[1] % cols
    p = np.pad(a, ((0, pr), (0, pc)), constant_values=-np.inf)
    return p.reshape(p.shape[0] // rows, rows, p.shape[1] // cols, cols).max(axis=(1, 3))


def heatmap(got: np.ndarray, ref: np.ndarray, atol: float) -> dict[str, Any]:
    """log10 of the element-wise relative error, as a 2-D grid (x: one row per step)."""
    g, r = _as_2d(got), _as_2d(ref)
    rel = np.abs(g - r) / np.maximum(np.abs(r), max(atol, np.finfo(np.float64).tiny))
    logrel = np.log10(np.maximum(rel, 1e-17))
    pooled = _pool_max(logrel, HEATMAP_SIDE)
    return {
        "shape": list(np.shape(ref)),
        "pooled": [int(-(-g.shape[0] // pooled.shape[0])), int(-(-g.shape[1] // pooled.shape[1]))],
        "log10_rel": np.round(np.clip(pooled, -17.0, 6.0), 2).tolist(),
    }


def steps_from_dx(got_x: np.ndarray, ref_x: np.ndarray, atol: float, rtol: float,
                  ref_error: Any = 0.0) -> dict[str, Any]:
    """Per-time-step error of dL/dx: relative to dx's scale, and in tolerance units (> 1: wrong)."""
    g = np.asarray(got_x, dtype=np.float64)
    r = np.asarray(ref_x, dtype=np.float64)
    diff = np.abs(g - r)
    tol = Tolerance(rtol=rtol, atol=1.0)       # atol given absolute: scale 1 below
    over = (diff / allowed(r, tol, atol, ref_error)).reshape(r.shape[0], -1).max(axis=1, initial=0.0)
    scale = max(float(np.max(np.abs(r), initial=0.0)), atol, np.finfo(np.float64).tiny)
    rel = diff.reshape(r.shape[0], -1).max(axis=1, initial=0.0) / scale
    bad = [int(t) for t in np.flatnonzero(over > 1.0)]
    return {
        "source": "x",
        "rel_error": [float(v) for v in rel],
        "tol_ratio": [float(v) for v in over],
        "bad_steps": bad,
        "first_bad_step": bad[0] if bad else None,
        "last_bad_step": bad[-1] if bad else None,
    }


# ----------------------------------------------------------------- prefixes

def _prefix_lengths(T: int) -> list[int]:
    if T - 1 <= MAX_PREFIXES:
        return list(range(1, T))
    return sorted({int(round(v)) for v in np.linspace(1, T - 1, MAX_PREFIXES)})


def prefix_runs(target: Target, case: Case, result: Any, got: Mapping[str, np.ndarray],
                ref_grads: Mapping[str, np.ndarray], ref_error: Mapping[str, Any], *, oracles: Sequence[str],
                tol: Tolerance) -> dict[str, Any]:
    """Re-run the case on prefixes of its sequence (through the same Target: the same layout, the same
    limit per call); the shortest length that fails."""
    names = list(result.grads)          # a missing / misshapen / non-finite gradient fails every prefix too
    rows: dict[int, dict[str, Any]] = {}
    arrays: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None] = {}

    def run(T: int) -> dict[str, Any]:
        if T in rows:
            return rows[T]
        if T == case.T:
            row = _judge(got, ref_grads, ref_error, names, tol)
            arrays[T] = (dict(got), dict(ref_grads))
        else:
            row, arrays[T] = _run_prefix(target, case.prefix(T), names, oracles, tol)
        row["length"] = T
        rows[T] = row
        return row

    lengths = _prefix_lengths(case.T)
    for T in lengths:
        run(T)
    run(case.T)
    failing = [T for T in sorted(rows) if rows[T]["failed"]]
    shortest = failing[0] if failing else None
    if shortest is not None and shortest > 1 and (shortest - 1) not in rows:
        # sampled lengths: bisect between the last passing sample and the first failing one
        lo = max([T for T in rows if T < shortest and not rows[T]["failed"]], default=0)
        hi = shortest
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(mid)["failed"]:
                hi = mid
            else:
                lo = mid
        shortest = hi
    out = {
        "oracle": oracles[0] if oracles else "autograd",
        "lengths": sorted(rows),
        "runs": [rows[T] for T in sorted(rows)],
        "shortest_failing_length": shortest,
        "T": case.T,
    }
    out["_arrays"] = arrays     # for the temporal map; removed before the report is written
    return out


def _judge(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], error: Mapping[str, Any],
           names: Iterable[str], tol: Tolerance) -> dict[str, Any]:
    """Which gradients of one run are wrong, and by how many tolerances (the worst element)."""
    floor = floor_of(ref.values())
    over: dict[str, float] = {}
    wrong = []
    for name in names:
        if name not in ref:
            continue
        r = np.asarray(ref[name], dtype=np.float64)
        g = np.asarray(got[name], dtype=np.float64) if name in got else None
        if g is None or g.shape != r.shape or not np.isfinite(g).all():
            over[name] = float("inf")
            wrong.append(name)
            continue
        limit = allowed(r, tol, scale_of(r, floor), error.get(name, 0.0))
        ratio = float(np.max(np.abs(g - r) / limit, initial=0.0))
        over[name] = ratio
        if ratio > 1.0:
            wrong.append(name)
    return {"failed": bool(wrong), "wrong": wrong,
            "tol_ratio": {k: (v if np.isfinite(v) else 1e308) for k, v in over.items()}}


def _run_prefix(target: Target, pc: Case, names: Sequence[str], oracles: Sequence[str], tol: Tolerance
                ) -> tuple[dict[str, Any], tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None]:
    outcome = target.call(pc)
    if outcome.grads is None:
        err = outcome.error or {"kind": "error", "message": "no gradients"}
        return {"failed": False, "wrong": [], "tol_ratio": {},
                "error": f"{err['kind']}: {err['message'].splitlines()[-1]}"}, None
    res = get_oracle(oracles[0] if oracles else "autograd").gradients(pc)
    ref = target.lower(pc, res.grads)
    error = target.lower(pc, res.error, "error")
    return _judge(outcome.grads, ref, error, names, tol), (outcome.grads, ref)


# ----------------------------------------------------------------- the temporal map

def temporal_map(case: Case, got: Mapping[str, np.ndarray], ref_grads: Mapping[str, np.ndarray],
                 prefix: dict[str, Any] | None, *, grad: str = "dU") -> dict[str, Any]:
    """The (loss step t, step s) picture of where the recurrent matrix's error comes from (``grad``: the
    recurrent matrix's gradient as the backward names it)."""
    T = case.T
    windows = case.windows
    mask = np.zeros((T, T), dtype=np.int64)
    for w in windows:
        for t in w.losses:
            mask[t, w.start:t + 1] += 1
    out: dict[str, Any] = {
        "matrix": "U",
        "T": T,
        "windows": [{"start": w.start, "losses": list(w.losses)} for w in windows],
        "mask": mask.tolist(),
        "loss_steps": sorted({t for w in windows for t in w.losses}),
        # a padded batch: steps at or after a sequence's length are its padding
        "sequence_lengths": None if case.lengths is None else [int(n) for n in case.lengths],
    }
    cells = _u_cells(case, mask)
    if cells is not None:
        norms, atoms, total = cells
        # relative to ‖dU_ref‖ (or to the largest cell, when the windows cancel out or hold no loss)
        scale = float(np.linalg.norm(ref_grads["U"])) or float(norms.max(initial=0.0)) or 1.0
        out["contribution"] = _round(norms / scale)
        consistent = np.allclose(total, ref_grads["U"], rtol=1e-6,
                                 atol=1e-9 * max(1.0, float(np.max(np.abs(ref_grads["U"])))))
        out["attribution"] = None
        if (consistent and "U" in got and np.shape(got["U"]) == np.shape(ref_grads["U"])
                and np.isfinite(np.asarray(got["U"], dtype=np.float64)).all()):
            R = np.asarray(got["U"], dtype=np.float64) - ref_grads["U"]
            att = attribute(R, atoms, grad=grad)
            if att is not None:
                out["attribution"] = att
                cellmask = atoms[att["key"]][1]
                inferred = abs(att["coef"]) * norms * cellmask / scale
                out["inferred"] = _round(inferred)
    out["observed_x"] = None
    out["rows"] = None
    if prefix is not None:
        out["rows"] = {"lengths": prefix["lengths"],
                       "tol_ratio_U": [r["tol_ratio"].get("U") for r in prefix["runs"]]}
        obs = _observed_dx_cells(case, prefix, got, ref_grads)
        if obs is not None:
            out["observed_x"] = _round(obs)
    return out


def _round(a: np.ndarray) -> list[list[float]]:
    return [[float(f"{v:.3g}") for v in row] for row in np.asarray(a, dtype=np.float64)]


def _u_cells(case: Case, mask: np.ndarray) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]],
                                                   np.ndarray] | None:
    """Per-cell norms ‖C[t, s]‖ of the reference dU, the temporal atoms, and Σ mask·C (= dU).

    C[t, s] is step s's contribution to dU from the loss at step t alone, read off the one reverse
    recursion (``backprop``) run from t back to step 0.
    """
    spec = case.spec
    params = {k: np.asarray(v, dtype=np.float64) for k, v in case.params.items()}
    x = np.asarray(case.x, dtype=np.float64)
    y = case.y if spec.loss == "cross_entropy" else np.asarray(case.y, dtype=np.float64)
    T, B, _ = x.shape
    Hout, Hin = params["U"].shape
    if T * T * B * Hout * Hin > MAX_ATTRIBUTION_WORK:
        return None
    tr = forward(params, x, spec)
    norms = np.zeros((T, T))
    total = np.zeros((Hout, Hin))
    columns = np.zeros((T, Hout, Hin))
    beyond1 = np.zeros((Hout, Hin))
    beyond2 = np.zeros((Hout, Hin))
    at_start = np.zeros((Hout, Hin))
    m_beyond1 = np.zeros((T, T))
    m_beyond2 = np.zeros((T, T))
    m_start = np.zeros((T, T))
    wrapped = np.zeros((Hout, Hin))
    starts: dict[int, list[int]] = {}
    for w in case.windows:
        for t in w.losses:
            starts.setdefault(t, []).append(w.start)
    for t in sorted(starts):
        cells: dict[int, np.ndarray] = {}

        deltas: dict[int, Any] = {}

        def visit(w: Window, s: int, dstate: Any, contrib: Any, cells: dict[int, np.ndarray] = cells,
                  deltas: dict[int, Any] = deltas) -> None:
            if contrib is not None:
                cells[s] = summed(contrib["U"], (Hout, Hin))     # the gradient of E_t reaching step s
                deltas[s] = contrib["U"]

        backprop(tr, y, spec, windows=[Window(0, (t,))], weights=case.weights, visit=visit, accumulate=False)
        moved = moved_input(deltas[0], tr.states[0][0], tr.states[0][T]) if mask[t, 0] and 0 in deltas and T > 1 else ()
        if moved:
            # the step-0 term taken from the last state h_{T−1} instead of h0 (a state list without h0)
            wrapped += mask[t, 0] * summed(moved, (Hout, Hin))
        for s, C in cells.items():
            norms[t, s] = np.linalg.norm(C)
            if mask[t, s]:
                columns[s] += mask[t, s] * C
                total += mask[t, s] * C
            for st in starts[t]:
                if st > 0 and s == st - 1:
                    beyond1 += C
                    m_beyond1[t, s] = 1
                if st > 1 and s == st - 2:
                    beyond2 += C
                    m_beyond2[t, s] = 1
                if s == st:
                    at_start += C
                    m_start[t, s] = 1
    atoms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in range(T):
        if np.any(columns[s]):
            atoms[f"step:{s}"] = (columns[s], (mask[:, s:s + 1] > 0) * (np.arange(T) == s)[None, :])
    if np.any(beyond1):
        atoms["beyond:1"] = (beyond1, m_beyond1)
    if np.any(beyond2):
        atoms["beyond:2"] = (beyond2, m_beyond2)
    if np.any(at_start) and any(st > 0 for ss in starts.values() for st in ss):
        atoms["start:0"] = (at_start, m_start)     # (with every window at 0 it is column 0)
    if np.any(wrapped):
        atoms["state:0"] = (wrapped, (mask[:, :1] > 0) * (np.arange(T) == 0)[None, :])
    if np.any(total):
        atoms["all"] = (total, (mask > 0).astype(float))
    return norms, atoms, total


def attribute(R: np.ndarray, atoms: Mapping[str, tuple[np.ndarray, np.ndarray]], *, grad: str = "dU"
              ) -> dict[str, Any] | None:
    """The atom that explains R best as ``coef · atom``, when it explains >= ATTRIBUTION_MIN of ‖R‖²."""
    rr = float(np.vdot(R, R))
    if rr == 0.0 or R.size < 2:      # a 1x1 U is explained by every atom: nothing to tell
        return None
    scored = []
    for key, (a, _) in atoms.items():
        aa = float(np.vdot(a, a))
        if aa == 0.0:
            continue
        coef = float(np.vdot(R, a)) / aa
        resid = R - coef * a
        explained = 1.0 - float(np.vdot(resid, resid)) / rr
        scored.append((explained, key, coef))
    if not scored:
        return None
    # best first; on a tie, the simpler story: a step, then a window edge, then a constant factor
    rank = {"step": 0, "state": 1, "beyond": 2, "start": 3, "all": 4}
    scored.sort(key=lambda e: (-round(e[0], 9), rank[e[1].partition(":")[0]]))
    explained, key, coef = scored[0]
    if explained < ATTRIBUTION_MIN:
        return None
    runner = scored[1] if len(scored) > 1 else None
    kind, _, at = key.partition(":")
    return {
        "key": key,
        "kind": kind,
        "at": int(at) if at else None,
        "coef": coef,
        "explained": explained,
        "runner_up": {"key": runner[1], "explained": runner[0], "coef": runner[2]} if runner else None,
        "message": _attribution_text(kind, int(at) if at else None, coef, explained, runner, grad),
    }


def _attribution_text(kind: str, at: int | None, coef: float, explained: float,
                      runner: tuple[float, str, float] | None, grad: str = "dU") -> str:
    c = f"{coef:+.3g}"
    if kind == "step":
        what = f"{grad} − reference = {c} × the reference's step-{at} contribution"
        if abs(coef + 1) < 0.05:
            what += f": the step-{at} term is missing"
        elif abs(coef - 1) < 0.05:
            what += f": the step-{at} term is counted twice"
    elif kind == "state":
        what = f"{grad} − reference = {c} × (the step-0 term from the last state h_{{T−1}} − from h0)"
        if abs(coef - 1) < 0.05:
            what += ": the step-0 term uses the last state where h0 belongs"
    elif kind == "beyond":
        what = (f"{grad} − reference = {c} × the contributions {at} step{'s' if at != 1 else ''} before each "
                "window's start")
        if abs(coef - 1) < 0.05:
            what += f": the windows reach {at} step{'s' if at != 1 else ''} too far back"
    elif kind == "start":
        what = f"{grad} − reference = {c} × the contributions at each window's first step"
        if abs(coef + 1) < 0.05:
            what += ": the windows stop one step short"
    else:
        what = f"{grad} = {1 + coef:.4g} × reference at every step alike: not a per-step error"
    text = f"{what} (explains {100 * explained:.1f}% of the error"
    if runner is not None and runner[0] >= 0.9:
        text += f"; next best {runner[1]}, {100 * runner[0]:.1f}%"
    return text + ")"


def _observed_dx_cells(case: Case, prefix: dict[str, Any], got: Mapping[str, np.ndarray],
                       ref_grads: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Error of dx per (loss step t, step s), observed by growing the sequence one step at a time.

    Row t is what the prefix of length t+1 adds to dx over the prefix of length t (many-to-one:
    the prefix of length t+1 itself, whose only loss is at t), yours minus the reference's,
    in units of the full case's dx scale.
    """
    arrays = prefix.get("_arrays") or {}
    T = case.T
    if case.lengths is not None:
        return None                     # a padded batch's prefixes are not increments of one another
    if "x" not in got or any(arrays.get(L) is None or "x" not in arrays[L][0] for L in range(1, T + 1)):
        return None
    spec = case.spec
    B = case.B
    scale_x = scale_of(ref_grads["x"])
    full = loss_scale(spec, T, B)
    out = np.zeros((T, T))
    prev_u = prev_r = None
    for L in range(1, T + 1):
        gu, gr = arrays[L]
        u = np.asarray(gu["x"], dtype=np.float64)
        r = np.asarray(gr["x"], dtype=np.float64)
        if u.shape != r.shape:
            return None
        k = full / loss_scale(spec, L, B)
        inc_u, inc_r = k * u, k * r
        if spec.mode == "many-to-many" and prev_u is not None:
            inc_u = inc_u.copy()
            inc_r = inc_r.copy()
            inc_u[:L - 1] -= prev_u
            inc_r[:L - 1] -= prev_r
        out[L - 1, :L] = np.abs(inc_u - inc_r).reshape(L, -1).max(axis=1) / scale_x
        prev_u, prev_r = k * u, k * r
    return out


def strip_private(ev: dict[str, Any]) -> dict[str, Any]:
    """Drop the in-memory arrays kept for the temporal map."""
    if ev.get("prefix"):
        ev["prefix"].pop("_arrays", None)
    return ev
