"""The typer application every command registers on, and its error handling: every error
becomes ``Error: <one line>`` on stderr with a fixed exit code (2 for bad input, 130 for Ctrl-C)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException

from .. import __version__
from ..errors import InterpError
from ._console import err


class InterpGroup(TyperGroup):
    """Turns every error into ``Error: <one line>`` on stderr and a fixed exit code."""

    def list_commands(self, ctx: Any) -> list[str]:  # keep the order of registration
        return list(self.commands)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name or "interp", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except ClickException as e:
            where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            message = e.format_message().replace("Value error, ", "")  # typer's wording for a bad choice
            err.print(f"Error: {message}{where}", markup=False, soft_wrap=True)
            code = e.exit_code
        except InterpError as e:
            err.print(f"Error: {e}", markup=False, soft_wrap=True)
            code = e.exit_code
        except (KeyboardInterrupt, typer.Abort):
            err.print("Aborted.", markup=False)
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=InterpGroup,
    name="interp",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="""A workbench for interpretability research on image classifiers.

Subcommands talk only through files (safetensors checkpoints; PNG, NPZ and JSON
artifacts), so they chain in shell pipelines and Makefiles.

Example:

    interp train --arch resnet20 --dataset cifar10 --data-dir ../shared/data --epochs 30 --out runs/r20.safetensors

    interp eval runs/r20.safetensors --json
""",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_version),
) -> None:
    """Global options."""
