"""``interp sparsify``: an elastic-net sparse decision layer over a network's deep features.

    from interpcli.ops.sparsify import SparsifyConfig, sparsify_checkpoint
    result, files = sparsify_checkpoint("runs/r20.safetensors", "out/sparse", SparsifyConfig(select="absolute:5"))
    result.chosen, result.points[result.chosen]["features_per_class"]

Wong, Santurkar & Madry, "Leveraging Sparse Linear Layers for Debuggable Deep Networks", ICML
2021 (https://arxiv.org/abs/2105.04857): the decision layer is refitted as a multinomial
elastic net on the standardised penultimate features (:mod:`interpcli.sparse.solver`) along a
regularisation path, the sparsest layer whose validation accuracy is within 5 points of the best
is kept (:mod:`interpcli.sparse.select`), and each kept feature is shown by its most and least
activating test images with LIME superpixels fitted to the feature (:mod:`interpcli.sparse.viz`).

Writes one folder: ``sparse.safetensors`` (the model with the sparse layer, standardisation
folded in: every command loads it), ``path.json``, ``path.png``, ``features.json`` and, with
``visualize``, ``features/feature-NNNN.png``.  :func:`sparsify_features` is the same on a
:class:`~interpcli.sparse.features.FeatureSet` without files (features from anywhere).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import artifacts, dist
from ..device import resolve_device
from ..errors import ConfigError
from ..sparse.features import SHARD_FILE, SPLITS, FeatureSet, checkpoint_features, load_feature_file
from ..sparse.layer import check_affine, decision_layer, layer_weights, sparse_model, unfold_standardisation
from ..sparse.path import PathConfig, PathResult, layer_record, run_path
from ..sparse.select import SelectionError, parse_rule, select_point
from ..sparse.viz import LIME_DEFAULTS, extremes, feature_lime, montage_png, path_png
from ._common import checkpoint_record, open_checkpoint

__all__ = ["SparsifyConfig", "SparsifyResult", "sparsify_features", "sparsify_checkpoint", "state_folder"]

Progress = Callable[[int, int, str], None]
# Metadata keys of the parent checkpoint that describe the new one differently (checkpoint_metadata sets them).
_OWN_KEYS = {"format_version", "kind", "arch", "arch_kwargs", "num_classes", "classes", "input_shape", "encoding",
             "interp_version", "torch_version", "created", "metrics", "argv", "sparsify"}


@dataclasses.dataclass
class SparsifyConfig:
    """The path (objective, grid, solver), the selection rule, the validation split held out
    when the features have none, and the feature pictures (``visualize`` images per row)."""

    path: PathConfig = dataclasses.field(default_factory=PathConfig)
    select: str = "absolute:5"
    val_split: float = 0.1
    seed: int = 0
    visualize: int = 0
    lime: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 256
    cache: bool = True
    shard: tuple[int, int] | None = None  # --shard I/N: only the features of slice I of N (a feature shard)

    def check(self) -> None:
        self.path.check()
        parse_rule(self.select, self.path.k)
        if not 0 < self.val_split < 1:
            raise ConfigError(f"--val-split must be in (0, 1), got {self.val_split}")
        if self.visualize < 0:
            raise ConfigError(f"--visualize must be >= 0 (images per row; 0: no pictures), got {self.visualize}")
        unknown = sorted(set(self.lime) - set(LIME_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown LIME parameter(s) {', '.join(unknown)}; known: {', '.join(LIME_DEFAULTS)}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclasses.dataclass
class SparsifyResult:
    """The path, the chosen point and its layer (``W`` (C, d), ``b`` on standardised features;
    ``mean`` / ``std``: the standardisation), the original layer's record (``dense``, None for
    features from a file) and where everything came from."""

    path: PathResult
    chosen: int
    rule: str
    W: torch.Tensor
    b: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    classes: list[str]
    val: dict[str, Any]
    source: dict[str, Any]
    config: dict[str, Any]
    dense: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    montages: dict[int, str] = dataclasses.field(default_factory=dict)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def points(self) -> list[dict[str, Any]]:
        return self.path.points

    def kept(self) -> list[list[tuple[int, float]]]:
        """Per class, (feature, weight) of its non-zero weights, largest |weight| first."""
        out = []
        for c in range(len(self.W)):
            idx = self.W[c].nonzero()[:, 0].tolist()
            out.append(sorted(((j, float(self.W[c, j])) for j in idx), key=lambda t: -abs(t[1])))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "sparsify-path", "checkpoint": self.checkpoint, "features": self.source,
                "classes": self.classes, "num_features": self.W.shape[1], "validation": self.val, "n": self.sizes,
                "config": self.config, "lambda_max": self.path.lambda_max, "lambdas": self.path.lambdas,
                "selection": {"rule": self.rule, "index": self.chosen, "lambda": self.path.lambdas[self.chosen],
                              **{k: self.points[self.chosen][k] for k in ("nnz", "features_per_class", "val_acc",
                                                                          "test_acc")}},
                "dense": self.dense, "resumed_from": self.path.resumed_from, "points": self.points}

    def features_dict(self) -> dict[str, Any]:
        Wr, br = _raw(self)
        classes = []
        for c, kept in enumerate(self.kept()):
            feats = [{"feature": j, "weight": w, "raw_weight": float(Wr[c, j]), "mean": float(self.mean[j]),
                      "std": float(self.std[j]), "montage": self.montages.get(j)} for j, w in kept]
            classes.append({"class": self.classes[c], "index": c, "bias": float(self.b[c]), "raw_bias": float(br[c]),
                            "features": feats})
        p = self.points[self.chosen]
        return {"kind": "sparsify-features", "lambda_index": self.chosen, "lambda": p["lambda"], "rule": self.rule,
                "features_per_class": p["features_per_class"], "features_used": p["features_used"],
                "weights": "weight: on standardised features (x - mean) / std; raw_weight: on the raw features",
                "classes": classes}


def _raw(res: SparsifyResult) -> tuple[torch.Tensor, torch.Tensor]:
    Wr = res.W / res.std
    return Wr, res.b - Wr @ res.mean


def state_folder(out: str | os.PathLike) -> Path:
    """Where an interrupted path of output folder ``out`` waits for ``--resume``: beside it."""
    o = Path(out)
    return o.parent / f".{o.name}.sparsify-state"


# ---------------------------------------------------------------------------------------------- features level

def sparsify_features(fs: FeatureSet, cfg: SparsifyConfig | None = None, *, device: str = "auto",
                      dense: tuple[torch.Tensor, torch.Tensor] | None = None, state_dir: Path | None = None,
                      resume: bool = False, progress: Progress | None = None) -> SparsifyResult:
    """The path on ``fs`` and the point ``cfg.select`` picks.  ``dense``: the original layer
    (W, b) on the raw features, recorded for comparison.  A rule that no point satisfies
    raises :class:`~interpcli.sparse.select.SelectionError` naming the best available point."""
    cfg = cfg or SparsifyConfig()
    cfg.check()
    rule = parse_rule(cfg.select, cfg.path.k)
    mean, std = fs.standardisation()
    dense_rec = None
    if dense is not None:
        Ws, bs = unfold_standardisation(*dense, mean, std)
        data = {s: (fs.standardised(s, torch.float64), fs.y[s]) for s in SPLITS}
        dense_rec = layer_record(data, Ws, bs)
    path = run_path(fs, cfg.path, device=resolve_device(device), state_dir=state_dir, resume=resume,
                    progress=progress)
    try:
        chosen = select_point(path.points, rule)
    except SelectionError as e:
        kept = " (the path is kept: rerun with --resume and another --select)" if state_dir is not None else ""
        raise SelectionError(f"{e}{kept}") from None
    W, b = path.layer(chosen)
    config = {**cfg.path.to_dict(), "select": str(rule), "val_split": cfg.val_split, "seed": cfg.seed}
    return SparsifyResult(path, chosen, str(rule), W, b, mean, std, list(fs.classes), fs.val, fs.source, config,
                          dense_rec, sizes={s: len(fs.y[s]) for s in SPLITS})


# ---------------------------------------------------------------------------------------------- checkpoint level

def sparsify_checkpoint(checkpoint: str | os.PathLike | None, out: str | os.PathLike,
                        cfg: SparsifyConfig | None = None, *, features: str | os.PathLike | None = None,
                        dataset: str | None = None, data_dir: str | None = None, device: str = "auto",
                        force: bool = False, resume: bool = False, shards: list[str | os.PathLike] | None = None,
                        progress: Progress | None = None) -> tuple[SparsifyResult | None, list[Path]]:
    """The sparse decision layer of ``checkpoint`` (its penultimate features, extracted once and
    cached), or of the ``features`` NPZ (then no checkpoint is written); files into ``out``.

    Bad input is refused before any work: a model without a Linear decision layer over its
    pooled features, alpha / epsilon out of range, a bad rule, an existing non-empty ``out``
    without ``force``.  An interrupted path is kept beside ``out`` (:func:`state_folder`) and
    ``resume`` continues it after the last finished λ.  Under torchrun the ranks share the
    feature extraction; rank 0 fits the path and writes (the others return ``(None, [])``).
    ``cfg.shard``: only the features of that slice, into ``out`` (``(None, files)``); ``shards``:
    such folders' features joined instead of extracting."""
    cfg = cfg or SparsifyConfig()
    cfg.check()
    if (checkpoint is None) == (features is None):
        raise ConfigError("give a checkpoint or --features FEATS.npz (one of them)")
    if features is not None and cfg.visualize:
        raise ConfigError("--visualize needs a checkpoint (the pictures are of its test images); not with --features")
    if cfg.shard is not None and (features is not None or cfg.visualize or resume or shards or dist.env_world()[1] > 1):
        raise ConfigError("--shard extracts a slice of the checkpoint's features and stops: not with --features, "
                          "--visualize, --resume, --shards or torchrun")
    artifacts.check_output_folder(out, force)
    if cfg.shard is not None:
        return None, _feature_shard(checkpoint, out, cfg, dataset, data_dir, device, force, progress)
    state_dir = state_folder(out)
    if checkpoint is None:
        fs = load_feature_file(features, cfg.val_split, cfg.seed)
        res = sparsify_features(fs, cfg, device=device, state_dir=state_dir, resume=resume, progress=progress)
        files = _write(res, None, None, out, force)
        shutil.rmtree(state_dir, ignore_errors=True)
        return res, files
    with dist.session(device) as (rank, _, dev):  # torchrun: the ranks share the feature extraction
        model = open_checkpoint(checkpoint, str(dev), cfg.seed)
        layer = decision_layer(model)
        fs, ds = checkpoint_features(model, checkpoint, dataset=dataset, data_dir=data_dir,
                                     val_split=cfg.val_split, seed=cfg.seed, batch_size=cfg.batch_size,
                                     cache=cfg.cache, progress=progress if rank == 0 else None, shards=shards)
    if rank != 0 or fs is None:  # under torchrun the path, the pictures and the files are rank 0's
        return None, []
    probe = "test" if len(fs.x["test"]) else "train"
    check_affine(model, ds.split(probe)[0][:8], fs.x[probe][:8], layer)
    res = sparsify_features(fs, cfg, device=device, dense=layer_weights(layer), state_dir=state_dir, resume=resume,
                            progress=progress)
    res.checkpoint = checkpoint_record(checkpoint, model)
    sparse = sparse_model(model, res.W, res.b, res.mean, res.std)
    pictures = _montages(model, res, fs.x["test"], ds.x_test, ds.y_test, cfg, progress) if cfg.visualize else {}
    files = _write(res, sparse, pictures, out, force)
    shutil.rmtree(state_dir, ignore_errors=True)
    return res, files


