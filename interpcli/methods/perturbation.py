"""Perturbation methods: one forward pass per perturbed image, all batched, no gradients.

- ``occlusion``: sliding-window occlusion (Zeiler & Fergus, ECCV 2014,
  https://arxiv.org/abs/1311.2901), with Captum's ``Occlusion`` semantics: the drop of the
  target logit when a window is filled, averaged over the windows covering each pixel.
- ``rise``: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, BMVC 2018,
  https://arxiv.org/abs/1806.07421): S_c = (1 / (N p)) Σ_i f_c(x ⊙ M_i) M_i with soft random
  masks M_i (../shared/METHODS.md section 3).

Perturbed images are built for a whole chunk of (image, perturbation) pairs at once and
evaluated under ``torch.inference_mode`` in batches of ``batch_size`` perturbed images.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._registry import register_method

_CHUNK = 256  # perturbed images per forward pass by default


def _scores(model, x: torch.Tensor, masks: torch.Tensor, target: torch.Tensor, fill: torch.Tensor | float,
            batch_size: int | None, prob: bool = False) -> torch.Tensor:
    """f_target(x_n ⊙ (1 - m_k) + fill ⊙ m_k) for every image n and mask k -> (N, K).

    ``masks`` (K, 1, H, W) in [0, 1] are the parts to *replace* by ``fill``.
    """
    n, k = len(x), len(masks)
    bs = batch_size or _CHUNK
    out = torch.empty(n, k, device=x.device)
    flat = [(i, j) for i in range(n) for j in range(0, k, bs)]
    with torch.inference_mode():
        for i, j in flat:
            m = masks[j : j + bs]
            xi = x[i : i + 1]
            fi = fill[i : i + 1] if torch.is_tensor(fill) and fill.dim() == 4 else fill
            logits = model(xi * (1 - m) + fi * m).float()
            s = logits.softmax(1) if prob else logits
            out[i, j : j + len(m)] = s[:, target[i]]
    return out


def _occlusion_positions(h: int, w: int, window: int, stride: int) -> tuple[list[int], list[int]]:
    if window <= 0 or stride <= 0 or window > min(h, w):
        raise ConfigError(f"occlusion window must be in 1..{min(h, w)} and stride positive")
    # As Captum: ceil((size - window) / stride) + 1 positions; the last window may be cut by the border.
    ys = [i * stride for i in range(math.ceil((h - window) / stride) + 1)]
    xs = [i * stride for i in range(math.ceil((w - window) / stride) + 1)]
    return ys, xs


def _occlusion_masks(h: int, w: int, window: int, stride: int, device) -> torch.Tensor:
    ys, xs = _occlusion_positions(h, w, window, stride)
    masks = torch.zeros(len(ys) * len(xs), 1, h, w, device=device)
    for k, (y, x0) in enumerate((y, x0) for y in ys for x0 in xs):
        masks[k, 0, y : y + window, x0 : x0 + window] = 1
    return masks


_INCREMENTAL_MIN_SIZE = 128  # incremental="auto" from this image side on (below, it does not pay: benchmarks.md)


def _incremental_mode(v) -> bool | str:
    if isinstance(v, str):
        low = v.strip().lower()
        if low == "auto":
            return "auto"
        if low in ("true", "on", "yes", "1"):
            return True
        if low in ("false", "off", "no", "0"):
            return False
    elif isinstance(v, (bool, int)) and v in (0, 1):
        return bool(v)
    raise ConfigError(f"occlusion incremental must be auto, true or false; got {v!r}")


def _occlusion_incremental(model, x, target, fillv, window: int, stride: int, batch_size, mode) -> torch.Tensor | None:
    """(N, K) scores by incremental inference (Krypton; methods/incremental.py), or None for the ordinary path."""
    mode = _incremental_mode(mode)
    h, w = x.shape[-2:]
    if mode is False or (mode == "auto" and min(h, w) < _INCREMENTAL_MIN_SIZE):
        return None
    from .incremental import IncrementalUnsupported, get_plan, incremental_occlusion_scores

    try:
        plan = get_plan(model)
    except IncrementalUnsupported as e:
        if mode is True:
            warnings.warn(f"incremental occlusion unavailable, using full forward passes: {e}", stacklevel=3)
        return None
    if mode == "auto" and not plan.incremental_layers():
        return None  # nothing runs on regions: no gain
    ys, xs = _occlusion_positions(h, w, window, stride)
    positions = [(y, x0) for y in ys for x0 in xs]
    rows = []
    for i in range(len(x)):
        fi = fillv[i : i + 1] if torch.is_tensor(fillv) else fillv
        rows.append(incremental_occlusion_scores(model, x[i : i + 1], positions, window, fi, int(target[i]),
                                                 batch_size))
    return torch.stack(rows)


@register_method("occlusion", description="drop of the target logit under a sliding occluding window",
                 kind="perturbation", uses_gradients=False,
                 defaults={"window": 8, "stride": 4, "fill": 0.0, "incremental": "auto"},
                 paper="https://arxiv.org/abs/1311.2901")
def occlusion(model, x, target, *, batch_size=None, window=8, stride=4, fill=0.0, incremental="auto"):
    h, w = x.shape[-2:]
    masks = _occlusion_masks(h, w, int(window), int(stride), x.device)
    fillv = x.mean((1, 2, 3), keepdim=True) if fill == "mean" else float(fill)
    with torch.inference_mode():
        base = model(x).float().gather(1, target[:, None])  # (N, 1)
    # incremental: recompute only what each window can reach (Krypton, https://arxiv.org/abs/1803.04113);
    # "auto" = on for images of at least 128x128 and models that trace with torch.fx; same map either way.
    scores = _occlusion_incremental(model, x, target, fillv, int(window), int(stride), batch_size, incremental)
    if scores is None:
        scores = _scores(model, x, masks, target, fillv, batch_size)
    drop = base - scores  # (N, K)
    total = torch.einsum("nk,khw->nhw", drop, masks[:, 0])
    count = masks[:, 0].sum(0).clamp_min(1)
    return (total / count)[:, None]


def rise_masks(n: int, s: int, p: float, size: tuple[int, int], seed: int = 0,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """N soft masks (N, 1, H, W): s x s Bernoulli(p) grids, bilinearly upsampled to (s+1)*cell and
    cropped at a random shift in [0, cell) (Petsiuk et al. 2018, section 3.2)."""
    if n <= 0 or s <= 0 or not 0 < p <= 1:
        raise ConfigError("rise needs n_masks > 0, s > 0 and 0 < p <= 1")
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    g = torch.Generator().manual_seed(int(seed))
    grid = (torch.rand(n, 1, s, s, generator=g) < p).float()
    up = F.interpolate(grid, size=((s + 1) * ch, (s + 1) * cw), mode="bilinear", align_corners=False)
    dy = torch.randint(0, ch, (n,), generator=g)
    dx = torch.randint(0, cw, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    masks = up[torch.arange(n)[:, None, None], 0, rows, cols]
    return masks[:, None].to(device)


@register_method("rise", description="RISE: random soft masks weighted by the class probability",
                 kind="perturbation", uses_gradients=False, signed=False,
                 defaults={"n_masks": 6000, "s": 8, "p": 0.1, "score": "prob", "seed": 0},
                 paper="https://arxiv.org/abs/1806.07421")
def rise(model, x, target, *, batch_size=None, n_masks=6000, s=8, p=0.1, score="prob", seed=0):
    if score not in ("prob", "logit"):
        raise ConfigError("rise score must be prob or logit")
    masks = rise_masks(int(n_masks), int(s), float(p), tuple(x.shape[-2:]), seed, x.device)
    # x ⊙ M keeps the masked-in pixels: "replace by 0 where 1 - M", i.e. fill 0 with masks 1 - M.
    scores = _scores(model, x, 1 - masks, target, 0.0, batch_size, prob=score == "prob")  # (N, K)
    return (torch.einsum("nk,khw->nhw", scores, masks[:, 0]) / (n_masks * p))[:, None]
