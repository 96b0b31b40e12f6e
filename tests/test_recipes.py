"""The recipes in recipes/ cannot rot.

- Every recipe runs end to end at BUDGET=tiny (seconds, embedded data only: DATA points at an empty
  folder; `make -j2`) and writes the report and summary.md it promises; made again, nothing runs.
  A new recipe is picked up by the glob; all but the two fastest are marked slow (each `interp`
  call costs ~2 s of start-up).
  Progress lines are printed as often as possible (INTERP_PROGRESS=1e-9), and none may reach
  summary.md: the commands whose tables the recipes keep run with INTERP_PROGRESS=0.
- The small and paper budgets are too long to run here, so their command lines are checked
  without running them: `make -n` must print them (with and without CIFAR-10 in DATA), the shell
  must parse them (`bash -n`), and every option of every `interp` call must be one of the
  command's options.
- What the recipes share is in recipes/common.mk, included by each; none defines it again.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from .conftest import ROOT

COMMON = ROOT / "recipes" / "common.mk"
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.mk") if p != COMMON)
INTERP = Path(sys.executable).with_name("interp")
FAST = {"demo", "sparse-decision"}  # the default run (~17 s each); the others take 15-45 s at BUDGET=tiny
NO_REPORT = {"noise-grad-kernels"}  # the pictures of docs/noise-grad.md and docs/kernels.md, no report

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _env(tmp_path: Path) -> dict[str, str]:
    # one torch thread per command: on a 2-core machine with other work, two threads per command
    # wait on each other and run many times slower
    # a progress line at every step (the recipes must keep them out of their tables)
    return {**os.environ, "INTERP_THREADS": "1", "INTERP_DEVICE": "cpu", "INTERP_CACHE_DIR": str(tmp_path / "cache"),
            "INTERP_DATA_DIR": str(tmp_path / "no-data"), "INTERP_PROGRESS": "1e-9"}


def _make(recipe: Path, tmp_path: Path, *args: str, dry: bool = False, timeout: float = 600):
    # -j2: two commands side by side on the two cores (and the recipes must be safe under -j)
    cmd = ["make", "--no-print-directory", "-n" if dry else "-j2", "-f", str(recipe), *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def test_the_recipes_are_there():
    names = {p.stem for p in RECIPES}
    assert {"demo", "noise-grad-kernels", "bcos-cifar10", "whitebox-cifar10", "pulses-kernels", "occlusion-gds",
            "sparse-decision"} <= names


@needs_make
@pytest.mark.parametrize("recipe", [pytest.param(p, id=p.stem, marks=[] if p.stem in FAST else [pytest.mark.slow])
                                    for p in RECIPES])
def test_recipe_runs_at_the_tiny_budget(recipe, tmp_path):
    out, empty = tmp_path / "out", tmp_path / "no-data"
    empty.mkdir()
    r = _make(recipe, tmp_path, "BUDGET=tiny", f"INTERP={INTERP}", f"OUT={out}", "DEVICE=cpu", f"DATA={empty}")
    assert r.returncode == 0, f"{recipe.name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert any(out.iterdir())
    if recipe.stem in NO_REPORT:
        return
    html = out / "report" / "index.html"
    assert html.is_file(), f"{recipe.name} wrote no report"
    assert "BUDGET=tiny" in html.read_text() or recipe.stem == "demo"
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# ") and "```" in summary and "(BUDGET=tiny)" in summary.splitlines()[0]
    assert "Error" not in summary
    assert not [line for line in summary.splitlines() if "ETA " in line], "progress lines in summary.md"
    # make again: everything is up to date, nothing runs
    again = _make(recipe, tmp_path, "BUDGET=tiny", f"INTERP={INTERP}", f"OUT={out}", "DEVICE=cpu", f"DATA={empty}")
    assert again.returncode == 0 and str(INTERP) not in again.stdout, again.stdout


@needs_make
@pytest.mark.parametrize("recipe", [pytest.param(p, id=p.stem) for p in RECIPES])
def test_every_recipe_has_budgets_and_refuses_an_unknown_one(recipe, tmp_path):
    text, common = recipe.read_text(), COMMON.read_text()
    assert "include $(dir $(lastword $(MAKEFILE_LIST)))common.mk" in text
    assert "BUDGET ?= small" in common and "$(INTERP) report" in common and "summary.md" in common
    for shared in ("INTERP ?=", "DEVICE ?=", "BUDGET ?=", "TABLE =", "SECTION =", "$(INTERP) report"):
        assert shared not in text, f"{recipe.name} defines {shared!r} again: it is in common.mk"
    if recipe.stem not in NO_REPORT:
        assert "all: " in text and "$(OUT)/report/index.html" in text and "$(OUT)/summary.md" in text
        assert all(v in text for v in ("TITLE ", "NOTE ", "OUTPUTS ", "SUMMARY ")), "common.mk's report needs them"
    # a command whose stderr is kept as a table runs without progress lines
    for line in text.replace("\\\n", " ").splitlines():
        if "$(call TABLE," in line:
            assert "INTERP_PROGRESS=0 $(INTERP) " in line, line
    r = _make(recipe, tmp_path, "BUDGET=huge", "OUT=/nonexistent", dry=True)
    assert r.returncode != 0 and "BUDGET must be tiny, small or paper" in r.stderr


@cache
def _options(command: str) -> frozenset[str]:
    """Every option string of an `interp` command (its click parameters, as --help lists them)."""
    import typer

    from interpcli.cli import load_commands

    group = typer.main.get_command(load_commands([command]))
    assert command in group.commands, f"interp has no command {command!r}"
    return frozenset(o for p in group.commands[command].params for o in (*p.opts, *p.secondary_opts))


_SHELL = {"|", "||", "&&", ";", ">", "2>", "<", "{", "}"}


def _interp_calls(script: str) -> list[list[str]]:
    """The `interp` calls of `make -n` output: argv up to the first shell operator or redirection."""
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        line = re.sub(r"^(\w+=\S*\s+)*", "", line.strip())  # INTERP_PROGRESS=0 INTERP-SENTINEL ...
        if not line.startswith("INTERP-SENTINEL "):
            continue
        argv = []
        for tok in shlex.split(line)[1:]:
            if tok in _SHELL or re.match(r"^\d?>", tok):
                break
            argv.append(tok)
        calls.append(argv)
    return calls


@needs_make
@pytest.mark.parametrize("budget", ["small", "paper"])
@pytest.mark.parametrize("recipe", [pytest.param(p, id=p.stem) for p in RECIPES])
def test_the_long_budgets_use_real_options(recipe, budget, tmp_path):
    """`make -n` at BUDGET=small/paper (with a CIFAR-10 file present, and for small without one)
    prints interp calls whose commands and options exist."""
    with_cifar = tmp_path / "data"
    with_cifar.mkdir()
    (with_cifar / "cifar10.npz").touch()  # the recipes only test whether it exists
    datas = [with_cifar] + ([tmp_path / "no-data"] if budget == "small" else [])
    for data in datas:
        r = _make(recipe, tmp_path, f"BUDGET={budget}", "INTERP=INTERP-SENTINEL", f"OUT={tmp_path / 'out'}",
                  f"DATA={data}", "DEVICE=cuda", dry=True, timeout=60)
        assert r.returncode == 0, r.stderr
        shell = subprocess.run(["bash", "-n"], input=r.stdout, capture_output=True, text=True)
        assert shell.returncode == 0, f"{recipe.name} BUDGET={budget}: {shell.stderr}"
        calls = _interp_calls(r.stdout)
        assert calls, r.stdout
        for argv in calls:
            command, options = argv[0], [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")]
            unknown = [o for o in options if o not in _options(command)]
            assert not unknown, f"{recipe.name} BUDGET={budget}: interp {command} has no {unknown}"
