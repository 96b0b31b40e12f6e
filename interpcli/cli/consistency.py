"""``interp consistency``: scoring explanations (fidelity metrics, pointing game, sanity check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist
from ..errors import ConfigError
from ..inputs import InputSpec
from ..metrics.fidelity import METRICS, OUTPUTS, SUBSTRATES, FidelityConfig, parse_fractions
from ..metrics.report import summary_rows
from ..ops.consistency import ConsistencyConfig, PointingConfig, SanityConfig, consistency_checkpoint, merge_consistency
from ._app import app
from ._console import JobProgress, print_json, print_paths, print_table
from ._options import (
    BatchSizeOpt,
    CheckpointArg,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    FastOpt,
    ForceOpt,
    JsonOpt,
    MergeOpt,
    OutFolderOpt,
    PngOpt,
    QuietOpt,
    SeedOpt,
    choice,
    method_params,
    value,
)

_F, _P, _S = "Fidelity metrics", "Pointing game", "Sanity check"
OutputChoice = choice("ConsistencyOutput", OUTPUTS)
ScoreChoice = choice("CurveScore", ("prob", "logit"))
RankChoice = choice("RankBy", ("sum", "abs"))
SanityTargetChoice = choice("SanityTargets", ("fixed", "pred"))


def _substrate(v: str, what: str) -> str | float:
    if v in SUBSTRATES:
        return v
    try:
        return float(v)
    except ValueError:
        raise ConfigError(f"{what} must be {', '.join(SUBSTRATES)} or a number in [0, 1]; got '{v}'") from None


def _names(text: str | None, what: str) -> list[str]:
    names = [m.strip() for m in (text or "").split(",") if m.strip()]
    if text is not None and not names:
        raise ConfigError(f"{what} is empty")
    return names


def _print_summary(report) -> None:
    print_table(summary_rows(report.summary),
                "explanation scores (* best; p: Holm-adjusted Wilcoxon signed-rank vs the best)")


@app.command("consistency", rich_help_panel="Explanations")
def consistency_cmd(
    checkpoint: CheckpointArg,
    attributions: Annotated[Optional[list[Path]], typer.Argument(help="attributions.npz files (or their folders) from `interp explain` / `interp occlude` of this checkpoint, on the same images.", show_default=False)] = None,
    metric: Annotated[str, typer.Option("--metric", help=f"Comma-separated fidelity metrics: {', '.join(METRICS)}.", rich_help_panel=_F)] = ",".join(METRICS),
    fractions: Annotated[str, typer.Option("--fractions", help="consistency / min-size: kept fractions, N (1/N, 2/N, ..., 1) or a comma list.", rich_help_panel=_F)] = "20",
    output: Annotated[OutputChoice, typer.Option("--output", help="consistency: f compared, the probability vector, the penultimate representation (class-agnostic) or the top-1 class.", rich_help_panel=_F)] = "prob",
    baseline: Annotated[str, typer.Option("--baseline", help=f"consistency / min-size: what replaces the pixels not kept, {' | '.join(SUBSTRATES)} | a number.", rich_help_panel=_F)] = "encoder",
    step: Annotated[Optional[int], typer.Option("--step", help="deletion / insertion: pixels per step (default: one image row, RISE's 224 at 224 px).", rich_help_panel=_F)] = None,
    deletion_fill: Annotated[str, typer.Option("--deletion-fill", help="deletion substrate (encoder: what the input encoding maps to zero, RISE's zeros).", rich_help_panel=_F)] = "encoder",
    insertion_fill: Annotated[str, typer.Option("--insertion-fill", help="insertion substrate (blur: RISE's Gaussian blur, klen 11, sigma 5).", rich_help_panel=_F)] = "blur",
    score: Annotated[ScoreChoice, typer.Option("--score", help="deletion / insertion: the target's softmax probability (RISE) or logit.", rich_help_panel=_F)] = "prob",
    rank_by: Annotated[RankChoice, typer.Option("--rank-by", help="Pixel order: the map summed over channels (sum: positive evidence first) or its absolute values (abs).", rich_help_panel=_F)] = "sum",
    pointing_game: Annotated[bool, typer.Option("--pointing-game", help="Run the grid pointing game of --methods on mosaics of the checkpoint's test images.", rich_help_panel=_P)] = False,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods for the pointing game and the sanity check.", rich_help_panel=_P)] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Method parameter METHOD.KEY=VALUE for --methods; repeatable.", rich_help_panel=_P)] = None,
    grid: Annotated[int, typer.Option("--grid", help="Mosaics of grid x grid images (2 or 3 in the B-cos papers).", rich_help_panel=_P)] = 3,
    n_mosaics: Annotated[int, typer.Option("--n", help="Number of mosaics.", rich_help_panel=_P)] = 250,
    conf_thresh: Annotated[float, typer.Option("--conf-thresh", help="Only images with sigmoid(logit) above this (0: any correctly classified image).", rich_help_panel=_P)] = 0.5,
    smooth: Annotated[int, typer.Option("--smooth", help="Average-pool the maps with this kernel before scoring (the B-cos CLI uses 15; 0: none).", rich_help_panel=_P)] = 0,
    rescale: Annotated[bool, typer.Option("--rescale", help="Shrink each image by the grid so a mosaic keeps the model's input size.", rich_help_panel=_P)] = False,
    mosaic_seed: Annotated[int, typer.Option("--mosaic-seed", help="Seed of the mosaics' class draws (42 in the B-cos repositories).", rich_help_panel=_P)] = 42,
    sanity: Annotated[bool, typer.Option("--sanity", help="Cascading model randomisation (Adebayo et al. 2018) of --methods (default: the files' methods) on the files' images.", rich_help_panel=_S)] = False,
    sanity_layers: Annotated[Optional[int], typer.Option("--sanity-layers", help="Randomise only the top N layers (deep networks; default all).", rich_help_panel=_S)] = None,
    sanity_targets: Annotated[SanityTargetChoice, typer.Option("--sanity-targets", help="fixed: explain the original classes at every step; pred: each randomised model's own prediction (Adebayo et al.'s script).", rich_help_panel=_S)] = "fixed",
    keep_bn_stats: Annotated[bool, typer.Option("--keep-bn-stats", help="Keep BatchNorm running statistics when re-initialising (their TF code) instead of resetting them.", rich_help_panel=_S)] = False,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of the 95% interval of each mean.", rich_help_panel="Output")] = 10000,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: score only the I-th of N contiguous slices of the files' 256-row windows (fidelity metrics) into a folder of its own; join the N folders with --merge, which computes the statistics over all rows.", show_default=False, rich_help_panel="Scale")] = None,
    merge: MergeOpt = False,
    out_dir: OutFolderOpt = Path("consistency-out"),
    force: ForceOpt = False,
    png: PngOpt = True,
    batch_size: BatchSizeOpt = None,
    fast: FastOpt = True,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score explanations: consistency, min-size, deletion / insertion, the grid pointing game,
    and a sanity check; per-image tables, per-method statistics, paired tests and figures.

    Fidelity metrics read `interp explain` / `interp occlude` results of this checkpoint (the
    recorded sha256 is checked) computed on the same images.  Writes OUT/summary.json (per
    metric and method: mean, sd, median, 95% bootstrap interval; paired t-test and Wilcoxon
    signed-rank test between every two methods, Holm-adjusted, with effect sizes),
    OUT/scores.csv (one row per image x method x metric), OUT/curves.npz, pointing.csv,
    sanity.csv and PNG figures.  stdout lists the files; the summary table goes to stderr.

    Example:

        interp consistency runs/r56.safetensors out/grad out/rise out/gradcam -o out/scores

        interp consistency runs/bcos.safetensors --pointing-game --methods bcos,gradcam,intgrad --grid 3 --n 250 -o out/pg

        interp consistency runs/r56.safetensors out/grad --metric deletion,insertion --step 16 --sanity -o out/s

        interp consistency runs/r56.safetensors out/grad --shard 0/2 -o out/s0    # and 1/2 -o out/s1, then:

        interp consistency --merge out/s0 out/s1 -o out/scores
    """
    if merge:  # CHECKPOINT and ATTRIBUTIONS are the shards' folders
        report, files = merge_consistency([checkpoint, *(attributions or [])], out_dir, png=png, force=force)
        _report(report, files, quiet, json_out)
        return
    metrics = _names(metric, "--metric")
    fid = FidelityConfig(metrics=tuple(metrics), fractions=parse_fractions(fractions), step=step,
                         deletion_fill=_substrate(deletion_fill, "--deletion-fill"),
                         insertion_fill=_substrate(insertion_fill, "--insertion-fill"),
                         baseline=_substrate(baseline, "--baseline"), output=value(output), score=value(score),
                         rank_by=value(rank_by), seed=seed, batch_size=batch_size)
    fid.check()
    chosen = _names(methods, "--methods")
    if pointing_game and not chosen:
        raise ConfigError("--pointing-game needs --methods (e.g. --methods gradcam,intgrad)")
    if chosen and not (pointing_game or sanity):
        raise ConfigError("--methods is for --pointing-game and --sanity; fidelity metrics score the files given")
    params = method_params(chosen, param) if chosen else {}
    if param and not chosen:
        raise ConfigError("--param needs --methods")
    pcfg = PointingConfig(methods=tuple(chosen), grid=grid, n_mosaics=n_mosaics, conf_thresh=conf_thresh,
                          smooth=smooth, rescale=rescale, mosaic_seed=mosaic_seed, params=params) \
        if pointing_game else None
    scfg = SanityConfig(methods=tuple(chosen) or None, inputs=None if attributions else InputSpec(dataset=dataset, data_dir=data_dir),
                        params=params, max_layers=sanity_layers, target_mode=value(sanity_targets),
                        keep_bn_stats=keep_bn_stats) if sanity else None
    if sanity_layers is not None and sanity_layers < 1:
        raise ConfigError(f"--sanity-layers must be at least 1; got {sanity_layers}")
    if n_boot < 1:
        raise ConfigError(f"--n-boot must be at least 1; got {n_boot}")
    cfg = ConsistencyConfig(fidelity=fid, pointing=pcfg, sanity=scfg, n_boot=n_boot, seed=seed, batch_size=batch_size,
                            fast=fast, shard=dist.parse_shard(shard))
    with JobProgress("consistency", quiet=quiet or not dist.is_main()) as bar:
        report, files = consistency_checkpoint(checkpoint, list(attributions or []), out_dir, cfg, dataset=dataset,
                                               data_dir=str(data_dir) if data_dir else None, device=device, png=png,
                                               force=force, progress=lambda d, n, what: bar.update(d, n, what))
    if not dist.is_main():  # torchrun: rank 0 gathered the scores and wrote the folder
        return
    _report(report, files, quiet, json_out)


def _report(report, files, quiet: bool, json_out: bool) -> None:
    if not quiet:
        _print_summary(report)
    if json_out:
        print_json({"files": [str(f) for f in files], "summary": report.summary})
    else:
        print_paths(files)
