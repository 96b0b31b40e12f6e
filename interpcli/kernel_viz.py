"""Pictures of kernels and unit gradients: labelled tile grids, kernel montages, animations
(GIF, MP4 when an encoder is installed), the feature-map figure and the loss-profile figure;
and the output folder they are written into (replaced as a whole, as ``Attributions.save``).

Tiles are composed with Pillow, pixel for pixel: each tile is upscaled by one integer factor
(nearest neighbour) to at least :data:`MIN_TILE` pixels on its shorter side, so a 5x5 kernel
is a readable 65x65 block, and :class:`Grid` says where every tile landed (tests read the
pixels back).  Kernels share one scale per picture (and per animation): ``symmetric`` maps
[-m, m] to [0, 1] (0 is mid-grey), ``positive`` maps [0, m] to [0, 1] (for weights >= 0).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from . import artifacts
from .errors import ArtifactError, ConfigError
from .viz import fig_png, pyplot

try:  # the MP4 encoder is optional: a notice when neither it nor an ffmpeg binary is there
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - depends on the environment
    imageio_ffmpeg = None

__all__ = ["Grid", "tile_grid", "render", "render_tile", "column_labels", "gradient_grid", "kernel_tiles",
           "kernel_limit", "kernel_montage", "gif_bytes", "ffmpeg_exe", "mp4_bytes", "strip", "feature_map_png",
           "png_bytes", "write_folder", "RENDERS", "SCALES", "MIN_TILE"]

MIN_TILE = 64      # shorter side of a tile in pixels after upscaling
GRADIENT_TILE = 96  # the same for images and gradients (a 32x32 image is shown 96x96)
GAP = 4            # pixels between tiles
FONT_PX = 13
SCALES = ("auto", "symmetric", "positive")
RENDERS = ("minmax", "percentile")
_DPI = 100


def _font(size: int = FONT_PX) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    """(width, height) of ``text``; the height counts lines of the font's full line height, so
    a layout does not depend on which letters a text has (frames of an animation line up)."""
    if not text:
        return 0, 0
    x0, _, x1, _ = draw.multiline_textbbox((0, 0), text, font=font, spacing=2)
    ascent, descent = font.getmetrics()
    lines = text.count("\n") + 1
    return x1 - min(x0, 0), lines * (ascent + descent) + (lines - 1) * 2


@dataclasses.dataclass
class Grid:
    """A composed picture: ``image`` (H, W, 3) uint8; tile (r, c) is at ``origin[(r, c)]`` (y, x),
    ``factor`` times its size in pixels."""

    image: np.ndarray
    origin: dict[tuple[int, int], tuple[int, int]]
    factor: int
    tile_shape: tuple[int, int]

    def tile(self, r: int, c: int) -> np.ndarray:
        """The pixels of tile (r, c) at their original size (every ``factor``-th pixel)."""
        y, x = self.origin[(r, c)]
        h, w = self.tile_shape
        return self.image[y : y + h * self.factor : self.factor, x : x + w * self.factor : self.factor]

    def png(self, text: dict[str, str] | None = None) -> bytes:
        return png_bytes(self.image, text)


def png_bytes(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of an (H, W) or (H, W, 3) uint8 image, with optional tEXt chunks."""
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _rgb(tile: np.ndarray) -> np.ndarray:
    return np.repeat(tile[..., None], 3, axis=-1) if tile.ndim == 2 else tile[..., :3]


