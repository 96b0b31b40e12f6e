"""Perturbation building blocks: masks, fills and baselines, and one batched scorer.

    masks = MaskSet.from_boxes((32, 32), sliding_boxes(32, 32, window=8, stride=4))
    scores = masked_scores(model, x, masks, fill=0.0, score_fn=target_score(target))
    scores[n]   # (K,): the target logit of image n with mask k replaced by the fill

A mask is (1, H, W) in [0, 1], 1 = replaced by the fill: the perturbed image is
``x ⊙ (1 - m) + fill ⊙ m``.  :func:`masked_scores` is the one loop that sends perturbed
images through a model: occlusion, RISE, LIME, KernelSHAP and the ``occlude`` engine
(:mod:`interpcli.occlusion`) all call it.  The (image, mask) pairs of all images share
forward batches, so small images with few masks still fill large batches; masks are
materialised chunk by chunk (sliding windows from their boxes, superpixel masks from the
label map), never all at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["MaskSet", "occlusion_positions", "sliding_boxes", "rise_masks", "make_baseline", "BASELINES",
           "fill_images", "FILLS", "encoder_mean", "masked_scores", "target_score", "ScoreFn", "DEFAULT_BATCH"]

DEFAULT_BATCH = 256  # perturbed images per forward pass by default
BASELINES = ("black", "blurred", "uniform")
FILLS = ("zero", "mean", "blur", "noise")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, image of each row) -> (B,) scores


# ---------------------------------------------------------------------------------------------- masks

class MaskSet:
    """K masks of one image, (K, 1, H, W) in [0, 1], materialised on demand (1 = replaced).

    Four storages: ``dense`` masks, ``boxes`` (K, 4) = y0, y1, x0, x1 (sliding windows),
    ``segments``: a label map (H, W) with patterns (K, S), mask k = patterns[k, labels], or
    ``ranks``: a rank map (H, W) with counts (K,), mask k = (rank < counts[k]) — the k-th
    step of deletion / insertion, or the complement with ``invert``.
    """

    def __init__(self, size: tuple[int, int], *, dense: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 patterns: torch.Tensor | None = None, counts: torch.Tensor | None = None, invert: bool = False):
        self.size = (int(size[0]), int(size[1]))
        self.dense, self.boxes, self.labels, self.patterns = dense, boxes, labels, patterns
        self.counts, self.invert = counts, invert

    @classmethod
    def from_dense(cls, masks: torch.Tensor) -> MaskSet:
        return cls(tuple(masks.shape[-2:]), dense=masks)

    @classmethod
    def from_boxes(cls, size: tuple[int, int], boxes: torch.Tensor) -> MaskSet:
        return cls(size, boxes=boxes)

    @classmethod
    def from_segments(cls, labels: torch.Tensor, patterns: torch.Tensor) -> MaskSet:
        """Masks painted from per-segment values: ``patterns`` (K, S) over the S labels of ``labels`` (H, W)."""
        return cls(tuple(labels.shape), labels=labels, patterns=patterns)

    @classmethod
    def from_ranks(cls, ranks: torch.Tensor, counts: torch.Tensor, invert: bool = False) -> MaskSet:
        """Mask k covers the ``counts[k]`` pixels of lowest rank (``ranks``: (H, W), a permutation
        of 0..HW-1); with ``invert`` it covers all the others."""
        return cls(tuple(ranks.shape), labels=ranks, counts=torch.as_tensor(counts).long(), invert=invert)

    def __len__(self) -> int:
        for t in (self.dense, self.boxes, self.patterns, self.counts):
            if t is not None:
                return len(t)
        return 0

    def get(self, idx: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """Masks ``idx`` as a (k, 1, H, W) float tensor on ``device``."""
        if self.dense is not None:
            return self.dense[idx.to(self.dense.device)].to(device)
        if self.patterns is not None:
            p = self.patterns[idx.to(self.patterns.device)].to(device)
            return p[:, self.labels.to(device)][:, None].float()
        if self.counts is not None:
            inside = self.labels.to(device)[None] < self.counts[idx.to(self.counts.device)].to(device)[:, None, None]
            return (inside != self.invert).float()[:, None]
        h, w = self.size
        b = self.boxes[idx].to(device)
        ys = torch.arange(h, device=device)
        xs = torch.arange(w, device=device)
        inside_y = (ys[None] >= b[:, 0, None]) & (ys[None] < b[:, 1, None])
        inside_x = (xs[None] >= b[:, 2, None]) & (xs[None] < b[:, 3, None])
        return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]

    def all(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.get(torch.arange(len(self)), device)


def occlusion_positions(h: int, w: int, window: int, stride: int) -> tuple[list[int], list[int]]:
    """Top-left corners of sliding windows, as Captum's ``Occlusion``: ceil((size - window) /
    stride) + 1 positions per axis, the last window possibly cut by the border."""
    if window <= 0 or stride <= 0 or window > min(h, w):
        raise ConfigError(f"occlusion window must be in 1..{min(h, w)} and stride positive")
    ys = [i * stride for i in range(math.ceil((h - window) / stride) + 1)]
    xs = [i * stride for i in range(math.ceil((w - window) / stride) + 1)]
    return ys, xs


def sliding_boxes(h: int, w: int, window: int, stride: int) -> torch.Tensor:
    """Window boxes (K, 4) = y0, y1, x0, x1 at :func:`occlusion_positions`, row-major."""
    ys, xs = occlusion_positions(h, w, window, stride)
    return torch.tensor([(y, min(y + window, h), x, min(x + window, w)) for y in ys for x in xs])


def _reflect_linear_weights(size: int, out: int) -> torch.Tensor:
    """(out, size) weights of linear interpolation from ``size`` cells to ``out`` samples with
    pixel-area alignment (source coordinate (i + 0.5) * size / out - 0.5) and mirror edges (the
    sample at -t reads cell t): scikit-image ``resize(order=1, mode='reflect')``, i.e.
    ``scipy.ndimage.zoom(mode='mirror', grid_mode=True)``."""
    src = (torch.arange(out, dtype=torch.float64) + 0.5) * (size / out) - 0.5
    i0 = torch.floor(src)
    t = src - i0
    i0 = i0.long()

    def mirror(i: torch.Tensor) -> torch.Tensor:
        i = i.abs()  # -1 -> 1
        return torch.where(i > size - 1, 2 * (size - 1) - i, i).clamp(0, size - 1)  # size - 1 + 1 -> size - 2

    wts = torch.zeros(out, size, dtype=torch.float64)
    rows = torch.arange(out)
    wts.index_put_((rows, mirror(i0)), 1 - t, accumulate=True)
    wts.index_put_((rows, mirror(i0 + 1)), t, accumulate=True)
    return wts


def rise_masks(n: int, s: int, p: float, size: tuple[int, int], seed: int = 0,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """N soft masks (N, 1, H, W): s x s Bernoulli(p) grids, bilinearly upsampled to (s+1)*cell
    (cell = ceil(size / s)) and cropped at a random shift in [0, cell) (Petsiuk et al. 2018,
    section 3.2).  1 = kept.  As the original code (eclique/RISE ``generate_masks``): the
    upsampling is scikit-image ``resize(grid, (s+1)*cell, order=1, mode='reflect',
    anti_aliasing=False)`` (mirror edges, not clamped), computed here as separable
    interpolation matrices, batched; the draws (from a generator seeded with ``seed``): the
    grids, then the row shifts, then the column shifts."""
    if n <= 0 or s <= 0 or not 0 < p <= 1:
        raise ConfigError("rise needs n_masks > 0, s > 0 and 0 < p <= 1")
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    g = torch.Generator().manual_seed(int(seed))
    grid = (torch.rand(n, 1, s, s, generator=g) < p).float()
    dy = torch.randint(0, ch, (n,), generator=g)
    dx = torch.randint(0, cw, (n,), generator=g)
    wy = _reflect_linear_weights(s, (s + 1) * ch).float()  # (U_h, s)
    wx = _reflect_linear_weights(s, (s + 1) * cw).float()  # (U_w, s)
    ry = wy[dy[:, None] + torch.arange(h)]  # (N, H, s): the rows of each crop
    rx = wx[dx[:, None] + torch.arange(w)]  # (N, W, s)
    masks = torch.einsum("nhs,nst,nwt->nhw", ry, grid[:, 0], rx).clamp(0, 1)
    return masks[:, None].to(device)


# ---------------------------------------------------------------------------------------------- fills

def make_baseline(kind: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``black`` (zeros), ``blurred`` (Gaussian blur, sigma = 1/10 of the image size), ``uniform`` noise."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "uniform":
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(x.shape, generator=g).to(x)
    if kind == "blurred":
        sigma = max(x.shape[-1], x.shape[-2]) / 10
        k = int(2 * round(3 * sigma) + 1)
        t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        g1 = torch.exp(-0.5 * (t / sigma) ** 2)
        g1 = g1 / g1.sum()
        c = x.shape[1]
        xp = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="replicate")
        xp = F.conv2d(xp, g1.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
        return F.conv2d(xp, g1.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    raise ConfigError(f"unknown baseline '{kind}'; use {', '.join(BASELINES)}")


def fill_images(fill: str | float, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The replacement image of each image (N, C, H, W): ``zero``, ``mean`` (per-channel image
    mean), ``blur`` (:func:`make_baseline` ``blurred``), ``noise`` (uniform, seeded) or a number."""
    if isinstance(fill, (int, float)):
        return torch.full_like(x, float(fill))
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if fill == "blur":
        return make_baseline("blurred", x)
    if fill == "noise":
        g = torch.Generator().manual_seed(int(seed) + 7)
        return torch.rand(x.shape, generator=g).to(x)
    raise ConfigError(f"unknown fill '{fill}'; use {', '.join(FILLS)} or a number")


