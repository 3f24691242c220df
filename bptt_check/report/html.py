"""``report.html``: one self-contained page (inline CSS, images as data: URIs, no requests)."""

from __future__ import annotations

import base64
import struct
from html import escape as _escape
from typing import Any

from . import plots
from . import text as tx
from .svg import heatmap_svg


def _e(text: Any) -> str:
    """Text from the report (and so from the user's code) as HTML shows it literally, quotes included,
    without control characters or terminal escapes (:func:`.text.plain`)."""
    return _escape(tx.plain(text), quote=True)


DETAIL_LIMIT = 20      # failed cases shown in full (heatmaps, tables, reproducer)
PLOT_LIMIT = 8         # of those, the first ones that also get the matplotlib pictures
TABLE_LIMIT = 500      # rows of the bad-case and group tables

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
 padding:0 1em;color:#1d1d1f}
h1{margin:.2em 0}.ok{color:#0a7a2f}.bad{color:#b00000}.warn{color:#8a5a00}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccd;padding:2px 7px;
 text-align:left;vertical-align:top}th{background:#eef0f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td:first-child{border-left:4px solid #b00000}
pre,code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f5f5f7}pre{padding:.6em;overflow-x:auto}
pre.cmd,td code{white-space:pre-wrap;overflow-wrap:anywhere}
.lines{background:#fff4f4;border-left:4px solid #b00000;padding:.4em .8em;white-space:pre-wrap}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}figure{margin:0}
figcaption{font-size:11px;color:#555;max-width:520px}.note{background:#fff8e0;padding:.4em .8em}
section.case{border-top:2px solid #ddd;margin-top:1.6em}
"""


def _img(png: bytes, alt: str, kind: str, param: str = "") -> str:
    """A PNG drawn at :data:`plots.SCALE` pixels per CSS pixel, shown at its CSS size: sharp on any screen."""
    data = base64.b64encode(png).decode("ascii")
    extra = f' data-param="{_e(param)}"' if param else ""
    width, height = struct.unpack(">II", png[16:24]) if png[12:16] == b"IHDR" else (0, 0)
    size = f' width="{width // plots.SCALE}" height="{height // plots.SCALE}"' if width else ""
    return (f'<img data-kind="{kind}"{extra}{size} alt="{_e(alt)}" '
            f'src="data:image/png;base64,{data}">')


def _table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _header(report: dict[str, Any]) -> str:
    ok = report.get("passed") and not report.get("interrupted")
    cls = "ok" if ok else "bad"
    out = [f'<h1 class="{cls}">bptt-check: {_e(tx.verdict(report))}</h1>',
           f"<p><b>{_e(tx.counts_text(report))}</b></p>"]
    if report.get("interrupted"):
        out.append('<p class="note">This run was interrupted: the report holds the cases checked before '
                   "the interruption only.</p>")
    specs = report.get("specs") or []
    rows = [
        ["command", f"<code>{_e(str(report.get('command') or report.get('argv') or '(Python API)'))}</code>"],
        ["tool", _e(f"{report.get('tool', 'bptt-check')} {report.get('version', '')}, "
                        f"report schema {report.get('schema')}")],
        ["created", _e(str(report.get("created", "")))],
        ["platform", _e(", ".join(f"{k} {v}" for k, v in (report.get("platform") or {}).items()))],
        ["seed", _e(str(report.get("seed")))],
        *([["shard", _e(f"{report['shard'].get('index')}/{report['shard'].get('count')} of a sweep "
                        "(join the shards' reports with bptt-check merge)")]]
          if isinstance(report.get("shard"), dict) else []),
        *([["joined from", _e(f"{report['merged'].get('shards')} shards: "
                              + ", ".join(str(f) for f in report["merged"].get("from", [])[:20]))]]
          if isinstance(report.get("merged"), dict) else []),
        ["oracles", _e(", ".join(report.get("oracles", []))) + " (the first is the reference)"],
        ["tolerances", "<br>".join(_e(s) for s in tx.tolerance_lines(report))],
        ["specs", "<br>".join(_e(tx.spec_text(s)) for s in specs[:50])
         + (f"<br>… and {len(specs) - 50} more" if len(specs) > 50 else "")],
        ["wall time", _e(f"{tx.num(report.get('seconds', 0.0))} s")],
    ]
    out.append(_table(["", ""], rows))
    return "\n".join(out)


def _groups(report: dict[str, Any]) -> str:
    gs = tx.groups(report)
    rows, classes = [], []
    for target, spec, n in gs[:TABLE_LIMIT]:
        bad = sum(n.get(k, 0) for k in tx.BAD_STATUSES)
        rows.append([_e(target or "(Python API)"), _e(spec), str(sum(n.values())),
                     str(n.get("passed", 0)), str(n.get("failed", 0)), str(n.get("inconclusive", 0)),
                     str(n.get("error", 0) + n.get("timeout", 0))])
        classes.append("fail" if bad else "")
    more = f"<p>… and {len(gs) - TABLE_LIMIT} more groups in report.json</p>" if len(gs) > TABLE_LIMIT else ""
    return ("<h2>By target and spec</h2>"
            + _table(["target", "spec", "cases", "passed", "failed", "inconclusive", "error/timeout"], rows, classes)
            + more)


def _bad_table(bad: list[dict[str, Any]], n_bad: int, report: dict[str, Any]) -> str:
    rows = []
    for i, c in enumerate(bad[:TABLE_LIMIT]):
        ev = c.get("evidence") or {}
        name = _e(tx.case_title(c))
        if i < DETAIL_LIMIT:
            name = f'<a href="#{tx.case_id(c)}">{name}</a>'
        what = _e(tx.wrong_text(c))
        first = ev.get("first_bad_step")
        rows.append([name, _e(c.get("status", "")), _e(tx.case_shapes(c)), what,
                     "" if first is None else str(first),
                     "" if ev.get("shortest_failing_length") is None else str(ev["shortest_failing_length"]),
                     f"<code>{_e(tx.reproduce_line(c, report))}</code>"])
    more = (f"<p>… and {n_bad - TABLE_LIMIT} more wrong cases in report.json</p>"
            if n_bad > TABLE_LIMIT else "")
    return ("<h2>Wrong cases</h2>"
            + _table(["case", "status", "shapes", "wrong gradients", "first bad step", "shortest failing length",
                      "reproduce"], rows, ["fail"] * len(rows)) + more)


def _grad_table(case: dict[str, Any]) -> str:
    rows, classes = [], []
    for k in tx.ordered_params(case):
        g = case["params"][k]
        ok = g.get("passed", True)
        if g.get("problem"):
            rows.append([_e(f"d{k}"), "no", _e(g["problem"])] + [""] * 7)
        else:
            rows.append([_e(f"d{k}"), "yes" if ok else "<b>no</b>", _e(f"{g.get('mismatched')}/{g.get('size')}"),
                         tx.num(g.get("max_abs_err")), tx.num(g.get("max_rel_err")),
                         _e(tx.idx(g.get("worst_index"))), tx.num(g.get("norm_rel_err")),
                         tx.num(g.get("cosine"), 5), tx.num(g.get("ratio"), 5), tx.num(g.get("scale"))])
        classes.append("" if ok else "fail")
    return _table(["gradient", "ok", "mismatched", "max abs err", "max rel err", "worst at", "norm rel err",
                   "cosine", "ratio yours/ref", "scale (max |ref|)"], rows, classes)


def _worst_tables(case: dict[str, Any]) -> str:
    out = []
    for k in tx.wrong_grads(case):
        g = case["params"][k]
        rows = g.get("worst") or []
        if not rows:
            continue
        body = [[_e(tx.idx(r["index"])), tx.num(r["yours"], 7), tx.num(r["reference"], 7), tx.num(r["abs"]),
                 tx.num(r["rel"])] for r in rows]
        out.append(f"<h4>{_e(f'd{k}')}: worst {len(rows)} elements</h4>"
                   + _table(["index", "yours", "reference", "abs", "rel"], body,
                            ["fail" if r.get("bad") else "" for r in rows]))
    return "".join(out)


def _prefix_table(ev: dict[str, Any]) -> str:
    p = ev.get("prefix")
    if not p:
        return ""
    rows = []
    for r in p["runs"]:
        worst = max(r.get("tol_ratio", {}).items(), key=lambda kv: kv[1] or 0.0, default=(None, None))
        rows.append([_e(r["length"]), "<b>fails</b>" if r["failed"] else ("error" if r.get("error") else "ok"),
                     _e(", ".join(f"d{k}" for k in r.get("wrong", [])) or (r.get("error") or "")),
                     "" if worst[0] is None else _e(f"d{worst[0]}: {tx.num(worst[1])}")])
    return ("<details><summary>the case re-run on prefixes of its sequence (reference: "
            f"{_e(p.get('oracle', ''))})</summary>"
            + _table(["length", "verdict", "wrong", "worst error / tolerance"], rows,
                     ["fail" if r["failed"] else "" for r in p["runs"]]) + "</details>")


def _figures(case: dict[str, Any], draw: bool) -> str:
    ev = case.get("evidence") or {}
    heat = ev.get("heatmaps") or {}
    figs = []
    for k in tx.ordered_params(case):
        g = case["params"][k]
        if k in heat:
            figs.append(f"<figure>{heatmap_svg(k, heat[k], g)}</figure>")
        elif g.get("problem"):
            figs.append(f'<figure class="note">d{k}: no picture, {_e(g["problem"])}</figure>')
    if not draw:
        return f'<div class="figs">{"".join(figs)}</div>'
    tm = ev.get("temporal")
    if tm:
        png = plots.temporal_png(tm, ev, (case["params"].get("U") or {}).get("rtol"))
        cap = ("rows: the loss step t; columns: the step s its gradient reaches; outlined: the cells the "
               "truncation windows cover. Right: dU's error (in tolerances) on each prefix of the sequence.")
        figs.append(f"<figure>{_img(png, 'temporal error map', 'temporal')}<figcaption>{_e(cap)}"
                    "</figcaption></figure>")
    png_steps = plots.steps_png(case)
    if png_steps:
        figs.append(f"<figure>{_img(png_steps, 'error against time step', 'steps')}</figure>")
    return f'<div class="figs">{"".join(figs)}</div>'


def _case_section(case: dict[str, Any], draw: bool, report: dict[str, Any]) -> str:
    ev = case.get("evidence") or {}
    out = [f'<section class="case" id="{tx.case_id(case)}"><h3 class="bad">{_e(tx.case_title(case))} '
           f"— {_e(case.get('status', '').upper())}</h3>",
           f"<p>shapes {_e(tx.case_shapes(case))}, seed {_e(case.get('seed'))}, "
           f"flavor {_e(str(case.get('flavor', '')))}</p>",
           f'<div class="lines">{_e(chr(10).join(tx.three_lines(case)))}</div>']
    diag = case.get("diagnosis")
    if diag:
        out.append("<h4>Diagnosis (best first)</h4>"
                   + _table(["code", "fit", "message"],
                            [[_e(str(d.get("code", ""))), tx.num(d.get("fit")), _e(str(d.get("message", "")))]
                             for d in diag]))
    if case.get("status") in ("error", "timeout"):
        err = case.get("error") or {}
        out.append(f"<pre>{_e(str(err.get('message', '')))}</pre>")
    else:
        out.append(_grad_table(case))
        out.append(_figures(case, draw))
        out.append(_worst_tables(case))
        out.append(_prefix_table(ev))
    for note in case.get("notes") or []:
        out.append(f'<p class="note">{_e(note)}</p>')
    rep = tx.reproducer_of(case, report)
    if rep:
        out.append("<h4>Reproduce this case alone</h4>")
        if rep.get("cli"):
            out.append(f'<pre class="cmd">{_e(rep["cli"])}</pre>')
        out.append(f'<pre class="cmd">{_e(rep["python"])}</pre>')
        if rep.get("note"):
            out.append(f'<p class="note">{_e(rep["note"])}</p>')
    if ev.get("skipped"):
        out.append(f'<p class="note">{_e(ev["skipped"])}</p>')
    out.append("</section>")
    return "\n".join(out)


def _inconclusive(report: dict[str, Any]) -> str:
    if not tx.status_count(report, "inconclusive"):
        return ""
    inc = []
    for c in report.get("cases", []):
        if c.get("status") == "inconclusive":
            inc.append(c)
            if len(inc) == TABLE_LIMIT:
                break
    if not inc:
        return ""
    rows = [[_e(tx.case_title(c)), _e("; ".join(c.get("notes") or []))] for c in inc[:TABLE_LIMIT]]
    return "<h2>Inconclusive cases (the oracles disagree)</h2>" + _table(["case", "why"], rows)


def render_html(report: dict[str, Any]) -> str:
    """The whole page as one string; pictures need matplotlib (see :mod:`.plots`)."""
    bad, n_bad = tx.bad_cases(report, TABLE_LIMIT), tx.bad_count(report)
    draw = bool(bad) and plots.available()      # (importing matplotlib costs; a green run draws nothing)
    parts = [_header(report)]
    if not draw and bad:
        parts.append(f'<p class="note" id="no-plots">{_e(plots.MISSING)}</p>')
    parts.append(_groups(report))
    if bad:
        parts.append(_bad_table(bad, n_bad, report))
        parts.append("<h2>Wrong cases in detail</h2>")
        if n_bad > DETAIL_LIMIT:
            parts.append(f"<p>The first {DETAIL_LIMIT} of {n_bad} wrong cases; every case is in report.json.</p>")
        parts.extend(_case_section(c, draw and i < PLOT_LIMIT, report) for i, c in enumerate(bad[:DETAIL_LIMIT]))
    else:
        parts.append('<p class="ok">Every gradient matches the reference: nothing to draw.</p>')
    parts.append(_inconclusive(report))
    parts.append(f"<p><small>Generated by bptt-check {_e(str(report.get('version', '')))} from its JSON "
                 f"report (schema {_e(report.get('schema'))}), the source of truth.</small></p>")
    title = f"bptt-check: {tx.verdict(report)}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(p for p in parts if p) + "\n</body></html>\n")
