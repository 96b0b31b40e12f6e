"""``interp noise-grad``: input gradients of class logits or of a layer's units, on Gaussian
noise and on real images (what units respond to), with alignment scores.

    from interpcli.noisegrad import NoiseGradConfig
    from interpcli.ops.noise_grad import noise_grad_checkpoint
    result, files = noise_grad_checkpoint("runs/smp.safetensors", "out/ng",
                                          NoiseGradConfig(layer="features.conv2", units="0:16", samples=8))

:func:`noise_grad` is the same on a loaded model (and optional :class:`~interpcli.inputs.Inputs`);
:func:`layer_listing` gives the layers ``--layer`` takes, with their output shapes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..attributions import check_output_folder
from ..device import model_device
from ..errors import ConfigError
from ..inputs import Inputs, InputSpec
from ..models.features import layer_shapes
from ..noisegrad import (
    NoiseGrad,
    NoiseGradConfig,
    is_logits,
    noise_distribution,
    noise_images,
    parse_selection,
    unit_gradients,
    unit_values,
)
from ._common import checkpoint_record, open_checkpoint

__all__ = ["noise_grad", "noise_grad_checkpoint", "layer_listing", "select_units"]


def select_units(model: nn.Module, cfg: NoiseGradConfig, shape: Sequence[int]) -> tuple[list[int], list[str], str]:
    """(unit indices, their labels, layer name) of ``cfg``: the classes selected (by index or
    name), or the channels selected of ``cfg.layer``; a missing layer or a selection out of
    range is a :class:`~interpcli.errors.ConfigError` that says what there is."""
    with torch.no_grad():
        probe = torch.full((1, *shape), 0.5, device=model_device(model))
        k = unit_values(model, probe, cfg.layer, cfg.reduce).shape[1]
    if is_logits(cfg.layer):
        classes = [str(c) for c in getattr(model, "classes", range(k))]
        idx = parse_selection(cfg.classes, k, "--classes", classes) if cfg.classes is not None else list(range(k))
        return idx, [classes[i] if i < len(classes) else str(i) for i in idx], "logits"
    what = f"--units (layer '{cfg.layer}' has {k} units)"
    idx = parse_selection(cfg.units, k, what) if cfg.units is not None else list(range(k))
    return idx, [f"unit {i}" for i in idx], str(cfg.layer)


def noise_grad(model: nn.Module, cfg: NoiseGradConfig, inputs: Inputs | None = None,
               progress: Callable[[int, int], None] | None = None) -> NoiseGrad:
    """Gradients of the units ``cfg`` selects at ``cfg.samples`` noise images and at ``inputs``
    (real images, optional), in that column order.  ``model`` takes images in [0, 1] (N, C, H, W)
    and has an ``input_shape`` unless ``inputs`` are given."""
    cfg.check()
    model.eval()
    shape = tuple(getattr(model, "input_shape", ()) or (tuple(inputs.images.shape[1:]) if inputs is not None else ()))
    if len(shape) != 3:
        raise ConfigError("the model has no input_shape (C, H, W); give images")
    units, names, layer = select_units(model, cfg, shape)
    mean, std = noise_distribution(model, cfg.noise_mean, cfg.noise_std, channels=shape[0])
    xs, kinds, sources = [], [], []
    if cfg.samples:
        xs.append(noise_images(cfg.samples, shape, mean, std, cfg.seed))
        kinds += ["noise"] * cfg.samples
        sources += [f"noise:seed{cfg.seed}:{i}" for i in range(cfg.samples)]
    if inputs is not None and len(inputs.images):
        if tuple(inputs.images.shape[1:]) != shape:
            raise ConfigError(f"images are {tuple(inputs.images.shape[1:])}, the model expects {shape}")
        xs.append(inputs.images.float())
        kinds += ["image"] * len(inputs.images)
        sources += list(inputs.sources)
    if not xs:
        raise ConfigError("nothing to compute: --samples 0 and no images")
    x = torch.cat(xs)
    grads = unit_gradients(model, x, units, layer, cfg.reduce, cfg.grad_mode, cfg.batch_rows, progress)
    dev = model_device(model)
    with torch.no_grad():
        values = torch.cat([unit_values(model, x[i : i + 256].to(dev), layer, cfg.reduce)[:, units].cpu()
                            for i in range(0, len(x), 256)])
    config: dict[str, Any] = dataclasses.asdict(cfg) | {"layer": layer, "noise_mean": mean, "noise_std": std}
    return NoiseGrad(grads, x, kinds, sources, units, names, values, layer, config)


def noise_grad_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None, cfg: NoiseGradConfig, *,
                          inputs: InputSpec | None = None, device: str = "auto", png: bool = True,
                          force: bool = False,
                          progress: Callable[[int, int], None] | None = None) -> tuple[NoiseGrad, list[Path]]:
    """:func:`noise_grad` on a checkpoint's model, written to ``out`` (``noise_grad.npz``,
    ``scores.json``, ``grid.png``; nothing when ``out`` is None).  ``inputs``: real images
    (files, an NPZ or a dataset split) beside the noise.  An existing non-empty ``out`` is
    refused before any work unless ``force``, which replaces it as a whole."""
    cfg.check()
    if out is not None:
        check_output_folder(out, force)
    model = open_checkpoint(checkpoint, device, cfg.seed)
    result = noise_grad(model, cfg, inputs.load(model) if inputs is not None else None, progress)
    result.checkpoint = checkpoint_record(checkpoint, model)
    return result, (result.save(out, png=png, force=force) if out is not None else [])


def layer_listing(checkpoint: str | os.PathLike, device: str = "auto") -> list[dict[str, Any]]:
    """The layers of a checkpoint's network (``logits`` first), each with its type, output shape
    for one image and unit count: what ``--layer`` takes."""
    return layer_shapes(open_checkpoint(checkpoint, device))
