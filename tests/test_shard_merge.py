"""A sweep past one machine (issue 14): ``--shard K/N`` checks a disjoint share of the case indices of the
same seed, each case exactly as the single run checks it, and ``bptt-check merge`` joins the shards' reports
into the single run's report — the same records, counts, JUnit, Markdown and HTML, apart from when and how
long (``created``, ``seconds``, each case's ``seconds``) and the added ``merged`` — or refuses, saying what,
which files and what to do."""

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check import cli
from bptt_check import report as rp
from bptt_check.model.shard import Shard
from bptt_check.report import plots
from bptt_check.verdict import evidence

HERE = Path(__file__).parent
BUG = f"{HERE / 'bugs.py'}:du_from_t1"
# quick: a correct backward in this process, the autograd reference alone
QUICK = ["--isolate", "thread", "--oracle", "autograd", "--progress", "none"]
SMALL = ["--sizes", "T=2:4,B=1:2,I=1:2,H=2:3,O=1"]       # small cases: a wrong one's evidence is quick
TIMING = ("created", "seconds")            # the header fields that say when and how long


# ----------------------------------------------------------------- the shard itself

@given(n=st.integers(1, 7), cases=st.integers(1, 30))
def test_the_shards_split_the_indices_disjointly_and_completely(n, cases):
    parts = [list(Shard(k, n).indices(cases)) for k in range(1, n + 1)]
    assert sorted(i for p in parts for i in p) == list(range(cases))
    assert all(Shard(k, n).holds(i) for k, p in enumerate(parts, 1) for i in p)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1           # round robin: balanced


