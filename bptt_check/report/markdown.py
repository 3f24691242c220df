"""``report.md``: tables for a pull-request comment or a CI step summary; no images.

Sized for the smallest of its homes: a GitHub comment holds 65,536 characters, a step summary
1 MiB. Every list is capped and summarized, and the rest is in ``report.html`` / ``report.json``;
:data:`MAX_CHARS` is a hard ceiling (the text is cut at a line with a note if it would pass it).
"""

from __future__ import annotations

import re
from typing import Any

from . import text as tx

MAX_CHARS = 60_000       # under a GitHub comment's 65,536; far under 1 MiB
GROUP_LIMIT = 40
TABLE_LIMIT = 30
DETAIL_LIMIT = 5


# characters that Markdown (GitHub's, with tables, strikethrough and $math$) or HTML would read as syntax
# inside a line (the text escaped here never starts a line, so list, heading and quote markers are inert)
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$&])")


def md(text: Any) -> str:
    """Text as Markdown shows it literally: every character Markdown or HTML could read as syntax is
    backslash-escaped (``atol*scale`` stays ``atol*scale``, ``<script>`` stays text), lines are joined,
    terminal escapes and control characters are dropped (:func:`.text.plain`)."""
    return _SPECIAL.sub(r"\\\1", " ".join(tx.plain(text).split("\n")))


