"""Pictures for people: attribution heatmaps over images, and grids (matplotlib, Agg).

Maps are reduced to one channel by summing over colour channels, clipped at the 99.5th
percentile of their magnitude (the usual choice in the field, so a few extreme pixels do
not wash the map out), and drawn with a diverging colour map (``bwr``, symmetric limits,
white = 0) for signed methods or a sequential one (``inferno``) for unsigned ones.

Every image panel is at least :data:`PANEL_PX` pixels on its shorter side (nearest-neighbour
upscaling: 8x8 digits and 32x32 CIFAR images stay readable); raw pictures (the B-cos colour
rendering, overlays at an input file's own size) are upscaled by an integer factor to at least
:data:`MIN_SIDE` pixels.  Titles name the true label, the prediction and the target, and a
misclassified row (prediction != a known label) is drawn in red with a ``✗ wrong`` marker.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["pyplot", "fig_png", "to_map", "overlay_png", "grid_png", "row_title", "upscale", "blend", "source_pixels",
           "original_overlay", "bcos_rgba", "PANEL_PX", "MIN_SIDE"]

PANEL_PX = 200   # pixels of an image panel in overlays and grids (shorter side)
MIN_SIDE = 128   # raw pictures are upscaled by an integer factor to at least this (shorter side)
_DPI = 100
_ALPHA = 0.6     # opacity of the map over the image
_WRONG = "tab:red"


def row_title(source: str, target: str, pred: str, label: str | None, method: str = "",
              sep: str = "   ") -> tuple[str, bool]:
    """Title of one (image, target) row and whether the model got the image wrong.

    ``label`` is the true class name (None: unknown, shown as ``?``); ``wrong`` is prediction !=
    label when the label is known.  The text is ``source  (method)`` on a first line (left out
    when both are empty), then ``label L``, ``pred P`` (``✗ wrong`` when wrong) and
    ``target T`` joined by ``sep``."""
    wrong = label is not None and pred != label
    parts = [f"label {'?' if label is None else label}", f"pred {pred}" + ("  ✗ wrong" if wrong else ""),
             f"target {target}"]
    head = "  ".join(s for s in (source, f"({method})" if method else "") if s)
    return (f"{head}\n" if head else "") + sep.join(parts), wrong


def to_map(attr: np.ndarray, signed: bool, percentile: float = 99.5) -> tuple[np.ndarray, float, float]:
    """(C, H, W) attributions -> (H, W) map and colour limits (vmin, vmax)."""
    m = attr.sum(0) if attr.ndim == 3 else attr
    top = float(np.percentile(np.abs(m), percentile)) or float(np.abs(m).max()) or 1.0
    if signed:
        return np.clip(m, -top, top), -top, top
    m = np.clip(m, 0, None)
    return np.clip(m, 0, top), 0.0, top


def upscale(a: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """(H, W, ...) -> (kH, kW, ...) by nearest neighbour (each pixel a k x k block), with the
    smallest integer k >= 1 that makes the shorter side at least ``min_side``."""
    k = max(1, math.ceil(min_side / max(1, min(a.shape[:2]))))
    return a if k == 1 else np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def _image(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) for imshow."""
    img = np.clip(img, 0, 1)
    return img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)


def _cmap(signed: bool):
    import matplotlib  # noqa: PLC0415 (heavy: imported when used)

    return matplotlib.colormaps["bwr" if signed else "inferno"]


def blend(img: np.ndarray, attr: np.ndarray, signed: bool) -> np.ndarray:
    """(C, H, W) image and (C or 1, H, W) or (H, W) map -> (H, W, 3) uint8: the coloured map at
    opacity 0.6 over the image, as in the overlays (same colour maps and limits)."""
    m, lo, hi = to_map(attr, signed)
    colours = _cmap(signed)((m - lo) / ((hi - lo) or 1.0))[..., :3]
    base = _image(img)
    base = np.repeat(base[..., None], 3, axis=-1) if base.ndim == 2 else base
    return np.round((_ALPHA * colours + (1 - _ALPHA) * base) * 255).astype(np.uint8)


