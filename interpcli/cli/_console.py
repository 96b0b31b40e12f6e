"""Output conventions: stdout carries data (paths, JSON, names), stderr carries people's messages."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

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


def print_listing(rows: list[dict[str, Any]], columns: Sequence[tuple[str, Callable[[dict], str]]],
                  json_out: bool = False) -> None:
    """A registry listing: JSON with ``--json``; a table (nothing truncated) on a terminal; one
    name per line when stdout is a pipe or a file (``interp models | grep bcos``)."""
    if json_out:
        print_json(rows)
    elif not sys.stdout.isatty():
        print_paths([r["name"] for r in rows])
    else:
        table = Table()
        for title, _ in columns:
            table.add_column(title, overflow="fold", no_wrap=title in ("name", "method"))
        for r in rows:
            table.add_row(*[fn(r) for _, fn in columns])
        out.print(table)
