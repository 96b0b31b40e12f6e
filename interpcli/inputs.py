"""Inputs of the explanation commands: images, their labels and sources, and targets.

    spec = InputSpec(dataset="cifar10", data_dir="../shared/data", indices="0:16")
    inputs = spec.load(model)        # Inputs: images (N, C, H, W) in [0, 1], labels, sources
    source = spec.open(model)        # InputSource: the same, read chunk by chunk
    first = source.take(0, 256)      # Inputs of images 0..255 (only these are float in memory)
    rows, targets = resolve_targets("pred", model, logits, inputs.labels)

Inputs are images in [0, 1] at the model's input size: image files (resized, channel
count checked), a dataset split with indices (default: the checkpoint's dataset), or an
NPZ with an ``images`` array (optionally indices of it).  Every image must be finite:
a NaN or Inf image is refused, naming it, rather than explained as whatever the model
makes of it.  :meth:`InputSpec.open` reads nothing but labels and sources up front: a
dataset split stays as the loader holds it (uint8), image files are read when their chunk is
taken, so commands that stream over thousands of images keep one chunk in float memory.
Targets are normalised here once: a user's spec (``pred``,
``label``, ``all``, a class index or name) by :func:`resolve_targets`, a tensor or int by
:func:`as_targets`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import artifacts
from .attributions import NPZ_NAME, part_files
from .data import checkpoint_dataset
from .errors import ConfigError, InterpError

__all__ = ["Inputs", "InputSpec", "InputSource", "load_images", "dataset_inputs", "npz_images", "npz_inputs",
           "open_inputs", "gather_inputs", "check_finite", "parse_indices", "resolve_targets", "as_targets", "TARGETS"]

TARGETS = ("pred", "label", "all")  # besides a class index or name


@dataclasses.dataclass
class Inputs:
    images: torch.Tensor          # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor          # (N,) int64, -1 where unknown
    sources: list[str]


def _read_image(p: str | os.PathLike, channels: int, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]; RGBA is flattened, the channel count must fit."""
    h, w = size
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB" if len(im.getbands()) >= 3 else "L")
            if len(im.getbands()) != channels:
                raise ConfigError(f"image '{p}' has {len(im.getbands())} channel(s) but the model expects {channels}")
            if im.size != (w, h):  # a notice: the model sees another picture than the file
                iw, ih = im.size
                warnings.warn(f"image '{p}' is {iw}x{ih} px; resized to the model's {w}x{h} input (bilinear"
                              f"{', aspect ratio not kept' if iw * h != ih * w else ''})", stacklevel=3)
                im = im.resize((w, h), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255
    except FileNotFoundError:
        raise ConfigError(f"image not found: {p}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"cannot read image '{p}': {e}") from None
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def load_images(paths: Sequence[str | os.PathLike], model) -> Inputs:
    """Image files resized to the model's input size."""
    c, h, w = model.input_shape
    arrs = [_read_image(p, c, (h, w)) for p in paths]
    if not arrs:
        raise ConfigError("no images given")
    return Inputs(torch.from_numpy(np.stack(arrs)), torch.full((len(arrs),), -1, dtype=torch.int64),
                  [str(p) for p in paths])


def parse_indices(spec: str, n: int) -> list[int]:
    """``0:64``, ``5``, ``1,7,9`` or ``10:20,30`` -> indices (checked against n)."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            if ":" in part:
                a, b = part.split(":", 1)
                out.extend(range(int(a or 0), int(b) if b else n))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"--indices expects START:STOP or comma-separated integers, got '{spec}'") from None
    bad = [i for i in out if not 0 <= i < n]
    if bad or not out:
        raise ConfigError(f"--indices '{spec}' selects {'nothing' if not out else bad[:3]} of 0..{n - 1}")
    return out


def dataset_inputs(model, dataset: str | None = None, data_dir: str | None = None, split: str = "test",
                   indices: str = "0:16") -> Inputs:
    """Images of a dataset split (default: the checkpoint's dataset, class subset included)."""
    src = _dataset_source(model, dataset, data_dir, split, indices)
    return Inputs(src.read(0, len(src)), src.labels, src.sources)


def npz_images(path: str | os.PathLike, key: str = "images",
               scale: bool = True) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Array ``key`` of an NPZ as float images in [0, 1] (uint8 is scaled by 1/255; as stored when
    not ``scale``), and all its arrays.  The ``attributions.npz`` of a result written in parts
    gives the rows of every part (``images``, ``labels``, ``sources`` and ``targets`` joined)."""
    try:
        arrays, meta = artifacts.load_npz(path)
        parts = int((meta.get("part") or {}).get("parts", 1)) if Path(path).name == NPZ_NAME else 1
        if parts > 1:
            more = [artifacts.load_npz(f)[0] for f in part_files(path)[1:]]
            arrays = {k: np.concatenate([arrays[k], *(m[k] for m in more)]) for k in
                      ("images", "labels", "sources", "targets") if k in arrays and all(k in m for m in more)}
    except InterpError as e:
        raise ConfigError(str(e)) from None
    if key not in arrays:
        raise ConfigError(f"'{path}' has no '{key}' array")
    x = torch.from_numpy(arrays[key])
    if not scale:
        return x, arrays
    return (x.float() / 255 if x.dtype == torch.uint8 else x.float()), arrays


def npz_inputs(path: str | os.PathLike, model, indices: str | None = None) -> Inputs:
    """An NPZ with ``images`` (N, C, H, W; float in [0, 1] or uint8), optional ``labels`` and ``sources``;
    ``indices`` (``0:8``, ``1,5``) picks some of them (default all)."""
    x, arrays = npz_images(path)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ConfigError(f"'{path}' images are {tuple(x.shape)}, the model expects "
                          f"(N, {', '.join(map(str, model.input_shape))})")
    labels = torch.from_numpy(arrays["labels"]).long() if "labels" in arrays else torch.full((len(x),), -1)
    sources = [str(s) for s in arrays["sources"]] if "sources" in arrays else [f"{path}:{i}" for i in range(len(x))]
    if indices is None:
        return Inputs(x, labels, sources)
    idx = parse_indices(indices, len(x))
    return Inputs(x[idx], labels[idx], [sources[i] for i in idx])


def check_finite(inputs: Inputs, offset: int = 0) -> Inputs:
    """Refuse images with NaN or Inf values, naming the first (a model turns them into some class);
    ``offset``: the position of the first image among all inputs (for the message)."""
    bad = ~torch.isfinite(inputs.images.flatten(1)).all(1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        more = f" (and {int(bad.sum()) - 1} more)" if int(bad.sum()) > 1 else ""
        raise ConfigError(f"image {i + offset} ({inputs.sources[i]}) has NaN or Inf values{more}; images must be "
                          "finite, in [0, 1]")
    return inputs


@dataclasses.dataclass
class InputSource:
    """``n`` input images read on demand: labels and sources are known up front, the images of
    positions ``start:stop`` are read (and checked finite) by :meth:`take`."""

    labels: torch.Tensor          # (n,) int64, -1 where unknown
    sources: list[str]
    read: Callable[[int, int], torch.Tensor]  # (start, stop) -> float images (stop - start, C, H, W) in [0, 1]

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, start: int, stop: int) -> Inputs:
        stop = min(stop, len(self))
        return check_finite(Inputs(self.read(start, stop), self.labels[start:stop].clone(),
                                   self.sources[start:stop]), start)

    def all(self) -> Inputs:
        return self.take(0, len(self))


def _file_source(paths: Sequence[str | os.PathLike], model) -> InputSource:
    if not paths:
        raise ConfigError("no images given")
    c, h, w = model.input_shape
    read = lambda a, b: torch.from_numpy(np.stack([_read_image(p, c, (h, w)) for p in paths[a:b]])) if b > a \
        else torch.zeros(0, c, h, w)
    return InputSource(torch.full((len(paths),), -1, dtype=torch.int64), [str(p) for p in paths], read)


def _dataset_source(model, dataset: str | None, data_dir: str | None, split: str, indices: str) -> InputSource:
    ds, name = checkpoint_dataset(getattr(model, "meta", {}), dataset, data_dir)
    x, y = ds.split(split)
    idx = parse_indices(indices, len(y))
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ConfigError(f"dataset '{name}' has images {tuple(x.shape[1:])} but the model expects "
                          f"{tuple(model.input_shape)}")
    pick = torch.as_tensor(idx, dtype=torch.int64)
    return InputSource(y[pick].clone(), [f"{name}:{split}:{i}" for i in idx],
                       lambda a, b: x[pick[a:b]].float() / 255)


def _npz_source(path: str | os.PathLike, model, indices: str | None) -> InputSource:
    x, arrays = npz_images(path, scale=False)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ConfigError(f"'{path}' images are {tuple(x.shape)}, the model expects "
                          f"(N, {', '.join(map(str, model.input_shape))})")
    labels = torch.from_numpy(arrays["labels"]).long() if "labels" in arrays else torch.full((len(x),), -1)
    sources = [str(s) for s in arrays["sources"]] if "sources" in arrays else [f"{path}:{i}" for i in range(len(x))]
    idx = parse_indices(indices, len(x)) if indices is not None else list(range(len(x)))
    pick = torch.as_tensor(idx, dtype=torch.int64)
    scale = (lambda t: t.float() / 255) if x.dtype == torch.uint8 else (lambda t: t.float())
    src = InputSource(labels[pick], [sources[i] for i in idx], lambda a, b: scale(x[pick[a:b]]))
    for a in range(0, len(src), 1024):  # float arrays are checked before any work, a block at a time
        src.take(a, a + 1024)
    return src


def open_inputs(model, images: Sequence[str | os.PathLike] | None = None, npz: str | os.PathLike | None = None,
                dataset: str | None = None, data_dir: str | None = None, split: str = "test",
                indices: str | None = None) -> InputSource:
    """Image files, an NPZ, or a dataset split (default: the checkpoint's dataset) — exactly one —
    as an :class:`InputSource` read chunk by chunk.

    ``indices`` picks images of the split (default ``0:8``) or of the NPZ (default all); it is
    refused with image files, which it would not select."""
    if sum(bool(v) for v in (images, npz is not None, dataset)) > 1:
        raise ConfigError("give images, --npz or --dataset, not several")
    if images and indices is not None:
        raise ConfigError("--indices selects images of a dataset split or an NPZ; with image files give the "
                          "files you want instead")
    if images:
        return _file_source(list(images), model)
    if npz is not None:
        return _npz_source(npz, model, indices)
    return _dataset_source(model, dataset, data_dir, split, indices or "0:8")


def gather_inputs(model, images: Sequence[str | os.PathLike] | None = None, npz: str | os.PathLike | None = None,
                  dataset: str | None = None, data_dir: str | None = None, split: str = "test",
                  indices: str | None = None) -> Inputs:
    """Every image of :func:`open_inputs` in memory at once."""
    return open_inputs(model, images, npz, dataset, data_dir, split, indices).all()


@dataclasses.dataclass
class InputSpec:
    """Where a command's images come from: image files, an NPZ, or a dataset split (exactly one;
    default the checkpoint's dataset).  The CLI's input options, as one value."""

    images: Sequence[str | os.PathLike] | None = None
    npz: str | os.PathLike | None = None
    dataset: str | None = None
    data_dir: str | os.PathLike | None = None
    split: str = "test"
    indices: str | None = None  # a split's 0:8 or all of an NPZ; not with image files

    def load(self, model) -> Inputs:
        return self.open(model).all()

    def open(self, model) -> InputSource:
        """The images, read chunk by chunk (:class:`InputSource`)."""
        return open_inputs(model, self.images, self.npz, self.dataset,
                           str(self.data_dir) if self.data_dir else None, self.split, self.indices)

    def describe(self) -> dict:
        """What selects the images, for a run's key (files as given; the NPZ by path)."""
        return {"images": [str(p) for p in self.images or []], "npz": str(self.npz) if self.npz else None,
                "dataset": self.dataset, "data_dir": str(self.data_dir) if self.data_dir else None,
                "split": self.split, "indices": self.indices}


def as_targets(target: torch.Tensor | int | Sequence[int], n: int, num_classes: int | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """An int or (n,) classes -> int64 (n,) on ``device``, range-checked against ``num_classes``."""
    t = torch.as_tensor(target, device=device).long().clone()  # clone: never an inference tensor
    t = t.expand(n).clone() if t.dim() == 0 else t
    if t.dim() != 1 or len(t) != n:
        raise ConfigError(f"{len(t) if t.dim() == 1 else tuple(t.shape)} targets for {n} images")
    if num_classes is not None and n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ConfigError(f"target class out of range 0..{num_classes - 1}")
    return t


def resolve_targets(spec: str | int, model, logits: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, target class) pairs for ``pred | label | INT | CLASSNAME | all``."""
    n, k = logits.shape
    spec = str(spec)
    rows = torch.arange(n)
    if spec == "pred":
        return rows, logits.argmax(1).cpu()
    if spec == "label":
        if (labels < 0).any():
            raise ConfigError("--target label needs labelled inputs (a dataset split or an NPZ with labels)")
        return rows, labels.cpu()
    if spec == "all":
        return rows.repeat_interleave(k), torch.arange(k).repeat(n)
    if spec.lstrip("-").isdigit():
        t = int(spec)
    elif spec in model.classes:
        t = model.classes.index(spec)
    else:
        raise ConfigError(f"--target must be pred, label, all, a class index or a class name "
                          f"({', '.join(model.classes)}); got '{spec}'")
    if not 0 <= t < k:
        raise ConfigError(f"target class {t} out of range 0..{k - 1}")
    return rows, torch.full((n,), t)