def encoder_mean(model: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | float:
    """The pixel value (in [0, 1] image space) that the model's input encoding maps to zero, or
    nearest to it: what "multiply the network's input by a mask" fills masked pixels with.

    - ``normalize`` encoder ((x - μ) / σ): μ, the dataset mean, as a (1, C, 1, 1) tensor;
    - ``identity`` encoder, or a plain module without an ``encoder``: 0.0 (the network's input
      is the pixel);
    - ``bcos6`` encoder ([x, 1 - x]): 0.5, whose encoding [0.5, 0.5] is the encoding nearest to
      zero (zero itself is no image).
    """
    enc = getattr(model, "encoder", None)
    spec = enc.spec() if callable(getattr(enc, "spec", None)) else {}
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "normalize":
        return enc.mean.detach().clone()
    if kind == "bcos6":
        return 0.5
    return 0.0


# ---------------------------------------------------------------------------------------------- scores

def target_score(target: torch.Tensor, prob: bool = False) -> ScoreFn:
    """Score of a row = the logit (or softmax probability) of its image's target class."""

    def score(out: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if prob:
            out = out.softmax(1)
        return out.gather(1, target.to(out.device)[img.to(out.device), None])[:, 0]

    return score


def _per_image(masks: MaskSet | torch.Tensor | Sequence[MaskSet | torch.Tensor], n: int) -> list[MaskSet]:
    if isinstance(masks, (MaskSet, torch.Tensor)):
        masks = [masks] * n
    out = [m if isinstance(m, MaskSet) else MaskSet.from_dense(m) for m in masks]
    if len(out) != n:
        raise ConfigError(f"{len(out)} mask sets for {n} images")
    return out


def _fill_rows(fill: torch.Tensor | float, n: int) -> Callable[[int], torch.Tensor | float]:
    if torch.is_tensor(fill) and fill.dim() == 4 and len(fill) == n:
        return lambda i: fill[i : i + 1]
    return lambda i: fill


def masked_scores(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  masks: MaskSet | torch.Tensor | Sequence[MaskSet | torch.Tensor],
                  fill: torch.Tensor | float = 0.0, score_fn: ScoreFn | None = None, *,
                  batch_size: int | None = None, select: Sequence[torch.Tensor] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """Scores of every (image, mask) pair: ``score_fn(model(x_n ⊙ (1 - m) + fill_n ⊙ m), n)``.

    Args:
        model: any callable from a batch of images to per-row outputs (logits, features, ...).
        x: images (N, C, H, W).
        masks: one :class:`MaskSet` or (K, 1, H, W) tensor for every image, or one per image.
        fill: a number, or a tensor broadcastable to an image ((N, C, H, W) gives each image its own).
        score_fn: (outputs, image index of each row) -> (B,) scores, or (B, D) for D numbers per
            pair; default: the outputs themselves (a model that already returns one number per row).
        batch_size: (image, mask) pairs per forward pass (default 256).
        select: per image, the indices of the masks to score (default all); the others score 0.
        progress: called as ``progress(images done, N)`` whenever images are complete.

    Returns N float32 tensors (K_n,) — (K_n, D) for a vector score — on the device of ``x``.
    Runs under inference mode.
    """
    n = len(x)
    sets = _per_image(masks, n)
    fill_of = _fill_rows(fill, n)
    dev = x.device
    orders = [torch.arange(len(s)) for s in sets] if select is None else [torch.as_tensor(o).long() for o in select]
    scores = [torch.zeros(len(m), device=dev) for m in sets]  # (K, D) instead once a vector score is seen
    img_of = torch.cat([torch.full((len(o),), i, dtype=torch.long) for i, o in enumerate(orders)])
    mask_of = torch.cat(orders) if orders else torch.zeros(0, dtype=torch.long)
    ends = torch.cumsum(torch.tensor([len(o) for o in orders]), 0)  # pairs done when an image is complete
    bs = int(batch_size or DEFAULT_BATCH)
    with torch.inference_mode():
        for start in range(0, len(img_of), bs):
            img, msk = img_of[start : start + bs], mask_of[start : start + bs]
            images = torch.unique_consecutive(img).tolist()
            parts = []
            for i in images:
                m = sets[i].get(msk[img == i], dev)
                parts.append(x[i : i + 1] * (1 - m) + fill_of(i) * m)
            out = model(torch.cat(parts))
            s = (score_fn(out, img.to(dev)) if score_fn is not None else out).float()
            s = s.reshape(len(img), -1)
            s = s[:, 0] if s.shape[1] == 1 else s
            if s.dim() == 2 and scores and scores[0].dim() == 1:
                with torch.inference_mode(False):  # normal tensors: callers update them afterwards
                    scores = [torch.zeros(len(m), s.shape[1], device=dev) for m in sets]
            for i in images:
                scores[i][msk[img == i].to(dev)] = s[(img == i).to(dev)]
            if progress is not None:
                progress(int((ends <= start + len(img)).sum()), n)
    if progress is not None and len(img_of) == 0:
        progress(n, n)
    return scores
