"""Dataset registry.  A loader returns a :class:`Dataset`: uint8 image tensors (N, C, H, W)
and int64 labels for the train and test splits, class names and provenance.

Datasets are small enough to live in memory (CIFAR-10 is 150 MB of uint8); training
moves them to the device once and augments there (see ``loader.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DatasetError, UnknownName
from .loader import stratified_subset, train_val_split

__all__ = ["Dataset", "DatasetInfo", "register_dataset", "list_datasets", "get_dataset_info", "load_dataset",
           "default_data_dir", "checkpoint_dataset"]


# Short names used in the research notes ("--classes plane,car") for CIFAR-10's class names.
CLASS_ALIASES = {"plane": "airplane", "car": "automobile"}


@dataclasses.dataclass
class Dataset:
    """Images as uint8 (N, C, H, W) tensors, labels as int64 (N,)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str = ""
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    x_val: torch.Tensor | None = None  # the validation split of a run, rebuilt by checkpoint_dataset
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        if split == "val":
            if self.x_val is None or self.y_val is None:
                raise ConfigError(f"{self.name}: no validation split here; only a checkpoint trained with "
                                  "--val-split or --folds holds one out (it is rebuilt from its metadata)")
            return self.x_val, self.y_val
        raise ConfigError(f"unknown split '{split}'; use train, val or test")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "n_train": len(self.y_train), "n_test": len(self.y_test),
                "input_shape": list(self.input_shape), **self.info}

    def limit(self, train: int | None = None, test: int | None = None, seed: int = 0) -> Dataset:
        """A stratified, seeded subset: ``train`` / ``test`` examples of those splits (None: all),
        recorded in ``info`` (``limit_train``, ``limit_test``, ``limit_seed``) so a checkpoint's
        metadata can rebuild it (:func:`checkpoint_dataset`).  Each class keeps its share."""
        if train is None and test is None:
            return self
        for what, n in (("--limit-train", train), ("--limit-test", test)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ConfigError(f"{what} must be a positive number of images, got {n!r}")
        if train is not None and train < self.num_classes:
            raise ConfigError(f"--limit-train {train} is less than the {self.num_classes} classes of {self.name}")
        tr = stratified_subset(self.y_train, train, seed, 0) if train is not None else slice(None)
        te = stratified_subset(self.y_test, test, seed, 1) if test is not None else slice(None)
        info = dict(self.info, limit_seed=int(seed))
        info.update({k: v for k, v in (("limit_train", train), ("limit_test", test)) if v is not None})
        return Dataset(self.name, self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te],
                       list(self.classes), self.source, info)

    def subset_classes(self, keep: list[str]) -> Dataset:
        """Only the classes in ``keep`` (names or indices), relabelled 0..k-1 in the given order."""
        idx = []
        for k in map(str, keep):  # indices may come as ints (a JSON config) or strings (the command line)
            if k in self.classes:
                idx.append(self.classes.index(k))
            elif CLASS_ALIASES.get(k) in self.classes:
                idx.append(self.classes.index(CLASS_ALIASES[k]))
            elif k.isdigit() and int(k) < len(self.classes):
                idx.append(int(k))
            else:
                raise ConfigError(f"class '{k}' not in {self.name}; classes: {', '.join(self.classes)}")
        if len(set(idx)) != len(idx) or len(idx) < 2:
            raise ConfigError("--classes needs at least two distinct classes")
        lut = torch.full((len(self.classes),), -1, dtype=torch.int64)
        lut[torch.tensor(idx)] = torch.arange(len(idx))

        def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = lut[y] >= 0
            return x[m], lut[y[m]]

        xtr, ytr = pick(self.x_train, self.y_train)
        xte, yte = pick(self.x_test, self.y_test)
        info = dict(self.info, class_subset=[self.classes[i] for i in idx], class_subset_index=idx)
        return Dataset(self.name, xtr, ytr, xte, yte, [self.classes[i] for i in idx], self.source, info)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    fn: Callable[..., Dataset]
    description: str
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    needs_files: bool
    augment: dict[str, Any]


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, description: str, input_shape: tuple[int, int, int] | None,
                     num_classes: int | None, needs_files: bool, flip: bool = False, translate: int = 0):
    """Register a loader ``fn(data_dir: Path, **options) -> Dataset``.

    ``flip`` and ``translate`` are the dataset's default training augmentation.
    """

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' registered twice")
        _REGISTRY[name] = DatasetInfo(name, fn, description, input_shape, num_classes, needs_files,
                                      {"flip": flip, "translate": translate})
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_dataset_info(name: str) -> DatasetInfo:
    if name.endswith(".npz") or (os.sep in name and Path(name).is_dir()):
        return _REGISTRY["npz" if name.endswith(".npz") else "folder"]
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownName("dataset", name, list(_REGISTRY) + ["PATH.npz"]) from None


