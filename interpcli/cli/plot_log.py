"""``interp plot-log``: training curves of one or more runs from their JSON logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..ops.plot_log import plot_logs
from ..reporting.groupstats import fmt
from ._app import app
from ._console import err, print_json, print_paths
from ._options import ForceOpt, JsonOpt, QuietOpt


@app.command("plot-log", rich_help_panel="Results")
def plot_log_cmd(
    logs: Annotated[list[Path], typer.Argument(help="RUN.log.jsonl files written by `interp train` (a checkpoint stands for the log beside it).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG to write (its folder must exist; an existing file needs --force).", rich_help_panel="Output")] = Path("curves.png"),
    title: Annotated[str, typer.Option("--title", help="Title of the figure [default: the log's path for one run].", show_default=False, rich_help_panel="Output")] = "",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Training curves: loss, training accuracy and test accuracy per epoch (validation dashed),
    from the JSON logs `interp train` writes beside each checkpoint.

    One run: three panels with chance level, and a stuck run (flat loss at chance accuracy)
    shaded in red, as `interp kernels --loss-log`.  Several runs: overlaid, one colour per run.
    stdout: the PNG written (--json: per run its epochs, last and best values, stuck verdict).

    Example:

        interp plot-log runs/r20.log.jsonl -o out/r20-curves.png

        interp plot-log runs/bcos-*.log.jsonl runs/r56-*.log.jsonl -o out/curves.png --title "B-cos vs ResNet-56"
    """
    summary, files = plot_logs(logs, out, title=title, force=force)
    if not quiet:
        for r in summary["runs"]:
            flag = "  STUCK: " + r["reason"] if r["stuck"] else ""
            err.print(f"{r['label']}: {r['epochs']} epochs, loss {fmt(r['loss'])}, test_acc {fmt(r['test_acc'])} "
                      f"(best {fmt(r['best_test_acc'])}){flag}", markup=False)
    if json_out:
        print_json({"files": [str(f) for f in files], **summary})
    else:
        print_paths(files)
