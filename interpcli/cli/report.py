"""``interp report``: a static, self-contained HTML gallery of interp output folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..ops.report import build_report
from ._app import app
from ._console import JobProgress, err, print_json, print_paths
from ._options import ForceOpt, JsonOpt, QuietOpt


@app.command("report", rich_help_panel="Results")
def report_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Output folders of interp commands (or folders holding them, searched 4 levels down), run folders with checkpoints and *.log.jsonl, or such files.", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: index.html and assets/ (its parent must exist; an existing one needs --force).", rich_help_panel="Output")] = Path("report-out"),
    title: Annotated[str, typer.Option("--title", help="Title of the page.", rich_help_panel="Output")] = "interp report",
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Rows (images) of each explain / occlude table.", rich_help_panel="Output")] = 16,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """A static HTML gallery of interp outputs, one section per folder with its provenance
    (checkpoint path, sha256, training command): explain / occlude grids (rows = images,
    columns = methods), consistency and compare tables with their figures, noise-grad grids,
    kernel montages and GIFs, sparsify paths and feature montages, training curves drawn from
    the runs' *.log.jsonl, and any other picture.

    Self-contained: pictures are linked (or copied) into OUT/assets and referenced relatively,
    no server and no network, so OUT can be zipped and mailed.  stdout: OUT/index.html.

    Example:

        interp report out/explain out/scores runs/ -o report

        interp report out/ --max-rows 8 --title "B-cos study" -o out/report --force
    """
    with JobProgress("report", quiet=quiet) as bar:
        summary, files = build_report(paths, out_dir, title=title, max_rows=max_rows, force=force,
                                      progress=lambda d, n, what: bar.update(d, n, what))
    if not quiet:
        for s in summary["sections"]:
            err.print(f"{s['kind']}: {s['source']} ({s['files']} files)", markup=False)
    if json_out:
        print_json({"files": [str(f) for f in files], **summary})
    else:
        print_paths(files)
