"""``interp consistency``: scoring explanations of a checkpoint.

    from interpcli.ops.consistency import ConsistencyConfig, consistency_checkpoint
    report, files = consistency_checkpoint("runs/r56.safetensors", ["out/grad", "out/rise"], "out/scores",
                                           ConsistencyConfig(pointing=PointingConfig(methods=("bcos", "gradcam"))))

Three parts, any of them in one run, into one output folder:

- **fidelity** of ``interp explain`` / ``interp occlude`` results (their ``attributions.npz``):
  consistency, min-size, deletion, insertion (:mod:`interpcli.metrics.fidelity`), read and
  scored :data:`WINDOW` rows at a time (a result written in parts is never all in memory);
- the **grid pointing game** of methods run here on mosaics of the checkpoint's test images
  (:mod:`interpcli.metrics.pointing`);
- the **sanity check**, cascading model randomisation (:mod:`interpcli.metrics.sanity`).

Each part's per-item scores are summarised per method (mean, sd, median, bootstrap interval)
with paired tests between methods (:mod:`interpcli.metrics.report`).  ``--shard`` / ``--merge``:
:mod:`._consistency_shards`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import artifacts, dist
from ..attribution_store import RowReader
from ..attributions import Attributions
from ..data import checkpoint_dataset
from ..device import model_device
from ..errors import ConfigError
from ..fastpath import fast_model_for_layer
from ..inputs import InputSpec
from ..methods import get_method
from ..metrics.fidelity import FidelityConfig, FidelityResult, score_maps
from ..metrics.plots import curves_png, distributions_png, pointing_png, sanity_png
from ..metrics.pointing import PointingResult, pointing_game
from ..metrics.report import BETTER, csv_bytes, long_rows, pointing_rows, sanity_rows, summarize_scores
from ..metrics.sanity import SanityResult, cascading_randomisation
from ..models import Classifier
from . import _consistency_shards as shards
from ._common import checkpoint_record, open_checkpoint

__all__ = ["ConsistencyConfig", "PointingConfig", "SanityConfig", "ConsistencyReport", "merge_attributions",
           "score_attributions", "consistency_checkpoint", "merge_consistency"]

Progress = Callable[[int, int, str], None]
WINDOW = 256  # rows scored at a time (a multiple of score_maps' chunk of 64: the same batches as all at once)


@dataclasses.dataclass
class PointingConfig:
    """The grid pointing game (:func:`~interpcli.metrics.pointing.pointing_game`) on the
    checkpoint's test split: ``grid`` x ``grid`` mosaics, ``n_mosaics`` of them."""

    methods: Sequence[str] = ("gradcam", "intgrad")
    grid: int = 3
    n_mosaics: int = 250
    conf_thresh: float = 0.5
    smooth: int = 0
    rescale: bool = False
    mosaic_seed: int = 42
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SanityConfig:
    """Cascading randomisation of ``methods`` (default: the attribution files' methods) on the
    attribution files' images, else on ``inputs`` (default: 8 test images)."""

    methods: Sequence[str] | None = None
    inputs: InputSpec | None = None
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    max_layers: int | None = None
    target_mode: str = "fixed"
    keep_bn_stats: bool = False


@dataclasses.dataclass
class ConsistencyConfig:
    fidelity: FidelityConfig | None = dataclasses.field(default_factory=FidelityConfig)
    pointing: PointingConfig | None = None
    sanity: SanityConfig | None = None
    n_boot: int = 10000
    seed: int = 0
    batch_size: int | None = None
    fast: bool = True
    shard: tuple[int, int] | None = None  # --shard I/N: the fidelity scores of slice I of N (_consistency_shards)


@dataclasses.dataclass
class ConsistencyReport:
    """Everything computed: the parts' results and the summary (``summary[metric]``: per method
    statistics, paired tests, which direction is better)."""

    fidelity: FidelityResult | None = None
    pointing: PointingResult | None = None
    sanity: SanityResult | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    image_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per image (fidelity)
    summary: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "consistency", "checkpoint": self.checkpoint, "summary": self.summary}
        if self.fidelity is not None:
            out["fidelity"] = {"fractions": list(self.fidelity.fractions), "step": self.fidelity.step,
                               "methods": self.fidelity.methods}
        if self.pointing is not None:
            d = self.pointing.to_dict()
            out["pointing"] = {k: v for k, v in d.items() if k not in ("scores", "blocks", "classes")}
        if self.sanity is not None:
            out["sanity"] = self.sanity.to_dict()
        return out


