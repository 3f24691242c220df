"""The sharded CI recipe (``examples/ci/bptt-check-matrix.yml``, issue 14): its matrix and its steps hang
together (as many shards as SHARDS, each uploads what the join downloads, the join runs even when a shard
failed), and its commands, run here as the workflow runs them — every shard's check, then the join — give
the report of the whole sweep."""

import glob
import json
import re
import shlex
from pathlib import Path

from bptt_check import cli

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "ci" / "bptt-check-matrix.yml"


def _env(workflow: str, name: str) -> str:
    return re.search(rf"^\s+{name}: \"?([^\"\s]+)\"?", workflow, re.M).group(1)


def test_the_matrix_recipe_shards_uploads_and_joins_every_shard():
    workflow = RECIPE.read_text()
    shards = int(_env(workflow, "SHARDS"))
    listed = re.search(r"^\s+shard: \[([\d, ]+)\]$", workflow, re.M).group(1)
    assert [int(k) for k in listed.split(",")] == list(range(1, shards + 1))      # the matrix is 1 … SHARDS
    for needed in ("fail-fast: false", '--shard "${{ matrix.shard }}/$SHARDS"', "name: shard-${{ matrix.shard }}",
                   "pattern: shard-*", "needs: shard", "bptt-check merge shards/shard-*", '>> "$GITHUB_STEP_SUMMARY"',
                   "reports/junit.xml", "reports/report.html"):
        assert needed in workflow, needed
    merge_job = workflow[workflow.index("\n  merge:"):]
    assert merge_job.split("steps:")[0].count("if: always()") == 1      # the join runs when a shard failed
    upload = workflow[workflow.index("Upload the shard's report"):workflow.index("\n  merge:")]
    assert "if: always()" in upload and "reports/report.json" in upload


def test_the_matrix_recipes_commands_give_the_whole_sweeps_report(tmp_path, monkeypatch, capsys):
    workflow = RECIPE.read_text()
    target, shards = _env(workflow, "TARGET"), int(_env(workflow, "SHARDS"))
    check = shlex.split(re.search(r"^\s+run: bptt-check (\"\$TARGET\" .*--shard .*)$", workflow, re.M).group(1))
    join = shlex.split(re.search(r"^\s+run: bptt-check (merge .*)$", workflow, re.M).group(1))
    monkeypatch.chdir(ROOT)                  # the workflow runs in the repository root
    for k in range(1, shards + 1):
        values = {"$TARGET": target, "$CASES": "8", "$GITHUB_RUN_NUMBER": "7",
                  "${{ matrix.shard }}/$SHARDS": f"{k}/{shards}"}
        args = [values.get(a, a) for a in check]
        # each shard's report lands where download-artifact puts it: shards/shard-K/report.json
        code = cli.main([*args, "--report-dir", str(tmp_path / "shards" / f"shard-{k}"), "--progress", "none"])
        assert code == 0, capsys.readouterr()
        assert sorted(p.name for p in (tmp_path / "shards" / f"shard-{k}").iterdir()) == ["report.json"]
    monkeypatch.chdir(tmp_path)
    args = [p for a in join for p in (sorted(glob.glob(a)) if "*" in a else [a])]     # the shell's glob
    assert cli.main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"OK: 8 cases from {shards} shards, 8 passed" in out
    data = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert [c["index"] for c in data["cases"]] == list(range(8)) and data["seed"] == 7
    assert data["merged"]["shards"] == shards and "shard" not in data
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == \
           ["junit.xml", "report.html", "report.json", "report.md"]
