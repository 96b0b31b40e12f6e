"""Augmentation presets with explicit draws: the same A views applied to any batch of images.

ROSA / OSA-DAS compare the augmented views of an image with the *same* augmented views of
each occluded copy, so an augmentation here is drawn once (:func:`draw_views`) and then
applied to whole batches (:func:`apply_views`): view a of every image in the batch uses the
same flip, crop, colour and cutout parameters.  Everything is batched tensor work on the
images' device (one ``grid_sample`` for all geometric changes).

Presets (parameters may be overridden, e.g. ``strong:scale=0.5``):

- ``weak``: horizontal flip (p 0.5), translation up to ``translate`` (default 1/16 of the
  size), brightness/contrast jitter ±``jitter`` (0.1).
- ``strong``: random resized crop (area fraction in [``scale``, 1], default 0.35; aspect
  ratio in [3/4, 4/3]), flip, brightness/contrast/saturation jitter ±``jitter`` (0.4), cutout of a
  square of side ``cutout`` x size (0.25) with probability 0.5, Gaussian blur with sigma in
  [0.1, ``blur``] (1.0) with probability 0.5.
- ``none``: the identity (one view).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["PRESETS", "Views", "parse_preset", "draw_views", "apply_views", "noise_images"]

PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "weak": {"flip": 0.5, "translate": 1 / 16, "jitter": 0.1},
    "strong": {"flip": 0.5, "scale": 0.35, "jitter": 0.4, "saturation": 0.4, "cutout": 0.25, "cutout_p": 0.5,
               "blur": 1.0, "blur_p": 0.5},
}


@dataclasses.dataclass
class Views:
    """Drawn parameters of A views; apply with :func:`apply_views`."""

    theta: torch.Tensor        # (A, 2, 3) affine maps of output to input coordinates
    brightness: torch.Tensor   # (A,) multiplicative
    contrast: torch.Tensor     # (A,)
    saturation: torch.Tensor   # (A,)
    cutout: torch.Tensor       # (A, 4) y0, y1, x0, x1 in [0, 1] (empty when y0 == y1)
    blur: torch.Tensor         # (A,) sigma in pixels (0 = none)
    preset: str = ""

    def __len__(self) -> int:
        return len(self.theta)


def parse_preset(spec: str) -> tuple[str, dict[str, float]]:
    """``weak`` or ``strong:scale=0.5,jitter=0.2`` -> (name, parameters)."""
    name, _, rest = spec.partition(":")
    if name not in PRESETS:
        raise ConfigError(f"unknown augmentation preset '{name}'; use {', '.join(PRESETS)}")
    params = dict(PRESETS[name])
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in params:
            raise ConfigError(f"augmentation '{spec}': '{item}' is not KEY=VALUE with KEY in "
                              f"{', '.join(params) or 'nothing'}")
        try:
            params[key] = float(value)
        except ValueError:
            raise ConfigError(f"augmentation '{spec}': '{value}' is not a number") from None
    return name, params


def draw_views(spec: str, n: int, generator: torch.Generator, include_identity: bool = False) -> Views:
    """Draw ``n`` views of preset ``spec`` from ``generator`` (CPU); view 0 is the identity
    when ``include_identity``."""
    name, p = parse_preset(spec)
    if n < 1:
        raise ConfigError("the number of augmented views must be positive")
    g = generator

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

    ones = torch.ones(n, dtype=torch.float64)
    sx = torch.ones(n, dtype=torch.float64)
    sy = torch.ones(n, dtype=torch.float64)
    tx = torch.zeros(n, dtype=torch.float64)
    ty = torch.zeros(n, dtype=torch.float64)
    if "scale" in p:  # random resized crop: area fraction and aspect ratio, then a random position
        area = u(p["scale"], 1.0)
        logr = u(math.log(3 / 4), math.log(4 / 3))
        sx = (area * logr.exp()).sqrt().clamp(max=1.0)
        sy = (area / logr.exp()).sqrt().clamp(max=1.0)
        tx = (1 - sx) * u(-1.0, 1.0)
        ty = (1 - sy) * u(-1.0, 1.0)
    if "translate" in p:  # fraction of the size; normalised coordinates span 2
        tx = tx + 2 * p["translate"] * u(-1.0, 1.0)
        ty = ty + 2 * p["translate"] * u(-1.0, 1.0)
    flip = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < p.get("flip", 0.0), -ones, ones)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    j = p.get("jitter", 0.0)
    brightness, contrast = u(1 - j, 1 + j), u(1 - j, 1 + j)
    s = p.get("saturation", 0.0)
    saturation = u(1 - s, 1 + s)
    cut = torch.zeros(n, 4, dtype=torch.float64)
    if p.get("cutout", 0.0) > 0:
        side = p["cutout"]
        on = torch.rand(n, generator=g, dtype=torch.float64) < p.get("cutout_p", 1.0)
        cy, cx = u(0.0, 1.0), u(0.0, 1.0)
        cut = torch.stack([(cy - side / 2).clamp(0, 1), (cy + side / 2).clamp(0, 1),
                           (cx - side / 2).clamp(0, 1), (cx + side / 2).clamp(0, 1)], 1) * on[:, None]
    blur = torch.zeros(n, dtype=torch.float64)
    if p.get("blur", 0.0) > 0:
        on = torch.rand(n, generator=g, dtype=torch.float64) < p.get("blur_p", 1.0)
        blur = u(0.1, p["blur"]) * on
    if include_identity:  # view 0 is the image itself
        theta[0] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
        brightness[0] = contrast[0] = saturation[0] = 1.0
        cut[0] = 0.0
        blur[0] = 0.0
    f = torch.float32
    return Views(theta.to(f), brightness.to(f), contrast.to(f), saturation.to(f), cut.to(f), blur.to(f), spec)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect" if min(x.shape[-2:]) > r else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def apply_views(views: Views, x: torch.Tensor) -> torch.Tensor:
    """Every view of every image: (N, C, H, W) -> (A, N, C, H, W), values kept in [0, 1]."""
    a = len(views)
    n, c, h, w = x.shape
    dev = x.device
    theta = views.theta.to(dev, x.dtype).repeat_interleave(n, 0)
    grid = F.affine_grid(theta, [a * n, c, h, w], align_corners=False)
    y = F.grid_sample(x.repeat(a, 1, 1, 1), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = y.view(a, n, c, h, w)
    col = lambda v: v.to(dev, x.dtype).view(a, 1, 1, 1, 1)  # noqa: E731
    y = y * col(views.brightness)
    mean = y.mean((2, 3, 4), keepdim=True)
    y = (y - mean) * col(views.contrast) + mean
    if c == 3:
        gray = (0.299 * y[:, :, :1] + 0.587 * y[:, :, 1:2] + 0.114 * y[:, :, 2:]).expand_as(y)
        y = (y - gray) * col(views.saturation) + gray
    y = y.clamp(0, 1)
    cut = views.cutout.to(dev)
    if bool((cut[:, 1] > cut[:, 0]).any()):
        yy = (torch.arange(h, device=dev, dtype=x.dtype) + 0.5) / h
        xx = (torch.arange(w, device=dev, dtype=x.dtype) + 0.5) / w
        inside = ((yy[None, :, None] >= cut[:, 0, None, None]) & (yy[None, :, None] < cut[:, 1, None, None])
                  & (xx[None, None, :] >= cut[:, 2, None, None]) & (xx[None, None, :] < cut[:, 3, None, None]))
        y = torch.where(inside[:, None, None], 0.5, y)
    for i in torch.nonzero(views.blur > 0).flatten().tolist():  # at most A small convolutions
        y[i] = _blur(y[i], float(views.blur[i]))
    return y


def noise_images(n: int, shape: tuple[int, int, int], generator: torch.Generator, kind: str = "uniform",
                 device: Any = "cpu") -> torch.Tensor:
    """Noise images in [0, 1]: ``uniform`` or ``gaussian`` (mean 0.5, std 0.25, clipped)."""
    if kind == "uniform":
        x = torch.rand(n, *shape, generator=generator)
    elif kind == "gaussian":
        x = (0.5 + 0.25 * torch.randn(n, *shape, generator=generator)).clamp(0, 1)
    else:
        raise ConfigError(f"unknown noise '{kind}'; use uniform or gaussian")
    return x.to(device)
