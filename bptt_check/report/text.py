"""Plain-text pieces every renderer shares, computed from the report dict alone (JSON is the truth)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..model.names import ordered
from ..model.reproducer import expression
from ..model.spec import Spec
from ..verdict.result import nothing_judged

BAD_STATUSES = ("failed", "error", "timeout")


def num(v: Any, digits: int = 3) -> str:
    """A number in a few significant digits; None (a nan in the JSON) as 'nan'."""
    if v is None:
        return "nan"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e300:
        return "inf" if v > 0 else "-inf"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.{digits}g}"
    return f"{v:.{max(digits - 1, 0)}e}"


def idx(index: Sequence[int] | None) -> str:
    return "[" + ", ".join(str(i) for i in (index or [])) + "]"


def ranges(steps: Iterable[int]) -> str:
    """0, 1, 2, 5, 7, 8 -> '0–2, 5, 7–8'."""
    s = sorted(set(int(t) for t in steps))
    out = []
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}–{s[j]}")
        i = j + 1
    return ", ".join(out)


def spec_text(spec: dict[str, Any]) -> str:
    """The one-line spec, as ``Spec.__str__`` writes it."""
    parts = [spec.get("mode", "?")]
    if spec.get("truncation", "none") != "none":
        parts.append(spec["truncation"])
    parts += [spec.get("activation", "?"), f"out={spec.get('output', '?')}", spec.get("loss", "?"),
              spec.get("reduction", "?")]
    if spec.get("bias") is False:
        parts.append("no-bias")
    if spec.get("dtype", "float64") != "float64":
        parts.append(spec["dtype"])
    return " ".join(parts)


def shapes_text(shapes: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in shapes.items())


def case_id(case: dict[str, Any]) -> str:
    """A stable anchor for a case: target, spec and index make it unique within a run."""
    raw = f"{case.get('target', '')}-{spec_text(case.get('spec', {}))}-{case.get('index')}"
    return "case-" + "".join(ch if ch.isalnum() else "-" for ch in raw).strip("-")


def case_title(case: dict[str, Any]) -> str:
    who = f"{case['target']} " if case.get("target") else ""
    return f"case {case.get('index')} {who}[{spec_text(case.get('spec', {}))}]"


def wrong_grads(case: dict[str, Any]) -> list[str]:
    params = case.get("params") or {}
    return [k for k in ordered(params) if not params[k].get("passed", True)]


def ordered_params(case: dict[str, Any]) -> list[str]:
    return ordered(case.get("params") or {})


def worst_grad(case: dict[str, Any]) -> str | None:
    """The wrong gradient that is furthest off (a problem such as a missing gradient first)."""
    wrong = wrong_grads(case)
    if not wrong:
        return None
    params = case["params"]
    for k in wrong:
        if params[k].get("problem"):
            return k
    return max(wrong, key=lambda k: params[k].get("max_rel_err") or 0.0)


def grad_line(case: dict[str, Any]) -> str:
    """Line 1: which gradients are wrong, how many elements, the scalar ratio when it is telling."""
    params = case.get("params") or {}
    parts = []
    for k in wrong_grads(case):
        g = params[k]
        if g.get("problem"):
            parts.append(f"d{k} ({g['problem'].split(':')[0]})")
            continue
        text = f"d{k} {g.get('mismatched')}/{g.get('size')}"
        ratio, cos = g.get("ratio"), g.get("cosine")
        if ratio is not None and cos is not None and cos > 0.999 and abs(ratio - 1) > 1e-3:
            text += f" (= {num(ratio, 4)} × reference)"
        parts.append(text)
    return "wrong: " + ", ".join(parts) if parts else "wrong: nothing"


def worst_line(case: dict[str, Any]) -> str:
    """Line 2: the worst element of the worst gradient."""
    k = worst_grad(case)
    if k is None:
        return ""
    g = case["params"][k]
    if g.get("problem"):
        return f"d{k}: {g['problem']}"
    rows = g.get("worst") or []
    if rows:
        r = rows[0]
        return (f"worst: d{k}{idx(r['index'])} = {num(r['yours'], 6)}, reference {num(r['reference'], 6)} "
                f"(abs {num(r['abs'])}, rel {num(r['rel'])}); ‖d{k}‖ rel err {num(g.get('norm_rel_err'))}, "
                f"cosine {num(g.get('cosine'), 4)}")
    return (f"worst: d{k}{idx(g.get('worst_index'))}: abs {num(g.get('max_abs_err'))}, "
            f"rel {num(g.get('max_rel_err'))}")


def time_line(case: dict[str, Any]) -> str:
    """Line 3: since which time step, and the shortest failing sequence length."""
    ev = case.get("evidence") or {}
    T = (case.get("shapes") or {}).get("T")
    parts = []
    tm = ev.get("temporal") or {}
    att = tm.get("attribution")
    steps = ev.get("steps")
    first = ev.get("first_bad_step")
    if first is not None:
        parts.append(f"first bad step {first}")
    if att:
        parts.append(att["message"])
    if steps and steps.get("bad_steps"):
        parts.append(f"dx wrong at steps {ranges(steps['bad_steps'])} of 0–{len(steps['rel_error']) - 1}")
    elif steps is not None and "x" in (case.get("params") or {}):
        parts.append("dx right at every step")
    sfl = ev.get("shortest_failing_length")
    if sfl is not None:
        parts.append(f"fails from sequence length {sfl} on (of T={T})")
    elif ev.get("prefix") is not None:
        parts.append("no prefix fails (only the whole sequence)")
    if not parts:
        return "time: no per-step evidence" + (" (re-run this case alone for it)" if ev.get("skipped") else "")
    return "time: " + "; ".join(parts)


def diagnosis_lines(case: dict[str, Any], limit: int = 3) -> list[str]:
    """Issue 6 attaches ``diagnosis: [{code, fit, message}]``, best first; render it when present."""
    out = []
    for d in (case.get("diagnosis") or [])[:limit]:
        fit = d.get("fit")
        fit_s = f" (fit {num(fit)})" if isinstance(fit, (int, float)) else ""
        out.append(f"{d.get('code', '?')}: {d.get('message', '')}{fit_s}")
    return out


def error_line(case: dict[str, Any]) -> str:
    err = case.get("error") or {}
    msg = (err.get("message") or "").strip().splitlines()
    return f"{case.get('status')}: {err.get('kind', '?')}: {msg[-1] if msg else ''}"


def three_lines(case: dict[str, Any]) -> list[str]:
    """What matters about a bad case, in three lines (plus diagnosis when present)."""
    if case.get("status") in ("error", "timeout"):
        lines = [error_line(case)]
        rep = (case.get("evidence") or {}).get("reproducer") or {}
        if rep.get("cli"):
            lines.append(f"reproduce: {rep['cli']}")
        return lines
    lines = [grad_line(case), worst_line(case), time_line(case)]
    lines += [f"diagnosis: {d}" for d in diagnosis_lines(case, 1)]
    return lines


def reproduce_line(case: dict[str, Any]) -> str:
    rep = (case.get("evidence") or {}).get("reproducer") or {}
    if rep.get("cli"):
        return rep["cli"]
    try:
        spec = Spec.from_dict(case.get("spec") or {})
    except Exception:   # a hand-edited report: say what can be said
        return f"bptt_check.draw_case(<the case's spec>, seed={case.get('seed')}, index={case.get('index')})"
    return expression(spec, case.get("seed", 0), case.get("index", 0))


def bad_cases(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report.get("cases", []) if c.get("status") in BAD_STATUSES]


def groups(report: dict[str, Any]) -> list[tuple[str, str, dict[str, int]]]:
    """(target, spec text, counts by status) per checked (target, spec), in run order."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for c in report.get("cases", []):
        key = (c.get("target", ""), spec_text(c.get("spec", {})))
        d = out.setdefault(key, {})
        d[c.get("status", "?")] = d.get(c.get("status", "?"), 0) + 1
    return [(t, s, n) for (t, s), n in out.items()]


def verdict(report: dict[str, Any]) -> str:
    if report.get("interrupted"):
        return "INTERRUPTED"
    if nothing_judged(report.get("counts", {})):
        return "NOTHING JUDGED"               # every case inconclusive: not a pass, and nothing wrong either
    return "OK" if report.get("passed") else "WRONG GRADIENTS"


def counts_text(report: dict[str, Any]) -> str:
    n = report.get("counts", {})
    total = len(report.get("cases", []))
    parts = [f"{v} {k}" for k, v in n.items() if v or k in ("passed", "failed")]
    return f"{total} cases: " + ", ".join(parts) + f" in {num(report.get('seconds', 0.0))} s"


def tolerance_lines(report: dict[str, Any]) -> list[str]:
    tol = report.get("tolerances") or {}
    out = []
    for dtype, t in (tol.get("user_vs_reference") or {}).items():
        out.append(f"{dtype}: rtol {num(t.get('rtol'))}, atol {num(t.get('atol'))} × scale")
    o = tol.get("oracle_vs_oracle")
    if o:
        out.append(f"oracle vs oracle: rtol {num(o.get('rtol'))}, atol {num(o.get('atol'))} × scale")
    if tol.get("why"):
        out.append(f"why: {tol['why']}")
    return out
