"""Options that need no registry: the checkpoint argument and ``--json``.

Kept apart from :mod:`._options` (whose choices are built from the registries, which import
torch) so that ``interp info`` loads neither; :mod:`._options` re-exports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["CheckpointArg", "JsonOpt"]

CheckpointArg = Annotated[Path, typer.Argument(help="A checkpoint (.safetensors) written by `interp train`.",
                                               show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of what it carries otherwise (a "
                                        "table, or the files written).")]
