"""``interp occlude``: the perturbation engine (masks x scores), ROSA / OSA-DAS / GDS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist
from ..attributions import total_rows
from ..augment import PRESETS
from ..errors import ConfigError
from ..occlusion import MASKS, SCORES, OccludeConfig
from ..ops.occlude import Scale, merge_occlusions, occlude_checkpoint
from ..perturb import FILLS
from ..subspace import DISTANCES
from ._app import app
from ._console import JobProgress, print_json, print_paths
from ._options import (
    BatchSizeOpt,
    CheckpointArg,
    ChunkOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    FastOpt,
    ForceOpt,
    ImagesArg,
    IndicesOpt,
    JsonOpt,
    MergeOpt,
    NpzOpt,
    OutFolderOpt,
    PngOpt,
    PngRowsOpt,
    QuietOpt,
    SeedOpt,
    ShardOpt,
    SplitOpt,
    choice,
    input_spec,
    value,
)

_M, _S, _A, _G = "Masks", "Score", "Augmentations and subspaces", "GDS"
MaskChoice = choice("Masks", MASKS)
ScoreChoice = choice("Score", SCORES)
SegmentationChoice = choice("Segmentation", ("slic", "grid"))
ClassScoreChoice = choice("ClassScore", ("logit", "prob"))
DistanceChoice = choice("Distance", DISTANCES)
PoolChoice = choice("Pool", ("auto", "avg", "max", "flatten"))
GdsFromChoice = choice("GdsFrom", ("image", "dataset"))
GdsModeChoice = choice("GdsMode", ("repr", "subspace"))


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
    checkpoint: CheckpointArg,
    images: ImagesArg = None,
    masks: Annotated[MaskChoice, typer.Option("--masks", help="What is occluded.", rich_help_panel=_M)] = "sliding",
    window: Annotated[int, typer.Option("--window", help="sliding: window side in pixels.", rich_help_panel=_M)] = 8,
    stride: Annotated[int, typer.Option("--stride", help="sliding: step in pixels.", rich_help_panel=_M)] = 4,
    fill: Annotated[str, typer.Option("--fill", help="zero | mean | blur | noise | a number: what replaces the occluded pixels.", rich_help_panel=_M)] = "zero",
    n_masks: Annotated[int, typer.Option("--n-masks", help="rise: number of random masks.", rich_help_panel=_M)] = 1000,
    grid: Annotated[int, typer.Option("--grid", help="rise: grid size s.", rich_help_panel=_M)] = 8,
    keep: Annotated[float, typer.Option("--keep", help="rise: keep-probability p.", rich_help_panel=_M)] = 0.5,
    n_segments: Annotated[int, typer.Option("--n-segments", help="superpixels: about this many segments.", rich_help_panel=_M)] = 50,
    segmentation: Annotated[SegmentationChoice, typer.Option("--segmentation", help="superpixels: SLIC or a regular grid.", rich_help_panel=_M)] = "slic",
    mask_file: Annotated[Optional[Path], typer.Option("--mask-file", help="file: label maps (PNG, or NPZ `labels`/`masks`).", rich_help_panel=_M)] = None,
    score: Annotated[ScoreChoice, typer.Option("--score", "-s", help="class (logit drop), repr (ROSA), subspace (OSA-DAS), gds (ROSA-GDS).", rich_help_panel=_S)] = "class",
    class_score: Annotated[ClassScoreChoice, typer.Option("--class-score", help="class: the logit or the probability.", rich_help_panel=_S)] = "logit",
    distance: Annotated[DistanceChoice, typer.Option("--distance", help="repr/gds: feature distance.", rich_help_panel=_S)] = "cosine",
    layer: Annotated[Optional[str], typer.Option("--layer", help="Feature layer (module path), logits or probs; default the penultimate.", rich_help_panel=_S)] = None,
    pool: Annotated[PoolChoice, typer.Option("--pool", help="4-D features: auto (the arch's pooling at the penultimate layer, else flatten), avg, max or flatten.", rich_help_panel=_S)] = "auto",
    target: Annotated[str, typer.Option("--target", "-t", help="class score: pred, label, all, a class index or name.", rich_help_panel=_S)] = "pred",
    augment: Annotated[str, typer.Option("--augment", help=f"subspace: views' preset, {' | '.join(PRESETS)}, optionally with PRESET:KEY=VALUE,...", rich_help_panel=_A, autocompletion=lambda: list(PRESETS))] = "weak",
    views: Annotated[int, typer.Option("--views", help="Augmented views per image and per GDS set.", rich_help_panel=_A)] = 16,
    k: Annotated[int, typer.Option("--k", help="Subspace dimension.", rich_help_panel=_A)] = 4,
    angles: Annotated[str, typer.Option("--angles", help="Canonical angles used: all | first | an int.", rich_help_panel=_A)] = "all",
    extra_views: Annotated[Optional[Path], typer.Option("--extra-views", help="NPZ `views` (V,C,H,W) or (N,V,C,H,W): one more GDS set.", rich_help_panel=_A)] = None,
    gds_from: Annotated[GdsFromChoice, typer.Option("--gds-from", help="image (four augmentation sets) or dataset (class subspaces; cached in $INTERP_CACHE_DIR, default ~/.cache/interp).", rich_help_panel=_G)] = "image",
    gds_dim: Annotated[str, typer.Option("--gds-dim", help="GDS dimension: an int, or a fraction in (0, 1) of the rank.", rich_help_panel=_G)] = "0.5",
    gds_mode: Annotated[GdsModeChoice, typer.Option("--gds-mode", help="gds: compare projected features (repr) or projected subspaces (subspace).", rich_help_panel=_G)] = "repr",
    gds_per_class: Annotated[int, typer.Option("--gds-per-class", help="dataset GDS: training images per class.", rich_help_panel=_G)] = 100,
    grad_prune: Annotated[Optional[float], typer.Option("--grad-prune", help="Score only this fraction of masks, ranked by gradient saliency.", rich_help_panel="Performance")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    split: SplitOpt = "test",
    indices: IndicesOpt = None,
    npz: NpzOpt = None,
    out_dir: OutFolderOpt = Path("occlude-out"),
    force: ForceOpt = False,
    png: PngOpt = True,
    png_rows: PngRowsOpt = 64,
    chunk: ChunkOpt = 256,
    shard: ShardOpt = None,
    merge: MergeOpt = False,
    batch_size: BatchSizeOpt = None,
    fast: FastOpt = True,
    seed: SeedOpt = 0,
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
    As `interp explain`: --chunk images at a time (one part each), PNGs of the first
    --png-rows rows, --shard I/N and --merge, torchrun.

    Example:

        interp occlude runs/r56.safetensors --indices 0:4 --score gds -o out/gds

        interp occlude runs/r56.safetensors cat.png --masks superpixels --score subspace --views 16 --k 4 -o out/cat

        interp occlude --merge out/gds-s0 out/gds-s1 -o out/gds
    """
    if merge:  # CHECKPOINT and IMAGES are the shards' folders
        files = merge_occlusions([checkpoint, *(images or [])], out_dir, force=force, png=png, png_rows=png_rows)
        if json_out:
            print_json({"files": [str(f) for f in files], "n": total_rows(out_dir)})
        else:
            print_paths(files)
        return
    cfg = OccludeConfig(
        masks=value(masks), window=window, stride=stride, fill=_fill(fill), n_masks=n_masks, s=grid, p=keep,
        n_segments=n_segments, segmentation=value(segmentation), mask_file=str(mask_file) if mask_file else None,
        score=value(score), class_score=value(class_score), distance=value(distance), layer=layer, pool=value(pool),
        augment=augment, views=views, k=k, angles=angles, gds_from=value(gds_from), gds_dim=_fraction_or_int(gds_dim),
        gds_mode=value(gds_mode), gds_per_class=gds_per_class, extra_views=str(extra_views) if extra_views else None,
        grad_prune=grad_prune, seed=seed, batch_size=batch_size)
    cfg.check()
    with JobProgress(f"occlude ({cfg.masks} x {cfg.score})", unit="images", quiet=quiet or not dist.is_main()) as bar:
        result, files = occlude_checkpoint(
            checkpoint, out_dir, cfg, inputs=input_spec(images, npz, dataset, data_dir, split, indices), target=target,
            fast=fast, device=device, png=png, force=force, scale=Scale(chunk=chunk, shard=shard, png_rows=png_rows),
            progress=lambda i, n: bar.update(i, n))
    if not dist.is_main():
        return
    if json_out:
        n = total_rows(out_dir) if files else len(result)
        print_json({"files": [str(f) for f in files], "score": cfg.score, "masks": cfg.masks, "n": n})
    else:
        print_paths(files)
