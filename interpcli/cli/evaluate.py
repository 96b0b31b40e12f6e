"""``interp eval``: accuracy and confusion matrix of a checkpoint."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..ops.evaluate import evaluate_checkpoint
from ._app import app
from ._console import out, print_json
from ._options import CheckpointArg, DataDirOpt, DeviceOpt, JsonOpt


@app.command("eval", rich_help_panel="Models")
def eval_cmd(
    checkpoint: CheckpointArg,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset [default: the checkpoint's].")] = None,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option("--split", help="train, test, or val (the held-out split of a run trained with --val-split or --folds).")] = "test",
    limit_test: Annotated[Optional[int], typer.Option("--limit-test", min=0, help="Evaluate on a stratified subset of N test images (seeded as the run); 0: the whole test split. Default: the subset the checkpoint was trained with, if any.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Evaluation batch size.")] = 1000,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Accuracy, per-class accuracy and the confusion matrix of a checkpoint.

    Example:

        interp eval runs/lenet.safetensors --split test --json
    """
    res = evaluate_checkpoint(checkpoint, dataset, str(data_dir) if data_dir else None, split, device, batch_size,
                              limit_test=limit_test)
    if json_out:
        print_json(res)
        return
    out.print(f"{res['dataset']} {split}: accuracy {res['accuracy']:.4f} on {res['n']} images  (loss {res['loss']:.4f})")
    classes = res["classes"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("class", style="bold")
    table.add_column("acc", justify="right")
    for c in classes:
        table.add_column(c if not out.is_terminal else c[:8], justify="right")  # in full in pipes and files
    for i, c in enumerate(classes):
        table.add_row(c, f"{res['per_class_accuracy'][i]:.3f}", *[str(v) for v in res["confusion"][i]])
    out.print(table)
