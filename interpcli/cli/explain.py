"""``interp explain``: attribution maps for a checkpoint's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import Progress
from rich.table import Table

from ..artifacts import load_model
from ..device import configure_backends, resolve_device, seed_everything
from ..errors import ConfigError
from ..explain import explain, gather_inputs, save_explanation
from ..methods import get_method, list_methods
from . import app
from ._console import err, out, print_json, print_paths
from ._options import DataDirOpt, DeviceOpt, JsonOpt, QuietOpt
from .train import parse_kv


def method_params(methods: list[str], items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--param steps=128`` goes to every method that has ``steps``; ``--param intgrad.steps=128`` to one."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for key, value in parse_kv(items, "--param").items():
        scope, _, name = key.rpartition(".")
        targets = [scope] if scope else [m for m in methods if name in get_method(m).defaults]
        if scope and scope not in methods:
            raise ConfigError(f"--param {key}: method '{scope}' is not among --method {', '.join(methods)}")
        if not targets or any(name not in get_method(m).defaults for m in targets):
            raise ConfigError(f"--param {key}: no selected method has a parameter '{name}'")
        for m in targets:
            out[m][name] = value
    return out


def _list_methods(json_out: bool) -> None:
    rows = [{"name": n, "kind": (i := get_method(n)).kind, "signed": i.signed, "class_specific": i.class_specific,
             "uses_gradients": i.uses_gradients, "bcos_only": i.bcos_only, "defaults": i.defaults,
             "description": i.description, "paper": i.paper} for n in list_methods()]
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("method", "kind", "signed", "parameters", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], "yes" if r["signed"] else "no",
                      ", ".join(f"{k}={v}" for k, v in r["defaults"].items()), r["description"])
    out.print(table)


@app.command("explain", rich_help_panel="Explanations")
def explain_cmd(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint (.safetensors) from `interp train`.", show_default=False)] = None,
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files (PNG/JPEG); or use --dataset/--npz.", show_default=False)] = None,
    method: Annotated[list[str], typer.Option("--method", "-m", help="Method (repeatable); `--method list` lists them.", rich_help_panel="Method")] = ["grad"],  # noqa: B006
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Method parameter KEY=VALUE or METHOD.KEY=VALUE; repeatable.", rich_help_panel="Method")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="pred, label, all, a class index or a class name.", rich_help_panel="Method")] = "pred",
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Explain images of a dataset split (default: the checkpoint's when no images are given).", rich_help_panel="Input")] = None,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option("--split", help="train or test.", rich_help_panel="Input")] = "test",
    indices: Annotated[str, typer.Option("--indices", help="START:STOP or comma-separated indices of the split.", rich_help_panel="Input")] = "0:8",
    npz: Annotated[Optional[Path], typer.Option("--npz", help="An NPZ with an `images` array (e.g. another command's output).", rich_help_panel="Input")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (its parent must exist).", rich_help_panel="Output")] = Path("explain-out"),
    png: Annotated[bool, typer.Option("--png/--no-png", help="Write PNG overlays and grid.png.", rich_help_panel="Output")] = True,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, help="Internal batch size (default: from the free memory on CUDA, per method elsewhere).", rich_help_panel="Performance")] = None,
    fast: Annotated[bool, typer.Option("--fast/--no-fast", help="Eval fast path: BatchNorm folded into the convolutions, channels_last (same results to float rounding).", rich_help_panel="Performance")] = True,
    compile_: Annotated[bool, typer.Option("--compile", help="Also torch.compile the model (slow first call; pays off on many images).", rich_help_panel="Performance")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling methods.")] = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Attribution maps: NPZ for programs, PNG overlays for people.

    Writes OUT/attributions.npz (attributions per method, images, targets, labels, logits,
    predictions, sources, and a meta JSON with the methods' parameters and the
    checkpoint's sha256), OUT/NNNN_METHOD.png per image and method, and OUT/grid.png
    when several methods are given.  stdout lists the files written.

    Example:

        interp explain runs/lenet.safetensors --dataset digits --indices 0:8 -m grad -m intgrad -o out/expl

        interp explain runs/r20.safetensors cat.png -m gradcam --target cat -o out/cat
    """
    if method == ["list"]:
        _list_methods(json_out)
        return
    if checkpoint is None:
        raise ConfigError("missing CHECKPOINT (see 'interp explain --help')")
    for m in method:
        get_method(m)
    params = method_params(method, param)
    dev = resolve_device(device)
    configure_backends(dev)
    seed_everything(seed)
    model = load_model(checkpoint, dev)
    for m in method:
        if "seed" in get_method(m).defaults:
            params[m].setdefault("seed", seed)
    inputs = gather_inputs(model, images, npz, dataset, str(data_dir) if data_dir else None, split, indices)
    with Progress(console=err, transient=True, disable=quiet) as bar:
        task = bar.add_task(f"explaining {len(inputs.images)} image(s) on {dev}", total=len(method))
        result = explain(model, inputs, method, target, params, batch_size, fast=fast, compile=compile_,
                         progress=lambda i, name: bar.update(task, completed=i, description=f"{name} done"))
    result.checkpoint = {"arch": model.arch}
    files = save_explanation(result, out_dir, png=png, checkpoint=checkpoint)
    if json_out:
        print_json({"files": [str(f) for f in files], "methods": method, "n": len(result.targets)})
    else:
        print_paths(files)
