"""The grid pointing game of the B-cos papers (Böhle et al., CVPR 2022 and TPAMI 2024; the
localisation metric of CoDA-Nets, Böhle et al. CVPR 2021).

Confidently and correctly classified images of ``grid * grid`` distinct classes are tiled into
one mosaic; an attribution map is computed for each cell's class, and its score is the share
of the map's positive attribution that falls inside that class's cell.  A perfectly localising
method scores 1 (the oracle); a map spread evenly scores 1 / grid² (the uniform baseline).

This follows ``interpretability/analyses/localisation.py`` of github.com/B-cos/B-cos-v2
(@ f6dc4fb) and github.com/moboehle/B-cos (@ 4cd3b8f): image selection
(``get_sorted_indices``), column-major tiling (``make_multi_image``) and scoring
(``analysis``); ``docs/consistency.md`` lists the places where it deliberately differs.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..device import model_device
from ..errors import ConfigError
from ..methods import attribute, get_method

__all__ = ["PointingResult", "cell_of", "select_mosaics", "build_mosaics", "pointing_scores", "pointing_game"]


def cell_of(k: int, grid: int) -> tuple[int, int]:
    """(row, col) of block element ``k`` in the mosaic: filled column by column, as the
    reference's ``view(-1, g, g, C, H, W).permute(0, 3, 2, 4, 1, 5)`` does."""
    return k % grid, k // grid


def _check_grid(grid: int) -> int:
    if int(grid) != grid or grid < 2:
        raise ConfigError(f"the pointing-game grid must be an integer >= 2, got {grid}")
    return int(grid)


def select_mosaics(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, grid: int,
                   n_mosaics: int, *, conf_thresh: float = 0.5, seed: int = 42) -> np.ndarray:
    """Dataset indices of up to ``n_mosaics`` blocks of ``grid²`` images, one row per mosaic.

    As the reference's ``get_sorted_indices``: only correctly classified images (argmax of
    ``logits`` == label) take part; each class's images are sorted by the logit of their class,
    highest first (a stable sort: ties keep dataset order).  A class is *available* while its
    next unused image has sigmoid(logit) > ``conf_thresh`` (strictly; computed in float64).  While
    strictly more than n = grid² classes are available (the reference's ``mask.sum() > n_imgs``),
    n distinct available classes are drawn with ``numpy.random.RandomState(seed).choice(...,
    replace=False)`` (the reference seeds numpy's global generator with 42 and draws with
    ``np.random.choice``: the same stream, so the same classes) and each contributes its next most
    confident unused image.  Stops after ``n_mosaics`` blocks, or earlier when too few classes
    remain (the caller warns); the result then has fewer rows (possibly none).
    """
    n = _check_grid(grid) ** 2
    logits = torch.as_tensor(logits).detach().double().cpu().numpy()
    labels = torch.as_tensor(labels).detach().long().cpu().numpy()
    if logits.ndim != 2 or len(labels) != len(logits):
        raise ConfigError(f"logits {logits.shape} and labels {labels.shape} do not match")
    k = logits.shape[1]
    rows = np.arange(len(labels))
    correct = (logits.argmax(1) == labels) & (labels >= 0)
    queues, conf = [], []
    for c in range(k):
        idx = rows[correct & (labels == c)]
        own = logits[idx, c]
        order = np.argsort(-own, kind="stable")
        queues.append(idx[order])
        with np.errstate(over="ignore"):  # exp overflow -> sigmoid 0, as it should
            conf.append(1.0 / (1.0 + np.exp(-own[order])) > conf_thresh)
    pos = np.zeros(k, dtype=np.int64)
    available = np.array([len(q) > 0 and bool(conf[c][0]) for c, q in enumerate(queues)])
    classes = np.arange(k)
    rng = np.random.RandomState(seed)
    blocks: list[list[int]] = []
    while available.sum() > n and len(blocks) < n_mosaics:
        block = []
        for c in rng.choice(classes[available], size=n, replace=False):
            block.append(int(queues[c][pos[c]]))
            pos[c] += 1
            available[c] = pos[c] < len(queues[c]) and bool(conf[c][pos[c]])
        blocks.append(block)
    return np.asarray(blocks, dtype=np.int64).reshape(-1, n)


