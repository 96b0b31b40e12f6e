"""``interp info``, ``interp eval``, ``interp models``, ``interp datasets``."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import artifacts
from ..data import get_dataset_info, list_datasets
from ..models import create_model, get_model_info, list_models
from ..train import evaluate_checkpoint
from . import app
from ._console import out, print_json
from ._options import CheckpointArg, DataDirOpt, DeviceOpt, JsonOpt


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return artifacts.dumps(v)
    return str(v)


@app.command("info", rich_help_panel="Models")
def info_cmd(checkpoint: CheckpointArg, json_out: JsonOpt = False) -> None:
    """Show a checkpoint's metadata (arch, classes, input, encoding, dataset, training, metrics).

    Only the header is read, so this is instant for any checkpoint size.

    Example:

        interp info runs/lenet.safetensors --json | jq .metrics
    """
    meta = artifacts.read_metadata(checkpoint)
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


@app.command("eval", rich_help_panel="Models")
def eval_cmd(
    checkpoint: CheckpointArg,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset [default: the checkpoint's].")] = None,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Evaluation batch size.")] = 1000,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Accuracy, per-class accuracy and the confusion matrix of a checkpoint.

    Example:

        interp eval runs/lenet.safetensors --split test --json
    """
    res = evaluate_checkpoint(checkpoint, dataset, str(data_dir) if data_dir else None, split, device, batch_size)
    if json_out:
        print_json(res)
        return
    out.print(f"{res['dataset']} {split}: accuracy {res['accuracy']:.4f} on {res['n']} images  (loss {res['loss']:.4f})")
    classes = res["classes"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("class", style="bold")
    table.add_column("acc", justify="right")
    for c in classes:
        table.add_column(c[:8], justify="right")
    for i, c in enumerate(classes):
        table.add_row(c, f"{res['per_class_accuracy'][i]:.3f}", *[str(v) for v in res["confusion"][i]])
    out.print(table)


@app.command("models", rich_help_panel="Registries")
def models_cmd(json_out: JsonOpt = False) -> None:
    """List the architectures: parameter count, expected input, default CAM layer, options.

    Example:

        interp models --json | jq '.[] | select(.family == "baseline") | .name'
    """
    rows = []
    for name in list_models():
        info = get_model_info(name)
        net = create_model(name, 10 if name not in ("pulse-cnn", "pulse-cnn-paper") else 3, _encoded(info))
        rows.append({"name": name, "family": info.family, "params": sum(p.numel() for p in net.parameters()),
                     "input": list(info.default_input), "encoding": info.encoding, "target_layer": info.target_layer,
                     "first_layer": info.first_layer, "options": info.kwargs(), "recipe": info.recipe,
                     "description": info.description, "paper": info.paper})
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("name", "family", "params", "input", "target layer", "description"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['params']:,}", "x".join(map(str, r["input"])),
                      str(r["target_layer"]), r["description"])
    out.print(table)


def _encoded(info) -> tuple[int, int, int]:
    c, h, w = info.default_input
    return (2 * c if info.encoding == "bcos6" else c, h, w)


@app.command("datasets", rich_help_panel="Registries")
def datasets_cmd(json_out: JsonOpt = False) -> None:
    """List the datasets, their shapes and whether they need files (nothing is downloaded).

    Example:

        interp datasets
    """
    rows = []
    for name in list_datasets():
        i = get_dataset_info(name)
        rows.append({"name": name, "input": list(i.input_shape) if i.input_shape else None,
                     "classes": i.num_classes, "needs_files": i.needs_files, "augment": i.augment,
                     "description": i.description})
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("name", "input", "classes", "files", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "x".join(map(str, r["input"])) if r["input"] else "any",
                      str(r["classes"] or "any"), "yes" if r["needs_files"] else "embedded", r["description"])
    out.print(table)
