"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps; $INTERP_DEVICE replaces auto.",
                      rich_help_panel="Performance")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or logs on stderr.")]
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", help="Folder (or .npz file) with the dataset's files; "
                                 "default $INTERP_DATA_DIR or ./data.", rich_help_panel="Data")
]
CheckpointArg = Annotated[Path, typer.Argument(help="A checkpoint (.safetensors) written by `interp train`.",
                                               show_default=False)]
