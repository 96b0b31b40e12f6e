"""``interp compare``: runs (seeds, folds, architectures) compared with honest statistics.

    from interpcli.ops.compare import CompareConfig, compare_runs
    result, files = compare_runs(["runs/"], "out/compare", CompareConfig(metrics=("test_acc",)))
    result.stats["test_acc"]["summary"]["resnet20"]["std"]     # per group: n, mean, std, CI, ...
    result.stats["test_acc"]["tests"][0]["p_welch_holm"]       # every two groups: Welch, Hedges' g, paired

Runs are checkpoints (their metadata, read from the header) or JSON files (``interp eval
--json``, or any JSON object with numbers); :mod:`interpcli.reporting.runs` reads them,
groups them (by arch, any ``--group-by`` key or ``--group NAME=GLOB``) and pairs them by seed and
fold; :mod:`interpcli.reporting.groupstats` computes the statistics.  Writes ``compare.json``,
``compare.csv`` and ``violin.png`` to one folder (optional).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import artifacts
from ..errors import ConfigError, InterpError
from ..metrics.report import csv_bytes
from ..models import get_model_info
from ..reporting.figures import violin_png
from ..reporting.groupstats import compare_groups
from ..reporting.runs import MISSING, Run, assign_groups, expand_runs, is_number, numeric_fields, pair_key, read_run

__all__ = ["CompareConfig", "Comparison", "compare_runs", "ACCURACY_KEYS"]

# The default metric "accuracy": a checkpoint's metrics.test_acc, an eval result's accuracy.
ACCURACY_KEYS = ("accuracy", "test_acc", "acc")


@dataclasses.dataclass
class CompareConfig:
    """What to compare and how.

    Attributes:
        metrics: keys of the runs' numbers (``test_acc``, ``loss``, ``metrics.val_acc``, ...;
            ``accuracy``: a checkpoint's test accuracy or an eval result's accuracy; ``all``:
            every metric all runs have, the ``pair_by`` keys left out).
        group_by: keys whose values name the groups; None: the arch (runs without one: their folder).
        groups: explicit groups, NAME -> glob of paths (``--group``); replaces ``group_by``.
        pair_by: keys that pair runs across groups (same seed and fold); a key no run has is
            dropped (JSON files without folds pair by seed); empty: never paired.
        n_boot, level, seed: the bootstrap interval of each mean, and the level of every interval.
    """

    metrics: Sequence[str] = ("accuracy",)
    group_by: Sequence[str] | None = None
    groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pair_by: Sequence[str] = ("seed", "fold")
    n_boot: int = 10000
    level: float = 0.95
    seed: int = 0

    def check(self) -> CompareConfig:
        if not self.metrics or any(not m for m in self.metrics):
            raise ConfigError("--metric is empty")
        if self.n_boot < 1:
            raise ConfigError(f"--n-boot must be at least 1, got {self.n_boot}")
        if not 0 < self.level < 1:
            raise ConfigError(f"--level must be in (0, 1), got {self.level}")
        if self.group_by is not None and not self.group_by:
            raise ConfigError("--group-by is empty")
        return self


@dataclasses.dataclass
class Comparison:
    """The runs (with their group), the metrics, per metric and group the values (one per run, in
    the groups' run order) and per metric the statistics (``summary`` and ``tests``)."""

    runs: list[Run]
    groups: dict[str, list[Run]]
    metrics: list[str]
    values: dict[str, dict[str, list[float]]]
    stats: dict[str, dict[str, Any]]
    config: CompareConfig

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``compare.json`` and ``--json`` (NaN written as null)."""
        cfg = self.config
        pair = {r.path: list(k) if (k := pair_key(r, cfg.pair_by)) is not None else None for r in self.runs}
        runs = [{"path": r.path, "kind": r.kind, "group": r.group, "sha256": r.sha256, "arch": _plain(r.get("arch")),
                 "pair_key": pair[r.path], "values": {m: _value(r, m) for m in self.metrics}} for r in self.runs]
        return _clean({"kind": "compare", "metrics": self.metrics, "group_by": list(cfg.group_by or ["arch"]),
                       "explicit_groups": dict(cfg.groups), "pair_by": list(cfg.pair_by), "level": cfg.level,
                       "n_boot": cfg.n_boot, "groups": {g: [r.path for r in rs] for g, rs in self.groups.items()},
                       "stats": self.stats, "runs": runs, "argv": artifacts.command_line()})

    def rows(self) -> list[dict[str, Any]]:
        """``compare.csv``: one row per run and metric."""
        return [{"group": r.group, "run": r.path, "kind": r.kind,
                 **{k: _plain(r.get(k)) for k in self.config.pair_by}, "metric": m, "value": _value(r, m),
                 "sha256": r.sha256} for r in self.runs for m in self.metrics]


def _plain(v: Any) -> Any:
    return None if v is MISSING else v


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _value(run: Run, metric: str) -> float:
    keys = ACCURACY_KEYS if metric == "accuracy" else (metric,)
    v = next((x for x in (run.get(k) for k in keys) if x is not MISSING), MISSING)
    if v is MISSING or not is_number(v):
        have = ", ".join(numeric_fields(run.fields)[:12]) or "none"
        what = "has no" if v is MISSING else "has a non-numeric"
        raise ConfigError(f"run '{run.path}' {what} metric '{metric}'; its numbers: {have}")
    return float(v)


def _with_arch_defaults(run: Run) -> Run:
    """An arch option the run did not set (``bias`` without ``--bias``) is its registered default,
    so runs group by it (``--group-by bias``) whether or not it was given."""
    arch = run.fields.get("arch")
    try:
        defaults = get_model_info(arch).kwargs() if isinstance(arch, str) else {}
    except InterpError:  # a JSON file's own arch name, not a registered one
        defaults = {}
    for k, v in defaults.items():
        if v is None or isinstance(v, (str, int, float, bool)):
            run.fields.setdefault(f"train_config.arch_kwargs.{k}", v)
    return run


def _metrics(runs: Sequence[Run], wanted: Sequence[str], ids: Sequence[str]) -> list[str]:
    if list(wanted) != ["all"]:
        return list(dict.fromkeys(wanted))
    shared = [k for k in numeric_fields(runs[0].fields)
              if k not in ids and all(is_number(r.fields.get(k)) for r in runs)]
    names = []
    for k in shared:
        short = k.removeprefix("metrics.")
        if k == "accuracy" and "metrics.test_acc" in shared and all(r.kind == "checkpoint" for r in runs):
            continue  # the alias of metrics.test_acc
        names.append(short if all(r.get(short) == r.fields[k] for r in runs) else k)
    if not names:
        raise ConfigError("--metric all: the runs share no numeric metric")
    return names


def compare_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
                 cfg: CompareConfig | None = None, *, png: bool = True,
                 force: bool = False) -> tuple[Comparison, list[Path]]:
    """Compare ``runs`` (checkpoints, their folders, JSON files; plus what ``cfg.groups``' globs
    match) per group; write ``compare.json``, ``compare.csv`` and ``violin.png`` to ``out``
    (nothing when None; an existing non-empty folder only with ``force``, replaced as a whole)."""
    cfg = (cfg or CompareConfig()).check()
    if out is not None:
        artifacts.check_output_folder(out, force)
    records = [_with_arch_defaults(read_run(p, artifacts.sha256_file)) for p in expand_runs(runs, cfg.groups)]
    groups = assign_groups(records, cfg.group_by or ("arch",), cfg.groups, fallback=cfg.group_by is None)
    ordered = [r for rs in groups.values() for r in rs]
    cfg = dataclasses.replace(cfg, pair_by=[k for k in cfg.pair_by if any(r.get(k) is not MISSING for r in ordered)])
    metrics = _metrics(ordered, cfg.metrics, cfg.pair_by)
    values = {m: {g: [_value(r, m) for r in rs] for g, rs in groups.items()} for m in metrics}
    keys = {g: [pair_key(r, cfg.pair_by) for r in rs] for g, rs in groups.items()}
    stats = {m: compare_groups(values[m], keys, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed) for m in metrics}
    result = Comparison(ordered, groups, metrics, values, stats, cfg)
    if out is None:
        return result, []
    with artifacts.staged_folder(out, force) as tmp:
        names = [artifacts.save_json(tmp / "compare.json", result.to_dict())]
        artifacts.write_bytes(tmp / "compare.csv", csv_bytes(result.rows()))
        names.append(tmp / "compare.csv")
        if png:
            title = f"{len(ordered)} runs in {len(groups)} groups"
            artifacts.write_bytes(tmp / "violin.png", violin_png(values, title))
            names.append(tmp / "violin.png")
    return result, [Path(out) / f.name for f in names]