def default_data_dir() -> Path:
    """``$INTERP_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("INTERP_DATA_DIR", "data"))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> Dataset:
    """Load a registered dataset by name, or an ``.npz`` file / image folder by path.

    ``options`` go to the loader (``n_train``, ``n_test``, ``seed`` for ``pulses``;
    ``image_size`` for ``folder``).  Nothing is ever downloaded: missing files give a
    :class:`~interpcli.errors.DatasetError` saying what to put where.
    """
    info = get_dataset_info(name)
    if info.name in ("npz", "folder") and name not in ("npz", "folder"):
        data_dir = name
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        ds = info.fn(path, **options)
    except TypeError as e:
        raise ConfigError(f"dataset '{info.name}': {e}") from None
    _validate(ds)
    if info.needs_files:
        _check_registered(ds, info)
    return ds


def _check_registered(ds: Dataset, info: DatasetInfo) -> None:
    """Files read for a registered name must be that dataset: image shape and class count as declared
    (``-d cifar10 --data-dir mnist.npz`` would otherwise train on MNIST and record cifar10)."""
    shape_ok = info.input_shape is None or tuple(ds.input_shape) == tuple(info.input_shape)
    classes_ok = info.num_classes is None or ds.num_classes == info.num_classes
    if not (shape_ok and classes_ok):
        found = f"{'x'.join(map(str, ds.input_shape))} images of {ds.num_classes} classes"
        want = (f"{'x'.join(map(str, info.input_shape or ('any',)))} images of "
                f"{info.num_classes or 'any number of'} classes")
        raise DatasetError(f"{info.name}: '{ds.source}' holds {found}, but {info.name} has {want}; "
                           "is it another dataset's file?")


def checkpoint_dataset(meta: dict[str, Any], dataset: str | None = None, data_dir: str | None = None,
                       limit_test: int | None = None) -> tuple[Dataset, str]:
    """The dataset a checkpoint was trained on (same loader options, class subset, ``--limit-train``
    / ``--limit-test`` subsets, and its validation split as ``split("val")``), or ``dataset``.

    ``limit_test``: None takes the recorded test subset, 0 the whole test split, N a stratified
    subset of N (seeded as the run).  ``meta`` is the checkpoint's metadata (``model.meta``);
    returns (dataset, its name)."""
    dmeta, tcfg = meta.get("dataset", {}), meta.get("train_config", {})
    name = dataset or tcfg.get("dataset") or dmeta.get("name")  # train_config keeps a .npz path as given
    if not name:
        raise ConfigError("the checkpoint does not name its dataset; pass --dataset")
    same = dataset is None or dataset in (tcfg.get("dataset"), dmeta.get("name"))
    if dataset is None and name not in _REGISTRY:  # a file or folder the run was given: never opened from metadata
        raise ConfigError(f"the checkpoint was trained on '{name}'; pass --dataset {name} to use it (paths "
                          "recorded in a checkpoint are never opened)")
    try:  # the recorded data folder is a hint, never opened: --data-dir, $INTERP_DATA_DIR or ./data
        ds = load_dataset(name, data_dir, **(tcfg.get("dataset_options", {}) if same else {}))
    except DatasetError as e:
        recorded = tcfg.get("data_dir") if same and data_dir is None else None
        if recorded is None:
            raise
        raise DatasetError(f"{e}; the checkpoint was trained with --data-dir {recorded}: pass it (paths recorded "
                           "in a checkpoint are never opened)") from None
    if dmeta.get("class_subset") and same:
        ds = ds.subset_classes(dmeta["class_subset"])
    seed = int(dmeta.get("limit_seed", dmeta.get("split_seed", tcfg.get("seed", 0))) or 0)
    test = dmeta.get("limit_test") if limit_test is None and same else (limit_test or None)
    ds = ds.limit(dmeta.get("limit_train") if same else None, test, seed)
    if same and dmeta.get("n_val"):
        _, va = train_val_split(ds.y_train, float(dmeta.get("val_split") or 0), int(dmeta.get("folds") or 0),
                                int(dmeta.get("fold") or 0), int(dmeta.get("split_seed") or 0))
        if len(va) != int(dmeta["n_val"]):
            raise DatasetError(f"cannot rebuild the validation split of the checkpoint: {len(va)} images, "
                               f"the run held out {dmeta['n_val']} (have the dataset's files changed?)")
        ds.x_val, ds.y_val = ds.x_train[va], ds.y_train[va]
    return ds, name


def _validate(ds: Dataset) -> None:
    for split in ("train", "test"):
        x, y = ds.split(split)
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise DatasetError(f"{ds.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if len(x) != len(y):
            raise DatasetError(f"{ds.name}: {len(x)} {split} images but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= ds.num_classes):
            raise DatasetError(f"{ds.name}: {split} labels outside 0..{ds.num_classes - 1}")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DatasetError(f"{ds.name}: train and test images differ in shape")


def arrays_to_dataset(name: str, arrays: dict[str, np.ndarray], source: str,
                      classes: list[str] | None = None) -> Dataset:
    """Build a Dataset from ``x_train, y_train, x_test, y_test`` arrays (NHWC, NCHW or NHW)."""
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetError(f"{source}: missing arrays {', '.join(missing)} "
                           "(need uint8 x_train, y_train, x_test, y_test)")

    def images(a: np.ndarray, key: str) -> torch.Tensor:
        if a.dtype != np.uint8:
            raise DatasetError(f"{source}: {key} must be uint8, got {a.dtype}")
        if a.ndim == 3:
            a = a[:, None]
        elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
            a = a.transpose(0, 3, 1, 2)
        elif a.ndim != 4:
            raise DatasetError(f"{source}: {key} must have 3 or 4 dimensions, got shape {a.shape}")
        return torch.from_numpy(np.ascontiguousarray(a))

    def labels(a: np.ndarray, key: str) -> torch.Tensor:
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise DatasetError(f"{source}: {key} must be a 1-D integer array")
        return torch.from_numpy(a.astype(np.int64))

    ytr, yte = labels(arrays["y_train"], "y_train"), labels(arrays["y_test"], "y_test")
    if classes is None and "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
    _check_labels(source, {"y_train": ytr, "y_test": yte}, None if classes is None else len(classes))
    if classes is None:
        n = int(max(ytr.max(), yte.max())) + 1 if len(ytr) else 0
        classes = [str(i) for i in range(n)]
    return Dataset(name, images(arrays["x_train"], "x_train"), ytr, images(arrays["x_test"], "x_test"), yte,
                   classes, source)


def _check_labels(source: str, splits: dict[str, torch.Tensor], num_classes: int | None) -> None:
    """Labels are 0..K-1: K = ``num_classes`` (a ``classes`` list), else every class up to the largest
    label must occur (one stray label 57 would otherwise make a 58-class model).  Names the bad label."""
    def first(key: str, bad: torch.Tensor) -> str:
        i = int(torch.nonzero(bad)[0, 0])
        return f"{key}[{i}] is {int(splits[key][i])}"

    for key, y in splits.items():
        if len(y) and bool((y < 0).any()):
            raise DatasetError(f"{source}: labels outside 0..K-1: {first(key, y < 0)}")
        if num_classes is not None and len(y) and bool((y >= num_classes).any()):
            raise DatasetError(f"{source}: labels outside 0..{num_classes - 1} (the {num_classes} names in "
                               f"'classes'): {first(key, y >= num_classes)}")
    present = torch.unique(torch.cat(list(splits.values())))
    if num_classes is None and len(present) and len(present) != int(present.max()) + 1:
        missing = sorted(set(range(int(present.max()) + 1)) - set(present.tolist()))
        top = max(splits, key=lambda k: int(splits[k].max()) if len(splits[k]) else -1)
        gap = ", ".join(map(str, missing[:3])) + (f", ... ({len(missing)} labels)" if len(missing) > 3 else "")
        raise DatasetError(f"{source}: labels must be 0..K-1 with every class present: "
                           f"{first(top, splits[top] == present.max())}, but no image has label {gap} "
                           "(or add a 'classes' array naming every class)")
