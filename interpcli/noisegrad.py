"""What units respond to: input gradients of class logits or of a layer's channels, on Gaussian
noise and on real images (the research log's "gradient on Gaussian noise", ../shared/seeds/000,
12.08.2024; ../shared/METHODS.md section 4.2).

    g = unit_gradients(model, noise_images(8, (3, 32, 32), *noise_distribution(model)), range(10))
    g.shape                                           # (10 units, 8 samples, 3, 32, 32)

The command (:mod:`interpcli.ops.noise_grad`) adds unit selection, real images, the picture
and the scores (:class:`NoiseGrad`).

A unit is a class logit, or channel c of a layer's output reduced over space (``max`` or
``mean``; a 2-D output such as SoftMaxPool's groups is taken as it is); the forward pass stops
at the layer.  Gradients are w.r.t. the model's input pixels (the encoding is inside the model).
All units of a batch of samples take one forward pass and one batched backward pass (vmap
over one-hot cotangents on the unit axis, ``is_grads_batched``); ``fold`` (units folded into
the batch) and ``loop`` (one pass per unit) give the same numbers.

Noise: x = mean + std * z, z ~ N(0, I), per channel, drawn on the CPU from ``seed`` (the same
seed gives the same images on every device).  Default mean/std: the model's input
normalisation (its encoder's per-channel mean and std, so the network sees N(0, I)); for
encoders without statistics (identity, B-cos [x, 1-x]) N(0.5, 0.25²) per pixel.  Not clipped.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import artifacts
from .alignment import AlignmentSums, alignment_scores
from .device import model_device
from .errors import ConfigError
from .kernel_viz import RENDERS, column_labels, gradient_grid, write_folder
from .models.bcos_layers import composed_ops
from .models.features import layer_of

__all__ = ["NoiseGradConfig", "NoiseGrad", "parse_selection", "unit_values", "unit_gradients",
           "noise_distribution", "noise_images", "alignment_scores", "is_logits", "REDUCES", "GRAD_MODES",
           "NPZ_NAME"]

REDUCES = ("max", "mean")
GRAD_MODES = ("auto", "batched", "fold", "loop")
NPZ_NAME = "noise_grad.npz"


def is_logits(layer: str | None) -> bool:
    return layer in (None, "logits")


@dataclasses.dataclass
class NoiseGradConfig:
    """What ``interp noise-grad`` computes.

    Attributes:
        layer: None or ``logits`` for the class logits, else a module path of ``model.net``.
        units: selection of the layer's channels (``0:60``, ``3,7``); None: all.
        classes: selection of logits by index or class name (``0,2`` or ``cat,dog``); None: all.
        reduce: ``max`` or ``mean`` over the spatial positions of a channel.
        samples: Gaussian noise images (columns before any real images).
        seed: seed of the noise.
        noise_mean, noise_std: per-channel (or one) values in pixel units; None: see the module doc.
        render: ``minmax`` (per-image renormalisation to [0, 1]) or ``percentile`` (g / 2p + 1/2,
            clipped, p the ``percentile`` of |g| in that image).
        average: add the mean gradient over the noise samples as a column.
        grad_mode: ``auto`` (batched, falling back to fold), ``batched``, ``fold`` or ``loop``.
        batch_rows: at most this many (unit, sample) rows per backward pass (None: by device).
    """

    layer: str | None = None
    units: str | None = None
    classes: str | None = None
    reduce: str = "max"
    samples: int = 8
    seed: int = 0
    noise_mean: Sequence[float] | float | None = None
    noise_std: Sequence[float] | float | None = None
    render: str = "minmax"
    percentile: float = 99.0
    average: bool = False
    grad_mode: str = "auto"
    batch_rows: int | None = None

    def check(self) -> NoiseGradConfig:
        for name, value, valid in (("reduce", self.reduce, REDUCES), ("render", self.render, RENDERS),
                                   ("grad mode", self.grad_mode, GRAD_MODES)):
            if value not in valid:
                raise ConfigError(f"{name} must be {', '.join(valid)}; got '{value}'")
        std = np.atleast_1d(np.asarray(self.noise_std if self.noise_std is not None else 1.0, dtype=float))
        for bad, message in ((self.samples < 0, f"--samples must be >= 0, got {self.samples}"),
                             (not 0 < self.percentile <= 100, f"--percentile must be in (0, 100]: {self.percentile}"),
                             (self.batch_rows is not None and self.batch_rows < 1, "--batch-size must be >= 1"),
                             (not (np.isfinite(std).all() and (std > 0).all()), "--noise-std must be positive"),
                             (self.classes is not None and not is_logits(self.layer),
                              "--classes selects class logits; with --layer select channels with --units"),
                             (self.units is not None and is_logits(self.layer),
                              "--units selects channels of a --layer; select class logits with --classes")):
            if bad:
                raise ConfigError(message)
        return self


def parse_selection(spec: str, n: int, what: str, names: Sequence[str] = ()) -> list[int]:
    """``0:60``, ``:8``, ``5``, ``1,7,9`` (or names from ``names``) -> indices in 0..n-1."""
    out: list[int] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if part in names:
            out.append(list(names).index(part))
            continue
        try:
            if ":" in part:
                a, b = part.split(":", 1)
                out.extend(range(int(a or 0), int(b) if b else n))
            else:
                out.append(int(part))
        except ValueError:
            hint = f" or names ({', '.join(names)})" if names else ""
            raise ConfigError(f"{what} expects START:STOP or comma-separated indices{hint}; got '{spec}'") from None
    bad = [i for i in out if not 0 <= i < n]
    if bad or not out:
        raise ConfigError(f"{what} '{spec}' selects {'nothing' if not out else bad[:3]} of 0..{n - 1}")
    return out


# ---------------------------------------------------------------------------------------------- units

class _Stop(Exception):
    """Raised by the hook: the forward pass ends at the unit layer."""


def unit_values(model: nn.Module, x: torch.Tensor, layer: str | None = None, reduce: str = "max") -> torch.Tensor:
    """(N, K) unit values, attached to the graph: the logits, or the layer's output with every
    dimension after the channels reduced by ``reduce``; the forward pass stops at the layer."""
    if is_logits(layer):
        return model(x).float()
    module = layer_of(model, layer)
    store: dict[str, Any] = {}

    def hook(_m, _i, out):
        store["out"] = out
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "out" not in store:
        raise ConfigError(f"layer '{layer}' is not reached in the forward pass")
    out = store["out"]
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        what = type(out).__name__ if not isinstance(out, torch.Tensor) else f"shape {tuple(out.shape)}"
        raise ConfigError(f"layer '{layer}' gives {what}, not (N, channels, ...); choose another --layer")
    if out.dim() > 2:
        dims = tuple(range(2, out.dim()))
        out = out.amax(dims) if reduce == "max" else out.mean(dims)
    return out.float()


def _grads_batched(model, x, units, layer, reduce, chunk) -> torch.Tensor:
    xg = x.detach().clone().requires_grad_(True)
    with composed_ops():  # B-cos' fused node has no batching rule for its backward under vmap
        sel = unit_values(model, xg, layer, reduce)[:, units]                   # (S, U)
    u, s = len(units), len(x)
    out = []
    for a in range(0, u, chunk):
        b = min(u, a + chunk)
        cot = torch.zeros(b - a, s, u, device=sel.device, dtype=sel.dtype)
        cot[torch.arange(b - a), :, torch.arange(a, b)] = 1
        (g,) = torch.autograd.grad(sel, xg, cot, is_grads_batched=True, retain_graph=b < u)
        out.append(g)
    return torch.cat(out)


def _grads_fold(model, x, units, layer, reduce, chunk) -> torch.Tensor:
    u, s = len(units), len(x)
    out = []
    for a in range(0, u, chunk):
        b = min(u, a + chunk)
        xg = x.detach().repeat(b - a, *([1] * (x.dim() - 1))).requires_grad_(True)  # row (j, i) = sample i
        vals = unit_values(model, xg, layer, reduce)
        cols = torch.tensor(units[a:b], device=vals.device).repeat_interleave(s)
        (g,) = torch.autograd.grad(vals[torch.arange(len(xg), device=vals.device), cols].sum(), xg)
        out.append(g.view(b - a, s, *x.shape[1:]))
    return torch.cat(out)


def _grads_loop(model, x, units, layer, reduce, chunk) -> torch.Tensor:
    out = []
    for unit in units:
        xg = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(unit_values(model, xg, layer, reduce)[:, unit].sum(), xg)
        out.append(g)
    return torch.stack(out)


_MODES = {"batched": _grads_batched, "fold": _grads_fold, "loop": _grads_loop}


def unit_gradients(model: nn.Module, x: torch.Tensor, units: Sequence[int], layer: str | None = None,
                   reduce: str = "max", mode: str = "auto", batch_rows: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(U, N, C, H, W) float32 on the CPU: the gradient of every unit of ``units`` at every image
    of ``x`` with respect to the image.  Rows (unit, image) go through the model in chunks of at
    most ``batch_rows`` (default 128 on the CPU, where larger backward passes are memory-bound,
    4096 elsewhere); ``mode`` picks the backward strategy (all give the same numbers)."""
    if mode not in GRAD_MODES:
        raise ConfigError(f"grad mode must be {', '.join(GRAD_MODES)}; got '{mode}'")
    units = [int(u) for u in units]
    dev = model_device(model)
    batch_rows = batch_rows or (128 if dev.type == "cpu" else 4096)
    n_img = max(1, min(len(x), batch_rows))
    chunk = max(1, batch_rows // n_img)
    parts = []
    for i in range(0, len(x), n_img):
        xb = x[i : i + n_img].to(dev, torch.float32)
        if mode == "auto":
            try:
                g = _grads_batched(model, xb, units, layer, reduce, chunk)
            except (RuntimeError, NotImplementedError):  # an op without a batching rule
                g = _grads_fold(model, xb, units, layer, reduce, chunk)
        else:
            g = _MODES[mode](model, xb, units, layer, reduce, chunk)
        parts.append(g.detach().float().cpu())
        if progress is not None:
            progress(min(len(x), i + n_img), len(x))
    return torch.cat(parts, dim=1)


# ---------------------------------------------------------------------------------------------- noise

def noise_distribution(model: nn.Module, mean: Sequence[float] | float | None = None,
                       std: Sequence[float] | float | None = None,
                       channels: int | None = None) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the noise in pixel units (see the module doc); given values win.
    ``channels``: default ``model.input_shape[0]``."""
    c = int(channels or model.input_shape[0])
    spec = model.encoder.spec() if callable(getattr(getattr(model, "encoder", None), "spec", None)) else {}
    if spec.get("kind") == "normalize":
        dm, ds = spec["mean"], spec["std"]
    else:
        dm, ds = [0.5] * c, [0.25] * c

    def per_channel(v, default, what):
        if v is None:
            return [float(a) for a in default]
        a = [float(t) for t in np.atleast_1d(np.asarray(v, dtype=float))]
        if len(a) not in (1, c):
            raise ConfigError(f"--noise-{what} takes 1 or {c} values, got {len(a)}")
        return a * c if len(a) == 1 else a

    return per_channel(mean, dm, "mean"), per_channel(std, ds, "std")


def noise_images(n: int, shape: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 seed: int = 0) -> torch.Tensor:
    """(n, C, H, W) float32: mean + std * z, z ~ N(0, I) drawn on the CPU from ``seed``."""
    z = torch.randn(n, *shape, generator=torch.Generator().manual_seed(int(seed)))
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return m + s * z


# ---------------------------------------------------------------------------------------------- result

def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else None


@dataclasses.dataclass
class NoiseGrad:
    """Gradients of U units at N inputs (noise samples first, then real images).

    Attributes:
        gradients: (U, N, C, H, W) float32, with respect to the input pixels.
        inputs: (N, C, H, W) the noise samples and images.
        kinds: ``noise`` or ``image`` per input; sources: where each came from.
        units: unit indices in the layer; unit_names: their labels.
        values: (N, U) the units' values at the inputs.
        layer: ``logits`` or the module path; config: the :class:`NoiseGradConfig` as a dict,
            with the noise mean and std actually used; checkpoint: the parent checkpoint.
    """

    gradients: torch.Tensor
    inputs: torch.Tensor
    kinds: list[str]
    sources: list[str]
    units: list[int]
    unit_names: list[str]
    values: torch.Tensor
    layer: str
    config: dict[str, Any]
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)
    sums: AlignmentSums | None = None  # of every input of a streamed run (these are its first columns)

    @property
    def is_noise(self) -> list[bool]:
        return [k == "noise" for k in self.kinds]

    @property
    def n_inputs(self) -> int:
        """Inputs of the whole run (more than ``len(kinds)`` for the first columns of a streamed one)."""
        return int(self.sums.sums["counts"].sum()) if self.sums is not None else len(self.kinds)

    def columns(self, start: int, stop: int) -> NoiseGrad:
        """Inputs ``start:stop`` (the same units)."""
        return dataclasses.replace(self, gradients=self.gradients[:, start:stop], inputs=self.inputs[start:stop],
                                   kinds=self.kinds[start:stop], sources=self.sources[start:stop],
                                   values=self.values[start:stop])

    def mean_gradient(self) -> torch.Tensor:
        """(U, C, H, W): the average over the noise samples (over every input when there are none)."""
        if self.sums is not None:
            return self.sums.mean_gradient(self.gradients.shape[2:])
        noise = torch.tensor(self.is_noise)
        return self.gradients[:, noise].mean(1) if bool(noise.any()) else self.gradients.mean(1)

    def scores(self) -> dict[str, Any]:
        """The alignment scores per unit and their averages over units (``summary``)."""
        per = self.sums.scores() if self.sums is not None else \
            alignment_scores(self.gradients, self.inputs, self.is_noise, self.config["noise_mean"])
        rows = [{"unit": u, "name": n, **{k: v[i] for k, v in per.items()}}
                for i, (u, n) in enumerate(zip(self.units, self.unit_names))]
        return {"layer": self.layer, "reduce": self.config["reduce"], "units": rows,
                "summary": {k: _mean(v) for k, v in per.items()}, "checkpoint": self.checkpoint}

    def grid(self) -> np.ndarray:
        """The picture: rows = units, columns = inputs (and the noise mean with ``average``), the
        inputs themselves in the top row; gradients rendered as the config says."""
        mean = self.mean_gradient() if self.config.get("average") else None
        reduce = "" if self.layer == "logits" else f", channel {self.config['reduce']} over space"
        title = f"{self.layer}: input gradients ({self.config['render']}{reduce})"
        return gradient_grid(self.gradients, self.inputs, column_labels(self.kinds, self.sources),
                             self.unit_names, self.config["render"], self.config["percentile"], mean, title)

    def meta(self) -> dict[str, Any]:
        return {"kind": "noise_grad", "layer": self.layer, "config": self.config, "checkpoint": self.checkpoint}

    def write_npz(self, path: Path, mean: bool = True, **meta: Any) -> Path:
        """``noise_grad.npz`` (or one part of a streamed run: ``meta`` adds ``part``); ``mean``: with
        ``mean_gradient`` when the config asks for it."""
        extra = {"mean_gradient": self.mean_gradient()} if mean and self.config.get("average") else {}
        return artifacts.save_npz(path, {**self.meta(), **meta}, gradients=self.gradients, inputs=self.inputs,
                                  kinds=np.array(self.kinds), sources=np.array(self.sources),
                                  units=np.array(self.units), unit_names=np.array(self.unit_names),
                                  values=self.values, **extra)

    def write_summary(self, folder: Path, png: bool = True) -> list[Path]:
        """``scores.json`` and (``png``) ``grid.png`` of these inputs' columns."""
        files = [artifacts.save_json(folder / "scores.json", self.scores())]
        meta = {"interp": artifacts.dumps(self.meta())}
        return files + ([artifacts.save_png(folder / "grid.png", self.grid(), meta)] if png else [])

    def save(self, out_dir: str | os.PathLike, png: bool = True, force: bool = False) -> list[Path]:
        """Write ``noise_grad.npz`` (gradients, inputs, kinds, sources, units, unit_names, values,
        mean_gradient with ``average``; the config in meta), ``scores.json`` and ``grid.png``,
        into a folder replaced as a whole."""
        return write_folder(out_dir, lambda tmp: [self.write_npz(tmp / NPZ_NAME), *self.write_summary(tmp, png)],
                            force)
