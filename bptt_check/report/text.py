"""Plain-text pieces every renderer shares, computed from the report dict alone (JSON is the truth)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..model.names import ordered
from ..model.reproducer import reproducer
from ..model.spec import Spec, spec_line
from ..runner.read import headline as finding_headline
from ..verdict.pipeline import FAST_ORACLES
from ..verdict.result import nothing_judged, plain, user_frame
from .log import CaseLog, positions, summary_of

BAD_STATUSES = ("failed", "error", "timeout")

def num(v: Any, digits: int = 3) -> str:
    """A number in a few significant digits; None (a nan in the JSON) as 'nan'."""
    if v is None:
        return "nan"
    if isinstance(v, bool) or not isinstance(v, (int, float)):     # a hand-edited report: never markup
        return str(v) if re.fullmatch(r"[\w.+\- ]{0,40}", str(v)) else "?"
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
    return spec_line(spec)


def shapes_text(shapes: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in shapes.items())


def case_shapes(case: dict[str, Any]) -> str:
    """A case's sizes, and the lengths of its sequences when the batch is padded."""
    text = shapes_text(case.get("shapes") or {})
    if case.get("lengths") is not None:
        text += f" lengths=({','.join(str(n) for n in case['lengths'])})"
    return text


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


def _d(case: dict[str, Any], key: str) -> str:
    """A gradient's name as the backward names it (an adapted backward's own name), else ``d`` + the key."""
    return "d" + str(((case.get("yours") or {}).get(key) or {}).get("name") or key)


def _at(case: dict[str, Any], key: str, row: int, index: Any) -> Any:
    """The index of a worst element in the backward's own array (the canonical one where it is the same)."""
    mine = ((case.get("yours") or {}).get(key) or {}).get("worst_index") or []
    return mine[row] if row < len(mine) else index


def grad_line(case: dict[str, Any]) -> str:
    """Line 1: which gradients are wrong, how many elements, the scalar ratio when it is telling."""
    params = case.get("params") or {}
    parts = []
    for k in wrong_grads(case):
        g = params[k]
        if g.get("problem"):
            parts.append(f"{_d(case, k)} ({g['problem'].split(':')[0]})")
            continue
        text = f"{_d(case, k)} {g.get('mismatched')}/{g.get('size')}"
        ratio, cos = g.get("ratio"), g.get("cosine")
        if ratio is not None and cos is not None and cos > 0.999 and abs(ratio - 1) > 1e-3:
            text += f" (= {num(ratio, 4)} × reference)"
        parts.append(text)
    return "wrong: " + ", ".join(parts) if parts else "wrong: nothing"


def _in_padding(case: dict[str, Any], name: str, index: Any) -> str:
    """`` — a padded step`` when the element of dx lies in a sequence's padding (its gradient must be 0)."""
    lengths = case.get("lengths")
    if name != "x" or not lengths or not index or len(index) < 2:
        return ""
    t, b = int(index[0]), int(index[1])
    if b < len(lengths) and t >= int(lengths[b]):
        n = int(lengths[b])
        return f" — a padded step: sequence {b} has {n} real step{'s' if n != 1 else ''}, so no loss depends on it"
    return ""