@pytest.mark.parametrize("text, words", [
    ("0/4", "K must be between 1 and N = 4"), ("5/4", "K must be between 1 and N = 4"),
    ("1/0", "N must be between 1"), ("2", "expected a shard as K/N"), ("a/b", "expected a shard as K/N"),
    ("-1/3", "expected a shard as K/N"),
])
def test_a_bad_shard_is_a_usage_error_exit_2_with_one_line(text, words, tmp_path, capsys):
    with pytest.raises(bc.UsageError, match=words.split(" = ")[0]):
        Shard.parse(text)
    code = cli.main(["bptt_check.builtin.truncated:backward", f"--shard={text}", "--report-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()                              # nothing ran, nothing written
    with pytest.raises(bc.UsageError, match="shard"):
        bc.check(bc.builtin.truncated, cases=2, shard=text, isolate="none")


def test_a_shard_from_python_checks_its_indices_exactly_as_the_whole_run():
    whole = bc.check(bc.builtin.truncated, cases=5, seed=2, isolate="none", oracles=["autograd"])
    part = bc.check(bc.builtin.truncated, cases=5, seed=2, isolate="none", oracles=["autograd"], shard="2/3")
    assert [c.index for c in part.cases] == [1, 4] and part.to_dict()["shard"] == {"index": 2, "count": 3}
    strip = [{k: v for k, v in c.items() if k != "seconds"} for c in whole.to_dict()["cases"]]
    assert [{k: v for k, v in c.items() if k != "seconds"} for c in part.to_dict()["cases"]] == [strip[1], strip[4]]
    assert "of shard 2/3" in part.headline()


def test_shard_and_case_together_are_refused(tmp_path, capsys):
    code = cli.main(["bptt_check.builtin.truncated:backward", "--shard", "1/2", "--case", "3",
                     "--report-dir", str(tmp_path)])
    assert code == 2 and "give one of the two" in capsys.readouterr().err


def test_a_shard_says_which_in_progress_headline_and_every_format(tmp_path, capsys):
    code = cli.main(["bptt_check.builtin.truncated:backward", "--cases", "5", "--shard", "2/3",
                     "--report-dir", str(tmp_path), *QUICK[:4], "--progress", "lines"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("checking shard 2/3: 2 cases\n")
    assert "OK: 2 cases of shard 2/3, 2 passed" in out
    data = json.loads((tmp_path / "report.json").read_text())
    assert [c["index"] for c in data["cases"]] == [1, 4]
    assert {k: data["shard"][k] for k in ("index", "count")} == {"index": 2, "count": 3}
    assert data["shard"]["jobs"] == [{"target": "bptt_check.builtin.truncated:backward",
                                      "spec": bc.Spec().to_dict(), "cases": 5}]
    assert "Shard 2/3 of a sweep" in (tmp_path / "report.md").read_text()
    assert '<property name="shard" value="2/3"' in (tmp_path / "junit.xml").read_text()
    assert "2/3 of a sweep" in (tmp_path / "report.html").read_text()


def test_a_shard_with_no_case_says_so_and_still_merges(tmp_path, capsys):
    for k in (1, 2):
        code = cli.main(["bptt_check.builtin.truncated:backward", "--cases", "1", "--shard", f"{k}/2",
                         "--report-dir", str(tmp_path / f"s{k}"), *QUICK])
        assert code == 0
    assert "shard 2/2 holds no case of this sweep" in capsys.readouterr().err
    assert json.loads((tmp_path / "s2" / "report.json").read_text())["cases"] == []
    assert cli.main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--report-dir", str(tmp_path / "m")]) == 0
    assert [c["index"] for c in json.loads((tmp_path / "m" / "report.json").read_text())["cases"]] == [0]


# ----------------------------------------------------------------- joined = the single run

def _run(folder: Path, monkeypatch, *args: str) -> int:
    """The command run from ``folder`` with --report-dir reports (so the shards' command lines are the
    single run's but for --shard)."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    return cli.main([*args, "--report-dir", "reports"])


def _without_timing(data):
    data = copy.deepcopy(data)
    for key in TIMING:
        data.pop(key)
    for case in data["cases"]:
        case.pop("seconds")
    return data


def test_merged_shards_equal_the_single_run_field_for_field_and_in_every_format(tmp_path, monkeypatch):
    """A wrong backward on 4 cases, the first 2 failures with the full evidence (the limit made 2 here): the
    shards each give the full evidence to their own first failures (all four), the join keeps it for the
    sweep's first 2 and makes the rest cheap, as the single run does."""
    monkeypatch.setattr(evidence, "EVIDENCE_LIMIT", 2)
    monkeypatch.setattr(plots, "available", lambda: False)     # the page without matplotlib's pictures: quick
    args = ["--cases", "4", "--seed", "3", *SMALL, *QUICK]
    single = _run(tmp_path / "single", monkeypatch, BUG, *args)
    shards = [_run(tmp_path / f"s{k}", monkeypatch, BUG, *args, "--shard", f"{k}/2") for k in (1, 2)]
    assert single == 1 and shards == [1, 1]
    monkeypatch.chdir(tmp_path)
    assert cli.main(["merge", "s2/reports", "s1/reports/report.json", "--report-dir", "m"]) == 1
    one = json.loads((tmp_path / "single" / "reports" / "report.json").read_text())
    joined = json.loads((tmp_path / "m" / "report.json").read_text())
    tiers = [c["evidence"]["tier"] for c in one["cases"]]
    assert tiers == ["full", "full", "cheap", "cheap"]
    shard_tiers = [c["evidence"]["tier"] for k in (1, 2)
                   for c in json.loads((tmp_path / f"s{k}" / "reports" / "report.json").read_text())["cases"]]
    assert shard_tiers.count("full") == 4                    # each shard: its own first two failures
    # the fields that differ: when and how long, and what the join adds
    assert set(joined) - set(one) == {"merged"} and set(one) - set(joined) == set()
    assert joined["merged"]["shards"] == 2
    assert joined["merged"]["from"] == ["s1/reports/report.json", "s2/reports/report.json"]
    assert joined["seconds"] == pytest.approx(sum(joined["merged"]["seconds"]))
    same = _without_timing(joined)
    same.pop("merged")
    assert same == _without_timing(one)                      # every other field, every case record, bit for bit
    # rendered from the same data, every format is the same text
    same = {k: one[k] if k in TIMING else same[k] for k in one}
    same["cases"] = [{k: orig[k] if k == "seconds" else case[k] for k in orig}
                     for case, orig in zip(same["cases"], one["cases"])]
    for fmt in rp.FORMATS:
        assert rp.render(same, fmt) == rp.render(one, fmt), fmt
    # and the written files are those of the single run but for the timing and the join
    md = (tmp_path / "m" / "report.md").read_text()
    assert "WRONG GRADIENTS" in md and "from 2 shards" in md and "## Wrong cases (4)" in md


def test_merged_main_job_keeps_the_run_order_of_every_spec(tmp_path, monkeypatch):
    args = ["--cases", "3", "--cell", "rnn", "--mode", "many-to-one", *QUICK]
    _run(tmp_path / "single", monkeypatch, *args)
    for k in (1, 2, 3):
        _run(tmp_path / f"s{k}", monkeypatch, *args, "--shard", f"{k}/3")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["merge", "s3/reports", "s1/reports", "s2/reports", "--report-dir", "m", "--format", "json"]) == 0
    one = json.loads((tmp_path / "single" / "reports" / "report.json").read_text())
    joined = json.loads((tmp_path / "m" / "report.json").read_text())
    assert len({(c["target"], json.dumps(c["spec"])) for c in one["cases"]}) >= 5        # several jobs
    assert [(c["target"], c["spec"], c["index"]) for c in joined["cases"]] == \
           [(c["target"], c["spec"], c["index"]) for c in one["cases"]]
    same = _without_timing(joined)
    same.pop("merged")
    assert same == _without_timing(one)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["report.json"]


def test_show_reads_a_merged_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "available", lambda: False)
    for k in (1, 2):
        _run(tmp_path / f"s{k}", monkeypatch, BUG, "--cases", "2", *SMALL, *QUICK, "--shard", f"{k}/2")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["merge", "s1/reports", "s2/reports", "--report-dir", "m"]) == 1
    capsys.readouterr()
    assert cli.main(["show", "m"]) == 1
    out = capsys.readouterr().out
    assert "WRONG GRADIENTS" in out and "2 cases from 2 shards" in out and "2 wrong cases" in out


# ----------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards of one small sweep (1/2, 2/2), of another seed, of another spec, of 3 shards, and a plain run."""
    root = tmp_path_factory.mktemp("shards")
    base = ["bptt_check.builtin.truncated:backward", "--cases", "4", *QUICK]
    runs = {"1": ["--shard", "1/2"], "2": ["--shard", "2/2"], "seed": ["--shard", "2/2", "--seed", "5"],
            "mode": ["--shard", "2/2", "--mode", "many-to-one"], "of3": ["--shard", "2/3"], "plain": []}
    for name, extra in runs.items():
        assert cli.main([*base, *extra, "--report-dir", str(root / name)]) == 0
    return root


def _refused(capsys, *paths, words):
    code = cli.main(["merge", *map(str, paths), "--report-dir", str(paths[0].parent / "never")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not (paths[0].parent / "never").exists()
    return err


def test_merge_refuses_another_seed_naming_both_files_and_what_to_do(shards, capsys):
    _refused(capsys, shards / "1", shards / "seed", words=[str(shards / "1" / "report.json"),
                                                           str(shards / "seed" / "report.json"),
                                                           "not shards of one sweep", "--seed 0 vs 5",
                                                           "same command apart from --shard"])


def test_merge_refuses_another_spec(shards, capsys):
    _refused(capsys, shards / "1", shards / "mode", words=["--mode many-to-many vs many-to-one"])


def test_merge_refuses_a_shard_given_twice(shards, capsys):
    _refused(capsys, shards / "1", shards / "2", shards / "2" / "report.json",
             words=["shard 2/2 is given twice", "give each shard's report once"])


def test_merge_refuses_a_missing_shard_and_says_how_to_make_it(shards, capsys):
    err = _refused(capsys, shards / "1", words=["shard 2/2 missing (1 of 2 given)", "--shard 2/2"])
    assert "bptt-check bptt_check.builtin.truncated:backward --cases 4" in err
    # the command to paste writes into a folder of its own, never over the shard it was given
    command = err.split("made by e.g. ")[1]
    assert command.count("--report-dir") == 1 and "--report-dir shard-2" in command and str(shards / "1") not in command


def test_merge_refuses_shards_of_another_count(shards, capsys):
    _refused(capsys, shards / "1", shards / "of3", words=["is shard 1/2", "shard 2/3", "share N"])


def test_merge_refuses_a_report_that_is_not_a_shard(shards, capsys):
    _refused(capsys, shards / "plain", shards / "1", words=["not the report of a shard", "--shard K/N"])


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(interrupted=True), ["was interrupted", "run that shard again"]),
    (lambda d: d.update(version="0.0.1"), ["bptt-check 0.0.1", "one version"]),
    (lambda d: d["cases"].pop(), ["should hold case 3", "was edited or cut"]),
    (lambda d: d["cases"].append(dict(d["cases"][0], index=5)), ["holds case 5", "was edited"]),
])
def test_merge_refuses_an_edited_or_interrupted_shard(shards, tmp_path, capsys, edit, words):
    data = json.loads((shards / "2" / "report.json").read_text())
    edit(data)
    (tmp_path / "2").mkdir()
    rp.write_reports(data, tmp_path / "2", ["json"])
    _refused(capsys, shards / "1", tmp_path / "2", words=words)


def test_merge_of_nothing_readable_says_so(tmp_path, capsys):
    assert cli.main(["merge", str(tmp_path / "nope")]) == 2
    assert "no report at" in capsys.readouterr().err
    assert cli.main(["merge"]) == 2
    assert "REPORT" in capsys.readouterr().err
