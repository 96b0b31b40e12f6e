"""The ``interp`` command: a thin typer layer over the library.

Each command parses options, calls one function of :mod:`interpcli.ops` and prints what it
wrote on stdout (``cli/`` mirrors ``ops/`` file for file).  Errors from the library
(:class:`~interpcli.errors.InterpError`) and usage errors become one line on stderr and
exit code 2; Ctrl-C exits 130 (see :mod:`._app`).

Importing a command module registers its commands on the typer app.  The ``interp`` entry
point (:func:`main`) imports only the module of the command it runs (``_app.COMMAND_MODULES``),
so ``interp info`` and ``interp --version`` never import torch; ``interpcli.cli.app`` (for
tests and embedding) has every command.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._app import COMMAND_MODULES

__all__ = ["app", "main", "load_commands"]


def load_commands(names: Sequence[str] | None = None) -> Any:
    """Register the commands ``names`` (default: all) on the typer app and return the app."""
    modules = dict.fromkeys(COMMAND_MODULES[n] for n in (names if names is not None else COMMAND_MODULES))
    for module in modules:
        importlib.import_module(f".{module}", __name__)
    return importlib.import_module("._app", __name__).app


def _wanted(argv: Sequence[str]) -> list[str] | None:
    """The commands an argument list needs: none for ``--version``, the one it names, else all
    (the root help, shell completion, a misspelt command: every name must be known)."""
    if os.environ.get("_INTERP_COMPLETE"):  # shell completion
        return None
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is None:
        return [] if any(a == "--version" for a in argv) else None
    return [first] if first in COMMAND_MODULES else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` console script."""
    args = list(argv) if argv is not None else sys.argv[1:]
    return load_commands(_wanted(args))(args=args)


def __getattr__(name: str) -> Any:
    if name == "app":  # every command registered
        return load_commands()
    raise AttributeError(f"module 'interpcli.cli' has no attribute '{name}'")
