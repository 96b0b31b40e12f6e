"""The registered datasets.  None of them downloads anything."""

from __future__ import annotations

import math
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError
from ._registry import Dataset, arrays_to_dataset, register_dataset

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _read_npz(path: Path, name: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DatasetError(f"{name}: file not found: {path}") from None
    except (IsADirectoryError, PermissionError) as e:
        raise DatasetError(f"{name}: cannot read '{path}': {e.strerror}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, AttributeError, TypeError):
        # never numpy's advice to load it unsafely; AttributeError/TypeError: a single .npy, not an NPZ
        raise DatasetError(f"{name}: '{path}' is not an NPZ written by numpy without objects") from None
    ds = arrays_to_dataset(name, arrays, str(path))
    return ds


@register_dataset("npz", description="PATH.npz with uint8 x_train, y_train, x_test, y_test (+ classes)",
                  input_shape=None, num_classes=None, needs_files=True)
def npz(data_dir: Path) -> Dataset:
    if data_dir.is_dir():
        raise DatasetError(f"npz: '{data_dir}' is a folder; give the .npz file (--dataset PATH.npz)")
    return _read_npz(data_dir, data_dir.stem)


# ----------------------------------------------------------------------------------------
#   Torchvision datasets, or their NPZ form (../shared/data/*.npz)
# ----------------------------------------------------------------------------------------

def _torchvision_or_npz(name: str, data_dir: Path, tv_class: str, npz_names: tuple[str, ...], layout: str) -> Dataset:
    if data_dir.is_file() and data_dir.suffix == ".npz":
        ds = _read_npz(data_dir, name)
        ds.name = name
        return ds
    for n in npz_names:
        if (data_dir / n).is_file():
            ds = _read_npz(data_dir / n, name)
            ds.name = name
            return ds
    hint = (f"{name}: no data in '{data_dir}'. Downloads are disabled: put {npz_names[0]} (uint8 x_train, y_train, "
            f"x_test, y_test) or the torchvision files ({layout}) there, and pass --data-dir DIR "
            f"(or set INTERP_DATA_DIR)")
    if not data_dir.is_dir():
        raise DatasetError(hint)
    import torchvision.datasets as tvd  # noqa: PLC0415 (heavy: imported when used)

    cls = getattr(tvd, tv_class)
    try:
        train = cls(str(data_dir), train=True, download=False)
        test = cls(str(data_dir), train=False, download=False)
    except (RuntimeError, FileNotFoundError, OSError):
        raise DatasetError(hint) from None
    arrays = {}
    for split, d in (("train", train), ("test", test)):
        data = d.data.numpy() if isinstance(d.data, torch.Tensor) else np.asarray(d.data)
        arrays[f"x_{split}"] = data.astype(np.uint8)
        arrays[f"y_{split}"] = np.asarray(d.targets, dtype=np.int64)
    return arrays_to_dataset(name, arrays, f"torchvision:{tv_class}:{data_dir}", [str(c) for c in train.classes])


@register_dataset("cifar10", description="CIFAR-10, 3x32x32, 10 classes (cifar10.npz or torchvision files)",
                  input_shape=(3, 32, 32), num_classes=10, needs_files=True, flip=True, translate=4)
def cifar10(data_dir: Path) -> Dataset:
    return _torchvision_or_npz("cifar10", data_dir, "CIFAR10", ("cifar10.npz",), "DIR/cifar-10-batches-py/")


@register_dataset("mnist", description="MNIST, 1x28x28, 10 classes (mnist.npz or torchvision files)",
                  input_shape=(1, 28, 28), num_classes=10, needs_files=True, translate=2)
def mnist(data_dir: Path) -> Dataset:
    return _torchvision_or_npz("mnist", data_dir, "MNIST", ("mnist.npz",), "DIR/MNIST/raw/")


@register_dataset("fashion-mnist", description="Fashion-MNIST, 1x28x28, 10 classes (fashion-mnist.npz or torchvision)",
                  input_shape=(1, 28, 28), num_classes=10, needs_files=True, flip=True, translate=2)
def fashion_mnist(data_dir: Path) -> Dataset:
    return _torchvision_or_npz("fashion-mnist", data_dir, "FashionMNIST", ("fashion-mnist.npz", "fashion_mnist.npz"),
                               "DIR/FashionMNIST/raw/")


# ----------------------------------------------------------------------------------------
#   Embedded datasets
# ----------------------------------------------------------------------------------------

@register_dataset("digits", description="scikit-learn's bundled 8x8 digits (1797 images; embedded, no files)",
                  input_shape=(1, 8, 8), num_classes=10, needs_files=False, translate=0)
def digits(data_dir: Path, test_fraction: float = 0.2) -> Dataset:
    """The split is stratified with a fixed seed (0), so it is the same everywhere."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 (heavy: imported when used)
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 (heavy: imported when used)

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=0)
    return Dataset("digits", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), [str(i) for i in range(10)], "sklearn.datasets.load_digits",
                   {"test_fraction": test_fraction})


PULSE_CLASSES = ["square", "gaussian", "sine"]


def make_pulses(n: int, seed: int = 0, size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Oscilloscope traces: binary (n, 1, size, size) uint8 images (0/255) and labels.

    Class 0 is a square pulse, 1 a Gaussian pulse, 2 a sinusoid.  Amplitude, width
    (period for the sinusoid), horizontal position and baseline are drawn uniformly, so
    the task needs shape, not position or size.  The trace is drawn as a connected
    one-pixel line: each column is filled between the values at it and its left neighbour,
    so the square pulse's edges are vertical lines.  Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    s = float(size)
    amp = rng.uniform(0.2, 0.6, n) * s
    base = rng.uniform(0.1, 0.3, n) * s
    width = rng.uniform(0.12, 0.4, n) * s
    center = rng.uniform(0.25, 0.75, n) * s
    cols = np.arange(size, dtype=np.float64)[None, :]
    dx = cols - center[:, None]
    square = (np.abs(dx) <= width[:, None] / 2).astype(np.float64)
    gauss = np.exp(-0.5 * (dx / (width[:, None] / 4)) ** 2)
    sine = 0.5 + 0.5 * np.sin(2 * math.pi * dx / width[:, None] + rng.uniform(0, 2 * math.pi, n)[:, None])
    shape = np.where(y[:, None] == 0, square, np.where(y[:, None] == 1, gauss, sine))
    level = np.clip(np.round(base[:, None] + amp[:, None] * shape), 0, size - 1)  # (n, size), in pixel rows
    prev = np.concatenate([level[:, :1], level[:, :-1]], axis=1)
    lo, hi = np.minimum(level, prev), np.maximum(level, prev)
    rows = (size - 1 - np.arange(size, dtype=np.float64))[None, :, None]  # row 0 is the top of the screen
    img = (rows >= lo[:, None, :]) & (rows <= hi[:, None, :])
    return (img[:, None].astype(np.uint8) * 255), y.astype(np.int64)


@register_dataset("pulses", description="generated 1x100x100 binary waveforms: square / gaussian / sine (embedded)",
                  input_shape=(1, 100, 100), num_classes=3, needs_files=False, translate=0)
def pulses(data_dir: Path, n_train: int = 3000, n_test: int = 600, seed: int = 0, size: int = 100) -> Dataset:
    if n_train <= 0 or n_test <= 0 or size < 16:
        raise DatasetError("pulses: n_train and n_test must be positive and size at least 16")
    xtr, ytr = make_pulses(n_train, seed, size)
    xte, yte = make_pulses(n_test, seed + 1_000_003, size)
    return Dataset("pulses", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                   torch.from_numpy(yte), list(PULSE_CLASSES), "interpcli.data.sources.make_pulses",
                   {"n_train": n_train, "n_test": n_test, "seed": seed, "size": size})


# ----------------------------------------------------------------------------------------
#   Image folders
# ----------------------------------------------------------------------------------------

def _list_class_dirs(root: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in _IMAGE_EXT)
        if files:
            out[d.name] = files
    return out


def _load_images(files: list[Path], size: tuple[int, int] | None, mode: str) -> np.ndarray:
    arrs = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                arrs.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"folder: cannot read image '{f}': {e}") from None
    a = np.stack(arrs)
    return a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)


@register_dataset("folder", description="DIR/<class>/*.png (or DIR/train/<class>, DIR/test/<class>)",
                  input_shape=None, num_classes=None, needs_files=True, flip=True, translate=0)
def folder(data_dir: Path, image_size: int | None = None, test_fraction: float = 0.2,
           grayscale: bool | None = None) -> Dataset:
    """One subfolder per class.  Without train/ and test/ subfolders, a stratified
    ``test_fraction`` (seed 0) is held out.  Images are resized to ``image_size`` when
    given; otherwise they must all have one size (the most common is named in the error).
    """
    if not data_dir.is_dir():
        raise DatasetError(f"folder: '{data_dir}' is not a folder")
    splits = {}
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        splits = {"train": _list_class_dirs(data_dir / "train"), "test": _list_class_dirs(data_dir / "test")}
        classes = sorted(set(splits["train"]) | set(splits["test"]))
    else:
        found = _list_class_dirs(data_dir)
        classes = sorted(found)
    if len(classes) < 2:
        raise DatasetError(f"folder: '{data_dir}' needs at least two class subfolders with images")
    if not splits:
        from sklearn.model_selection import train_test_split  # noqa: PLC0415 (heavy: imported when used)

        files = [f for c in classes for f in found[c]]
        labels = [i for i, c in enumerate(classes) for _ in found[c]]
        try:
            ftr, fte, ltr, lte = train_test_split(files, labels, test_size=test_fraction, stratify=labels,
                                                  random_state=0)
        except ValueError as e:  # a class with one image, or too few images for the test fraction
            raise DatasetError(f"folder: cannot hold out a stratified {test_fraction:g} test split of "
                               f"'{data_dir}': {e}") from None
        splits = {"train": {c: [f for f, l in zip(ftr, ltr) if l == i] for i, c in enumerate(classes)},
                  "test": {c: [f for f, l in zip(fte, lte) if l == i] for i, c in enumerate(classes)}}
    all_files = [f for s in splits.values() for fs in s.values() for f in fs]
    first_mode = None
    sizes = Counter()
    for f in all_files:
        try:
            with Image.open(f) as im:
                sizes[(im.size[1], im.size[0])] += 1
                first_mode = first_mode or im.mode
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"folder: cannot read image '{f}': {e}") from None
    mode = "L" if (grayscale if grayscale is not None else first_mode in ("L", "1", "I", "I;16")) else "RGB"
    size = (image_size, image_size) if image_size else None
    if size is None and len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        raise DatasetError(f"folder: images have {len(sizes)} different sizes (most common {common[0]}x{common[1]}); "
                           f"pass --image-size N")
    arrays = {}
    for split in ("train", "test"):
        files = [f for c in classes for f in splits[split].get(c, [])]
        labels = [i for i, c in enumerate(classes) for _ in splits[split].get(c, [])]
        if not files:
            raise DatasetError(f"folder: no {split} images under '{data_dir}'")
        arrays[f"x_{split}"] = _load_images(files, size, mode)
        arrays[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    ds = arrays_to_dataset(data_dir.name or "folder", arrays, str(data_dir), classes)
    ds.info = {"image_size": image_size, "mode": mode}
    return ds
