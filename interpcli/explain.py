"""Explaining a checkpoint's predictions: inputs, targets, methods, artifacts.

    from interpcli import load_model
    from interpcli.explain import dataset_inputs, explain, save_explanation
    model = load_model("runs/r20.safetensors")
    inputs = dataset_inputs(model, split="test", indices="0:16")
    result = explain(model, inputs, ["grad", "intgrad"], target="pred")
    save_explanation(result, "out/r20-explain")

Inputs are images in [0, 1] at the model's input size: image files (resized, channel
count checked), a dataset split with indices, or an NPZ with an ``images`` array.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import artifacts
from .errors import ConfigError, InterpError
from .methods import attribute, get_method

__all__ = ["Inputs", "load_images", "dataset_inputs", "npz_inputs", "npz_images", "gather_inputs", "resolve_targets", "explain",
           "ExplainResult", "save_explanation"]


@dataclasses.dataclass
class Inputs:
    images: torch.Tensor          # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor          # (N,) int64, -1 where unknown
    sources: list[str]


def load_images(paths: Sequence[str | os.PathLike], model) -> Inputs:
    """Image files resized to the model's input size; RGBA is flattened, the channel count must fit."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = model.input_shape
    arrs = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                if im.mode in ("RGBA", "LA", "P"):
                    im = im.convert("RGB" if im.mode != "LA" else "L")
                channels = len(im.getbands())
                if im.mode not in ("L", "RGB"):
                    im = im.convert("RGB" if channels >= 3 else "L")
                    channels = len(im.getbands())
                if channels != c:
                    raise ConfigError(f"image '{p}' has {channels} channel(s) but the model expects {c}")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255
        except FileNotFoundError:
            raise ConfigError(f"image not found: {p}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(f"cannot read image '{p}': {e}") from None
        arrs.append(a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0))
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
    from .train import checkpoint_dataset

    ds, name = checkpoint_dataset(model.meta, dataset, data_dir)
    x, y = ds.split(split)
    idx = parse_indices(indices, len(y))
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ConfigError(f"dataset '{name}' has images {tuple(x.shape[1:])} but the model expects "
                          f"{tuple(model.input_shape)}")
    return Inputs(x[idx].float() / 255, y[idx].clone(), [f"{name}:{split}:{i}" for i in idx])


