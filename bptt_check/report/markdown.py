"""``report.md``: tables for a pull-request comment or a CI step summary; no images.

Sized for the smallest of its homes: a GitHub comment holds 65,536 characters, a step summary
1 MiB. Every list is capped and summarized, and the rest is in ``report.html`` / ``report.json``;
:data:`MAX_CHARS` is a hard ceiling (the text is cut at a line with a note if it would pass it).
"""

from __future__ import annotations

from typing import Any

from . import text as tx

MAX_CHARS = 60_000       # under a GitHub comment's 65,536; far under 1 MiB
GROUP_LIMIT = 40
TABLE_LIMIT = 30
DETAIL_LIMIT = 5


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out


def _details(case: dict[str, Any]) -> list[str]:
    ev = case.get("evidence") or {}
    out = [f"### {_cell(tx.case_title(case))} — {case.get('status', '').upper()}", "",
           f"shapes {tx.case_shapes(case)}, seed {case.get('seed')}", "", "```"]
    out += tx.three_lines(case)
    out += ["```", ""]
    diag = case.get("diagnosis")
    if diag:
        out += ["Diagnosis, best first:", ""]
        out += _table(["code", "fit", "message"],
                      [[d.get("code", ""), tx.num(d.get("fit")), d.get("message", "")] for d in diag[:5]])
        out.append("")
    if case.get("status") == "failed":
        rows = []
        for k in tx.ordered_params(case):
            g = case["params"][k]
            if g.get("problem"):
                rows.append([f"d{k}", "**no**", g["problem"], "", "", "", "", ""])
                continue
            rows.append([f"d{k}", "yes" if g.get("passed") else "**no**", f"{g.get('mismatched')}/{g.get('size')}",
                         tx.num(g.get("max_rel_err")), tx.idx(g.get("worst_index")), tx.num(g.get("norm_rel_err")),
                         tx.num(g.get("cosine"), 5), tx.num(g.get("ratio"), 5)])
        out += _table(["gradient", "ok", "mismatched", "max rel err", "worst at", "norm rel err", "cosine",
                       "ratio"], rows)
        out.append("")
        k = tx.worst_grad(case)
        worst = (case["params"][k].get("worst") or []) if k else []
        if worst:
            out += [f"Worst elements of d{k}:", ""]
            out += _table(["index", "yours", "reference", "abs", "rel"],
                          [[tx.idx(r["index"]), tx.num(r["yours"], 7), tx.num(r["reference"], 7),
                            tx.num(r["abs"]), tx.num(r["rel"])] for r in worst])
            out.append("")
    rep = ev.get("reproducer")
    if rep:
        out += ["<details><summary>reproduce this case alone</summary>", ""]
        if rep.get("cli"):
            out += ["```bash", rep["cli"], "```"]
        out += ["```python", rep["python"], "```", "", "</details>", ""]
    return out


def render_markdown(report: dict[str, Any], html_name: str = "report.html") -> str:
    """The Markdown report (at most :data:`MAX_CHARS` characters)."""
    bad = tx.bad_cases(report)
    icon = "✅" if report.get("passed") and not report.get("interrupted") else "❌"
    out = [f"# {icon} bptt-check: {tx.verdict(report)}", "",
           f"**{tx.counts_text(report)}** · bptt-check {report.get('version', '')} · seed {report.get('seed')} · "
           f"oracles {', '.join(report.get('oracles', []))}", ""]
    if report.get("interrupted"):
        out += ["> The run was interrupted: only the cases checked before that are reported.", ""]
    if report.get("command"):
        out += [f"`{report['command']}`", ""]
    tol = tx.tolerance_lines(report)
    if tol:
        out += ["Tolerances: " + "; ".join(tol), ""]

    gs = tx.groups(report)
    out += ["## By target and spec", ""]
    out += _table(["target", "spec", "cases", "passed", "failed", "inconclusive", "error/timeout"],
                  [[t or "(Python API)", s, sum(n.values()), n.get("passed", 0), n.get("failed", 0),
                    n.get("inconclusive", 0), n.get("error", 0) + n.get("timeout", 0)]
                   for t, s, n in gs[:GROUP_LIMIT]])
    if len(gs) > GROUP_LIMIT:
        out.append(f"\n… and {len(gs) - GROUP_LIMIT} more (target, spec) groups: see {html_name}.")
    out.append("")

    if bad:
        out += [f"## Wrong cases ({len(bad)})", ""]
        rows = []
        for c in bad[:TABLE_LIMIT]:
            ev = c.get("evidence") or {}
            what = tx.error_line(c) if c.get("status") in ("error", "timeout") else tx.grad_line(c)[7:]
            first = ev.get("first_bad_step")
            sfl = ev.get("shortest_failing_length")
            rows.append([tx.case_title(c), tx.case_shapes(c), what,
                         "" if first is None else first, "" if sfl is None else sfl])
        out += _table(["case", "shapes", "wrong", "first bad step", "shortest failing length"], rows)
        if len(bad) > TABLE_LIMIT:
            out.append(f"\n… and {len(bad) - TABLE_LIMIT} more wrong cases: every one is in {html_name} "
                       "and report.json.")
        out.append("")
        out += [f"## First {min(DETAIL_LIMIT, len(bad))} in detail", ""]
        for c in bad[:DETAIL_LIMIT]:
            out += _details(c)
    inc = [c for c in report.get("cases", []) if c.get("status") == "inconclusive"]
    if inc:
        out += [f"{len(inc)} inconclusive case(s): the oracles disagree on some elements (e.g. a relu kink), "
                f"which prove nothing; see {html_name}.", ""]
    out += [f"Pictures (error heatmaps, error against time step, temporal error map): `{html_name}`. "
            "Source of truth: `report.json`.", ""]
    text = "\n".join(out)
    if len(text) > MAX_CHARS:
        cut = text.rfind("\n", 0, MAX_CHARS - 200)
        text = text[:cut] + f"\n\n… cut at {MAX_CHARS} characters: the rest is in {html_name} and report.json.\n"
    return text
