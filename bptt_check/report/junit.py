"""``junit.xml``: one ``testcase`` per case, one ``testsuite`` per (target, spec).

failed -> ``<failure>`` whose message is the short diagnosis (the three lines); error and
timeout -> ``<error>``; inconclusive -> ``<skipped>`` (nothing proved either way); passed ->
a bare testcase. The ``tests/failures/errors/skipped`` attributes equal the JSON counts. Written a test
case at a time (:func:`write_junit`): a run of any length never holds the whole tree.
Readable by the common CI test panes (Jenkins, GitLab, GitHub test-reporter actions).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import IO, Any
from xml.sax.saxutils import quoteattr

from . import text as tx
from .log import summary_of

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: Any) -> str:
    """Text XML 1.0 can hold: terminal escapes and control characters dropped (:func:`.text.plain`), the
    two non-characters replaced; ElementTree escapes ``<``, ``&`` and quotes."""
    return _NOT_XML.sub("?", tx.plain(text))


def _classname(target: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in (target or "api"))
    return f"bptt_check.{safe.strip('_') or 'api'}"


def render_junit(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    write_junit(buf, report)
    return buf.getvalue()


def write_junit(out: IO[str], report: dict[str, Any]) -> None:
    """Write ``junit.xml`` to ``out`` a test case at a time (the cases may be a CaseLog of any length)."""
    cases = report.get("cases", [])
    summary = summary_of(cases)

    def counts(n: dict[str, int], seconds: float) -> dict[str, str]:
        return {"tests": str(sum(n.values())), "failures": str(n.get("failed", 0)),
                "errors": str(n.get("error", 0) + n.get("timeout", 0)), "skipped": str(n.get("inconclusive", 0)),
                "time": f"{seconds:.6f}"}

    groups = list(summary.groups.values())
    everything: dict[str, int] = {}
    for g in groups:
        for k, v in g.counts.items():
            everything[k] = everything.get(k, 0) + v
    out.write('<?xml version="1.0" encoding="utf-8"?>\n')
    out.write(_open("testsuites", {"name": "bptt-check", **counts(everything, 0.0),
                                   "time": f"{report.get('seconds', 0.0):.6f}"}, 0))
    props = [(name, value) for name, value in (("seed", report.get("seed")), ("command", report.get("command")),
                                               ("oracles", ",".join(report.get("oracles", []))),
                                               ("bptt-check", report.get("version"))) if value is not None]
    if report.get("shard"):
        props.append(("shard", f"{report['shard'].get('index')}/{report['shard'].get('count')}"))
    for g in groups:
        out.write(_open("testsuite", {"name": _x(f"{g.target or 'api'} [{g.spec}]"), **counts(g.counts, g.seconds),
                                      "timestamp": str(report.get("created", ""))[:19]}, 1))
        out.write("    <properties>\n")
        for name, value in props:
            out.write("      " + ET.tostring(ET.Element("property", {"name": name, "value": _x(value)}),
                                          encoding="unicode") + "\n")
        out.write("    </properties>\n")
        for i in g.positions():
            out.write(_testcase(cases[i], g.target, g.spec, report))
        out.write("  </testsuite>\n")
    out.write("</testsuites>\n")


def _open(tag: str, attrs: dict[str, str], level: int) -> str:
    return "  " * level + f"<{tag}" + "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items()) + ">\n"


def _testcase(c: dict[str, Any], target: str, spec: str, report: dict[str, Any]) -> str:
    tc = ET.Element("testcase", {
        "classname": _classname(target),
        "name": _x(f"case {c.get('index')} [{spec}] {tx.case_shapes(c)}"),
        "time": f"{c.get('seconds') or 0.0:.6f}"})
    status = c.get("status")
    if status == "failed":
        lines = tx.three_lines(c)
        f = ET.SubElement(tc, "failure", {"message": _x(lines[0] if lines else "wrong gradient"),
                                          "type": "WrongGradient"})
        f.text = _x("\n".join(lines + [f"reproduce: {tx.reproduce_line(c, report)}"]))
    elif status in ("error", "timeout"):
        err = c.get("error") or {}
        e = ET.SubElement(tc, "error", {"message": _x(tx.error_line(c)), "type": _x(err.get("kind", status))})
        e.text = _x("\n".join([*tx.three_lines(c), "", str(err.get("message", "")), "",
                                f"reproduce: {tx.reproduce_line(c, report)}"]))
    elif status == "inconclusive":
        ET.SubElement(tc, "skipped", {"message": _x("inconclusive: " + "; ".join(c.get("notes") or []))})
    ET.indent(tc, space="  ", level=2)
    return "    " + ET.tostring(tc, encoding="unicode") + "\n"