def npz_images(path: str | os.PathLike, key: str = "images") -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Array ``key`` of an NPZ as float images in [0, 1] (uint8 is scaled by 1/255), and all its arrays."""
    try:
        arrays, _ = artifacts.load_npz(path)
    except InterpError as e:
        raise ConfigError(str(e)) from None
    if key not in arrays:
        raise ConfigError(f"'{path}' has no '{key}' array")
    x = torch.from_numpy(arrays[key])
    return (x.float() / 255 if x.dtype == torch.uint8 else x.float()), arrays


def npz_inputs(path: str | os.PathLike, model) -> Inputs:
    """An NPZ with ``images`` (N, C, H, W; float in [0, 1] or uint8), optional ``labels`` and ``sources``."""
    x, arrays = npz_images(path)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ConfigError(f"'{path}' images are {tuple(x.shape)}, the model expects (N, {', '.join(map(str, model.input_shape))})")
    labels = torch.from_numpy(arrays["labels"]).long() if "labels" in arrays else torch.full((len(x),), -1)
    sources = [str(s) for s in arrays["sources"]] if "sources" in arrays else [f"{path}:{i}" for i in range(len(x))]
    return Inputs(x, labels, sources)


def gather_inputs(model, images: Sequence[str | os.PathLike] | None = None, npz: str | os.PathLike | None = None,
                  dataset: str | None = None, data_dir: str | None = None, split: str = "test",
                  indices: str = "0:8") -> Inputs:
    """Image files, an NPZ, or a dataset split (default: the checkpoint's dataset) — exactly one."""
    if sum(bool(v) for v in (images, npz is not None, dataset)) > 1:
        raise ConfigError("give images, --npz or --dataset, not several")
    if images:
        return load_images(images, model)
    if npz is not None:
        return npz_inputs(npz, model)
    return dataset_inputs(model, dataset, data_dir, split, indices)


def resolve_targets(spec: str | int, model, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


@dataclasses.dataclass
class ExplainResult:
    images: torch.Tensor                  # (M, C, H, W): one row per (image, target) pair
    targets: torch.Tensor                 # (M,)
    labels: torch.Tensor                  # (M,)
    logits: torch.Tensor                  # (M, classes)
    sources: list[str]
    attributions: dict[str, torch.Tensor]  # method -> (M, C or 1, H, W)
    params: dict[str, dict[str, Any]]
    classes: list[str]
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # e.g. bcos_rgba (M, H, W, 4)


def explain(model, inputs: Inputs, methods: Sequence[str], target: str | int = "pred",
            params: dict[str, dict[str, Any]] | None = None, batch_size: int | None = None, *,
            fast: bool = True, compile: bool = False,
            progress: Callable[[int, str], None] | None = None) -> ExplainResult:
    """Attributions of every method for the requested targets (the model is used in eval mode).

    ``fast`` / ``compile``: the eval fast path of :func:`~interpcli.methods.attribute`;
    ``progress(i, name)`` is called after the i-th method."""
    from .device import model_device

    model.eval()
    dev = model_device(model)
    infos = [get_method(m) for m in methods]
    params = params or {}
    with torch.inference_mode():
        logits = torch.cat([model(inputs.images[i : i + 256].to(dev)).float().cpu()
                            for i in range(0, len(inputs.images), 256)])
    rows, targets = resolve_targets(target, model, logits, inputs.labels)
    x = inputs.images[rows]
    attrs, used = {}, {}
    for info in infos:
        p = {**info.defaults, **params.get(info.name, {})}
        attrs[info.name] = attribute(model, x.to(dev), targets.to(dev), info.name, batch_size=batch_size,
                                     fast=fast, compile=compile, **params.get(info.name, {})).cpu()
        used[info.name] = p
        if progress is not None:
            progress(len(used), info.name)
    extras = {}
    if "bcos" in attrs:  # the papers' colour picture of W(x) needs the six-channel map
        from .models.bcos import contributions
        from .viz import bcos_rgba

        e = contributions(model, x.to(dev), targets.to(dev))
        extras["bcos_rgba"] = np.stack([bcos_rgba(w, c.sum(0)) for w, c in
                                        zip(e.weights.cpu().numpy(), e.contributions.cpu().numpy())]).astype(np.float32)
    return ExplainResult(x, targets, inputs.labels[rows], logits[rows], [inputs.sources[int(r)] for r in rows],
                         attrs, used, list(model.classes), extras=extras)


def save_explanation(result: ExplainResult, out_dir: str | os.PathLike, png: bool = True,
                     checkpoint: str | os.PathLike | None = None) -> list[Path]:
    """Write ``attributions.npz``, one PNG per (image, method) and ``grid.png`` (several methods).

    Everything is written into a temporary folder beside ``out_dir`` and moved into place
    at the end, so a failure never leaves a partial output folder.
    """
    from . import viz

    out = Path(out_dir)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"output folder's parent '{parent}' does not exist")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"'{out}' exists and is not a folder")
    methods = list(result.attributions)
    signed = [get_method(m).signed for m in methods]
    meta = {
        "kind": "attributions", "methods": methods, "params": result.params, "signed": dict(zip(methods, signed)),
        "classes": result.classes, "checkpoint": result.checkpoint,
    }
    if checkpoint is not None:
        meta["checkpoint"] = {"path": str(checkpoint), "sha256": artifacts.sha256_file(checkpoint),
                              **result.checkpoint}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        arrays = {f"attr_{m}": a.numpy().astype(np.float32) for m, a in result.attributions.items()}
        arrays["attributions"] = arrays[f"attr_{methods[0]}"]
        names = [Path(tmp / "attributions.npz")]
        artifacts.save_npz(names[0], meta, images=result.images.numpy().astype(np.float32),
                           targets=result.targets.numpy(), labels=result.labels.numpy(),
                           logits=result.logits.numpy(), predictions=result.logits.argmax(1).numpy(),
                           sources=np.array(result.sources), **arrays, **result.extras)
        if png:
            imgs = result.images.numpy()
            for i in range(len(imgs)):
                t = int(result.targets[i])
                for m, s in zip(methods, signed):
                    f = tmp / f"{i:04d}_{m}.png"
                    title = f"{result.sources[i]}  target {result.classes[t]}  ({m})"
                    artifacts._write_bytes(f, viz.overlay_png(imgs[i], result.attributions[m][i].numpy(), s, title))
                    names.append(f)
            for i, rgba in enumerate(result.extras.get("bcos_rgba", [])):
                f = tmp / f"{i:04d}_bcos_rgb.png"
                artifacts.save_png(f, (rgba * 255).round().astype(np.uint8), {"method": "bcos", "rendering": "rgba"})
                names.append(f)
            if len(methods) > 1:
                f = tmp / "grid.png"
                rows = [f"{result.classes[int(t)]}" for t in result.targets]
                artifacts._write_bytes(f, viz.grid_png(imgs, [result.attributions[m].numpy() for m in methods],
                                                       methods, signed, rows))
                names.append(f)
        out.mkdir(exist_ok=True)
        final = []
        for f in names:
            os.replace(f, out / f.name)
            final.append(out / f.name)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