# ---------------------------------------------------------------------------------------------- fidelity

def merge_attributions(results: Sequence[Attributions], names: Sequence[str]) -> Attributions:
    """One :class:`Attributions` holding the methods of several files computed on the same rows
    (same images and targets, checked); a method in two files is refused."""
    first = results[0]
    maps, params, signed = {}, {}, {}
    for res, name in zip(results, names):
        if res.images.shape != first.images.shape or not torch.equal(res.images, first.images):
            raise ConfigError(f"'{name}' holds other images than '{names[0]}'; explain the same images "
                              "(same --indices / files) to compare methods")
        if not torch.equal(res.targets, first.targets):
            raise ConfigError(f"'{name}' explains other targets than '{names[0]}' (--target differs)")
        for m in res.methods:
            if m in maps:
                raise ConfigError(f"method '{m}' is in more than one file ('{name}'); give each method once")
            maps[m], params[m], signed[m] = res.maps[m], res.params.get(m, {}), res.signed.get(m, True)
    return dataclasses.replace(first, maps=maps, params=params, signed=signed)


def _check_maps(attr: Attributions, name: str) -> None:
    n, _, h, w = attr.images.shape
    for m, a in attr.maps.items():
        mh, mw = a.shape[-2:] if a.dim() == 4 else (0, 0)
        coarser = mh and mw and h % mh == 0 and w % mw == 0 and h // mh == w // mw  # e.g. a feature-map CAM
        if a.dim() != 4 or len(a) != n or not coarser:
            raise ConfigError(f"'{name}': the '{m}' maps have shape {tuple(a.shape)}, which does not fit "
                              f"{n} images of {h}x{w} (expected ({n}, C, {h}, {w}) or that size divided by an "
                              "integer)")
        if not torch.isfinite(a).all():
            raise ConfigError(f"'{name}': the '{m}' maps hold NaN or infinite values")


def _image_rows(attr: Attributions, offset: int = 0) -> list[dict[str, Any]]:
    preds = attr.predictions.tolist()
    return [{"row": offset + i, "source": s, "label": int(l), "target": int(t), "prediction": int(p)}
            for i, (s, l, t, p) in enumerate(zip(attr.sources, attr.labels.tolist(), attr.targets.tolist(), preds))]


def score_attributions(model, attr: Attributions, cfg: FidelityConfig | None = None, *, fast: bool = True,
                       progress: Callable[[int, int], None] | None = None) -> FidelityResult:
    """The fidelity metrics of every method of ``attr`` on ``model`` (eval mode): the fidelity part on a
    loaded model; with ``fast`` an interp model runs on the eval fast path (float rounding only)."""
    model.eval()
    dev = model_device(model)
    if fast and isinstance(model, Classifier):
        model = fast_model_for_layer(model, None)
    return score_maps(model, attr.images.to(dev), attr.targets.to(dev), {m: a for m, a in attr.maps.items()},
                      cfg, progress=progress)


# ---------------------------------------------------------------------------------------------- checkpoint

def _readers(paths: Sequence[str | os.PathLike], checkpoint: str | os.PathLike) -> list[RowReader]:
    """A reader of every attribution file (one file or the parts of a chunked result), checked to
    hold as many rows as the first."""
    readers = [RowReader(p, checkpoint=checkpoint) for p in paths]
    for r, p in zip(readers, paths):
        if len(r) != len(readers[0]):
            raise ConfigError(f"'{p}' holds {len(r)} rows but '{paths[0]}' {len(readers[0])}; explain the same "
                              "images (same --indices / files) to compare methods")
    return readers


