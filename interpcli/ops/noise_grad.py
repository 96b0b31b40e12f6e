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

from .. import dist
from ..attribution_store import PNG_ROWS
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
from ._noise_parts import merge_columns, stream_columns
from ._stream import Scale, run_key

__all__ = ["noise_grad", "noise_grad_checkpoint", "merge_noise_grads", "layer_listing", "select_units", "Scale"]


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


def _plan(model: nn.Module, cfg: NoiseGradConfig, shape: tuple[int, ...]) -> dict[str, Any]:
    """Units, their names, the layer and the noise distribution of ``cfg`` on ``model``."""
    units, names, layer = select_units(model, cfg, shape)
    mean, std = noise_distribution(model, cfg.noise_mean, cfg.noise_std, channels=shape[0])
    config: dict[str, Any] = dataclasses.asdict(cfg) | {"layer": layer, "noise_mean": mean, "noise_std": std}
    return {"units": units, "names": names, "layer": layer, "mean": mean, "std": std, "config": config}


def _columns(model: nn.Module, cfg: NoiseGradConfig, plan: dict[str, Any], x: torch.Tensor, kinds: list[str],
             sources: list[str], progress: Callable[[int, int], None] | None) -> NoiseGrad:
    """The gradients and values of the plan's units at the inputs ``x`` (some columns of a run)."""
    layer, units = plan["layer"], plan["units"]
    grads = unit_gradients(model, x, units, layer, cfg.reduce, cfg.grad_mode, cfg.batch_rows, progress)
    dev = model_device(model)
    with torch.no_grad():
        values = torch.cat([unit_values(model, x[i : i + 256].to(dev), layer, cfg.reduce)[:, units].cpu()
                            for i in range(0, len(x), 256)])
    return NoiseGrad(grads, x, kinds, sources, units, plan["names"], values, layer, plan["config"])


def _shape(model: nn.Module, images: torch.Tensor | None) -> tuple[int, ...]:
    shape = tuple(getattr(model, "input_shape", ()) or (tuple(images.shape[1:]) if images is not None else ()))
    if len(shape) != 3:
        raise ConfigError("the model has no input_shape (C, H, W); give images")
    return shape


def noise_grad(model: nn.Module, cfg: NoiseGradConfig, inputs: Inputs | None = None,
               progress: Callable[[int, int], None] | None = None) -> NoiseGrad:
    """Gradients of the units ``cfg`` selects at ``cfg.samples`` noise images and at ``inputs``
    (real images, optional), in that column order.  ``model`` takes images in [0, 1] (N, C, H, W)
    and has an ``input_shape`` unless ``inputs`` are given."""
    cfg.check()
    model.eval()
    shape = _shape(model, inputs.images if inputs is not None else None)
    plan = _plan(model, cfg, shape)
    xs, kinds, sources = [], [], []
    if cfg.samples:
        xs.append(noise_images(cfg.samples, shape, plan["mean"], plan["std"], cfg.seed))
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
    return _columns(model, cfg, plan, torch.cat(xs), kinds, sources, progress)


def noise_grad_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None, cfg: NoiseGradConfig, *,
                          inputs: InputSpec | None = None, device: str = "auto", png: bool = True,
                          force: bool = False, scale: Scale | None = None,
                          progress: Callable[[int, int], None] | None = None) -> tuple[NoiseGrad, list[Path]]:
    """:func:`noise_grad` on a checkpoint's model, written to ``out`` (``noise_grad.npz``,
    ``scores.json``, ``grid.png``; nothing when ``out`` is None).  ``inputs``: real images
    (files, an NPZ or a dataset split) beside the noise.  An existing non-empty ``out`` is
    refused before any work unless ``force``, which replaces it as a whole.

    With ``out``, the inputs (noise samples, then images) are taken ``scale.chunk`` at a time and
    each chunk written as one part (``noise_grad.npz``, ``noise_grad-00001.npz``, ...); the scores
    are running sums over every input (:class:`~interpcli.alignment.AlignmentSums`) and the grid
    shows the first ``scale.png_rows`` inputs.  ``scale.shard`` or torchrun's ranks take a share
    of the chunks (the ranks add their sums; rank 0 writes).  The result returned then holds the
    first chunk's inputs and the scores of all.  ``progress(inputs done, inputs)``."""
    cfg.check()
    scale = (scale or Scale()).check()
    if out is not None:
        check_output_folder(out, force)
    with dist.session(device) as (_, _, dev):
        model = open_checkpoint(checkpoint, str(dev), cfg.seed)
        source = inputs.open(model) if inputs is not None else None
        record = checkpoint_record(checkpoint, model)
        if out is None:
            result = noise_grad(model, cfg, source.all() if source is not None else None, progress)
            result.checkpoint = record
            return result, []
        model.eval()
        plan = _plan(model, cfg, _shape(model, None))
        noise = noise_images(cfg.samples, model.input_shape, plan["mean"], plan["std"], cfg.seed)
        n_img = len(source) if source is not None else 0
        if cfg.samples + n_img == 0:
            raise ConfigError("nothing to compute: --samples 0 and no images")

        def compute(a: int, b: int, step: Callable[[int, int], None] | None) -> NoiseGrad:
            k = min(b, cfg.samples)
            xs, kinds, sources = [noise[a:k]], ["noise"] * max(0, k - a), [f"noise:seed{cfg.seed}:{i}"
                                                                           for i in range(a, k)]
            if b > cfg.samples:
                x = source.take(max(a, cfg.samples) - cfg.samples, b - cfg.samples)
                xs, kinds, sources = xs + [x.images], kinds + ["image"] * len(x.images), sources + x.sources
            res = _columns(model, cfg, plan, torch.cat(xs), kinds, sources, step)
            res.checkpoint = record
            return res

        key = run_key(checkpoint=record["sha256"], config=plan["config"], inputs=inputs.describe() if inputs else None,
                      n=cfg.samples + n_img, chunk=scale.chunk, kind="noise-grad")
        return stream_columns(compute, cfg.samples + n_img, len(plan["units"]), plan["mean"], model.input_shape, out,
                              scale, png=png, force=force, key=key, progress=progress, device=dev)


def merge_noise_grads(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False,
                      png: bool = True, png_inputs: int = PNG_ROWS) -> list[Path]:
    """The single result of a ``--shard I/N`` run of ``interp noise-grad`` from its shards' folders."""
    check_output_folder(out, force)
    return merge_columns(folders, out, force=force, png=png, png_inputs=png_inputs)


def layer_listing(checkpoint: str | os.PathLike, device: str = "auto") -> list[dict[str, Any]]:
    """The layers of a checkpoint's network (``logits`` first), each with its type, output shape
    for one image and unit count: what ``--layer`` takes."""
    return layer_shapes(open_checkpoint(checkpoint, device))
