"""Docs that cannot drift: every method, arch and dataset is documented; the user guide tours
every command, method and recipe, and its quick start runs; every link and image resolves."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from interpcli.data import list_datasets
from interpcli.methods import list_methods
from interpcli.models import list_models

from .conftest import ROOT

DOCS = ROOT / "docs"


@pytest.mark.parametrize("name", list_methods())
def test_every_method_has_a_page(name):
    page = DOCS / "methods" / f"{name}.md"
    assert page.exists(), f"docs/methods/{name}.md missing"
    assert "http" in page.read_text(), "a method page names its reference"


def test_every_arch_and_dataset_is_documented():
    models = (DOCS / "models.md").read_text()
    assert [m for m in list_models() if f"`{m}`" not in models] == []
    datasets = (DOCS / "datasets.md").read_text()
    assert [d for d in list_datasets() if f"`{d}`" not in datasets] == []


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


@pytest.mark.parametrize("name", list_methods())
def test_the_methods_table_lists_every_parameter(name):
    """docs/explain.md's table row of each method names all of its parameters."""
    from interpcli.methods import get_method

    rows = [line for line in (DOCS / "explain.md").read_text().splitlines() if line.startswith(f"| [{name}](")]
    assert len(rows) == 1, f"docs/explain.md has no row for {name}"
    expected = set(get_method(name).defaults)
    if name in ("osa-das", "gds"):  # their rows say "as rosa plus ...": the rest is on rosa's row
        expected -= set(get_method("rosa").defaults)
    if name == "gds":
        expected -= set(get_method("osa-das").defaults)
    assert [k for k in sorted(expected) if f"`{k}" not in rows[0]] == []


def test_fidelity_page_is_linked_and_names_every_method():
    page = (DOCS / "fidelity.md").read_text()
    assert "fidelity.md" in (ROOT / "README.md").read_text()
    assert [m for m in list_methods() if f"`{m}`" not in page] == []
    pages = [*(DOCS / "methods").glob("*.md"), *(DOCS / "models").glob("*.md"), DOCS / "models.md"]
    assert [p.name for p in pages if "fidelity.md" not in p.read_text()] == []


# ---------------------------------------------------------------------------------------------- the user guide

GUIDE = DOCS / "guide.md"


def _section(page: Path, heading: str) -> str:
    """The text of the `## heading` section of a page (up to the next `## `)."""
    text = page.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def _code_blocks(text: str, lang: str = "sh") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def test_the_guide_is_linked_from_the_index():
    assert "](guide.md)" in (DOCS / "index.md").read_text()


def test_the_guide_tours_every_command_and_each_page_has_an_example():
    from interpcli.cli._app import COMMAND_MODULES

    tour = _section(GUIDE, "The commands")
    for command in COMMAND_MODULES:
        rows = [line for line in tour.splitlines() if line.startswith(f"| `interp {command}` |")]
        assert len(rows) == 1, f"the guide's tour has no row for interp {command}"
        page = re.search(r"\]\(([\w./+-]+\.md)(#[\w-]*)?\)", rows[0])
        assert page and (DOCS / page.group(1)).is_file(), rows[0]
        examples = [line for block in _code_blocks((DOCS / page.group(1)).read_text()) + _code_blocks(
            (DOCS / "cli.md").read_text()) for line in block.splitlines()]
        assert any(re.match(rf"(.*\| *)?interp {re.escape(command)}\b", line) for line in examples), \
            f"no `interp {command}` example on {page.group(1)} or cli.md"


def test_the_guide_lists_every_method_with_its_reference():
    from interpcli.methods import get_method

    table = _section(GUIDE, "Attribution methods")
    for name in list_methods():
        rows = [line for line in table.splitlines() if line.startswith(f"| [{name}](methods/{name}.md) |")]
        assert len(rows) == 1, f"the guide has no row for {name}"
        paper = get_method(name).paper
        assert "https://" in rows[0] and (paper is None or paper in rows[0]), rows[0]


