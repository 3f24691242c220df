"""Generate the tables of docs/robustness.md from the tests' catalogues.

    python docs/gen_robustness_table.py          # rewrite the generated parts of docs/robustness.md
    python docs/gen_robustness_table.py --check  # exit 1 if they are out of date (tests/fuzz/test_docs_table.py)

Table 1 runs every row of ``tests/fuzz/misbehaviours.py:CATALOGUE`` through ``check_case`` and
shows the status, the error kind and the first line of the message the harness gives. Table 2
lists every hostile TARGET of ``tests/fuzz/hostile.py:ROWS`` with the exit status of the command and
what its report says, in the rows' own words (each row runs through the command in
``tests/test_robustness_cli.py``, which holds those words true). Table 3 runs every command line of
``tests/fuzz/bad_usage.py:BAD_USAGE`` through ``bptt_check.cli.main`` and shows the exit status and
the one line it prints. The same catalogues are asserted on by ``tests/fuzz/test_catalogue.py`` and
``tests/test_robustness_cli.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "robustness.md"
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

import bad_usage  # noqa: E402
import hostile  # noqa: E402
import misbehaviours  # noqa: E402

import bptt_check as bc  # noqa: E402
from bptt_check import cli  # noqa: E402
from bptt_check.runner.read import headline  # noqa: E402

# every size different, so the layout hints are unambiguous
DOC_SPEC = bc.Spec(sizes={"T": 5, "B": 2, "I": 3, "H": 4, "O": 6})
MAX = 190


def _cell(text: str) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    text = re.sub(r"[\w./-]*/([\w.-]+\.py)", r"\1", text)     # paths: the file name only
    return text if len(text) <= MAX else text[: MAX - 1] + "…"


def behaviour_table() -> str:
    rows = ["| the backward… | status | `error.kind` | what the report says (first line) |",
            "| --- | --- | --- | --- |"]
    for row in misbehaviours.CATALOGUE:
        planted = row.build()
        spec = DOC_SPEC.replace(**row.spec) if row.spec else DOC_SPEC
        case = bc.draw_case(spec, 1, 0)
        result = bc.check_case(planted.backward, case, oracles=("autograd",),
                               timeout=0.2 if planted.hangs else 30.0)
        if result.error:
            said = headline(result.error)
        elif result.status == "failed":
            said = "wrong: " + ", ".join(result.failed_grads)
        elif result.notes:
            said = "note: " + result.notes[0]
        elif result.stdout:
            said = f"`stdout` of the case: {result.stdout.splitlines()[0]!r} …"
        else:
            said = "—"
        kind = f"`{result.error['kind']}`" if result.error else "—"
        rows.append(f"| {row.behaviour} | {result.status} | {kind} | {_cell(said)} |")
    return "\n".join(rows)


def hostile_table() -> str:
    rows = ["| the TARGET… | exit | what happens |", "| --- | --- | --- |"]
    for row in hostile.ROWS:
        rows.append(f"| {row.behaviour} | {row.exit} | {row.claim} |")
    return "\n".join(rows)


def usage_table() -> str:
    rows = ["| command line | exit | the one line on stderr |", "| --- | --- | --- |"]
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for make, _ in bad_usage.BAD_USAGE:
                argv = make(Path("."))
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = cli.main([*argv, "--report-dir", "reports"] if "--report-dir" not in argv else argv)
                line = err.getvalue().strip().replace(tmp, ".").replace(os.path.realpath(tmp), ".")
                shown = " ".join(a if " " not in a else repr(a) for a in argv)
                rows.append(f"| `bptt-check {shown}` | {code} | {_cell(line)} |")
        finally:
            os.chdir(here)
    return "\n".join(rows)


def _replace(text: str, name: str, table: str) -> str:
    begin = f"<!-- BEGIN GENERATED {name} (docs/gen_robustness_table.py) -->"
    end = f"<!-- END GENERATED {name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC}: markers for {name} not found")
    return pattern.sub(lambda _: f"{begin}\n{table}\n{end}", text)


def render(text: str) -> str:
    text = _replace(text, "BEHAVIOURS", behaviour_table())
    text = _replace(text, "HOSTILE", hostile_table())
    return _replace(text, "USAGE", usage_table())


def main(argv: list[str]) -> int:
    current = DOC.read_text(encoding="utf-8")
    new = render(current)
    if "--check" in argv:
        if new != current:
            print(f"{DOC} is out of date: run  python docs/gen_robustness_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