def build_mosaics(images: torch.Tensor, blocks: np.ndarray | torch.Tensor, grid: int, *,
                  rescale: bool = False) -> torch.Tensor:
    """(M, C, grid*H, grid*W) mosaics of ``images`` (N, C, H, W); element k of block m goes to
    cell :func:`cell_of` (k, grid).

    ``rescale``: each image is first shrunk to (H // grid, W // grid) (bilinear with
    antialiasing, i.e. area-weighted, as torchvision's ``Resize`` on the reference's data
    pipeline), so the mosaic has about the original size; where H or W is not a multiple of
    ``grid`` the mosaic is padded with zeros at the bottom / right to exactly (H, W) (a strip
    that belongs to no cell; attribution there counts in the total only).
    """
    g = _check_grid(grid)
    blocks = torch.as_tensor(np.asarray(blocks), dtype=torch.long)
    if blocks.dim() != 2 or blocks.shape[1] != g * g:
        raise ConfigError(f"blocks must be (mosaics, {g * g}), got {tuple(blocks.shape)}")
    n, c, h, w = images.shape
    x = images[blocks.reshape(-1).to(images.device)]
    if rescale:
        if h < g or w < g:
            raise ConfigError(f"images of {h}x{w} cannot be shrunk by {g}")
        x = F.interpolate(x, size=(h // g, w // g), mode="bilinear", antialias=True, align_corners=False)
    ch, cw = x.shape[-2:]
    mos = x.reshape(-1, g, g, c, ch, cw).permute(0, 3, 2, 4, 1, 5).reshape(-1, c, g * ch, g * cw)
    if rescale and (g * ch, g * cw) != (h, w):
        mos = F.pad(mos, (0, w - g * cw, 0, h - g * ch))
    return mos


def _smooth(x: torch.Tensor, k: int) -> torch.Tensor:
    """Box filter of size k, stride 1, output the size of the input, zero padding counted in the
    average (the reference's ``F.avg_pool2d(a, k, stride=1, padding=(k - 1) // 2)`` for odd k;
    an even k is padded one more at the bottom / right instead of shrinking the map)."""
    lo, hi = (k - 1) // 2, k // 2
    return F.avg_pool2d(F.pad(x, (lo, hi, lo, hi)), k, stride=1)


def pointing_scores(maps: torch.Tensor, grid: int, *, smooth: int = 0, size: tuple[int, int] | None = None,
                    cell: tuple[int, int] | None = None) -> torch.Tensor:
    """Pointing-game scores (M, grid²), float64, of maps (M, grid², Hm, Wm).

    ``maps[m, k]`` is the attribution for the class of cell k of mosaic m, already summed over
    channels (signed).  Steps, as the reference: optional box smoothing with kernel ``smooth``
    (0 or 1: none; see :func:`_smooth`), clamp at 0, score = positive attribution inside cell k
    (rows ``r*h:(r+1)*h``, columns ``c*w:(c+1)*w`` with (r, c) = :func:`cell_of` (k)) / positive
    attribution in the whole map; 0 where either is 0.

    ``size``: the mosaic's (H, W); maps at another resolution (a CAM at feature resolution) are
    first upsampled to it, bilinearly (``align_corners=False``).  ``cell``: the (h, w) of one cell
    (default: the map size / grid, which must divide exactly).

    Smoothing moves up to (smooth - 1) / 2 pixels of attribution across cell borders, and the
    zero padding loses mass at the mosaic's edge (``count_include_pad``), so even a perfectly
    localised map scores below 1 once smoothed; smoothing rewards blob-like maps over
    pixel-sparse ones.
    """
    g = _check_grid(grid)
    if smooth < 0:
        raise ConfigError(f"smoothing kernel must be >= 0, got {smooth}")
    if maps.dim() != 4 or maps.shape[1] != g * g:
        raise ConfigError(f"maps must be (mosaics, {g * g}, H, W), got {tuple(maps.shape)}")
    m = maps.shape[0]
    x = maps.detach().double()
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    if smooth and smooth > 1:
        x = _smooth(x, int(smooth))
    x = x.clamp(min=0)
    hm, wm = x.shape[-2:]
    if cell is None:
        if hm % g or wm % g:
            raise ConfigError(f"a {hm}x{wm} map does not split into {g}x{g} equal cells")
        cell = (hm // g, wm // g)
    h, w = cell
    if g * h > hm or g * w > wm:
        raise ConfigError(f"{g}x{g} cells of {h}x{w} do not fit a {hm}x{wm} map")
    cells = x[..., : g * h, : g * w].reshape(m, g * g, g, h, g, w).sum((3, 5))  # (m, k, row, col)
    cells = cells.transpose(-1, -2).reshape(m, g * g, g * g)  # cell index col * g + row, as cell_of
    # The strip outside the cells (padding of a rescaled mosaic) is summed on its own, so a map that
    # is 0 outside one cell has a total that is exactly that cell's sum (an oracle scores exactly 1).
    rest = x[..., g * h :, :].sum((-2, -1)) + x[..., : g * h, g * w :].sum((-2, -1))
    total = cells.sum(-1) + rest
    inside = torch.diagonal(cells, dim1=1, dim2=2)
    return torch.where(inside * total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)


@dataclasses.dataclass
class PointingResult:
    """Scores of the grid pointing game.

    Attributes:
        scores: per method, (M, grid²) float64: the share of positive attribution in the right cell.
        blocks: (M, grid²) dataset indices of the images in each mosaic (element k: cell_of(k)).
        classes: (M, grid²) the class of each cell (the label, = the prediction).
        grid, smooth, rescale, conf_thresh, seed: the settings.
        n_requested: the number of mosaics asked for (``len(blocks)`` may be smaller).
        params: per method, the parameters it ran with (defaults included).
    """

    scores: dict[str, np.ndarray]
    blocks: np.ndarray
    classes: np.ndarray
    grid: int
    smooth: int = 0
    rescale: bool = False
    conf_thresh: float = 0.5
    seed: int = 42
    n_requested: int = 0
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def baseline(self) -> float:
        """The score of a map spread evenly over the mosaic: 1 / grid²."""
        return 1.0 / self.grid**2

    @property
    def oracle(self) -> float:
        """The score of a map entirely inside the right cell."""
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: settings, baseline, oracle, and the per-mosaic arrays as lists."""
        return {"grid": self.grid, "smooth": self.smooth, "rescale": self.rescale, "conf_thresh": self.conf_thresh,
                "seed": self.seed, "n_requested": self.n_requested, "n_mosaics": int(len(self.blocks)),
                "baseline": self.baseline, "oracle": self.oracle, "params": self.params,
                "blocks": self.blocks.tolist(), "classes": self.classes.tolist(),
                "scores": {k: v.tolist() for k, v in self.scores.items()}}


def _logits(model: torch.nn.Module, images: torch.Tensor, dev: torch.device, batch_size: int = 256) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(images[i : i + batch_size].to(dev)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def _check_takes(model: torch.nn.Module, mosaic: torch.Tensor, num_classes: int, rescale: bool) -> None:
    """One forward of one mosaic: a model with a fixed-size head fails here, with a hint."""
    hint = "" if rescale else ("; use rescale=True (--rescale) to shrink each image so the mosaic keeps the "
                               "model's input size")
    try:
        with torch.inference_mode():
            out = model(mosaic)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or ["error"])[0]
        raise ConfigError(f"the model does not take {mosaic.shape[-2]}x{mosaic.shape[-1]} mosaics ({first})"
                          f"{hint}") from None
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise ConfigError(f"on a {mosaic.shape[-2]}x{mosaic.shape[-1]} mosaic the model returns "
                          f"{tuple(out.shape)}, not (1, {num_classes}) logits{hint}")


def pointing_game(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, methods: Sequence[str], *,
                  grid: int = 3, n_mosaics: int = 250, conf_thresh: float = 0.5, seed: int = 42, smooth: int = 0,
                  rescale: bool = False, params: dict[str, dict[str, Any]] | None = None,
                  batch_size: int | None = None, logits: torch.Tensor | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> PointingResult:
    """The grid pointing game of ``methods`` on ``model`` (eval mode) with ``images`` (N, C, H, W)
    in [0, 1] and their ``labels``.

    Mosaics come from :func:`select_mosaics` (``logits`` of ``images`` if already computed) and
    :func:`build_mosaics`.  Every cell of every mosaic is one row for
    :func:`~interpcli.methods.attribute` (the mosaic repeated grid² times, target = each cell's
    class), run in chunks of whole mosaics; maps are summed over channels with their sign and
    scored by :func:`pointing_scores`.  ``progress(done_rows, total_rows, method)`` is called
    before and after each chunk.  Fewer usable mosaics than ``n_mosaics``: a warning; none, or a
    model that cannot take the mosaic size: :class:`~interpcli.errors.ConfigError`.
    """
    g = _check_grid(grid)
    if n_mosaics < 1:
        raise ConfigError(f"n_mosaics must be at least 1, got {n_mosaics}")
    if smooth < 0:
        raise ConfigError(f"smoothing kernel must be >= 0, got {smooth}")
    params = params or {}
    used = {m: {**get_method(m).defaults, **get_method(m).check(params.get(m, {}))} for m in methods}
    model.eval()
    dev = model_device(model)
    labels = torch.as_tensor(labels).long().cpu()
    logits = _logits(model, images, dev) if logits is None else torch.as_tensor(logits).float().cpu()
    blocks = select_mosaics(logits, labels, g, n_mosaics, conf_thresh=conf_thresh, seed=seed)
    if len(blocks) == 0:
        raise ConfigError(f"no {g}x{g} mosaic possible: it needs more than {g * g} classes with a correctly "
                          f"classified image of sigmoid(logit) > {conf_thresh} (the model has {logits.shape[1]} "
                          f"classes); use a smaller grid, more images or a lower confidence threshold")
    if len(blocks) < n_mosaics:
        warnings.warn(f"only {len(blocks)} of {n_mosaics} {g}x{g} mosaics could be built (too few classes with "
                      f"confident, correct images left)", stacklevel=2)
    classes = labels.numpy()[blocks]
    first = build_mosaics(images, blocks[:1], g, rescale=rescale)
    size = tuple(first.shape[-2:])
    h, w = images.shape[-2:]
    cell = (h // g, w // g) if rescale else (h, w)
    _check_takes(model, first.to(dev), logits.shape[1], rescale)
    per_call = max(1, max(256, 4 * (batch_size or 0)) // (g * g))  # mosaics per attribute() call
    total = len(blocks) * g * g
    scores: dict[str, np.ndarray] = {}
    for method in methods:
        mine = params.get(method, {})
        if progress is not None:
            progress(0, total, method)
        parts = []
        for i in range(0, len(blocks), per_call):
            # Mosaics are built chunk by chunk: all of them at once can be gigabytes (ImageNet, 3x3).
            x = build_mosaics(images, blocks[i : i + per_call], g, rescale=rescale).to(dev).repeat_interleave(g * g, 0)
            t = torch.as_tensor(classes[i : i + per_call].reshape(-1), device=dev)
            maps = attribute(model, x, t, method, batch_size=batch_size, **mine).sum(1).cpu()
            parts.append(pointing_scores(maps.reshape(-1, g * g, *maps.shape[-2:]), g, smooth=smooth,
                                         size=size, cell=cell))
            if progress is not None:
                progress(min(i + per_call, len(blocks)) * g * g, total, method)
        scores[method] = torch.cat(parts).numpy()
    return PointingResult(scores, blocks, classes, g, int(smooth), bool(rescale), float(conf_thresh), int(seed),
                          int(n_mosaics), used)
