"""``interp explain``: attribution maps for a checkpoint's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist
from ..attributions import total_rows
from ..errors import ConfigError
from ..ops.explain import Scale, explain_checkpoint, merge_explanations
from ._app import app
from ._console import JobProgress, print_json, print_paths
from ._options import (
    BatchSizeOpt,
    ChunkOpt,
    CompileOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    FastOpt,
    ForceOpt,
    ImagesArg,
    IndicesOpt,
    JsonOpt,
    MergeOpt,
    MethodChoice,
    NpzOpt,
    OutFolderOpt,
    PngOpt,
    PngRowsOpt,
    QuietOpt,
    SeedOpt,
    ShardOpt,
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
    png_rows: PngRowsOpt = 64,
    chunk: ChunkOpt = 256,
    shard: ShardOpt = None,
    merge: MergeOpt = False,
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

    Images are explained --chunk at a time, each chunk written as one part
    (attributions.npz, then attributions-00001.npz, ...), so memory stays flat on whole
    test sets; PNGs are drawn for the first --png-rows rows.  --shard I/N takes a slice
    (join the slices with --merge); under `torchrun --nproc_per_node=N` the ranks share
    the chunks and rank 0 writes the one result.

    Example:

        interp explain runs/lenet.safetensors --dataset digits --indices 0:8 -m grad -m intgrad -o out/expl

        interp explain runs/r20.safetensors cat.png -m gradcam --target cat -o out/cat

        interp explain runs/r20.safetensors --indices 0:10000 -m grad --shard 0/2 -o out/s0   # and 1/2 -o out/s1

        interp explain --merge out/s0 out/s1 -o out/all

        torchrun --standalone --nproc_per_node=2 -m interpcli explain runs/r20.safetensors --indices 0:10000 -o out/all
    """
    methods = value(method)
    if methods == ["list"]:  # the older spelling of `interp methods`
        methods_cmd(json_out)
        return
    if "list" in methods:
        raise ConfigError("--method list lists the methods; give it alone (or use `interp methods`)")
    if merge:  # CHECKPOINT and IMAGES are the shards' folders
        files = merge_explanations([p for p in [checkpoint, *(images or [])] if p is not None], out_dir, force=force,
                                   png=png, png_rows=png_rows)
        _print(files, methods=None, n=total_rows(out_dir), json_out=json_out)
        return
    if checkpoint is None:
        raise ConfigError("missing CHECKPOINT (see 'interp explain --help')")
    params = method_params(methods, param)
    with JobProgress("explain", unit="images", quiet=quiet or not dist.is_main()) as bar:
        result, files = explain_checkpoint(
            checkpoint, out_dir, methods, inputs=input_spec(images, npz, dataset, data_dir, split, indices),
            target=target, params=params, batch_size=batch_size, fast=fast, compile=compile_, tf32=tf32, seed=seed,
            device=device, png=png, force=force, scale=Scale(chunk=chunk, shard=shard, png_rows=png_rows),
            progress=bar.update)
    if dist.is_main():
        _print(files, methods=methods, n=total_rows(out_dir) if files else len(result), json_out=json_out)


def _print(files: list[Path], methods: list[str] | None, n: int, json_out: bool) -> None:
    if json_out:
        print_json({"files": [str(f) for f in files], "methods": methods, "n": n})
    else:
        print_paths(files)
