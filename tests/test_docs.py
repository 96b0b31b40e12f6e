"""Docs that cannot drift: every method, arch and dataset is documented."""

from __future__ import annotations

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
