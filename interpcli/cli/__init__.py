"""The ``interp`` command: a thin typer layer over the library.

Each command parses options, calls one function of :mod:`interpcli.ops` and prints what it
wrote on stdout (``cli/`` mirrors ``ops/`` file for file).  Errors from the library
(:class:`~interpcli.errors.InterpError`) and usage errors become one line on stderr and
exit code 2; Ctrl-C exits 130 (see :mod:`._app`).
"""

from __future__ import annotations

from collections.abc import Sequence

# Importing a command module registers its commands on `app`, in this order in `interp --help`.
from . import evaluate, explain, info, occlude, registries, train  # noqa: F401,I001
from ._app import app

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` console script."""
    return app(args=argv)
