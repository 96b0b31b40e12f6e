"""Output conventions: stdout carries data (paths, JSON), stderr carries people's messages."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from ..artifacts import dumps

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout (no rich markup)."""
    sys.stdout.write(dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def print_paths(paths: list[Any]) -> None:
    """One written file per line on stdout, for shell pipelines."""
    for p in paths:
        sys.stdout.write(f"{p}\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit ``code``."""
    import typer

    err.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)