def _feature_shard(checkpoint, out, cfg: SparsifyConfig, dataset, data_dir, device, force, progress) -> list[Path]:
    """``--shard I/N``: the raw features of slice I of N of the splits' batches, into ``out``."""
    model = open_checkpoint(checkpoint, device, cfg.seed)
    decision_layer(model)  # refused before any work when there is no decision layer to refit
    (arrays, meta), _ = checkpoint_features(model, checkpoint, dataset=dataset, data_dir=data_dir,
                                            batch_size=cfg.batch_size, progress=progress, shard=cfg.shard)
    with artifacts.staged_folder(out, force) as tmp:
        artifacts.save_npz(tmp / SHARD_FILE, meta, **arrays)
    return [Path(out) / SHARD_FILE]


def _montages(model, res: SparsifyResult, features: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
              cfg: SparsifyConfig, progress: Progress | None) -> dict[int, bytes]:
    """One PNG per kept feature: its K most and K least activating test images (``features``:
    their raw penultimate features) with LIME maps of the feature."""
    if len(images) == 0:
        raise ConfigError("--visualize needs test images; the checkpoint's test split is empty")
    feats = sorted({j for kept in res.kept() for j, _ in kept})
    out: dict[int, bytes] = {}
    dev = next(model.parameters()).device
    for n, j in enumerate(feats):
        acts = features[:, j]
        top, bottom = extremes(acts, cfg.visualize)
        idx = torch.cat([top, bottom])
        x = images[idx].to(dev).float() / 255
        maps = feature_lime(model, x, j, batch_size=cfg.batch_size, **cfg.lime)
        users = sorted(((res.classes[c], float(res.W[c, j])) for c in range(len(res.W)) if res.W[c, j] != 0),
                       key=lambda t: -abs(t[1]))
        title = f"feature {j}; used by " + ", ".join(f"{c} ({w:+.3g})" for c, w in users[:4]) + \
            (", ..." if len(users) > 4 else "")
        caps = [res.classes[int(labels[i])] for i in idx.tolist()]
        k = len(top)
        out[j] = montage_png(x.cpu().numpy(), maps.cpu().numpy(), acts[idx].tolist(), k, title, caps)
        if progress is not None:
            progress(n + 1, len(feats), "feature pictures")
    return out