def tile_grid(tiles: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str] = (),
              col_labels: Sequence[str] = (), captions: Sequence[Sequence[str]] | None = None, title: str = "",
              min_tile: int = MIN_TILE, title_colour: str = "black") -> Grid:
    """Tiles (rows of (h, w) or (h, w, 3) uint8 arrays of one size; None leaves a gap) as one
    labelled picture: a title on top, column labels above the first row, row labels on the
    left, an optional caption above each tile."""
    cells = [(r, c, t) for r, row in enumerate(tiles) for c, t in enumerate(row) if t is not None]
    if not cells:
        raise ConfigError("nothing to draw")
    h, w = cells[0][2].shape[:2]
    k = max(1, math.ceil(min_tile / max(1, min(h, w))))
    th, tw = h * k, w * k
    n_rows, n_cols = len(tiles), max(len(row) for row in tiles)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max([_text_size(probe, s, font)[0] for s in row_labels] or [0]) + (2 * GAP if row_labels else GAP)
    cap_h = max([_text_size(probe, s, font)[1] for row in (captions or []) for s in row] or [0])
    cap_h += 2 if cap_h else 0
    col_w = max([_text_size(probe, s, font)[0] for s in col_labels] or [0])
    tw_cell = max(tw, col_w + GAP, max([_text_size(probe, s, font)[0] for row in (captions or []) for s in row]
                                       or [0]) + GAP)
    top = GAP + (_text_size(probe, title, font)[1] + 2 * GAP if title else 0)
    head = (_text_size(probe, "\n".join(col_labels[:1]) or "x", font)[1] + GAP if col_labels else 0)
    width = max(left + n_cols * (tw_cell + GAP), _text_size(probe, title, font)[0] + 2 * GAP)
    height = top + head + n_rows * (th + cap_h + GAP) + GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.multiline_text((GAP, GAP), title, fill=title_colour, font=font, spacing=2)
    for c, label in enumerate(col_labels[:n_cols]):
        draw.text((left + c * (tw_cell + GAP), top), label, fill="black", font=font)
    origin: dict[tuple[int, int], tuple[int, int]] = {}
    for r in range(n_rows):
        y = top + head + r * (th + cap_h + GAP)
        if r < len(row_labels):
            lh = _text_size(probe, row_labels[r], font)[1]
            draw.multiline_text((GAP, y + cap_h + max(0, (th - lh) // 2)), row_labels[r], fill="black", font=font,
                                spacing=2)
        for c in range(len(tiles[r])):
            x = left + c * (tw_cell + GAP)
            if captions is not None and r < len(captions) and c < len(captions[r]) and captions[r][c]:
                draw.text((x, y), captions[r][c], fill="black", font=font)
    out = np.asarray(canvas).copy()
    for r, c, t in cells:
        if t.shape[:2] != (h, w):
            raise ConfigError(f"tiles of different sizes: {t.shape[:2]} and {(h, w)}")
        y = top + head + r * (th + cap_h + GAP) + cap_h
        x = left + c * (tw_cell + GAP)
        out[y : y + th, x : x + tw] = np.repeat(np.repeat(_rgb(t), k, axis=0), k, axis=1)
        origin[(r, c)] = (y, x)
    return Grid(out, origin, k, (h, w))


# ---------------------------------------------------------------------------------------------- gradients

def render(g: np.ndarray | torch.Tensor, how: str = "minmax", percentile: float = 99.0) -> np.ndarray:
    """Gradients (..., C, H, W) -> float images in [0, 1], each (C, H, W) on its own: ``minmax``
    maps its [min, max] to [0, 1] (a constant image to 1/2); ``percentile`` maps [-p, p] to
    [0, 1] and clips, p the ``percentile`` of |g| (0 stays mid-grey)."""
    a = np.asarray(g.detach().cpu() if isinstance(g, torch.Tensor) else g, dtype=np.float64)
    flat = a.reshape(*a.shape[:-3], -1)
    if how == "minmax":
        lo, hi = flat.min(-1, keepdims=True), flat.max(-1, keepdims=True)
        span = hi - lo
        out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), 0.5)
    elif how == "percentile":
        p = np.percentile(np.abs(flat), percentile, axis=-1, keepdims=True)
        p = np.where(p > 0, p, np.abs(flat).max(-1, keepdims=True))
        out = np.clip(flat / (2 * np.where(p > 0, p, 1)) + 0.5, 0, 1)
    else:
        raise ConfigError(f"render must be {', '.join(RENDERS)}; got '{how}'")
    return out.reshape(a.shape)


