"""The discrepancy report in four formats, all rendered from the JSON dict (the source of truth).

    write_reports(report_dict, "reports", ("json", "md", "junit", "html"))

writes ``report.json``, ``report.md``, ``junit.xml`` and ``report.html`` atomically (a reader
sees an old file or a new one, never half of one); report.json and junit.xml are streamed a case at a
time, so the cases may be a :class:`~.log.CaseLog` of any length. The pytest plugin and ``bptt-check show``
call the same function with a dict loaded from JSON, so every renderer works from the JSON alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from importlib import resources
from io import StringIO
from pathlib import Path
from typing import IO, Any

from ..errors import UsageError
from . import html, junit, markdown
from .build import SCHEMA, report_dict
from .io import write_set
from .log import CaseLog, encode

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
    if fmt in ("json", "junit"):
        buf = StringIO()
        _writer(report, fmt)(buf)
        return buf.getvalue()
    if fmt == "md":
        return markdown.render_markdown(report, FILENAMES["html"])
    if fmt == "html":
        return html.render_html(report)
    raise UsageError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")


def _writer(report: dict[str, Any], fmt: str) -> Callable[[IO[str]], None] | str:
    """What writes one format: a function that streams it (json, junit: their size grows with the cases),
    or the text itself (md, html: capped whatever the number of cases)."""
    if fmt == "json":
        return lambda out: write_json(out, report)
    if fmt == "junit":
        return lambda out: junit.write_junit(out, report)
    return render(report, fmt)


def write_json(out: IO[str], report: dict[str, Any]) -> None:
    """``report.json``: the header indented, then ``"cases"`` last, one case a line (compact JSON), so that a
    report of any length is written, read back (:func:`open_report`) and joined a case at a time."""
    header = {k: v for k, v in report.items() if k != "cases"}
    head = json.dumps(header, indent=2, allow_nan=False)
    out.write(head[:-2] + ",\n" if header else "{\n")
    out.write(CASES_LINE)
    cases = report.get("cases", [])
    lines = cases.lines() if isinstance(cases, CaseLog) else (encode(c) for c in cases)
    n = 0
    for line in lines:
        out.write(("," if n else "") + "\n    " + line.decode("ascii"))
        n += 1
    out.write("\n  ]\n}\n" if n else "]\n}\n")


CASES_LINE = '  "cases": ['


def write_reports(report: dict[str, Any], folder: str | os.PathLike[str],
                  formats: Iterable[str] = FORMATS, *, replace: bool = False) -> dict[str, Path]:
    """Write the report in each format into ``folder``, as one set (``io.write_set``: every file rendered
    and written before any is renamed into place); returns the path of each file written. ``report["cases"]``
    may be a list of records or a :class:`~.log.CaseLog`: report.json and junit.xml are streamed from it.

    ``replace=True`` (a run's report): the files of the other formats, left by an earlier run, are
    removed, so the folder never holds this run's JSON beside an older run's page."""
    folder = Path(folder)
    chosen = parse_formats(formats)
    files = {folder / FILENAMES[fmt]: _writer(report, fmt) for fmt in chosen}
    stale = [folder / FILENAMES[f] for f in FORMATS if f not in chosen] if replace else []
    write_set(files, [p for p in stale if p.exists() or p.is_symlink()])
    return {fmt: folder / FILENAMES[fmt] for fmt in chosen}


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``report.json`` written by any bptt-check run, checked against its schema
    (:func:`schema`); says clearly what is wrong with it (UsageError): not found, not UTF-8, not strict
    JSON, nested too deep, a field missing or of the wrong type. ``"cases"`` is a list; :func:`open_report`
    reads the same without holding the cases in memory."""
    data = open_report(path)
    data["cases"] = list(data["cases"])
    return data


def open_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`load_report`, with ``"cases"`` a :class:`~.log.CaseLog` (spooled, memory flat in the number of
    cases) when the file has the layout bptt-check writes (:func:`write_json`); any other strict JSON report
    is read whole. ``"path"`` is not added: the caller knows where it read it."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAMES["json"]
    try:
        fh = p.open("rb")
    except FileNotFoundError:
        raise UsageError(f"no report at {str(p)!r}; run bptt-check first, or give the path of a report.json",
                         path=str(p)) from None
    except OSError as err:
        raise UsageError(f"cannot read {str(p)!r}: {err.strerror or err}", path=str(p)) from None
    with fh:
        try:
            data = _read_by_lines(fh, p)
            if data is None:
                fh.seek(0)
                data = _read_whole(fh.read(), p)
        except OSError as err:
            raise UsageError(f"cannot read {str(p)!r}: {err.strerror or err}", path=str(p)) from None
    return data


def _read_by_lines(fh: IO[bytes], p: Path) -> dict[str, Any] | None:
    """A report in the layout of :func:`write_json`, a case at a time; None when the file is laid out
    otherwise (or broken: then reading it whole says what is wrong)."""
    head = []
    mark = CASES_LINE.encode()
    for line in fh:
        if line.rstrip(b"\r\n") == mark:
            break
        head.append(line)
    else:
        return None
    try:
        header = json.loads(b"".join(head) + mark.replace(b"[", b"[]") + b"}", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or header.get("tool") != "bptt-check":
        return None
    if _depth(header) > MAX_DEPTH:
        return None
    problem = schema_problem(header)
    if problem:
        raise UsageError(f"{str(p)!r} does not follow the report schema: {problem}", path=str(p))
    root = schema()
    cases = CaseLog()
    for i, line in enumerate(fh):
        text = line.strip()
        if text == b"]":
            break
        text = text[:-1] if text.endswith(b",") else text
        try:
            record = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return None
        if _depth(record) + 2 > MAX_DEPTH:
            return None
        problem = _check(record, root["$defs"]["case"], root, f"report.cases[{i}]")
        if problem:
            raise UsageError(f"{str(p)!r} does not follow the report schema: {problem}", path=str(p))
        cases.append_line(text, record)
    else:
        return None
    if fh.read().strip() != b"}":
        return None
    header["cases"] = cases
    return header


def _read_whole(raw: bytes, p: Path) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{str(p)!r} is not UTF-8 text (byte {err.start}); is it a report.json?",
                         path=str(p)) from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise UsageError(f"{str(p)!r} is not JSON: {err}", path=str(p)) from None
    except ValueError as err:
        raise UsageError(f"{str(p)!r} is not strict JSON: {err}", path=str(p)) from None
    except RecursionError:
        raise UsageError(f"{str(p)!r} is nested too deeply to be a report", path=str(p)) from None
    if not isinstance(data, dict) or data.get("tool") != "bptt-check" or "cases" not in data:
        raise UsageError(f"{str(p)!r} is not a bptt-check report (no 'tool': 'bptt-check' and 'cases')",
                         path=str(p))
    if _depth(data) > MAX_DEPTH:
        raise UsageError(f"{str(p)!r} is nested deeper than {MAX_DEPTH} levels: not a report bptt-check wrote",
                         path=str(p))
    problem = schema_problem(data)
    if problem:
        raise UsageError(f"{str(p)!r} does not follow the report schema: {problem}", path=str(p))
    data["cases"] = CaseLog(data["cases"])
    return data


MAX_DEPTH = 64


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (iteratively: a hostile file cannot exhaust the stack)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        if isinstance(v, dict):
            todo.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            todo.extend((x, d + 1) for x in v)
    return deepest


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def schema_problem(data: Any, sch: dict[str, Any] | None = None) -> str | None:
    """The first way ``data`` breaks the report schema (``where: what``), or None. The keywords the
    schema uses (type, const, enum, required, properties, additionalProperties, items, min/maxItems,
    minimum, maximum, min/maxLength, anyOf, allOf, oneOf, if/then/else, local $ref); others are annotations."""
    root = sch if sch is not None else schema()
    return _check(data, root, root, "report")


def _check(v: Any, s: Any, root: dict[str, Any], where: str) -> str | None:
    if s is False:
        return f"{where}: not allowed"
    if not isinstance(s, dict):
        return None
    if "$ref" in s:
        target: Any = root
        for part in str(s["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        problem = _check(v, target, root, where)
        if problem:
            return problem
    kinds = s.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_TYPES.get(k, lambda _: True)(v) for k in names):
            return f"{where}: expected {' or '.join(names)}, got {_kind(v)}"
    if "const" in s and v != s["const"]:
        return f"{where}: must be {s['const']!r}, got {_short(v)}"
    if "enum" in s and v not in s["enum"]:
        return f"{where}: must be one of {', '.join(map(repr, s['enum']))}, got {_short(v)}"
    for key, test in (("minimum", lambda a, b: a >= b), ("maximum", lambda a, b: a <= b)):
        if key in s and _TYPES["number"](v) and not test(v, s[key]):
            return f"{where}: must be {'>=' if key == 'minimum' else '<='} {s[key]}, got {v}"
    if isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            return f"{where}: shorter than {s['minLength']} characters"
        if "maxLength" in s and len(v) > s["maxLength"]:
            return f"{where}: longer than {s['maxLength']} characters"
    if isinstance(v, dict):
        for key in s.get("required", []):
            if key not in v:
                return f"{where}: the field {key!r} is missing"
        props = s.get("properties", {})
        extra = s.get("additionalProperties", True)
        for key, item in v.items():
            sub = props.get(key, extra)
            name = key if key.isidentifier() else _short(key, 40)
            problem = _check(item, sub, root, f"{where}.{name}")
            if problem:
                return problem
    if isinstance(v, list):
        if "minItems" in s and len(v) < s["minItems"]:
            return f"{where}: fewer than {s['minItems']} items"
        if "maxItems" in s and len(v) > s["maxItems"]:
            return f"{where}: more than {s['maxItems']} items"
        if "items" in s:
            for i, item in enumerate(v):
                problem = _check(item, s["items"], root, f"{where}[{i}]")
                if problem:
                    return problem
    if "if" in s:
        branch = s.get("then") if _check(v, s["if"], root, where) is None else s.get("else")
        problem = _check(v, branch, root, where) if branch is not None else None
        if problem:
            return problem
    for sub in s.get("allOf", []):
        problem = _check(v, sub, root, where)
        if problem:
            return problem
    for key in ("anyOf", "oneOf"):
        if key in s:
            problems = [_check(v, sub, root, where) for sub in s[key]]
            passing = sum(p is None for p in problems)
            if passing == 0 or (key == "oneOf" and passing > 1):
                return next((p for p in problems if p), f"{where}: matches none of its alternatives")
    return None


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 1] + "…"


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that ``report.json`` follows."""
    return json.loads(resources.files(__package__).joinpath("report.schema.json").read_text(encoding="utf-8"))


__all__ = ["FORMATS", "FILENAMES", "SCHEMA", "CaseLog", "parse_formats", "render", "write_reports", "write_json",
           "load_report", "open_report", "schema", "schema_problem", "report_dict"]
