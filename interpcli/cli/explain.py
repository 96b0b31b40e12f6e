"""``interp explain``: attribution maps for a checkpoint's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from ..ops.explain import explain_checkpoint
from ._app import app
from ._console import JobProgress, print_json, print_paths
from ._options import (
    BatchSizeOpt,
    CompileOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    FastOpt,
    ForceOpt,
    ImagesArg,
    IndicesOpt,
    JsonOpt,
    MethodChoice,
    NpzOpt,
    OutFolderOpt,
    PngOpt,
    QuietOpt,
    SeedOpt,
    SplitOpt,
    TF32Opt,
    input_spec,
    method_params,
    value,
)
from .registries import methods_cmd

_M = "Method"


@app.command("explain", rich_help_panel="Explanations")
def explain_cmd(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint (.safetensors) from `interp train`.", show_default=False)] = None,
    images: ImagesArg = None,
    method: Annotated[list[MethodChoice], typer.Option("--method", "-m", help="Method (repeatable); `interp methods` lists them.", rich_help_panel=_M)] = ["grad"],  # noqa: B006
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Method parameter KEY=VALUE or METHOD.KEY=VALUE; repeatable.", rich_help_panel=_M)] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="pred, label, all, a class index or a class name.", rich_help_panel=_M)] = "pred",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    split: SplitOpt = "test",
    indices: IndicesOpt = None,
    npz: NpzOpt = None,
    out_dir: OutFolderOpt = Path("explain-out"),
    force: ForceOpt = False,
    png: PngOpt = True,
    batch_size: BatchSizeOpt = None,
    fast: FastOpt = True,
    compile_: CompileOpt = False,
    tf32: TF32Opt = False,
    seed: SeedOpt = 0,
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
    methods = value(method)
    if methods == ["list"]:  # the older spelling of `interp methods`
        methods_cmd(json_out)
        return
    if "list" in methods:
        raise ConfigError("--method list lists the methods; give it alone (or use `interp methods`)")
    if checkpoint is None:
        raise ConfigError("missing CHECKPOINT (see 'interp explain --help')")
    params = method_params(methods, param)
    def report(done: int, total: int, method: str) -> None:  # rows of this method -> rows of all methods
        k = methods.index(method)
        bar.update(k * total + done, len(methods) * total, f"{method} ({k + 1}/{len(methods)})")

    with JobProgress("explain", unit="rows", quiet=quiet) as bar:
        result, files = explain_checkpoint(
            checkpoint, out_dir, methods, inputs=input_spec(images, npz, dataset, data_dir, split, indices),
            target=target, params=params, batch_size=batch_size, fast=fast, compile=compile_, tf32=tf32, seed=seed,
            device=device, png=png, force=force, progress=report)
    if json_out:
        print_json({"files": [str(f) for f in files], "methods": methods, "n": len(result)})
    else:
        print_paths(files)