def _windows(readers: list[RowReader], names: list[str], shard: tuple[int, int] | None = None
             ) -> Iterator[tuple[int, Attributions]]:
    """(first row, the rows of every file merged) for each window of :data:`WINDOW` rows that this
    process scores (under torchrun or ``shard``: a contiguous share of the windows): the scores are
    computed a window at a time, so memory does not grow with the number of rows."""
    rank, world = shard or dist.env_world()
    for w in dist.shard_range(math.ceil(len(readers[0]) / WINDOW), rank, world):
        start = w * WINDOW
        parts = [r.rows(start, start + WINDOW) for r in readers]
        for r, name in zip(parts, names):
            _check_maps(r, name)
        yield start, merge_attributions(parts, names)


def _gathered(mine: list[Any]) -> list[Any] | None:
    """This process's results of its windows joined with the other ranks' (in window order) on
    rank 0; None on the other ranks."""
    every = dist.gather(mine, dist.env_world()[1])
    return None if every is None else [r for rank in every for r in rank]


def _fidelity(model, readers: list[RowReader], names: list[str], cfg: ConsistencyConfig,
              progress: Progress | None) -> tuple[FidelityResult, list[dict[str, Any]]] | None:
    """The fidelity result of every row and the image rows (on rank 0; None on other ranks)."""
    n = len(readers[0])
    mine = []
    for start, attr in _windows(readers, names, cfg.shard):
        step = (lambda d, _n, s=start: progress(s + d, n, "fidelity")) if progress else None
        mine.append((score_attributions(model, attr, cfg.fidelity, fast=cfg.fast, progress=step),
                     _image_rows(attr, start)))
    every = _gathered(mine)
    if every is None:
        return None
    if not every:
        raise ConfigError(f"--shard {cfg.shard[0]}/{cfg.shard[1]} has no rows: {n} rows make "
                          f"{math.ceil(n / WINDOW)} windows of {WINDOW}; use fewer shards")
    results, rows = [r for r, _ in every], [row for _, rs in every for row in rs]
    first = results[0]
    cat = lambda by: {k: {m: np.concatenate([r_[k][m] for r_ in by]) for m in first.methods} for k in by[0]}
    res = dataclasses.replace(first, scores=cat([r.scores for r in results]), curves=cat([r.curves for r in results]))
    return res, rows


def _pointing(model, checkpoint, pcfg: PointingConfig, cfg: ConsistencyConfig, dataset: str | None,
              data_dir: str | None, progress: Progress | None) -> PointingResult:
    for m in pcfg.methods:
        get_method(m)
    ds, _ = checkpoint_dataset(model.meta, dataset, data_dir)
    x, y = ds.split("test")
    images = x.float() / 255
    params = {m: dict(pcfg.params.get(m, {})) for m in pcfg.methods}
    for m in pcfg.methods:
        if "seed" in get_method(m).defaults:
            params[m].setdefault("seed", cfg.seed)
    return pointing_game(model, images, y, list(pcfg.methods), grid=pcfg.grid, n_mosaics=pcfg.n_mosaics,
                         conf_thresh=pcfg.conf_thresh, seed=pcfg.mosaic_seed, smooth=pcfg.smooth,
                         rescale=pcfg.rescale, params=params, batch_size=cfg.batch_size, progress=progress)


def _sanity(model, scfg: SanityConfig, attr: Attributions | None, cfg: ConsistencyConfig,
            progress: Progress | None) -> SanityResult:
    methods = list(scfg.methods or (attr.methods if attr is not None else ()))
    if not methods:
        raise ConfigError("the sanity check needs methods: give --methods (or attribution files)")
    for m in methods:
        get_method(m)
    if attr is not None:
        x, targets = attr.images, attr.targets
        params = {m: {**attr.params.get(m, {}), **scfg.params.get(m, {})} for m in methods}
    else:
        inputs = (scfg.inputs or InputSpec()).load(model)
        x = inputs.images
        with torch.inference_mode():
            targets = model(x.to(model_device(model))).argmax(1).cpu()
        params = {m: dict(scfg.params.get(m, {})) for m in methods}
    params = {m: {k: v for k, v in p.items() if k in get_method(m).defaults} for m, p in params.items()}
    dev = model_device(model)
    return cascading_randomisation(model, x.to(dev), targets.to(dev), methods, seed=cfg.seed, params=params,
                                   batch_size=cfg.batch_size, max_layers=scfg.max_layers,
                                   target_mode=scfg.target_mode, keep_bn_stats=scfg.keep_bn_stats,
                                   progress=progress)


