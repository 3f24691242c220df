"""``junit.xml``: one ``testcase`` per case, one ``testsuite`` per (target, spec).

failed -> ``<failure>`` whose message is the short diagnosis (the three lines); error and
timeout -> ``<error>``; inconclusive -> ``<skipped>`` (nothing proved either way); passed ->
a bare testcase. The ``tests/failures/errors/skipped`` attributes equal the JSON counts.
Readable by the common CI test panes (Jenkins, GitLab, GitHub test-reporter actions).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from . import text as tx

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: Any) -> str:
    """Text XML 1.0 can hold: terminal escapes and control characters dropped (:func:`.text.plain`), the
    two non-characters replaced; ElementTree escapes ``<``, ``&`` and quotes."""
    return _NOT_XML.sub("?", tx.plain(text))


def _classname(target: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in (target or "api"))
    return f"bptt_check.{safe.strip('_') or 'api'}"


def render_junit(report: dict[str, Any]) -> str:
    cases = report.get("cases", [])
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cases:
        by_group.setdefault((c.get("target", ""), tx.spec_text(c.get("spec", {}))), []).append(c)

    def counts(cs: list[dict[str, Any]]) -> dict[str, str]:
        st = [c.get("status") for c in cs]
        return {"tests": str(len(cs)), "failures": str(st.count("failed")),
                "errors": str(st.count("error") + st.count("timeout")), "skipped": str(st.count("inconclusive")),
                "time": f"{sum(c.get('seconds') or 0.0 for c in cs):.6f}"}

    root = ET.Element("testsuites", {"name": "bptt-check", **counts(cases),
                                     "time": f"{report.get('seconds', 0.0):.6f}"})
    for (target, spec), cs in by_group.items():
        suite = ET.SubElement(root, "testsuite", {"name": _x(f"{target or 'api'} [{spec}]"), **counts(cs),
                                                  "timestamp": str(report.get("created", ""))[:19]})
        props = ET.SubElement(suite, "properties")
        for name, value in (("seed", report.get("seed")), ("command", report.get("command")),
                            ("oracles", ",".join(report.get("oracles", []))),
                            ("bptt-check", report.get("version"))):
            if value is not None:
                ET.SubElement(props, "property", {"name": name, "value": _x(value)})
        for c in cs:
            tc = ET.SubElement(suite, "testcase", {
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
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
