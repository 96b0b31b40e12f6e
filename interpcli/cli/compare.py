"""``interp compare``: runs per group, mean ± sd, Welch and paired tests, effect sizes, a violin plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from ..ops.compare import CompareConfig, compare_runs
from ..reporting.groupstats import pair_rows, summary_rows
from ._app import app
from ._console import print_json, print_paths, print_table
from ._options import ForceOpt, JsonOpt, QuietOpt

_S = "Statistics"


def _names(text: str, what: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ConfigError(f"{what} is empty")
    return names


def _groups(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, pattern = item.partition("=")
        if not sep or not name.strip() or not pattern.strip():
            raise ConfigError(f"--group expects NAME=GLOB, got '{item}'")
        if name.strip() in out:
            raise ConfigError(f"--group {name.strip()} is given twice")
        out[name.strip()] = pattern.strip()
    return out


def _print_tables(result) -> None:
    for title, rows in (("runs per group (sd: ddof 1; CI: percentile bootstrap of the mean)",
                         summary_rows(result.stats)),
                        ("every two groups (Welch's t-test, Hedges' g; paired t / Wilcoxon on runs sharing "
                         f"{', '.join(result.config.pair_by) or 'nothing'}; p Holm-adjusted)", pair_rows(result.stats))):
        print_table(rows, title)


@app.command("compare", rich_help_panel="Results")
def compare_cmd(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="Checkpoints (.safetensors; a folder: its checkpoints) or JSON files with numbers (`interp eval --json` output, ...).", show_default=False)] = None,
    metric: Annotated[str, typer.Option("--metric", "-m", help="Comma-separated metrics: keys of the runs' numbers (test_acc, loss, val_acc, metrics.X, a JSON file's keys); accuracy: a checkpoint's test_acc or an eval result's accuracy; all: every metric all runs have.", rich_help_panel=_S)] = "accuracy",
    group_by: Annotated[Optional[str], typer.Option("--group-by", "-g", help="Comma-separated keys whose values name the groups (arch, bias, train_config.lr, dataset.name, folder, ...) [default: arch; runs without one: their folder].", show_default=False, rich_help_panel=_S)] = None,
    group: Annotated[Optional[list[str]], typer.Option("--group", help="An explicit group NAME=GLOB (quote the glob): the runs whose path matches; the files it matches are added to the runs. Repeatable; replaces --group-by.", rich_help_panel=_S)] = None,
    pair_by: Annotated[str, typer.Option("--pair-by", help="Comma-separated keys that pair runs across groups (the same seed and fold); 'none': never paired.", rich_help_panel=_S)] = "seed,fold",
    level: Annotated[float, typer.Option("--level", help="Level of the intervals (bootstrap of each mean, Welch interval of each difference).", rich_help_panel=_S)] = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of the interval of each mean.", rich_help_panel=_S)] = 10000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resamples.", rich_help_panel=_S)] = 0,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder for compare.json, compare.csv and violin.png (its parent must exist; an existing one needs --force) [default: none, print only].", show_default=False, rich_help_panel="Output")] = None,
    force: ForceOpt = False,
    png: Annotated[bool, typer.Option("--png/--no-png", help="With --out: also write violin.png.", rich_help_panel="Output")] = True,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare runs (several seeds, folds or architectures): per group n, mean ± sd, median and a
    bootstrap interval; between every two groups Welch's t-test with Hedges' g and, when the
    runs pair up by seed and fold, the paired t-test and the Wilcoxon signed-rank test;
    p-values Holm-adjusted.

    Runs are checkpoints (metrics read from the header: test_acc, loss, ...) or JSON files
    with numbers (`interp eval --json` output names its checkpoint, which gives the arch, seed
    and fold).  The tables go to stderr; --json prints the result on stdout; -o DIR writes
    compare.json, compare.csv (one row per run and metric) and violin.png.

    Example:

        interp compare runs/bcos-*.safetensors runs/r56-*.safetensors -o out/compare

        interp compare runs/ --group-by bias --metric test_acc,loss --json

        interp compare --group bcos='runs/bcos-*.safetensors' --group standard='runs/r56-*.safetensors'
    """
    pairs = [] if pair_by.strip().lower() == "none" else _names(pair_by, "--pair-by")
    cfg = CompareConfig(metrics=_names(metric, "--metric"), group_by=_names(group_by, "--group-by") if group_by is not None
                        else None, groups=_groups(group), pair_by=pairs, n_boot=n_boot, level=level, seed=seed)
    if group and group_by is not None:
        raise ConfigError("--group and --group-by exclude each other")
    result, files = compare_runs(list(runs or []), out_dir, cfg, png=png, force=force)
    if not quiet:
        _print_tables(result)
    if json_out:
        print_json({"files": [str(f) for f in files], **result.to_dict()})
    else:
        print_paths(files)