def _join_sanity(parts: list[SanityResult]) -> SanityResult:
    """The results of consecutive windows of images as one (image axis joined)."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda key: {m: np.concatenate([getattr(p, key)[m] for p in parts], axis=1) for m in parts[0].methods}
    return dataclasses.replace(parts[0], spearman_abs=cat("spearman_abs"), spearman_signed=cat("spearman_signed"),
                               ssim=cat("ssim"), targets=np.concatenate([np.asarray(p.targets) for p in parts]))


def _sanity_scores(res: SanityResult) -> dict[str, np.ndarray]:
    """Per method, each image's Spearman correlation (absolute maps) after randomising every layer."""
    return {m: np.asarray(c)[-1] for m, c in res.spearman_abs.items()}


def consistency_checkpoint(checkpoint: str | os.PathLike, attributions: Sequence[str | os.PathLike],
                           out: str | os.PathLike | None, cfg: ConsistencyConfig | None = None, *,
                           dataset: str | None = None, data_dir: str | None = None, device: str = "auto",
                           png: bool = True, force: bool = False,
                           progress: Progress | None = None) -> tuple[ConsistencyReport, list[Path]]:
    """Score ``attributions`` (``attributions.npz`` files or their folders, computed from this
    ``checkpoint``: the recorded sha256 is checked) and run the pointing game / sanity check that
    ``cfg`` asks for; write the tables, summary and figures to ``out`` (nothing when None).

    ``progress(done, total, what)`` reports each part.  An existing non-empty ``out`` is refused
    (before any work) unless ``force``, which replaces it as a whole."""
    cfg = cfg or ConsistencyConfig()
    if attributions and cfg.fidelity is not None:
        cfg.fidelity.check()
    if not attributions and cfg.pointing is None and cfg.sanity is None:
        raise ConfigError("nothing to score: give attribution files (from interp explain / occlude), "
                          "--pointing-game or --sanity")
    if cfg.shard and (cfg.pointing or cfg.sanity or not attributions or dist.env_world()[1] > 1):
        raise ConfigError("--shard scores a slice of the attribution files' rows (fidelity metrics only): not "
                          "with --pointing-game, --sanity or torchrun")
    if out is not None:
        artifacts.check_output_folder(out, force)
    with dist.session(device) as (rank, _, dev):
        report = _consistency(checkpoint, attributions, cfg, dataset, data_dir, str(dev), progress)
        extra = None
        if cfg.shard is not None and report.fidelity is not None:
            key = shards.run_key(report.checkpoint, len(_readers(attributions, checkpoint)[0]),
                                 [str(a) for a in attributions], cfg)
            extra = shards.shard_arrays(report.fidelity, report.image_rows, cfg.shard, key, report.checkpoint,
                                        cfg.n_boot, cfg.seed)
        files = _write(report, out, png, force, extra) if out is not None and rank == 0 else []
    return report, files


def merge_consistency(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, png: bool = True,
                      force: bool = False) -> tuple[ConsistencyReport, list[Path]]:
    """The report of all rows from the folders of the ``--shard I/N`` runs of one run (checked)."""
    artifacts.check_output_folder(out, force)
    res, image_rows, meta = shards.join_shards(list(folders))
    report = ConsistencyReport(fidelity=res, rows=long_rows(res.scores, image_rows), image_rows=image_rows,
                               checkpoint=meta["checkpoint"])
    report.summary = summarize_scores(dict(res.scores), n_boot=meta["n_boot"], seed=meta["seed"])
    return report, _write(report, out, png, force)