def worst_line(case: dict[str, Any]) -> str:
    """Line 2: the worst element of the worst gradient."""
    k = worst_grad(case)
    if k is None:
        return ""
    g = case["params"][k]
    d = _d(case, k)
    if g.get("problem"):
        return f"{d}: {g['problem']}"
    rows = g.get("worst") or []
    if rows:
        r = rows[0]
        return (f"worst: {d}{idx(_at(case, k, 0, r['index']))} = {num(r['yours'], 6)}, reference "
                f"{num(r['reference'], 6)} (abs {num(r['abs'])}, rel {num(r['rel'])})"
                f"{_in_padding(case, k, r['index'])}; "
                f"‖{d}‖ rel err {num(g.get('norm_rel_err'))}, cosine {num(g.get('cosine'), 4)}")
    return (f"worst: {d}{idx(g.get('worst_index'))}: abs {num(g.get('max_abs_err'))}, "
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
    """``error: exception: IndexError: …`` (the kind once when it is the status: ``timeout: the backward …``)."""
    err = case.get("error") or {}
    kind = err.get("kind", "?")
    said = finding_headline({**err, "message": plain(err.get("message") or "").strip()}) if err.get("message") else ""
    return f"{case.get('status')}: " + ("" if kind == case.get("status") else f"{kind}: ") + said


def wrong_text(case: dict[str, Any]) -> str:
    """The "wrong" cell of a wrong-case table: the gradients and their counts, or the finding and where."""
    if case.get("status") in ("error", "timeout"):
        where = user_frame(case.get("error"))
        return error_line(case) + (f" (at {plain(where[0])})" if where else "")
    return grad_line(case).removeprefix("wrong: ")


def frame_line(case: dict[str, Any]) -> str:
    """Where the user's code raised (or was stopped): ``at my_rnn.py:29 in backward: return {…}``."""
    where = user_frame(case.get("error"))
    if not where:
        return ""
    return f"at {plain(where[0])}" + (f": {plain(where[1])}" if where[1] else "")


def three_lines(case: dict[str, Any]) -> list[str]:
    """What matters about a bad case, in three lines (plus diagnosis when present); no reproducer
    (each renderer places :func:`reproducer_of` its own way)."""
    if case.get("status") in ("error", "timeout"):
        return [error_line(case)] + [ln for ln in (frame_line(case),) if ln]
    lines = [grad_line(case), worst_line(case), time_line(case)]
    lines += [f"diagnosis: {d}" for d in diagnosis_lines(case, 1)]
    return [plain(ln) for ln in lines]


def reproducer_of(case: dict[str, Any], report: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The case's reproducer (``python``, ``oneline``, ``cli``, ``note``): the one its evidence holds, else
    built by :func:`bptt_check.model.reproducer.reproducer` from the case's spec, seed, index and
    target and the run's oracles (an error or a timeout has no evidence). None for a hand-edited spec."""
    rep = (case.get("evidence") or {}).get("reproducer")
    if rep and rep.get("python") and "oneline" in rep:
        return rep
    try:
        spec = Spec.from_dict(case.get("spec") or {})
        seed, index = int(case.get("seed", 0)), int(case.get("index", 0))
    except Exception:   # a hand-edited report: nothing runnable can be said
        return None
    oracles = tuple((report or {}).get("oracles") or ()) or ("autograd", "directional")
    fast = oracles == tuple(FAST_ORACLES)
    return reproducer(spec, seed, index, str(case.get("target") or ""), oracles, fast=fast)


def reproduce_line(case: dict[str, Any], report: dict[str, Any] | None = None) -> str:
    """The one line that re-runs the case: the shell command when there is one, else one line of Python."""
    rep = reproducer_of(case, report)
    if rep is None:
        return f"(the case's spec cannot be read; seed {case.get('seed')}, index {case.get('index')})"
    return plain(rep.get("cli") or rep["oneline"])


def failure_lines(case: dict[str, Any], report: dict[str, Any] | None = None, shell: bool = False) -> list[str]:
    """A bad case in plain text: a title, its indented lines, then how to reproduce it: a label line and
    the command on a line of its own, not indented (``shell``: the shell line where there is one, as the
    terminal prints it; else the one line of Python, as :meth:`bptt_check.Report.summary` prints it)."""
    out = [plain(case_title(case))] + ["  " + ln for ln in three_lines(case)]
    rep = reproducer_of(case, report)
    if rep is not None:
        if shell and rep.get("cli"):
            out += ["  reproduce in a shell:", plain(rep["cli"])]
        else:
            out += ["  reproduce in Python:", plain(rep["oneline"])]
            if rep.get("note") and not rep.get("cli"):
                out.append(f"  ({plain(rep['note'])})")
    return out


def bad_cases(report: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """The wrong cases (failed, error, timeout) in run order, the first ``limit`` of them (None: all)."""
    cases = report.get("cases", [])
    if isinstance(cases, CaseLog):      # their positions were kept as the cases came: no pass over the rest
        return list(positions(cases, cases.summary.bad[:limit]))
    return [c for c in cases if c.get("status") in BAD_STATUSES][:limit]


def bad_count(report: dict[str, Any]) -> int:
    """How many of the report's case records are wrong."""
    cases = report.get("cases", [])
    if isinstance(cases, CaseLog):
        return len(cases.summary.bad)
    return sum(c.get("status") in BAD_STATUSES for c in cases)


def status_count(report: dict[str, Any], status: str) -> int:
    """How many of the report's case records have ``status``."""
    return summary_of(report.get("cases", [])).counts.get(status, 0)


def groups(report: dict[str, Any]) -> list[tuple[str, str, dict[str, int]]]:
    """(target, spec text, counts by status) per checked (target, spec), in run order."""
    return [(g.target, g.spec, dict(g.counts)) for g in summary_of(report.get("cases", [])).groups.values()]


def verdict(report: dict[str, Any]) -> str:
    """OK, WRONG GRADIENTS, BACKWARD ERRORS (it misbehaved, no gradient was compared wrong), NOTHING JUDGED
    (every case inconclusive) or INTERRUPTED."""
    if report.get("interrupted"):
        return "INTERRUPTED"
    if nothing_judged(report.get("counts", {})):
        return "NOTHING JUDGED"               # every case inconclusive: not a pass, and nothing wrong either
    if report.get("passed"):
        return "OK"
    n = report.get("counts", {})
    if not n.get("failed") and (n.get("error") or n.get("timeout")):
        return "BACKWARD ERRORS"
    return "WRONG GRADIENTS"


def counts_text(report: dict[str, Any]) -> str:
    n = report.get("counts", {})
    total = sum(n.values()) if n else len(report.get("cases", []))
    parts = [f"{v} {k}" for k, v in n.items() if v or k in ("passed", "failed")]
    return (f"{total} cases{shard_text(report)}, " + ", ".join(parts)
            + f" in {float(report.get('seconds') or 0.0):.2f}s")


def shard_text(report: dict[str, Any]) -> str:
    """`` of shard 2/4`` for a shard's report, `` from 4 shards`` for a joined one, else nothing."""
    shard = report.get("shard")
    if isinstance(shard, dict):
        return f" of shard {shard.get('index')}/{shard.get('count')}"
    merged = report.get("merged")
    if isinstance(merged, dict):
        return f" from {merged.get('shards')} shards"
    return ""


def headline(report: dict[str, Any]) -> str:
    """``WRONG GRADIENTS: 20 cases, 0 passed, 20 failed in 2.08s``."""
    line = f"{verdict(report)}: {counts_text(report)}"
    if verdict(report) == "NOTHING JUDGED":
        line += " — every case was inconclusive, so nothing was verified"
        first = next(iter(report.get("cases") or []), None)
        if first and first.get("notes"):
            line += f"; case {first.get('index')}: {plain(first['notes'][0])}"
    return line


def summary_lines(report: dict[str, Any], limit: int = 5) -> list[str]:
    """The run in plain text: the headline, then what is wrong and where for the first ``limit`` bad cases."""
    bad, n_bad = bad_cases(report, limit), bad_count(report)
    out = [headline(report)]
    for c in bad:
        out += failure_lines(c, report)
    if n_bad > limit:
        out.append(f"… and {n_bad - limit} more wrong case(s)")
    return out


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
