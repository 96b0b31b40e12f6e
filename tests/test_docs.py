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
