"""Superpixels: a partition of each image into regions, the features of LIME / KernelSHAP and
the masks of superpixel occlusion.

    labels = superpixels(images, n_segments=50)          # (N, H, W) int64, 0..K_n-1 per image
    masks = label_masks(labels[0])                       # (K_0, 1, H, W) one-hot region masks

Two methods:

- ``slic``: SLIC (Achanta et al., TPAMI 2012) from scikit-image,
  ``skimage.segmentation.slic(start_label=0)``.  RGB images are clustered in CIELAB, as
  scikit-image does by default; single-channel images are scaled to [0, 100] (the range of
  the L channel) so that ``compactness`` means the same for both.  The number of regions is
  only about ``n_segments`` and differs between images; on small, noisy images (e.g.
  uniform random noise) scikit-image's connectivity step can merge everything into a few
  regions, or one: use ``grid`` there.
- ``grid``: a regular grid of about ``n_segments`` rectangular cells (rows × columns chosen
  from the aspect ratio), pure torch, the same for every image of a batch.

Labels are renumbered 0..K_n-1 without gaps for every image.  Both methods are
deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["SEGMENTATIONS", "superpixels", "grid_labels", "label_masks", "region_means", "relabel"]

SEGMENTATIONS = ("slic", "grid")


def grid_labels(h: int, w: int, n_segments: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) labels of a regular grid of about ``n_segments`` cells, row-major.

    rows = round(sqrt(n · H / W)) and cols = round(n / rows), each clamped to 1..size; the
    cell borders are at floor(i · size / count), so cells differ in size by at most one pixel.
    """
    rows = min(h, max(1, round(math.sqrt(n_segments * h / w))))
    cols = min(w, max(1, round(n_segments / rows)))
    r = torch.arange(h, device=device) * rows // h
    c = torch.arange(w, device=device) * cols // w
    return r[:, None] * cols + c[None, :]


def relabel(labels: torch.Tensor) -> torch.Tensor:
    """The same partition with labels renumbered 0..K-1 in increasing order of the old labels."""
    _, inverse = torch.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def _slic(image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    from skimage.segmentation import slic  # noqa: PLC0415 (heavy: imported when used)

    if image.shape[0] == 1:  # grayscale: scale to the L range of CIELAB (0..100)
        return slic(image[0] * 100.0, n_segments=n_segments, compactness=compactness, start_label=0,
                    channel_axis=None)
    return slic(np.ascontiguousarray(image.transpose(1, 2, 0)), n_segments=n_segments, compactness=compactness,
                start_label=0, channel_axis=-1, convert2lab=image.shape[0] == 3)


def superpixels(images: torch.Tensor, n_segments: int, method: str = "slic", compactness: float = 10.0) -> torch.Tensor:
    """Superpixel labels (N, H, W) int64 of images (N, C, H, W) in [0, 1], on their device.

    Every image's labels are 0..K_n-1 without gaps; K_n is about ``n_segments`` and may
    differ between images (always exactly the grid's cell count for ``grid``).  Bad values
    (``n_segments`` < 1, ``compactness`` <= 0, an unknown method, not a 4-d batch) raise
    :class:`~interpcli.errors.ConfigError`.
    """
    if method not in SEGMENTATIONS:
        raise ConfigError(f"unknown segmentation '{method}'; use {' or '.join(SEGMENTATIONS)}")
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ConfigError(f"n_segments must be a positive integer, not {n_segments!r}")
    if not float(compactness) > 0:
        raise ConfigError(f"compactness must be positive, not {compactness!r}")
    if images.dim() != 4:
        raise ConfigError(f"superpixels need an (N, C, H, W) batch, not shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    if method == "grid":
        return relabel(grid_labels(h, w, int(n_segments), images.device)).expand(n, h, w).clone()
    if c not in (1, 3):
        raise ConfigError(f"slic needs 1- or 3-channel images, not {c} channels")
    arr = images.detach().float().clamp(0, 1).cpu().numpy().astype(np.float64)
    out = torch.empty(n, h, w, dtype=torch.long)
    for i in range(n):
        out[i] = relabel(torch.from_numpy(_slic(arr[i], int(n_segments), float(compactness)).astype(np.int64)))
    return out.to(images.device)


def label_masks(labels: torch.Tensor) -> torch.Tensor:
    """One-hot region masks (K, 1, H, W) float32 of contiguous labels (H, W) 0..K-1."""
    k = int(labels.max()) + 1
    return (labels[None] == torch.arange(k, device=labels.device)[:, None, None]).float()[:, None]


def region_means(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each pixel replaced by the mean colour of its region: (N, C, H, W) from images (N, C, H, W)
    and labels (N, H, W) (the ``lime`` package's default fill, ``hide_color=None``)."""
    n, c, h, w = images.shape
    k = int(labels.max()) + 1
    idx = (labels.reshape(n, 1, h * w) + torch.arange(n, device=labels.device)[:, None, None] * k).expand(n, c, h * w)
    flat = images.float().permute(1, 0, 2, 3).reshape(c, n * h * w)
    gid = idx.permute(1, 0, 2).reshape(c, n * h * w)
    sums = torch.zeros(c, n * k, device=images.device).scatter_add_(1, gid, flat)
    ones = torch.ones(n * h * w, device=images.device)
    counts = torch.zeros(n * k, device=images.device).scatter_add_(0, gid[0], ones)
    means = sums / counts.clamp_min(1)
    return means.gather(1, gid).reshape(c, n, h, w).permute(1, 0, 2, 3).to(images.dtype)