def _write(res: SparsifyResult, sparse, pictures: dict[int, bytes] | None, out: str | os.PathLike,
           force: bool) -> list[Path]:
    for j in pictures or {}:
        res.montages[j] = f"features/feature-{j:04d}.png"
    with artifacts.staged_folder(out, force) as tmp:
        names: list[Path] = []
        if sparse is not None:
            p = res.points[res.chosen]
            kept = res.kept()
            meta = {k: v for k, v in sparse.meta.items() if k not in _OWN_KEYS}
            info = {"parent": res.checkpoint, "lambda": p["lambda"], "lambda_index": res.chosen,
                    "alpha": res.config["alpha"], "group": res.config["group"], "selection": res.rule,
                    "nnz": p["nnz"], "nnz_per_class": p["nnz_per_class"],
                    "features_per_class": p["features_per_class"], "features_used": p["features_used"],
                    "features": {res.classes[c]: [j for j, _ in k] for c, k in enumerate(kept)},
                    "validation": res.val, "dense": res.dense, "standardisation": "folded into the layer"}
            metrics = {f"{s}_acc": p[f"{s}_acc"] for s in SPLITS} | {"loss": p["train_loss"]}
            names.append(artifacts.save_checkpoint(tmp / "sparse.safetensors", sparse, **meta, sparsify=info,
                                                   metrics=metrics, argv=artifacts.command_line()))
        names.append(artifacts.save_json(tmp / "path.json", res.to_dict()))
        artifacts.write_bytes(tmp / "path.png", path_png(res.points, res.chosen, res.dense))
        names.append(tmp / "path.png")
        names.append(artifacts.save_json(tmp / "features.json", res.features_dict()))
        if pictures:
            (tmp / "features").mkdir()
            for j, png in pictures.items():
                artifacts.write_bytes(tmp / res.montages[j], png)
                names.append(tmp / res.montages[j])
    return [Path(out) / Path(f).relative_to(tmp) for f in names]
