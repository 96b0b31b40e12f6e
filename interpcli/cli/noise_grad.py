"""``interp noise-grad``: what units respond to (input gradients on noise and on images)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist
from ..kernel_viz import RENDERS
from ..noisegrad import GRAD_MODES, REDUCES, NoiseGradConfig
from ..ops.noise_grad import Scale, layer_listing, merge_noise_grads, noise_grad_checkpoint
from ._app import app
from ._console import JobProgress, err, print_json, print_listing, print_paths
from ._options import (
    BatchSizeOpt,
    CheckpointArg,
    ChunkOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    ImagesArg,
    IndicesOpt,
    JsonOpt,
    MergeOpt,
    NpzOpt,
    OutFolderOpt,
    PngOpt,
    QuietOpt,
    SeedOpt,
    ShardOpt,
    SplitOpt,
    choice,
    input_spec,
    value,
)

_U, _N, _R = "Units", "Noise", "Rendering"
ReduceChoice = choice("Reduce", REDUCES)
RenderChoice = choice("Render", RENDERS)
GradModeChoice = choice("GradMode", GRAD_MODES)


def _floats(text: Optional[str], what: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expects a number or comma-separated numbers per channel, got '{text}'",
                                 param_hint=what) from None


@app.command("noise-grad", rich_help_panel="Explanations")
def noise_grad_cmd(
    checkpoint: CheckpointArg,
    images: ImagesArg = None,
    image_opts: Annotated[Optional[list[Path]], typer.Option("--images", help="Image files (PNG/JPEG), as the IMAGES arguments.", show_default=False, rich_help_panel="Input")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="Units: channels of this layer (a module path; `--layers` lists them); default the class logits.", rich_help_panel=_U)] = None,
    units: Annotated[Optional[str], typer.Option("--units", help="With --layer: START:STOP or comma-separated channels [default: all].", show_default=False, rich_help_panel=_U)] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Logits: class indices or names, comma-separated, or START:STOP [default: all].", show_default=False, rich_help_panel=_U)] = None,
    reduce: Annotated[ReduceChoice, typer.Option("--reduce", help="A channel's value: the max or the mean over its positions.", rich_help_panel=_U)] = "max",
    layers: Annotated[bool, typer.Option("--layers", help="List the layers (names, types, output shapes, units) and exit.", rich_help_panel=_U)] = False,
    samples: Annotated[Optional[int], typer.Option("--samples", "-n", min=0, help="Gaussian noise images [default: 8, or 0 when real images are given].", show_default=False, rich_help_panel=_N)] = None,
    noise_mean: Annotated[Optional[str], typer.Option("--noise-mean", help="Noise mean in pixel units, one value or one per channel [default: the model's input normalisation mean; 0.5 without one].", show_default=False, rich_help_panel=_N)] = None,
    noise_std: Annotated[Optional[str], typer.Option("--noise-std", help="Noise std in pixel units [default: the normalisation std; 0.25 without one].", show_default=False, rich_help_panel=_N)] = None,
    render: Annotated[RenderChoice, typer.Option("--render", help="minmax: each gradient renormalised to [0, 1]; percentile: symmetric clipping at a percentile of |g| (0 is grey).", rich_help_panel=_R)] = "minmax",
    percentile: Annotated[float, typer.Option("--percentile", help="percentile: the clipping percentile.", rich_help_panel=_R)] = 99.0,
    average: Annotated[bool, typer.Option("--average", help="Add a column with the mean gradient over the noise samples.", rich_help_panel=_R)] = False,
    grad_mode: Annotated[GradModeChoice, typer.Option("--grad-mode", help="Backward strategy: batched (vmap over units), fold (units in the batch), loop (one pass per unit); auto: batched, else fold.", rich_help_panel="Performance")] = "auto",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    split: SplitOpt = "test",
    indices: IndicesOpt = None,
    npz: NpzOpt = None,
    out_dir: OutFolderOpt = Path("noise-grad-out"),
    force: ForceOpt = False,
    png: PngOpt = True,
    png_inputs: Annotated[int, typer.Option("--png-inputs", min=0, help="Draw the grid of the first N inputs only.", rich_help_panel="Output")] = 64,
    chunk: ChunkOpt = 256,
    shard: ShardOpt = None,
    merge: MergeOpt = False,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Input gradients of units on Gaussian noise and on images: what the units respond to.

    Units are the class logits (default) or the channels of a layer (`--layer`, each
    channel's max or mean over space; `--layers` lists the layers with their shapes).
    Columns are noise images drawn in the model's input space (its normalisation mean and
    std), then real images when given, so the same units show on data next to noise.
    Writes OUT/noise_grad.npz (raw gradients, inputs, unit values), OUT/scores.json
    (per unit: consistency and spread across noise samples, cosine alignment with the input)
    and OUT/grid.png (rows = units, columns = samples).  Inputs are taken --chunk at a
    time, each chunk one part of the NPZ (noise_grad-00001.npz, ...), the scores summed
    over every input and the grid drawn for the first --png-inputs; --shard I/N, --merge
    and torchrun as in `interp explain`.

    Example:

        interp noise-grad runs/smp.safetensors --layer features.conv2 --units 0:16 --samples 8 -o out/ng

        interp noise-grad runs/lenet.safetensors --samples 4 --indices 0:4 --average -o out/ng-digits

        interp noise-grad runs/smp.safetensors --layers
    """
    if merge:  # CHECKPOINT and IMAGES are the shards' folders
        print_paths(merge_noise_grads([checkpoint, *(images or [])], out_dir, force=force, png=png,
                                      png_inputs=png_inputs))
        return
    if layers:
        print_listing(layer_listing(checkpoint, device),
                      [("name", lambda r: r["name"]), ("type", lambda r: r["type"]),
                       ("output", lambda r: "x".join(map(str, r["shape"])) if isinstance(r["shape"], list)
                        else str(r["shape"])), ("units", lambda r: str(r["units"] or "-"))], json_out)
        return
    files_given = list(images or []) + list(image_opts or [])
    real = bool(files_given) or npz is not None or dataset is not None or indices is not None
    cfg = NoiseGradConfig(
        layer=layer, units=units, classes=classes, reduce=value(reduce),
        samples=samples if samples is not None else (0 if real else 8), seed=seed,
        noise_mean=_floats(noise_mean, "--noise-mean"), noise_std=_floats(noise_std, "--noise-std"),
        render=value(render), percentile=percentile, average=average, grad_mode=value(grad_mode),
        batch_rows=batch_size).check()
    spec = input_spec(files_given, npz, dataset, data_dir, split, indices) if real else None
    with JobProgress("noise-grad", unit="inputs", quiet=quiet or not dist.is_main()) as bar:
        result, files = noise_grad_checkpoint(checkpoint, out_dir, cfg, inputs=spec, device=device, png=png,
                                              force=force, scale=Scale(chunk=chunk, shard=shard, png_rows=png_inputs),
                                              progress=lambda i, n: bar.update(i, n))
    if not dist.is_main():
        return
    summary = result.scores()["summary"]
    if not quiet and not json_out:
        err.print(f"{len(result.units)} units x {result.n_inputs} inputs of {result.layer}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None), markup=False)
    if json_out:
        print_json({"files": [str(f) for f in files], "layer": result.layer, "units": result.units,
                    "inputs": result.n_inputs, "summary": summary})
    else:
        print_paths(files)
