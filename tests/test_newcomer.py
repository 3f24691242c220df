"""A newcomer's first hour: the README's one set-up command, the CI recipe's install line run from a
clean clone into a fresh virtual environment, ``.ci/run`` leaving ``git status`` clean, and
``bptt-check --help`` naming every subcommand.

The install test runs offline: the recipe's line installs the checkout (``.[plots]``) into a new
venv that sees this environment's packages through a ``.pth`` file (so ``--no-deps`` finds torch,
numpy, matplotlib) and builds the wheel with this environment's hatchling (``--no-build-isolation``,
``--no-index``). Only the CPU torch line is not run (it downloads torch); the test checks what it says.
"""

import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "ci" / "bptt-check.yml"


def _step_run(text: str, name_prefix: str) -> list[str]:
    """The shell lines of the ``run: |`` block of the step whose name starts with ``name_prefix``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"\s*- name: {re.escape(name_prefix)}", ln))
    run = next(i for i in range(start, len(lines)) if lines[i].strip() == "run: |")
    indent = len(lines[run + 1]) - len(lines[run + 1].lstrip())
    out = []
    for ln in lines[run + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) < indent:
            break
        if ln.strip():
            out.append(ln.strip())
    return out


def _env_value(text: str, key: str) -> str:
    return re.search(rf"^\s*{key}:\s*(\S+)\s*$", text, re.MULTILINE).group(1)


def test_the_ci_recipe_installs_from_the_repository_not_an_index():
    text = RECIPE.read_text()
    lines = _step_run(text, "Install")
    assert len(lines) == 2, lines
    torch_line, install = lines
    assert "torch>=2.1" in torch_line and "whl/cpu" in torch_line
    args = shlex.split(install)
    assert args[:4] == ["python", "-m", "pip", "install"] and args[4:] == [".[plots]"], install
    assert not re.search(r"pip install\s+[\"']?bptt-check\b(?!\[plots\] @)", text), "bptt-check is on no index"
    assert "bptt-check[plots] @ git+https://" in text      # the line for a user's own repository


def test_the_ci_recipes_install_line_works_from_a_clean_clone(tmp_path):
    """The recipe's install line, run in a fresh clone, in a fresh venv, gives a working ``bptt-check``
    that checks the recipe's TARGET and writes the report folder the later steps read."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    pytest.importorskip("hatchling")               # the build backend, from the test extra
    text = RECIPE.read_text()
    install = _step_run(text, "Install")[1]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # this environment's packages (torch, numpy, pip, hatchling...) after the venv's own: the fresh
    # install of bptt-check comes first, and this checkout's editable hook (a .pth there) is not run
    Path(purelib, "zz_outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    offline = " --no-deps --no-build-isolation --no-index -q"
    proc = subprocess.run(["bash", "-c", install + offline], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run(["python", "-c", "import bptt_check; print(bptt_check.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where          # the installed copy, not this checkout
    target = _env_value(text, "TARGET")
    proc = subprocess.run(["bash", "-c", f'bptt-check "{target}" --cases 2 --report-dir reports'], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = {p.name for p in (clone / "reports").iterdir()}
    assert {"junit.xml", "report.html", "report.json", "report.md"} <= written, written


def test_the_readme_sets_up_in_one_command_then_runs_bptt_check_and_pytest():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quickstart"):]
    block = quick[quick.index("```bash") + 7:quick.index("```", quick.index("```bash") + 7)]
    commands = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    setup = commands[0]
    assert "python3 -m venv .venv" in setup and ". .venv/bin/activate" in setup and "pip install" in setup
    assert '-e ".[test]"' in setup and "torch" in setup
    assert commands[1:3] == ["bptt-check", "pytest"], commands


def test_the_ci_script_leaves_git_status_clean():
    """``.ci/run`` makes ``.venv-ci/``: git ignores it (as it ignores ``.venv/`` and the reports)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    script = (ROOT / ".ci" / "run").read_text()
    venvs = set(re.findall(r"python3? -m venv (\S+)", script))
    assert venvs
    for folder in venvs:
        probe = f"{folder}/bin/python"
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT)
        assert ignored.returncode == 0, f"{folder} would show in git status"


def test_help_names_the_show_subcommand(capsys):
    from bptt_check.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "bptt-check show" in out and "re-render" in out.lower()
