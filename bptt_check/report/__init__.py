"""The discrepancy report in four formats, all rendered from the JSON dict (the source of truth).

    write_reports(report_dict, "reports", ("json", "md", "junit", "html"))

writes ``report.json``, ``report.md``, ``junit.xml`` and ``report.html`` atomically (a reader
sees an old file or a new one, never half of one). The pytest plugin and ``bptt-check show``
call the same function with a dict loaded from JSON, so every renderer works from the JSON alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UsageError
from . import html, junit, markdown
from .build import SCHEMA, report_dict
from .io import atomic_write_text, write_json

FORMATS: tuple[str, ...] = ("json", "md", "junit", "html")
FILENAMES: dict[str, str] = {"json": "report.json", "md": "report.md", "junit": "junit.xml", "html": "report.html"}


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"json,md"`` or ``["json", "md"]`` -> ``("json", "md")``; ``all`` is every format."""
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if items == ["all"]:
        return FORMATS
    unknown = [p for p in items if p not in FORMATS]
    if unknown or not items:
        raise UsageError(f"unknown report format(s) {unknown or text!r}; choose from {', '.join(FORMATS)} "
                             "(comma-separated) or all")
    return tuple(dict.fromkeys(items))


def render(report: dict[str, Any], fmt: str) -> str:
    """One format of the report as text."""
    if fmt == "json":
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    if fmt == "md":
        return markdown.render_markdown(report, FILENAMES["html"])
    if fmt == "junit":
        return junit.render_junit(report)
    if fmt == "html":
        return html.render_html(report)
    raise UsageError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")


def write_reports(report: dict[str, Any], folder: str | os.PathLike[str],
                  formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Write the report in each format into ``folder``; returns the path of each file written."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    for fmt in parse_formats(formats):
        path = folder / FILENAMES[fmt]
        if fmt == "json":
            out[fmt] = write_json(path, report)
        else:
            out[fmt] = atomic_write_text(path, render(report, fmt))
    return out


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``report.json`` written by any bptt-check run; says clearly what is wrong with it."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAMES["json"]
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no report at {str(p)!r}; run bptt-check first, or give the path of a report.json",
                             path=str(p)) from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{str(p)!r} is not JSON: {err}", path=str(p)) from None
    if not isinstance(data, dict) or data.get("tool") != "bptt-check" or "cases" not in data:
        raise UsageError(f"{str(p)!r} is not a bptt-check report (no 'tool': 'bptt-check' and 'cases')",
                             path=str(p))
    return data


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that ``report.json`` follows."""
    return json.loads(resources.files(__package__).joinpath("report.schema.json").read_text(encoding="utf-8"))


__all__ = ["FORMATS", "FILENAMES", "SCHEMA", "parse_formats", "render", "write_reports", "load_report",
           "schema", "report_dict"]