def code(text: Any) -> str:
    """Inline code: a backtick fence longer than any run of backticks inside (Markdown escapes nothing there)."""
    s = " ".join(tx.plain(text).split("\n"))
    fence = "`" * (max((len(r) for r in re.findall("`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def block(lines: list[str], lang: str = "") -> list[str]:
    """A fenced code block that no line inside can close (the fence is longer than any backtick run)."""
    body = [tx.plain(ln) for ln in lines]
    longest = max((len(r) for ln in body for r in re.findall("`+", ln)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, *body, fence]


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    """A table whose cells are text (escaped here); numbers and our own markup go in as :class:`Raw`."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.text if isinstance(c, Raw) else md(c) for c in r) + " |" for r in rows]
    return out


class Raw:
    """Markdown written by this module (bold, a number), put into a table cell as it is."""

    def __init__(self, text: str) -> None:
        self.text = text


def _details(case: dict[str, Any], report: dict[str, Any]) -> list[str]:
    out = [f"### {md(tx.case_title(case))} — {md(str(case.get('status', '')).upper())}", "",
           f"shapes {md(tx.case_shapes(case))}, seed {md(case.get('seed'))}", ""]
    out += block(tx.three_lines(case))
    out.append("")
    err = case.get("error") or {}
    if case.get("status") in ("error", "timeout") and err.get("message"):
        out += ["<details><summary>the message in full</summary>", ""]
        out += block(tx.plain(err["message"]).splitlines())
        out += ["", "</details>", ""]
    diag = case.get("diagnosis")
    if diag:
        out += ["Diagnosis, best first:", ""]
        out += _table(["code", "fit", "message"],
                      [[d.get("code", ""), tx.num(d.get("fit")), d.get("message", "")] for d in diag[:5]])
        out.append("")
    if case.get("status") == "failed":
        rows: list[list[Any]] = []
        for k in tx.ordered_params(case):
            g = case["params"][k]
            if g.get("problem"):
                rows.append([f"d{k}", Raw("**no**"), g["problem"], "", "", "", "", ""])
                continue
            rows.append([f"d{k}", "yes" if g.get("passed") else Raw("**no**"),
                         f"{g.get('mismatched')}/{g.get('size')}", tx.num(g.get("max_rel_err")),
                         tx.idx(g.get("worst_index")), tx.num(g.get("norm_rel_err")), tx.num(g.get("cosine"), 5),
                         tx.num(g.get("ratio"), 5)])
        out += _table(["gradient", "ok", "mismatched", "max rel err", "worst at", "norm rel err", "cosine",
                       "ratio"], rows)
        out.append("")
        k = tx.worst_grad(case)
        worst = (case["params"][k].get("worst") or []) if k else []
        if worst:
            out += [f"Worst elements of d{md(k)}:", ""]
            out += _table(["index", "yours", "reference", "abs", "rel"],
                          [[tx.idx(r["index"]), tx.num(r["yours"], 7), tx.num(r["reference"], 7),
                            tx.num(r["abs"]), tx.num(r["rel"])] for r in worst])
            out.append("")
    rep = tx.reproducer_of(case, report)
    if rep:
        out += ["<details><summary>reproduce this case alone</summary>", ""]
        if rep.get("cli"):
            out += block([rep["cli"]], "bash")
        out += block(rep["python"].splitlines(), "python")
        if rep.get("note"):
            out += ["", md(rep["note"])]
        out += ["", "</details>", ""]
    return out


def render_markdown(report: dict[str, Any], html_name: str = "report.html") -> str:
    """The Markdown report (at most :data:`MAX_CHARS` characters). Every piece of text that is not
    this module's own markup is escaped (:func:`md`, :func:`code`, :func:`block`): report.md goes into
    pull-request comments and CI step summaries, where a message must not become markup."""
    bad, n_bad = tx.bad_cases(report, TABLE_LIMIT), tx.bad_count(report)
    icon = "✅" if report.get("passed") and not report.get("interrupted") else "❌"
    out = [f"# {icon} bptt-check: {md(tx.verdict(report))}", "",
           f"**{md(tx.counts_text(report))}** · bptt-check {md(report.get('version', ''))} · "
           f"seed {md(report.get('seed'))} · oracles {md(', '.join(str(o) for o in report.get('oracles', [])))}", ""]
    if report.get("interrupted"):
        out += ["> The run was interrupted: only the cases checked before that are reported.", ""]
    if isinstance(report.get("shard"), dict):
        out += [f"> Shard {md(report['shard'].get('index'))}/{md(report['shard'].get('count'))} of a sweep: "
                "join the shards' reports with `bptt-check merge`.", ""]
    if report.get("command"):
        out += [code(report["command"]), ""]
    tol = tx.tolerance_lines(report)
    if tol:
        out += ["Tolerances: " + "; ".join(md(t) for t in tol), ""]

    gs = tx.groups(report)
    out += ["## By target and spec", ""]
    out += _table(["target", "spec", "cases", "passed", "failed", "inconclusive", "error/timeout"],
                  [[t or "(Python API)", s, sum(n.values()), n.get("passed", 0), n.get("failed", 0),
                    n.get("inconclusive", 0), n.get("error", 0) + n.get("timeout", 0)]
                   for t, s, n in gs[:GROUP_LIMIT]])
    if len(gs) > GROUP_LIMIT:
        out.append(f"\n… and {len(gs) - GROUP_LIMIT} more (target, spec) groups: see {md(html_name)}.")
    out.append("")

    if bad:
        out += [f"## Wrong cases ({n_bad})", ""]
        rows = []
        for c in bad[:TABLE_LIMIT]:
            ev = c.get("evidence") or {}
            what = tx.wrong_text(c)
            first = ev.get("first_bad_step")
            sfl = ev.get("shortest_failing_length")
            rows.append([tx.case_title(c), tx.case_shapes(c), what,
                         "" if first is None else first, "" if sfl is None else sfl])
        out += _table(["case", "shapes", "wrong", "first bad step", "shortest failing length"], rows)
        if n_bad > TABLE_LIMIT:
            out.append(f"\n… and {n_bad - TABLE_LIMIT} more wrong cases: every one is in {md(html_name)} "
                       "and report.json.")
        out.append("")
        out += [f"## First {min(DETAIL_LIMIT, len(bad))} in detail", ""]
        for c in bad[:DETAIL_LIMIT]:
            out += _details(c, report)
    inc = tx.status_count(report, "inconclusive")
    if inc:
        out += [f"{inc} inconclusive case(s): the oracles disagree on some elements (e.g. a relu kink), "
                f"which prove nothing; see {md(html_name)}.", ""]
    out += [f"Pictures (error heatmaps, error against time step, temporal error map): {code(html_name)}. "
            "Source of truth: `report.json`.", ""]
    text = "\n".join(out)
    if len(text) > MAX_CHARS:
        cut = text.rfind("\n", 0, MAX_CHARS - 200)
        text = text[:cut]
        if len(re.findall(r"^```", text, re.MULTILINE)) % 2:     # cut inside a code block: close it
            text += "\n" + re.findall(r"^(`{3,})", text, re.MULTILINE)[-1]
        text += f"\n\n… cut at {MAX_CHARS} characters: the rest is in {md(html_name)} and report.json.\n"
    return text