def test_the_guide_names_every_recipe():
    recipes = [p.stem for p in (ROOT / "recipes").glob("*.mk") if p.stem != "common"]
    table = _section(GUIDE, "Recipes")
    assert [r for r in recipes if f"(recipes/{r}.md)" not in table] == []


def test_the_guide_quick_start_runs(tmp_path):
    """The quick start's commands, as written, in an empty folder (interp from this environment);
    then the files the guide says they write are there."""
    block = _code_blocks(_section(GUIDE, "Quick start"))[0]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "INTERP_THREADS": "1", "INTERP_DEVICE": "cpu", "INTERP_PROGRESS": "0"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ("runs/lenet.safetensors", "runs/lenet.log.jsonl", "out/lenet-explain/attributions.npz",
              "out/lenet-explain/grid.png", "out/lenet-scores/summary.json", "out/lenet-scores/scores.csv",
              "out/lenet-scores/curves.npz", "out/lenet-scores/deletion_insertion.png", "out/lenet-scores/scores.png",
              "out/lenet-report/index.html"):
        assert (tmp_path / f).is_file(), f
        assert f"`{Path(f).name}`" in GUIDE.read_text() or f"`{f}`" in GUIDE.read_text(), f"the guide omits {f}"
    assert "digits test: accuracy" in r.stdout  # interp eval's table, on stdout
    assert "explanation scores" in r.stderr and "ETA " not in r.stderr  # consistency's table; no progress


# ---------------------------------------------------------------------------------------------- links and examples

PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for m in re.finditer(r"^#+ (.+)$", text, flags=re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_image_in_the_docs_resolves(page):
    """Relative links and images point at files that exist (an image in the repository, not in
    out/, which is not committed), and #anchors at headings of the page linked."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    broken = []
    for m in _LINK.finditer(text):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif m.group(0).startswith("!") and (ROOT / "out") in dest.parents:
            broken.append(f"{target} (out/ is not committed)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert broken == []


def test_images_in_the_docs_are_small():
    images = [p for p in DOCS.rglob("*") if p.suffix.lower() in (".png", ".gif", ".jpg", ".svg")]
    assert [p.name for p in images if p.stat().st_size > 300_000] == []
    assert sum(p.stat().st_size for p in images) < 3_500_000


def test_the_guide_names_every_optional_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    guide = _section(GUIDE, "Installation")
    assert [e for e in extras if f"'.[{e}]'" not in guide] == []


def _interp_calls_in(page: Path) -> list[tuple[str, list[str]]]:
    """Each `interp CMD ARGS` of a page's shell blocks (pipelines split; comments and leading
    VAR=value dropped): (the line, argv after `interp`)."""
    calls = []
    for block in _code_blocks(page.read_text(), "(?:sh|bash|console)"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            segment: list[str] = []
            for tok in [*tokens, ";"]:
                if tok not in ("|", "||", "&&", ";"):
                    segment.append(tok)
                    continue
                while segment and re.match(r"^\w+=", segment[0]):
                    segment = segment[1:]
                if segment and (segment[0] == "interp" or segment[0].endswith("/interp")) and len(segment) > 1 \
                        and not segment[1].startswith("-"):
                    calls.append((line.strip(), segment[1:]))
                segment = []
    return calls


def test_every_interp_example_in_the_docs_uses_real_commands_and_options():
    """Every `interp ...` line of every shell block in docs/ and README.md names a command that
    exists and only options that command has (the recipes are checked the same way)."""
    from interpcli.cli._app import COMMAND_MODULES

    from .test_recipes import _options

    bad, seen = [], set()
    for page in PAGES:
        for line, argv in _interp_calls_in(page):
            command = argv[0]
            seen.add(command)
            if command not in COMMAND_MODULES:
                bad.append(f"{page.name}: no command {command!r}: {line}")
                continue
            options = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-") and a != "-"
                       and not re.match(r"^-\d", a)]
            unknown = [o for o in options if o not in _options(command)]
            if unknown:
                bad.append(f"{page.name}: interp {command} has no {unknown}: {line}")
    assert bad == []
    assert set(COMMAND_MODULES) <= seen, f"commands with no example anywhere: {set(COMMAND_MODULES) - seen}"