def source_pixels(source: str, like: np.ndarray, tol: float = 2 / 255) -> np.ndarray | None:
    """The pixels (C, H0, W0) in [0, 1] of an image-file ``source`` at the file's own size, when
    the file was resized to give ``like`` (the (C, H, W) image explained); None for other sources
    (dataset rows, NPZ entries), files of the model's size, files no longer readable, and files
    that no longer resize (bilinear, as the inputs are read) to ``like`` within ``tol``."""
    p = Path(source)
    c, h, w = like.shape
    try:
        if not p.is_file():
            return None
        with Image.open(p) as im:
            im = im.convert("RGB" if c == 3 else "L")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if im.size == (w, h):
        return None
    small = np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    small = small[None] if small.ndim == 2 else np.moveaxis(small, -1, 0)
    if small.shape != like.shape or float(np.abs(small - like).max()) > tol:
        return None
    a = np.asarray(im, dtype=np.float32) / 255
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def original_overlay(original: np.ndarray, attr: np.ndarray, signed: bool) -> np.ndarray:
    """The map (C or 1, H, W), summed over channels and upsampled bilinearly to the original
    image's size (C, H0, W0), blended over it: (H0, W0, 3) uint8, upscaled (integer factor,
    nearest) when the original's shorter side is under :data:`MIN_SIDE`."""
    m = attr.sum(0) if attr.ndim == 3 else attr
    up = F.interpolate(torch.as_tensor(m, dtype=torch.float32)[None, None], size=original.shape[1:],
                       mode="bilinear", align_corners=False)[0, 0].numpy()
    return upscale(blend(original, up, signed))


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it is heavy)."""
    import matplotlib  # noqa: PLC0415 (heavy: imported when used)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415 (heavy: imported when used)

    return plt


def fig_png(plt, fig, dpi: int = _DPI, pad: float = 0.05) -> bytes:
    """PNG bytes of a matplotlib figure (closed after), cropped to its content."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=pad)
    plt.close(fig)
    return buf.getvalue()


def _figure(width: float, height: float):
    """A figure of ``width`` x ``height`` inches (axes are placed with :func:`_axes`)."""
    plt = pyplot()
    return plt, plt.figure(figsize=(width, height), dpi=_DPI)


def _axes(fig, x: float, y: float, w: float, h: float):
    """Axes at (x, y) inches from the top-left corner, w x h inches: exact pixel sizes."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((x / fw, 1 - (y + h) / fh, w / fw, h / fh))


def _panel(shape: Sequence[int]) -> tuple[float, float]:
    """Inches (w, h) of a panel for an image of ``shape`` (..., H, W): PANEL_PX on the shorter side."""
    h, w = shape[-2:]
    side = PANEL_PX / _DPI / min(h, w)
    return w * side, h * side


def _show(ax, img: np.ndarray, attr: np.ndarray | None = None, signed: bool = True, wrong: bool = False):
    ax.imshow(_image(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    im = None
    if attr is not None:
        m, lo, hi = to_map(attr, signed)
        im = ax.imshow(m, cmap=_cmap(signed), vmin=lo, vmax=hi, alpha=_ALPHA, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if wrong:
        for s in ax.spines.values():
            s.set_edgecolor(_WRONG)
            s.set_linewidth(3)
    return im


def overlay_png(img: np.ndarray, attr: np.ndarray, signed: bool, title: str = "", wrong: bool = False) -> bytes:
    """PNG bytes: the image, the map over it, and a colour bar; the title (and the image's frame)
    in red when ``wrong``.  Each panel is :data:`PANEL_PX` pixels on its shorter side."""
    pw, ph = _panel(img.shape)
    gap, bar, top = 0.15, 0.12, 0.15 + 0.16 * (title.count("\n") + 1 if title else 0)
    plt, fig = _figure(2 * pw + 2 * gap + bar + 0.6, ph + top + 0.1)
    _show(_axes(fig, 0.05, top, pw, ph), img, wrong=wrong)
    im = _show(_axes(fig, 0.05 + pw + gap, top, pw, ph), img, attr, signed)
    fig.colorbar(im, cax=_axes(fig, 0.05 + 2 * pw + 2 * gap - 0.05, top, bar, ph))
    if title:
        fig.text(0.05 / fig.get_size_inches()[0], 1 - 0.08 / fig.get_size_inches()[1], title, fontsize=9,
                 va="top", ha="left", color=_WRONG if wrong else "black")
    return fig_png(plt, fig)


def grid_png(images: np.ndarray, attrs: Sequence[np.ndarray], methods: Sequence[str], signed: Sequence[bool],
             row_titles: Sequence[str] = (), wrong: Sequence[bool] = ()) -> bytes:
    """PNG bytes: one row per image, the image then one column per method; a row's title (left
    of its image) and the image's frame in red when ``wrong[i]``.  Panels are :data:`PANEL_PX`
    pixels on their shorter side."""
    n, k = len(images), len(methods) + 1
    pw, ph = _panel(images.shape)
    gap, left, top = 0.08, 0.2 + 0.15 * max([t.count("\n") + 1 for t in row_titles] or [0]), 0.3
    plt, fig = _figure(left + k * (pw + gap), top + n * (ph + gap))
    for i in range(n):
        bad = i < len(wrong) and bool(wrong[i])
        y = top + i * (ph + gap)
        ax = _axes(fig, left, y, pw, ph)
        _show(ax, images[i], wrong=bad)
        if i < len(row_titles):
            ax.set_ylabel(row_titles[i], fontsize=8, color=_WRONG if bad else "black")
        if i == 0:
            ax.set_title("image", fontsize=9)
        for j, (a, s) in enumerate(zip(attrs, signed)):
            ax = _axes(fig, left + (j + 1) * (pw + gap), y, pw, ph)
            _show(ax, images[i], a[i], s)
            if i == 0:
                ax.set_title(methods[j], fontsize=9)
    return fig_png(plt, fig)


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
