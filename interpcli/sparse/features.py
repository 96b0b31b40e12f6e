"""Deep features for a sparse decision layer: extracted once, cached, standardised.

    fs, ds = checkpoint_features(model, "runs/r20.safetensors")   # train / val / test, cached
    fs = load_feature_file("sst-bert.npz")                          # features extracted elsewhere
    mean, std = fs.standardisation()

A checkpoint's features are its penultimate representation (the declared classifier layer's
input, pooled as the arch declares: :class:`~interpcli.models.features.FeatureExtractor`) on
the train and test splits of its dataset (:func:`~interpcli.data.checkpoint_dataset`).  They are
cached beside the checkpoint as ``NAME.features-<key>.safetensors`` (the key hashes the
checkpoint's sha256, the layer, the pooling and the dataset), or, when that folder is read-only,
in the user cache folder (:func:`interpcli.gds.cache_dir`).  The validation split is the
checkpoint's own (a run trained with ``--val-split`` / ``--folds``), else a stratified, seeded
``val_split`` fraction of the training features held out here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import artifacts, dist
from ..data import Dataset, checkpoint_dataset, train_val_split
from ..device import model_device
from ..errors import ArtifactError, ConfigError, InterpError
from ..gds import cache_dir
from ..models.features import FeatureExtractor

__all__ = ["FeatureSet", "SPLITS", "extract_features", "checkpoint_features", "load_feature_file", "feature_cache_key",
           "split_validation"]

SPLITS = ("train", "val", "test")
Progress = Callable[[int, int, str], None]


@dataclasses.dataclass
class FeatureSet:
    """Raw features (N, d) float32 and labels (N,) int64 of the train / val / test splits (a
    split may be empty), the class names, where the validation split comes from and where
    the features come from."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    classes: list[str]
    val: dict[str, Any]
    source: dict[str, Any]

    @property
    def num_features(self) -> int:
        return int(self.x["train"].shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def standardisation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation of the training features (float64; a
        constant feature gets std 1, so it stays 0 and never enters the layer)."""
        x = self.x["train"].double()
        mean, std = x.mean(0), x.std(0, correction=0)
        return mean, torch.where(std > 0, std, torch.ones_like(std))

    def standardised(self, split: str, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> torch.Tensor:
        mean, std = self.standardisation()
        return ((self.x[split].double() - mean) / std).to(device=device, dtype=dtype)

    def digest(self) -> str:
        """A hash of every array: a resumed path must be on the same features."""
        h = hashlib.sha256()
        for s in SPLITS:
            h.update(self.x[s].numpy().tobytes())
            h.update(self.y[s].numpy().tobytes())
        return h.hexdigest()


def split_validation(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train, val) indices of the training features: ``fraction`` held out."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--val-split must be in (0, 1) (the fraction of training features held out for "
                          f"the selection), got {fraction}")
    if len(y) < 2 * max(1, int(torch.bincount(y).gt(0).sum())):
        raise ConfigError(f"{len(y)} training examples are too few to hold out a validation split")
    return train_val_split(y, fraction, 0, 0, seed)


def extract_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
                     progress: Callable[[int, int], None] | None = None,
                     shard: tuple[int, int] | None = None) -> torch.Tensor | None:
    """The penultimate representation (N, d) float32 on the CPU of uint8 images (N, C, H, W).

    A batch at a time: only ``batch_size`` images are ever in float, and each batch's features
    are written into the (N, d) result as they come (no list of batches joined at the end).
    Under torchrun each rank extracts a contiguous share of the batches (:func:`dist.shard_range`)
    and rank 0 gathers them (the same batches as one process: the same features, bit for bit at
    the same thread count); the other ranks get None.  ``shard=(I, N)``: only the batches of slice I
    of N, for this process alone (the rows from :func:`shard_start` on)."""
    rank, world = shard or dist.env_world()
    starts = list(range(0, len(images), batch_size))
    mine = [starts[i] for i in dist.shard_range(len(starts), rank, world)]
    phi = FeatureExtractor(model)
    dev = model_device(model)
    first = mine[0] if mine else 0
    rows = sum(min(batch_size, len(images) - i) for i in mine)
    out: torch.Tensor | None = None
    for i in mine:
        with torch.inference_mode():
            f = phi(images[i : i + batch_size].to(dev).float() / 255).float().cpu()
        if out is None:  # an ordinary tensor (not an inference one): the caller may change it in place
            out = torch.empty(rows, f.shape[1])
        out[i - first : i - first + len(f)] = f
        if progress is not None:
            progress(min(i + batch_size, len(images)), len(images))
    if world > 1 and shard is None:
        parts = dist.gather((first, None if out is None else out.numpy()), world)
        if parts is None:
            return None
        d = next((a.shape[1] for _, a in parts if a is not None), 0)
        out = torch.empty(len(images), d)
        for start, a in parts:
            if a is not None:
                out[start : start + len(a)] = torch.from_numpy(a)
    return out if out is not None else torch.zeros(0, 0)


def shard_start(n: int, batch_size: int, shard: tuple[int, int]) -> int:
    """The first row of slice ``shard`` of ``n`` rows in batches of ``batch_size``."""
    batches = dist.shard_range(-(-n // batch_size), *shard)
    return min(n, batches.start * batch_size)


def feature_cache_key(sha256: str, model: torch.nn.Module, ds: Dataset) -> str:
    labels = hashlib.sha256(ds.y_train.numpy().tobytes() + ds.y_test.numpy().tobytes()).hexdigest()
    spec = {"sha256": sha256, "layer": getattr(model, "classifier_layer", None),
            "pool": getattr(model, "feature_pool", None), "dataset": ds.describe(), "labels": labels}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_paths(checkpoint: Path, key: str) -> list[Path]:
    name = f"{checkpoint.name.removesuffix('.safetensors')}.features-{key}.safetensors"
    return [checkpoint.parent / name, cache_dir() / name]


def _read_cache(paths: list[Path], ds: Dataset) -> tuple[dict[str, torch.Tensor], Path] | None:
    for p in paths:
        try:
            if p.is_file():
                t, _ = artifacts.load_tensors(p)
                if torch.equal(t["y_train"], ds.y_train) and torch.equal(t["y_test"], ds.y_test):
                    return t, p
        except (OSError, InterpError, KeyError):
            pass  # unreadable or corrupt: extracted again and rewritten
    return None


def _write_cache(paths: list[Path], tensors: dict[str, torch.Tensor], meta: dict) -> Path | None:
    for p in paths:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            return artifacts.save_tensors(p, tensors, meta)
        except (OSError, ArtifactError):
            continue
    warnings.warn(f"neither '{paths[0].parent}' nor the cache folder '{paths[-1].parent}' is writable; the "
                  "features were extracted without caching (set INTERP_CACHE_DIR to a writable folder)", stacklevel=2)
    return None


def checkpoint_features(model: torch.nn.Module, checkpoint: str | os.PathLike, *, dataset: str | None = None,
                        data_dir: str | None = None, val_split: float = 0.1, seed: int = 0, batch_size: int = 256,
                        cache: bool = True, progress: Progress | None = None, shard: tuple[int, int] | None = None,
                        shards: list[str | os.PathLike] | None = None) -> tuple[FeatureSet | dict | None, Dataset]:
    """The checkpoint's features on its dataset's train / val / test splits (see the module's
    docstring), and that dataset (its test images are what the feature pictures show).  Under
    torchrun the ranks share the extraction and only rank 0 gets the features (None elsewhere).
    ``shard=(I, N)``: the raw features of slice I of N of every split's batches, as the arrays
    and metadata of a feature shard (:func:`write_shard`); ``shards``: the shard folders of such
    runs, joined instead of extracting (a cache hit still wins)."""
    meta = getattr(model, "meta", {})
    ds, name = checkpoint_dataset(meta, dataset, data_dir)
    if tuple(ds.input_shape) != tuple(model.input_shape) or ds.num_classes != model.num_classes:
        raise ConfigError(f"dataset '{name}' has {ds.num_classes} classes of {tuple(ds.input_shape)} images but the "
                          f"model takes {model.num_classes} classes of {tuple(model.input_shape)}")
    sha = artifacts.sha256_file(checkpoint)
    key = feature_cache_key(sha, model, ds)
    paths = _cache_paths(Path(checkpoint), key)
    if shard is not None:  # this slice's raw features, nothing cached
        arrays = {}
        for s in ("train", "test"):
            x, _ = ds.split(s)
            step = (lambda d, n, s=s: progress(d, n, f"features ({s})")) if progress else None
            arrays[s] = extract_features(model, x, batch_size, step, shard=shard).numpy()
            arrays[f"{s}_start"] = np.asarray(shard_start(len(x), batch_size, shard))
        return (arrays, {"kind": "feature-shard", "key": f"{key}-{batch_size}", "index": shard[0], "count": shard[1],
                         "n_train": len(ds.y_train), "n_test": len(ds.y_test)}), ds
    found = _read_cache(paths, ds) if cache else None
    if found is not None:
        tensors, where = found
    else:
        tensors = {"y_train": ds.y_train, "y_test": ds.y_test}
        if shards:
            tensors |= join_shards(shards, f"{key}-{batch_size}", len(ds.y_train), len(ds.y_test))
        for s in ("train", "test") if not shards else ():
            x, _ = ds.split(s)
            step = (lambda d, n, s=s: progress(d, n, f"features ({s})")) if progress else None
            tensors[s] = extract_features(model, x, batch_size, step)
        if tensors["train"] is None:  # a torchrun rank other than 0: its share is with rank 0
            return None, ds
        where = _write_cache(paths, tensors, {"kind": "features", "checkpoint_sha256": sha, "key": key,
                                              "format_version": artifacts.CHECKPOINT_FORMAT_VERSION,
                                              "layer": model.classifier_layer, "pool": model.feature_pool,
                                              "dataset": name}) if cache else None
    xtr, ytr = tensors["train"], tensors["y_train"]
    dmeta = meta.get("dataset", {})
    if ds.x_val is not None:
        tr, va = train_val_split(ds.y_train, float(dmeta.get("val_split") or 0), int(dmeta.get("folds") or 0),
                                 int(dmeta.get("fold") or 0), int(dmeta.get("split_seed") or 0))
        val = {"source": "checkpoint", "n": len(va), "note": "the checkpoint's own validation split"}
    else:
        tr, va = split_validation(xtr, ytr, val_split, seed)
        val = {"source": "held-out", "fraction": val_split, "seed": seed, "n": len(va),
               "note": f"{val_split:g} of the training features held out (stratified, seed {seed})"}
    tr, va = torch.as_tensor(tr), torch.as_tensor(va)
    fs = FeatureSet({"train": xtr[tr], "val": xtr[va], "test": tensors["test"]},
                    {"train": ytr[tr], "val": ytr[va], "test": tensors["y_test"]}, list(model.classes), val,
                    {"kind": "checkpoint", "dataset": name, "cache": str(where) if where else None,
                     "layer": model.classifier_layer, "pool": model.feature_pool})
    return fs, ds


SHARD_FILE = "features-shard.npz"


def join_shards(folders: list[str | os.PathLike], key: str, n_train: int, n_test: int) -> dict[str, torch.Tensor]:
    """The train and test features of every ``--shard I/N`` folder of this checkpoint, dataset and
    batch size (``key``), each slice once and all of them, in row order."""
    found: dict[int, dict[str, np.ndarray]] = {}
    count = None
    for f in folders:
        path = Path(f) / SHARD_FILE
        if not path.is_file():
            raise ConfigError(f"'{f}' is not the output of `interp sparsify --shard I/N` (no {SHARD_FILE})")
        arrays, meta = artifacts.load_npz(path)
        if meta.get("kind") != "feature-shard" or meta.get("key") != key:
            raise ConfigError(f"'{f}' holds features of another checkpoint, dataset or --batch-size")
        if count is not None and meta["count"] != count:
            raise ConfigError(f"'{f}' is a slice of {meta['count']}, the others of {count}")
        count = meta["count"]
        if meta["index"] in found:
            raise ConfigError(f"feature shard {meta['index']}/{count} is given twice ('{f}')")
        found[meta["index"]] = arrays
    missing = [i for i in range(count or 0) if i not in found]
    if missing:
        raise ConfigError(f"feature shards missing: {', '.join(f'{i}/{count}' for i in missing)}")
    out = {}
    for s, n in (("train", n_train), ("test", n_test)):
        parts = [found[i] for i in range(count or 0)]
        d = next((a[s].shape[1] for a in parts if a[s].ndim == 2 and len(a[s])), 0)
        x = torch.empty(n, d)
        for a in parts:
            if len(a[s]):
                start = int(a[f"{s}_start"])
                x[start : start + len(a[s])] = torch.from_numpy(a[s])
        out[s] = x
    return out


def _split_names(split: np.ndarray, path: str) -> np.ndarray:
    if split.dtype.kind in "US":
        names = np.char.lower(np.char.strip(split.astype(str)))
        names = np.where(names == "validation", "val", names)
    elif split.dtype.kind in "iu":
        names = np.array(SPLITS)[np.clip(split, 0, 2)] if len(split) else split.astype(str)
        if len(split) and (split.min() < 0 or split.max() > 2):
            raise ArtifactError(f"'{path}': integer `split` values must be 0 (train), 1 (val) or 2 (test)")
    else:
        raise ArtifactError(f"'{path}': `split` must hold the strings train / val / test")
    bad = sorted(set(names.tolist()) - set(SPLITS))
    if bad:
        raise ArtifactError(f"'{path}': unknown `split` values {', '.join(map(repr, bad[:5]))}; use train, val, test")
    return names


def load_feature_file(path: str | os.PathLike, val_split: float = 0.1, seed: int = 0) -> FeatureSet:
    """Features extracted elsewhere: an NPZ with ``features`` (N, D), integer ``labels`` (N,)
    and ``split`` (N,) of train / val / test (optionally ``classes``, the class names).  With
    no val rows, ``val_split`` of the train rows are held out."""
    arrays = artifacts.read_npz_arrays(path)
    missing = [k for k in ("features", "labels", "split") if k not in arrays]
    if missing:
        raise ArtifactError(f"'{path}' lacks {', '.join(missing)}: --features needs `features` (N, D), `labels` (N,) "
                            "and `split` (N,) of train / val / test")
    x, y, split = arrays["features"], arrays["labels"], arrays["split"]
    if x.ndim != 2 or y.ndim != 1 or split.ndim != 1 or not len(x) == len(y) == len(split):
        raise ArtifactError(f"'{path}': `features` must be (N, D) with `labels` and `split` of length N; got "
                            f"{x.shape}, {y.shape}, {split.shape}")
    if x.dtype.kind not in "fiu" or not np.isfinite(x).all():
        raise ArtifactError(f"'{path}': `features` must be finite numbers")
    if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise ArtifactError(f"'{path}': `labels` must be integers 0..C-1")
    names = _split_names(split, str(path))
    classes = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else \
        [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    if len(y) and int(y.max()) >= len(classes):
        raise ArtifactError(f"'{path}': labels go up to {int(y.max())} but there are {len(classes)} classes")
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    parts = {s: torch.from_numpy(np.flatnonzero(names == s)) for s in SPLITS}
    if len(parts["train"]) == 0:
        raise ArtifactError(f"'{path}' has no train rows (`split` == 'train')")
    if len(torch.unique(yt[parts["train"]])) < 2:
        raise ArtifactError(f"'{path}': the train rows hold fewer than two classes")
    val = {"source": "file", "n": len(parts["val"]), "note": "the file's val rows"}
    if len(parts["val"]) == 0:
        tr, va = split_validation(xt[parts["train"]], yt[parts["train"]], val_split, seed)
        parts["val"], parts["train"] = parts["train"][va], parts["train"][tr]
        val = {"source": "held-out", "fraction": val_split, "seed": seed, "n": len(va),
               "note": f"{val_split:g} of the train rows held out (stratified, seed {seed})"}
    return FeatureSet({s: xt[i] for s, i in parts.items()}, {s: yt[i] for s, i in parts.items()}, classes, val,
                      {"kind": "file", "path": str(path), "sha256": artifacts.sha256_file(path)})