def _consistency(checkpoint, attributions, cfg: ConsistencyConfig, dataset: str | None, data_dir: str | None,
                 device: str, progress: Progress | None) -> ConsistencyReport:
    """The report on this process; under torchrun the ranks score shares of the files' windows and
    rank 0 gathers them and runs the parts without files (pointing game, sanity on inputs) alone."""
    rank = dist.env_world()[0]
    model = open_checkpoint(checkpoint, device, cfg.seed)
    names = [str(p) for p in attributions]
    readers = _readers(attributions, checkpoint) if attributions else None
    report = ConsistencyReport(checkpoint=checkpoint_record(checkpoint, model))
    scores: dict[str, dict[str, np.ndarray]] = {}
    if readers is not None and cfg.fidelity is not None:
        if cfg.batch_size and not cfg.fidelity.batch_size:
            cfg.fidelity.batch_size = cfg.batch_size
        fid = _fidelity(model, readers, names, cfg, progress)
        if fid is not None:
            report.fidelity, report.image_rows = fid
            report.rows = long_rows(report.fidelity.scores, report.image_rows)
            scores.update(report.fidelity.scores)
    if cfg.sanity is not None and readers is not None:  # on the files' rows, a window at a time
        parts = _gathered([_sanity(model, cfg.sanity, attr, cfg, progress) for _, attr in _windows(readers, names)])
        report.sanity = _join_sanity(parts) if parts is not None else None
    elif cfg.sanity is not None and rank == 0:
        report.sanity = _sanity(model, cfg.sanity, None, cfg, progress)
    if rank != 0:
        return report
    if cfg.pointing is not None:
        report.pointing = _pointing(model, checkpoint, cfg.pointing, cfg, dataset, data_dir, progress)
        scores["pointing"] = {m: s.ravel() for m, s in report.pointing.scores.items()}
    if report.sanity is not None:
        scores["sanity-corr"] = _sanity_scores(report.sanity)
    report.summary = summarize_scores(scores, n_boot=cfg.n_boot, seed=cfg.seed)
    return report


# ---------------------------------------------------------------------------------------------- output

def _write(report: ConsistencyReport, out: str | os.PathLike, png: bool, force: bool,
           shard: tuple[dict, dict] | None = None) -> list[Path]:
    with artifacts.staged_folder(out, force) as tmp:
        names = [artifacts.save_json(tmp / "summary.json", report.to_dict())]
        if shard is not None:
            names.append(artifacts.save_npz(tmp / shards.SHARD_FILE, shard[1], **shard[0]))
        fid = report.fidelity
        if fid is not None:
            artifacts.write_bytes(tmp / "scores.csv", csv_bytes(report.rows))
            arrays = {f"{name}_{m}": c for name, by in fid.curves.items() for m, c in by.items()}
            names += [tmp / "scores.csv",
                      artifacts.save_npz(tmp / "curves.npz", {"kind": "consistency-curves", "methods": fid.methods},
                                         fractions=np.asarray(fid.fractions), counts=fid.counts, **arrays)]
            if png:
                panels = {k: fid.curves[k] for k in ("deletion", "insertion") if k in fid.curves}
                if panels:
                    artifacts.write_bytes(tmp / "deletion_insertion.png", curves_png(panels, {
                        k: {m: float(np.mean(fid.scores[k][m])) for m in fid.methods} for k in panels}))
                    names.append(tmp / "deletion_insertion.png")
                artifacts.write_bytes(tmp / "scores.png", distributions_png(fid.scores, BETTER))
                names.append(tmp / "scores.png")
        if report.pointing is not None:
            artifacts.write_bytes(tmp / "pointing.csv", csv_bytes(pointing_rows(report.pointing)))
            names.append(tmp / "pointing.csv")
            if png:
                artifacts.write_bytes(tmp / "pointing.png", pointing_png(report.pointing.scores, report.pointing.grid))
                names.append(tmp / "pointing.png")
        if report.sanity is not None:
            artifacts.write_bytes(tmp / "sanity.csv", csv_bytes(sanity_rows(report.sanity)))
            names.append(tmp / "sanity.csv")
            if png:
                artifacts.write_bytes(tmp / "sanity.png", sanity_png(report.sanity.layers, report.sanity.spearman_abs,
                                                                       "Spearman rank correlation (absolute maps)"))
                names.append(tmp / "sanity.png")
    return [Path(out) / Path(f).name for f in names]
