"""``interp info``: a checkpoint's metadata."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..metadata import dumps
from ..ops.info import checkpoint_info
from ._app import app
from ._console import out, print_json
from ._flags import CheckpointArg, JsonOpt  # not ._options: `interp info` loads neither torch nor the registries


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return dumps(v)
    return str(v)


@app.command("info", rich_help_panel="Models")
def info_cmd(checkpoint: CheckpointArg, json_out: JsonOpt = False) -> None:
    """Show a checkpoint's metadata (arch, classes, input, encoding, dataset, training, metrics).

    Only the header is read, so this is instant for any checkpoint size.

    Example:

        interp info runs/lenet.safetensors --json | jq .metrics
    """
    meta = checkpoint_info(checkpoint)
    if json_out:
        print_json(meta)
        return
    table = Table(title=str(checkpoint), show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in meta.items():
        if isinstance(v, dict) and k in ("train_config", "metrics", "dataset"):
            for kk, vv in v.items():
                table.add_row(f"{k}.{kk}", _fmt(vv))
        else:
            table.add_row(k, _fmt(v))
    out.print(table)
