"""``interp sparsify``: an elastic-net sparse decision layer over deep features, and its features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist
from ..errors import ConfigError
from ..ops.sparsify import SparsifyConfig, sparsify_checkpoint
from ..sparse.path import PathConfig
from ..sparse.solver import SolverConfig
from ._app import Interrupted, app
from ._console import JobProgress, print_json, print_paths, print_table
from ._options import (
    BatchSizeOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    OutFolderOpt,
    QuietOpt,
    SeedOpt,
    parse_kv,
)

_P, _S, _V = "Path", "Selection", "Feature pictures"


@app.command("sparsify", rich_help_panel="Models")
def sparsify_cmd(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A checkpoint (.safetensors) written by `interp train` (or use --features).", show_default=False)] = None,
    features: Annotated[Optional[Path], typer.Option("--features", help="An NPZ of features extracted elsewhere: `features` (N, D), `labels` (N,), `split` (N,) of train/val/test; no checkpoint is written.", show_default=False)] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Elastic-net mix in (0, 1]: alpha ||W||_1 + (1 - alpha)/2 ||W||^2 (1: the lasso).", rich_help_panel=_P)] = 0.99,
    lambdas: Annotated[int, typer.Option("--lambdas", "-k", help="Number of λ values on the path, log-spaced from λ_max (the all-zero layer) down.", rich_help_panel=_P)] = 100,
    epsilon: Annotated[float, typer.Option("--epsilon", help="The smallest λ as a fraction of λ_max, in (0, 1).", rich_help_panel=_P)] = 1e-3,
    group: Annotated[bool, typer.Option("--group", help="Group lasso: one group per feature across classes (a feature is used by all classes or none).", rich_help_panel=_P)] = False,
    tol: Annotated[float, typer.Option("--tol", help="Stop a λ when the objective improved by less than this (relative) over the last --lookbehind iterations.", rich_help_panel=_P)] = 1e-6,
    lookbehind: Annotated[int, typer.Option("--lookbehind", help="Iterations of the look-behind stopping rule.", rich_help_panel=_P)] = 10,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Iterations per λ at most.", rich_help_panel=_P)] = 20000,
    double: Annotated[bool, typer.Option("--double", help="Solve in float64 (default float32).", rich_help_panel=_P)] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted path (kept beside --out) after its last finished λ; or re-select on a path whose rule failed.", rich_help_panel=_P)] = False,
    select: Annotated[str, typer.Option("--select", help="absolute:F (sparsest point within F points of the best validation accuracy), relative:F (within F percent), features-per-class:N (best point with at most N), lambda-index:I.", rich_help_panel=_S)] = "absolute:5",
    val_split: Annotated[float, typer.Option("--val-split", help="Fraction of the training features held out for the selection when the checkpoint (or file) has no validation split.", rich_help_panel=_S)] = 0.1,
    visualize: Annotated[int, typer.Option("--visualize", help="For each kept feature, a montage of its K most and K least activating test images with LIME superpixels fitted to the feature (0: none).", rich_help_panel=_V)] = 0,
    lime: Annotated[Optional[list[str]], typer.Option("--lime", help="LIME setting KEY=VALUE: n_samples (1000), n_segments (50), segmentation (slic|grid), compactness, kernel_width, alpha, seed; repeatable.", rich_help_panel=_V)] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Extract the features again and do not cache them.", rich_help_panel="Input")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: only extract the features of the I-th of N contiguous slices of the batches into OUT/features-shard.npz, and stop; join the N folders with --shards.", show_default=False, rich_help_panel="Scale")] = None,
    shards: Annotated[Optional[list[Path]], typer.Option("--shards", help="The folders of the N --shard I/N runs: their features, joined, instead of extracting (repeatable).", show_default=False, rich_help_panel="Scale")] = None,
    out_dir: OutFolderOpt = Path("sparsify-out"),
    force: ForceOpt = False,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refit the decision layer as an elastic-net sparse linear layer over the network's deep
    features (Wong, Santurkar, Madry, ICML 2021), along the whole regularisation path.

    The penultimate (pooled) features of the train / validation / test splits are extracted
    once and cached beside the checkpoint, standardised with training statistics; the path goes
    from λ_max (no feature) down to epsilon x λ_max, warm-started; --select picks one point
    (default: the sparsest within 5 points of the best validation accuracy).  Writes
    OUT/sparse.safetensors (the model with that layer, standardisation folded in: every command
    loads it), OUT/path.json (per λ: non-zeros overall and per class, accuracy and loss on each
    split), OUT/path.png, OUT/features.json (per class the kept features and weights) and, with
    --visualize, OUT/features/feature-NNNN.png.  stdout lists the files (--json: the files, the
    selection and the dense layer); the chosen layer against the dense one, a table, goes to stderr.

    Example:

        interp sparsify runs/r20.safetensors --select absolute:5 --visualize 5 -o out/r20-sparse

        interp sparsify --features sst-bert.npz --alpha 0.99 --select features-per-class:10 -o out/sst-sparse

        interp eval out/r20-sparse/sparse.safetensors

        interp sparsify runs/r20.safetensors --shard 0/2 -o out/f0    # and 1/2 -o out/f1 elsewhere, then:

        interp sparsify runs/r20.safetensors --shards out/f0 --shards out/f1 -o out/r20-sparse
    """
    cfg = SparsifyConfig(
        path=PathConfig(alpha=alpha, k=lambdas, epsilon=epsilon, group=group, dtype="float64" if double else "float32",
                        solver=SolverConfig(tol=tol, lookbehind=lookbehind, max_iter=max_iter)),
        select=select, val_split=val_split, seed=seed, visualize=visualize, lime=parse_kv(lime, "--lime"),
        batch_size=batch_size or 256, cache=not no_cache, shard=dist.parse_shard(shard))
    if checkpoint is not None and features is not None:
        raise ConfigError("give a checkpoint or --features, not both")
    cfg.check()
    try:
        with JobProgress("sparsify", quiet=quiet) as bar:
            result, files = sparsify_checkpoint(checkpoint, out_dir, cfg, features=features, dataset=dataset,
                                                data_dir=str(data_dir) if data_dir else None, device=device,
                                                force=force, resume=resume, shards=[str(p) for p in shards or []],
                                                progress=lambda d, n, what: bar.update(d, n, what))
    except KeyboardInterrupt:
        raise Interrupted("interrupted; the finished λ values are kept: rerun the same command with --resume") from None
    if result is None:  # --shard (its features file), or a torchrun rank other than 0 (rank 0 reports)
        if files and json_out:
            print_json({"files": [str(f) for f in files]})
        elif files:
            print_paths(files)
        return
    if not quiet:
        print_table(_summary_rows(result), "the chosen sparse layer and the dense one (accuracy in %)")
    if json_out:
        print_json({"files": [str(f) for f in files], "selection": result.to_dict()["selection"],
                    "dense": result.dense})
    else:
        print_paths(files)


def _summary_rows(result) -> list[dict[str, str]]:
    """The table of ``interp sparsify``: the dense layer (none for --features) and the chosen one."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    def row(layer: str, index: str, r: dict) -> dict[str, str]:
        return {"layer": layer, "λ index": index, "features per class": f"{r['features_per_class']:.1f}",
                "distinct features": str(r["features_used"]), "val acc": pct(r.get("val_acc")),
                "test acc": pct(r.get("test_acc"))}

    rows = [row("dense", "-", result.dense)] if result.dense else []
    return rows + [row(f"sparse ({result.rule})", f"{result.chosen}/{len(result.points) - 1}",
                       result.points[result.chosen])]
