"""The typer application every command registers on, and its error handling: every error
becomes ``Error: <one line>`` on stderr with a fixed exit code (2 for bad input, 1 for an
unexpected failure, whose traceback ``--debug`` / ``$INTERP_DEBUG=1`` shows; 130 for Ctrl-C and 143
for SIGTERM, with one line: ``interrupted``, or what the command says, see :class:`Interrupted`).
An output that is already up to date is one ``up to date: OUT`` line and exit 0
(:mod:`interpcli.freshness`: each command runs under its recording).

Help: every command's ``Example:`` block is shown at the end of its help (moved to the
epilog), help texts are plain text (a ``[...]`` in them is shown, not read as rich markup), and
help written to a pipe or a file is not wrapped at 80 columns.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

import typer
from rich.markup import escape
from typer import core as typer_core
from typer import rich_utils
from typer.core import TyperGroup

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException, NoArgsIsHelpError
    from click.globals import get_current_context

from .. import __version__, freshness, interrupts
from ..errors import InterpError, did_you_mean
from ._console import err

# Every command and the module of cli/ that defines it, in the order of `interp --help`; the
# `interp` entry point imports only the module of the command it runs (cli/__init__.py).
COMMAND_MODULES = {"train": "train", "eval": "evaluate", "info": "info", "import": "import_model",
                   "explain": "explain", "occlude": "occlude",
                   "noise-grad": "noise_grad", "kernels": "kernels", "sparsify": "sparsify",
                   "consistency": "consistency", "compare": "compare", "plot-log": "plot_log",
                   "report": "report", "models": "registries", "datasets": "registries", "methods": "registries"}
HELP_WIDTH = 250  # help into a pipe or a file: wide enough for every option's help on one line
_EXAMPLE = re.compile(r"\n[ \t]*Examples?:[ \t]*\n")
# Arguments that change how a command runs or reports, not what it writes: not part of its request.
NOT_THE_REQUEST = ("force", "quiet", "json_out", "resume")
_debug = {"on": False}


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: exit code 130 or 143 and this one line on stderr (``interrupted`` unless the
    command knows better, e.g. ``interp train``: how to continue)."""

    exit_code = 130


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, os.PathLike):
        return os.path.abspath(os.fspath(v))
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if v is None or isinstance(v, (str, int, float)) else str(v)


def request() -> dict[str, Any]:
    """The running command and its resolved arguments (defaults filled in), less those that do not
    change what it writes: what an output records of the request that made it."""
    ctx = get_current_context()
    return {"command": ctx.command_path.split(" ", 1)[-1],
            **{k: _plain(v) for k, v in sorted(ctx.params.items()) if k not in NOT_THE_REQUEST}}


def _choice_hint(message: str) -> str:
    """``; did you mean 'lenet'?`` for a misspelt value of a choice option (the choices are in the message)."""
    bad, sep, choices = message.partition(" is not one of ")
    m = re.search(r"'([^']*)'$", bad)
    return did_you_mean(m.group(1), re.findall(r"'([^']*)'", choices)) if m and sep else ""


def _unexpected(e: BaseException) -> str:
    """An exception no check foresaw (a bug, a torch runtime error) as one line."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def tidy_help(cmd: Any) -> None:
    """A command's ``Example:`` block goes to its epilog (shown after the options, where docs/cli.md
    says examples are), and under rich help brackets in help texts are escaped: ``[default: x]``
    written in a help text is shown, not eaten as a markup tag."""
    help_text = cmd.help or ""
    m = _EXAMPLE.search(help_text)
    if m and not cmd.epilog:
        cmd.help, cmd.epilog = help_text[: m.start()].rstrip(), "Example:\n\n" + help_text[m.end():].strip("\n")
    if typer_core.HAS_RICH and getattr(cmd, "rich_markup_mode", None) == "rich":
        cmd.help = escape(cmd.help) if cmd.help else cmd.help
        cmd.epilog = escape(cmd.epilog) if cmd.epilog else cmd.epilog
        for p in cmd.params:
            if getattr(p, "help", None):
                p.help = escape(p.help)


class InterpGroup(TyperGroup):
    """Turns every error into ``Error: <one line>`` on stderr and a fixed exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for cmd in [self, *self.commands.values()]:
            tidy_help(cmd)

    def list_commands(self, ctx: Any) -> list[str]:  # the order of COMMAND_MODULES, then of registration
        order = list(COMMAND_MODULES)
        return sorted(self.commands, key=lambda c: order.index(c) if c in order else len(order))

    def invoke(self, ctx: Any) -> Any:
        try:
            with freshness.recording(request):
                return super().invoke(ctx)
        except KeyboardInterrupt:  # typer would turn it into a silent exit 130
            raise Interrupted("interrupted") from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not os.environ.get("TERMINAL_WIDTH"):  # typer's own setting wins
            rich_utils.MAX_WIDTH = None if sys.stdout.isatty() else HELP_WIDTH
        _debug["on"] = os.environ.get("INTERP_DEBUG", "") not in ("", "0")
        restore = interrupts.handle_signals()  # SIGTERM: the way out of Ctrl-C (temporary files removed)
        try:
            with warnings.catch_warnings():  # restores the usual two-line format afterwards
                warnings.formatwarning = _one_line_warning
                rv = super().main(args=args, prog_name=prog_name or "interp", complete_var=complete_var,
                                  standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except NoArgsIsHelpError as e:  # bare `interp`: the help (rich help is printed already), not an error
            if e.format_message().strip():
                sys.stdout.write(e.format_message().rstrip("\n") + "\n")
            code = 0
        except freshness.UpToDate as e:
            err.print(str(e), markup=False, soft_wrap=True)
            code = e.exit_code
        except ClickException as e:
            where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            message = e.format_message().replace("Value error, ", "")  # typer's wording for a bad choice
            hint = _choice_hint(message)
            message = message.rstrip(".") + hint if hint else message
            err.print(f"Error: {message}{where}", markup=False, soft_wrap=True)
            code = e.exit_code
        except InterpError as e:
            code = _error(f"Error: {e}", e.exit_code)
        except OSError as e:  # an I/O failure no check foresaw (a disk filling up, ...): one line all the same
            code = _error(f"Error: {e.strerror}: '{e.filename}'" if e.strerror and e.filename else f"Error: {e}", 2)
        except Interrupted as e:
            err.print(str(e) or "interrupted", markup=False, soft_wrap=True)
            code = interrupts.exit_code()
        except (KeyboardInterrupt, typer.Abort):
            err.print("interrupted", markup=False)
            code = interrupts.exit_code()
        except Exception as e:  # a bug or a runtime failure (torch, CUDA): exit 1, the traceback with --debug
            hint = "" if _debug["on"] else " (run with --debug for the traceback)"
            code = _error(f"Error: {_unexpected(e)}{hint}", 1)
        finally:
            restore()
        if standalone_mode:
            sys.exit(code)
        return code


def _error(line: str, code: int) -> int:
    """Print the one error line (after the traceback with --debug); returns the exit code."""
    if _debug["on"]:
        traceback.print_exc()
    err.print(line, markup=False, soft_wrap=True)
    return code


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """A warning as one ``Warning: ...`` line (not Python's file:line: category + source line)."""
    return f"Warning: {message}\n"


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
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error (also $INTERP_DEBUG=1); "
                               "without it an unexpected error is one line and exit code 1."),
) -> None:
    """Global options."""
    _debug["on"] = _debug["on"] or debug
