"""``interp occlude``: the perturbation engine (masks x scores), ROSA / OSA-DAS / GDS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress

from ..artifacts import load_model
from ..device import configure_backends, resolve_device, seed_everything
from ..errors import ConfigError
from ..explain import gather_inputs, save_explanation
from ..occlude import FILLS, MASKS, SCORES, OccludeConfig, occlude_explanation
from . import app
from ._console import err, print_json, print_paths
from ._options import DataDirOpt, DeviceOpt, JsonOpt, QuietOpt

_M, _S, _A, _G, _I = "Masks", "Score", "Augmentations and subspaces", "GDS", "Input"


def _fill(value: str) -> str | float:
    if value in FILLS:
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--fill must be {', '.join(FILLS)} or a number; got '{value}'") from None


def _fraction_or_int(value: str) -> float | int:
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"--gds-dim must be a number; got '{value}'") from None
    return v if 0 < v < 1 else int(v)


@app.command("occlude", rich_help_panel="Explanations")
def occlude_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.safetensors) from `interp train`.", show_default=False)],
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files (PNG/JPEG); or use --dataset/--npz.", show_default=False)] = None,
    masks: Annotated[str, typer.Option("--masks", help=f"{' | '.join(MASKS)}.", rich_help_panel=_M)] = "sliding",
    window: Annotated[int, typer.Option("--window", help="sliding: window side in pixels.", rich_help_panel=_M)] = 8,
    stride: Annotated[int, typer.Option("--stride", help="sliding: step in pixels.", rich_help_panel=_M)] = 4,
    fill: Annotated[str, typer.Option("--fill", help="zero | mean | blur | noise | a number: what replaces the occluded pixels.", rich_help_panel=_M)] = "zero",
    n_masks: Annotated[int, typer.Option("--n-masks", help="rise: number of random masks.", rich_help_panel=_M)] = 1000,
    grid: Annotated[int, typer.Option("--grid", help="rise: grid size s.", rich_help_panel=_M)] = 8,
    keep: Annotated[float, typer.Option("--keep", help="rise: keep-probability p.", rich_help_panel=_M)] = 0.5,
    n_segments: Annotated[int, typer.Option("--n-segments", help="superpixels: about this many segments.", rich_help_panel=_M)] = 50,
    segmentation: Annotated[str, typer.Option("--segmentation", help="superpixels: slic | grid.", rich_help_panel=_M)] = "slic",
    mask_file: Annotated[Optional[Path], typer.Option("--mask-file", help="file: label maps (PNG, or NPZ `labels`/`masks`).", rich_help_panel=_M)] = None,
    score: Annotated[str, typer.Option("--score", "-s", help=f"{' | '.join(SCORES)}.", rich_help_panel=_S)] = "class",
    class_score: Annotated[str, typer.Option("--class-score", help="class: logit | prob.", rich_help_panel=_S)] = "logit",
    distance: Annotated[str, typer.Option("--distance", help="repr/gds: cosine | cos2 | l2.", rich_help_panel=_S)] = "cosine",
    layer: Annotated[Optional[str], typer.Option("--layer", help="Feature layer (module path), logits or probs; default the penultimate.", rich_help_panel=_S)] = None,
    pool: Annotated[str, typer.Option("--pool", help="4-D features: auto | avg | max | flatten.", rich_help_panel=_S)] = "auto",
    target: Annotated[str, typer.Option("--target", "-t", help="class score: pred, label, all, a class index or name.", rich_help_panel=_S)] = "pred",
    augment: Annotated[str, typer.Option("--augment", help="subspace: views' preset, weak | strong | none, optionally with PRESET:KEY=VALUE,...", rich_help_panel=_A)] = "weak",
    views: Annotated[int, typer.Option("--views", help="Augmented views per image and per GDS set.", rich_help_panel=_A)] = 16,
    k: Annotated[int, typer.Option("--k", help="Subspace dimension.", rich_help_panel=_A)] = 4,
    angles: Annotated[str, typer.Option("--angles", help="Canonical angles used: all | first | an int.", rich_help_panel=_A)] = "all",
    extra_views: Annotated[Optional[Path], typer.Option("--extra-views", help="NPZ `views` (V,C,H,W) or (N,V,C,H,W): one more GDS set.", rich_help_panel=_A)] = None,
    gds_from: Annotated[str, typer.Option("--gds-from", help="image (four augmentation sets) | dataset (class subspaces; cached beside the checkpoint).", rich_help_panel=_G)] = "image",
    gds_dim: Annotated[str, typer.Option("--gds-dim", help="GDS dimension: an int, or a fraction in (0, 1) of the rank.", rich_help_panel=_G)] = "0.5",
    gds_mode: Annotated[str, typer.Option("--gds-mode", help="gds: compare projected features (repr) or projected subspaces (subspace).", rich_help_panel=_G)] = "repr",
    gds_per_class: Annotated[int, typer.Option("--gds-per-class", help="dataset GDS: training images per class.", rich_help_panel=_G)] = 100,
    grad_prune: Annotated[Optional[float], typer.Option("--grad-prune", help="Score only this fraction of masks, ranked by gradient saliency.", rich_help_panel="Performance")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Images of a dataset split (default: the checkpoint's when no images are given).", rich_help_panel=_I)] = None,
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option("--split", help="train or test.", rich_help_panel=_I)] = "test",
    indices: Annotated[str, typer.Option("--indices", help="START:STOP or comma-separated indices of the split.", rich_help_panel=_I)] = "0:8",
    npz: Annotated[Optional[Path], typer.Option("--npz", help="An NPZ with an `images` array.", rich_help_panel=_I)] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (its parent must exist).", rich_help_panel="Output")] = Path("occlude-out"),
    png: Annotated[bool, typer.Option("--png/--no-png", help="Write PNG overlays.", rich_help_panel="Output")] = True,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, help="Images per forward pass (default 256).", rich_help_panel="Performance")] = None,
    fast: Annotated[bool, typer.Option("--fast/--no-fast", help="Eval fast path: BatchNorm folded into the convolutions, channels_last.", rich_help_panel="Performance")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of masks, noise and augmentations.")] = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Occlusion maps: masks (sliding, rise, superpixels, file) x scores (class, repr, subspace, gds).

    `--score repr` is ROSA (feature distance at the penultimate layer), `subspace` is
    OSA-DAS (canonical angles between subspaces of augmented views), `gds` is ROSA-GDS
    (features projected onto the generalized difference subspace of weak/strong
    augmentations of the image and of noise).  Writes OUT/attributions.npz (the map under
    the score's method name, `mask_scores`, the full configuration in meta) and PNG overlays.

    Example:

        interp occlude runs/r56.safetensors --indices 0:4 --score gds -o out/gds

        interp occlude runs/r56.safetensors cat.png --masks superpixels --score subspace --views 16 --k 4 -o out/cat
    """
    cfg = OccludeConfig(
        masks=masks, window=window, stride=stride, fill=_fill(fill), n_masks=n_masks, s=grid, p=keep,
        n_segments=n_segments, segmentation=segmentation, mask_file=str(mask_file) if mask_file else None,
        score=score, class_score=class_score, distance=distance, layer=layer, pool=pool, augment=augment,
        views=views, k=k, angles=angles, gds_from=gds_from, gds_dim=_fraction_or_int(gds_dim), gds_mode=gds_mode,
        gds_per_class=gds_per_class, extra_views=str(extra_views) if extra_views else None, grad_prune=grad_prune,
        seed=seed, batch_size=batch_size)
    cfg.check()
    dev = resolve_device(device)
    configure_backends(dev)
    seed_everything(seed)
    model = load_model(checkpoint, dev)
    inputs = gather_inputs(model, images, npz, dataset, str(data_dir) if data_dir else None, split, indices)
    with Progress(console=err, transient=True, disable=quiet) as bar:
        task = bar.add_task(f"occlude ({masks} x {score})", total=None)  # rows: images x targets
        result = occlude_explanation(model, inputs, cfg, target, checkpoint, dataset,
                                     str(data_dir) if data_dir else None,
                                     progress=lambda i, n: bar.update(task, completed=i, total=n), fast=fast)
    result.checkpoint = {"arch": model.arch}
    files = save_explanation(result, out_dir, png=png, checkpoint=checkpoint)
    if json_out:
        print_json({"files": [str(f) for f in files], "score": score, "masks": masks, "n": len(result.targets)})
    else:
        print_paths(files)
