"""Pictures for people: attribution heatmaps over images, and grids (matplotlib, Agg).

Maps are reduced to one channel by summing over colour channels, clipped at the 99.5th
percentile of their magnitude (the usual choice in the field, so a few extreme pixels do
not wash the map out), and drawn with a diverging colour map (``bwr``, symmetric limits,
white = 0) for signed methods or a sequential one (``inferno``) for unsigned ones.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_map", "overlay_png", "grid_png"]


def to_map(attr: np.ndarray, signed: bool, percentile: float = 99.5) -> tuple[np.ndarray, float, float]:
    """(C, H, W) attributions -> (H, W) map and colour limits (vmin, vmax)."""
    m = attr.sum(0) if attr.ndim == 3 else attr
    top = float(np.percentile(np.abs(m), percentile)) or float(np.abs(m).max()) or 1.0
    if signed:
        return np.clip(m, -top, top), -top, top
    m = np.clip(m, 0, None)
    return np.clip(m, 0, top), 0.0, top


def _image(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) for imshow."""
    img = np.clip(img, 0, 1)
    return img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)


def _figure(ncols: int, nrows: int, size: float = 2.2):
    import matplotlib  # noqa: PLC0415 (heavy: imported when used)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415 (heavy: imported when used)

    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.6, size * nrows), squeeze=False)
    return plt, fig, axes


def _draw(ax, img: np.ndarray, attr: np.ndarray, signed: bool):
    m, lo, hi = to_map(attr, signed)
    ax.imshow(_image(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(m, cmap="bwr" if signed else "inferno", vmin=lo, vmax=hi, alpha=0.6, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def overlay_png(img: np.ndarray, attr: np.ndarray, signed: bool, title: str = "") -> bytes:
    """PNG bytes: the image, the map over it, and a colour bar."""
    plt, fig, axes = _figure(2, 1)
    axes[0, 0].imshow(_image(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1,
                      interpolation="nearest")
    axes[0, 0].set_xticks([])
    axes[0, 0].set_yticks([])
    im = _draw(axes[0, 1], img, attr, signed)
    fig.colorbar(im, ax=axes[0, 1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=9)
    return _png(plt, fig)


def grid_png(images: np.ndarray, attrs: Sequence[np.ndarray], methods: Sequence[str], signed: Sequence[bool],
             row_titles: Sequence[str] = ()) -> bytes:
    """PNG bytes: one row per image, the image then one column per method."""
    n = len(images)
    plt, fig, axes = _figure(len(methods) + 1, n)
    for i in range(n):
        axes[i, 0].imshow(_image(images[i]), cmap="gray" if images[i].shape[0] == 1 else None, vmin=0, vmax=1,
                          interpolation="nearest")
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        if i < len(row_titles):
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
        for j, (a, s) in enumerate(zip(attrs, signed)):
            _draw(axes[i, j + 1], images[i], a[i], s)
            if i == 0:
                axes[i, j + 1].set_title(methods[j], fontsize=9)
    if n:
        axes[0, 0].set_title("image", fontsize=9)
    return _png(plt, fig)


def bcos_rgba(weights: np.ndarray, contributions: np.ndarray, smooth: int = 15,
              percentile: float = 99.5) -> np.ndarray:
    """The B-cos papers' colour rendering of W_c(x) (Böhle et al. 2022, section 4).

    ``weights`` (2C, H, W) is the dynamic linear map on the [x, 1-x] encoding and
    ``contributions`` (H, W) its per-pixel contribution map.  Per pixel the 6-vector is
    scaled so its largest magnitude is 1, negatives are dropped, and RGB = w[:3] / (w[:3] +
    w[3:]); alpha is the vector's norm (zero where the contribution is negative), smoothed
    with a ``smooth``-pixel box filter and divided by its ``percentile``.  Returns (H, W, 4)
    floats in [0, 1].

    The smoothing is the official ``grad_to_img`` (github.com/moboehle/B-cos,
    ``interpretability/utils.py``): ``avg_pool2d(alpha, smooth, stride=1, padding=(smooth-1)//2)``
    with the padding counted as zeros, so alpha fades towards the border (of a constant alpha a
    corner keeps ((smooth+1)/2)² / smooth², 64/225 at 15).  For an even ``smooth`` (where the
    official code returns one row and column too few) the window is [i - smooth/2 + 1, i + smooth/2].
    """
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    contribs = torch.as_tensor(np.asarray(contributions, dtype=np.float64))
    alpha = w.norm(dim=0)
    w = (w / (w.abs().amax(0, keepdim=True) + 1e-12)).clamp_min(0)
    c = w.shape[0] // 2  # 3 for colour images; grey images render as grey
    rgb = (w[:c] / (w[:c] + w[c:] + 1e-12)).expand(3, -1, -1)
    alpha = torch.where(contribs < 0, torch.full_like(alpha, 1e-12), alpha)
    if smooth > 1:  # B-cos: F.avg_pool2d(alpha, smooth, stride=1, padding=(smooth - 1) // 2), zeros counted
        lo, hi = (smooth - 1) // 2, smooth // 2  # hi = lo for odd smooth; even: one more row/column after
        alpha = F.avg_pool2d(F.pad(alpha[None, None], (lo, hi, lo, hi)), smooth, stride=1)[0, 0]
    top = float(np.percentile(alpha.numpy(), percentile)) or 1.0
    alpha = (alpha / top).clamp(0, 1)
    return torch.cat([rgb, alpha[None]]).permute(1, 2, 0).numpy()