def render_tile(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    u = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return u[0] if u.shape[0] == 1 else np.moveaxis(u[:3], 0, -1)


def column_labels(kinds: Sequence[str], sources: Sequence[str]) -> list[str]:
    """``noise i`` for noise samples (counted apart); for images a file's name, or the
    ``split:index`` of a dataset (or ``path:index`` of an NPZ) row."""
    out, n = [], 0
    for kind, src in zip(kinds, sources):
        if kind == "noise":
            out.append(f"noise {n}")
            n += 1
        else:
            p = Path(src)
            out.append(p.name if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp") else
                       src.split(":", 1)[-1] if src.count(":") >= 2 else p.name or src)
    return out


def gradient_grid(gradients: torch.Tensor, inputs: torch.Tensor, col_labels: Sequence[str],
                  unit_names: Sequence[str], how: str = "minmax", percentile: float = 99.0,
                  mean: torch.Tensor | None = None, title: str = "") -> np.ndarray:
    """(U, N, C, H, W) gradients as a picture: the N inputs in a first row, then one row per
    unit, each gradient rendered on its own (:func:`render`); ``mean`` (U, C, H, W) adds a
    last column ``mean``."""
    cols = [render(gradients[:, i], how, percentile) for i in range(gradients.shape[1])]
    labels = list(col_labels)
    if mean is not None:
        cols.append(render(mean, how, percentile))
        labels.append("mean")
    tiles = [[render_tile(x) for x in np.asarray(inputs)] + [None] * (len(cols) - len(inputs))]
    tiles += [[render_tile(c[u]) for c in cols] for u in range(len(unit_names))]
    return tile_grid(tiles, ["input", *unit_names], labels, title=title, min_tile=GRADIENT_TILE).image



# ---------------------------------------------------------------------------------------------- kernels

def kernel_limit(weights: np.ndarray, scale: str = "auto") -> tuple[str, float]:
    """(scale actually used, m): ``auto`` is ``positive`` when every weight is >= 0, else
    ``symmetric``; m is the largest magnitude (1 for all-zero weights)."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be {', '.join(SCALES)}; got '{scale}'")
    w = np.asarray(weights, dtype=np.float64)
    if scale == "auto":
        scale = "positive" if w.size and float(w.min()) >= 0 else "symmetric"
    m = float(np.abs(w).max()) if w.size else 0.0
    return scale, (m if m > 0 else 1.0)


def kernel_tiles(weights: np.ndarray, scale: str, m: float, colour: bool) -> list[list[np.ndarray]]:
    """(O, I, kh, kw) kernels -> uint8 tiles: one RGB tile per kernel when ``colour`` (I == 3),
    else one grey tile per (kernel, input channel); value v -> round(255 (v / 2m + 1/2))
    (``symmetric``) or round(255 v / m) (``positive``), clipped."""
    w = np.asarray(weights, dtype=np.float64)
    v = w / (2 * m) + 0.5 if scale == "symmetric" else w / m
    v = np.round(np.clip(v, 0, 1) * 255).astype(np.uint8)
    if colour:
        return [[np.moveaxis(k, 0, -1)] for k in v]
    return [list(k) for k in v]


def kernel_montage(weights: np.ndarray, indices: Sequence[int] | None = None, scale: str = "auto",
                   m: float | None = None, columns: int | None = None, title: str = "",
                   min_tile: int = MIN_TILE) -> Grid:
    """A montage of (O, I, kh, kw) kernels: RGB kernels (I == 3) and single-channel ones in a
    near-square grid with each tile captioned by its kernel index; others one row per kernel
    (labelled) and one grey column per input channel.  ``m``: the scale's limit (default the
    largest magnitude shown), so several montages can share one scale."""
    w = np.asarray(weights)
    if w.ndim != 4:
        raise ConfigError(f"kernels must be (out, in, kh, kw); got shape {w.shape}")
    idx = list(range(len(w))) if indices is None else list(indices)
    scale, auto_m = kernel_limit(w[idx], scale)
    m = auto_m if m is None else m
    colour = w.shape[1] == 3
    tiles = kernel_tiles(w[idx], scale, m, colour)
    if colour or w.shape[1] == 1:
        cols = columns or max(1, math.ceil(math.sqrt(len(idx))))
        flat = [t[0] for t in tiles]
        rows = [flat[i : i + cols] for i in range(0, len(flat), cols)]
        caps = [[f"k{idx[i + j]}" for j in range(len(row))] for i, row in zip(range(0, len(flat), cols), rows)]
        return tile_grid(rows, captions=caps, title=title, min_tile=min_tile)
    return tile_grid(tiles, row_labels=[f"k{i}" for i in idx], col_labels=[f"in {c}" for c in range(w.shape[1])],
                     title=title, min_tile=min_tile)


# ---------------------------------------------------------------------------------------------- animation

def gif_bytes(frames: Sequence[np.ndarray], duration_ms: int = 250) -> bytes:
    """An animated GIF (looping) of (H, W, 3) uint8 frames, one GIF frame per frame."""
    ims = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.MEDIANCUT) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(duration_ms), loop=0,
                optimize=False, disposal=1)
    return buf.getvalue()


def ffmpeg_exe() -> str | None:
    """An ffmpeg binary: imageio-ffmpeg's, else one on PATH; None when there is none."""
    if imageio_ffmpeg is not None:
        try:
            return imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:  # pragma: no cover - the package without its binary
            pass
    return shutil.which("ffmpeg")


