"""``interp kernels``: kernel montages, their evolution through training, a feature map, the loss profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..inputs import InputSpec
from ..kernel_viz import SCALES
from ..kernels import KernelsConfig
from ..ops.kernels import kernels_checkpoint
from ._app import app
from ._console import err, print_json, print_paths
from ._options import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    OutFolderOpt,
    QuietOpt,
    SplitOpt,
    choice,
    value,
)

_K, _S, _F = "Kernels", "Snapshots", "Feature map"
ScaleChoice = choice("Scale", SCALES)


@app.command("kernels", rich_help_panel="Explanations")
def kernels_cmd(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A checkpoint (.safetensors) written by `interp train`; optional with only --snapshots / --loss-log.", show_default=False)] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="The convolution (a module path; `interp noise-grad CKPT --layers` lists them) [default: the arch's first layer].", show_default=False, rich_help_panel=_K)] = None,
    kernels: Annotated[Optional[str], typer.Option("--kernels", help="START:STOP or comma-separated kernels to show [default: all].", show_default=False, rich_help_panel=_K)] = None,
    scale: Annotated[ScaleChoice, typer.Option("--scale", help="One scale per picture: symmetric ([-m, m], 0 is grey), positive ([0, m], 0 is black); auto: positive when every weight is >= 0.", rich_help_panel=_K)] = "auto",
    columns: Annotated[Optional[int], typer.Option("--columns", min=1, help="Tiles per row for RGB and single-channel kernels [default: a near-square grid].", show_default=False, rich_help_panel=_K)] = None,
    snapshots: Annotated[Optional[Path], typer.Option("--snapshots", help="RUN.kernels.npz written by `interp train --snapshot-every N`: a GIF (and MP4 with an encoder) and a PNG strip.", rich_help_panel=_S)] = None,
    frame_ms: Annotated[int, typer.Option("--frame-ms", min=1, help="Duration of a GIF frame.", rich_help_panel=_S)] = 250,
    strip: Annotated[int, typer.Option("--strip", min=1, help="Frames in the PNG strip (first and last included).", rich_help_panel=_S)] = 6,
    image: Annotated[Optional[Path], typer.Option("--image", help="An image file: the feature map of --kernel on it, next to the image and the kernel.", rich_help_panel=_F)] = None,
    index: Annotated[Optional[int], typer.Option("--index", min=0, help="Instead of --image: this image of the dataset split (the checkpoint's dataset unless --dataset).", rich_help_panel=_F)] = None,
    kernel: Annotated[int, typer.Option("--kernel", "-k", min=0, help="The kernel of the feature map.", rich_help_panel=_F)] = 0,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    split: SplitOpt = "test",
    loss_log: Annotated[Optional[Path], typer.Option("--loss-log", help="RUN.log.jsonl written by `interp train`: loss, training and test accuracy against epoch; flags a stuck run.", rich_help_panel="Loss profile")] = None,
    out_dir: OutFolderOpt = Path("kernels-out"),
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Kernels of a convolution, how they formed in training, a feature map, the loss profile.

    Writes OUT/kernels.png (a montage of the layer's kernels, indices labelled, one
    symmetric scale; RGB kernels in colour, B-cos kernels folded back to RGB, others one grey
    tile per input channel) and OUT/kernels.npz; with --snapshots OUT/snapshots.gif (one
    frame per snapshot, step and epoch stamped), OUT/snapshots.mp4 (when an encoder is
    installed) and OUT/snapshots_strip.png; with --image or --index OUT/feature_map.png and
    .npz; with --loss-log OUT/loss_profile.png and OUT/loss_profile.json (stuck or not).

    Example:

        interp kernels runs/lenet.safetensors --snapshots runs/lenet.kernels.npz --loss-log runs/lenet.log.jsonl -o out/k

        interp kernels runs/pulse.safetensors --index 0 --kernel 2 -o out/fmap
    """
    if image is not None and index is not None:
        raise typer.BadParameter("give --image or --index, not both", param_hint="--image")
    spec = None
    if image is not None:
        spec = InputSpec(images=[image])
    elif index is not None:
        spec = InputSpec(dataset=dataset, data_dir=str(data_dir) if data_dir else None, split=split,
                         indices=str(index))
    cfg = KernelsConfig(layer=layer, kernels=kernels, scale=value(scale), columns=columns, kernel=kernel,
                        frame_ms=frame_ms, strip=strip)
    summary, files = kernels_checkpoint(checkpoint, out_dir, cfg, snapshots=snapshots, image=spec, loss_log=loss_log,
                                        device=device, force=force)
    if not quiet:
        for text in summary["notices"]:
            err.print(text, markup=False)
        verdict = summary.get("loss_profile")
        if verdict and verdict.get("stuck"):
            err.print(f"stuck run: {verdict['reason']}", markup=False)
    if json_out:
        print_json({"files": [str(f) for f in files], **summary})
    else:
        print_paths(files)