def mp4_bytes(frames: Sequence[np.ndarray], fps: float, exe: str) -> bytes:
    """An H.264 MP4 of (H, W, 3) uint8 frames, encoded by the ffmpeg binary ``exe``."""
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.mp4")
        cmd = [exe, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r",
               f"{fps:g}", "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2:color=white", "-pix_fmt", "yuv420p",
               "-c:v", "libx264", path]
        r = subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames),
                           capture_output=True, check=False)
        if r.returncode != 0:
            raise ArtifactError(f"ffmpeg could not write the MP4: {r.stderr.decode(errors='replace').strip()[:300]}")
        return Path(path).read_bytes()


def strip(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Frames of one size side by side, separated by white gaps."""
    h, w = frames[0].shape[:2]
    gap = 4 * GAP
    out = np.full((h, len(frames) * (w + gap) - gap, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        out[:, i * (w + gap) : i * (w + gap) + w] = f
    return out


# ---------------------------------------------------------------------------------------------- figures

def feature_map_png(image: np.ndarray, kernel_tile: np.ndarray, fmap: np.ndarray, title: str = "") -> bytes:
    """The "do a convolution" figure: the image (C, H, W) in [0, 1], the kernel (a uint8 tile
    of :func:`kernel_tiles`, or a montage) and the feature map (h, w) on a diverging scale
    with a colour bar."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9), dpi=_DPI)
    img = np.clip(image, 0, 1)
    axes[0].imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1), cmap="gray", vmin=0, vmax=1,
                   interpolation="nearest")
    axes[0].set_title("image", fontsize=10)
    axes[1].imshow(kernel_tile, cmap="gray", vmin=0, vmax=255, interpolation="nearest")  # grey: (h, w)
    axes[1].set_title("kernel", fontsize=10)
    top = float(np.abs(fmap).max()) or 1.0
    im = axes[2].imshow(fmap, cmap="bwr", vmin=-top, vmax=top, interpolation="nearest")
    axes[2].set_title("feature map", fontsize=10)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig_png(plt, fig, _DPI, 0.1)


# ---------------------------------------------------------------------------------------------- output folder

def write_folder(out_dir: str | os.PathLike, write: Callable[[Path], list[Path]], force: bool = False) -> list[Path]:
    """Call ``write(tmp)`` to fill a temporary folder beside ``out_dir``, then rename it into place
    (:func:`~interpcli.artifacts.staged_folder`: an existing non-empty folder only with ``force``,
    replaced as a whole); returns the written files under ``out_dir``."""
    with artifacts.staged_folder(out_dir, force) as tmp:
        names = write(tmp)
    return [Path(out_dir) / Path(f).relative_to(tmp) for f in names]
