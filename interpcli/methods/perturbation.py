"""Perturbation methods: one forward pass per perturbed image, all batched, no gradients.

- ``occlusion``: sliding-window occlusion (Zeiler & Fergus, ECCV 2014,
  https://arxiv.org/abs/1311.2901), with Captum's ``Occlusion`` semantics: the drop of the
  target logit when a window is filled, averaged over the windows covering each pixel
  (:func:`interpcli.occlusion.coverage_maps`).
- ``rise``: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, BMVC 2018,
  https://arxiv.org/abs/1806.07421): S_c = (1 / (N p)) Σ_i f_c(x ⊙ M_i) M_i with soft random
  masks M_i (../shared/METHODS.md section 3); masked pixels take ``fill``, by default the
  input encoder's mean (:func:`interpcli.perturb.encoder_mean`), as the original code, which
  multiplies the normalised image by the masks.

The perturbed images go through :func:`interpcli.perturb.masked_scores` (batches of
``batch_size`` perturbed images under inference mode); occlusion of large images can use
incremental inference instead (:mod:`interpcli.incremental`).
"""

from __future__ import annotations

import warnings

import torch

from ..incremental import IncrementalUnsupported, get_plan, incremental_occlusion_scores
from ..occlusion import coverage_maps
from ..perturb import (
    MaskSet,
    encoder_mean,
    masked_scores,
    occlusion_positions,
    rise_masks,
    sliding_boxes,
    target_score,
)
from ._registry import register_method
from .params import SEED, boolean, integer, number, one_of

_INCREMENTAL_MIN_SIZE = 128  # incremental="auto" from this image side on (below, it does not pay: benchmarks.md)


def _occlusion_incremental(model, x, target, fillv, window: int, stride: int, batch_size, mode) -> torch.Tensor | None:
    """(N, K) scores by incremental inference (Krypton; :mod:`interpcli.incremental`), or None
    for the ordinary path; ``mode``: ``"auto"``, True or False (checked by the registry)."""
    h, w = x.shape[-2:]
    if mode is False or (mode == "auto" and min(h, w) < _INCREMENTAL_MIN_SIZE):
        return None
    try:
        plan = get_plan(model)
    except IncrementalUnsupported as e:
        if mode is True:
            warnings.warn(f"incremental occlusion unavailable, using full forward passes: {e}", stacklevel=3)
        return None
    if mode == "auto" and not plan.incremental_layers():
        return None  # nothing runs on regions: no gain
    ys, xs = occlusion_positions(h, w, window, stride)
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
                 params={"window": integer(min=1), "stride": integer(min=1),
                         "fill": number(words=("mean",), doc="pixel value, or mean: each image's mean"),
                         "incremental": boolean(words=("auto",), doc="auto: from 128x128 images on")},
                 paper="https://arxiv.org/abs/1311.2901")
def occlusion(model, x, target, *, batch_size=None, window=8, stride=4, fill=0.0, incremental="auto"):
    h, w = x.shape[-2:]
    masks = MaskSet.from_boxes((h, w), sliding_boxes(h, w, int(window), int(stride)))
    fillv = x.mean((1, 2, 3), keepdim=True) if fill == "mean" else float(fill)
    with torch.inference_mode():
        base = model(x).float().gather(1, target[:, None])  # (N, 1)
    # incremental: recompute only what each window can reach (Krypton, https://arxiv.org/abs/1803.04113);
    # "auto" = on for images of at least 128x128 and models that trace with torch.fx; same map either way.
    scores = _occlusion_incremental(model, x, target, fillv, int(window), int(stride), batch_size, incremental)
    if scores is None:
        scores = torch.stack(masked_scores(model, x, masks, fillv, target_score(target), batch_size=batch_size))
    drop = base - scores  # (N, K)
    return coverage_maps(list(drop), [masks] * len(x), x.device)


def _rise_fill(model, fill) -> torch.Tensor | float:
    """RISE's fill in pixel space: ``mean`` = :func:`~interpcli.perturb.encoder_mean` (the
    original multiplies the normalised input, so masked pixels take the dataset mean), ``zero``
    = black, or a number."""
    if fill == "mean":
        return encoder_mean(model)
    if fill == "zero":
        return 0.0
    return float(fill)


@register_method("rise", description="RISE: random soft masks weighted by the class probability",
                 kind="perturbation", uses_gradients=False, signed=False,
                 defaults={"n_masks": 6000, "s": 8, "p": 0.1, "score": "prob", "fill": "mean", "seed": 0},
                 params={"n_masks": integer(min=1), "s": integer(min=1, doc="cells of the mask grid per side"),
                         "p": number(gt=0, le=1, doc="keep probability of a cell"), "score": one_of("prob", "logit"),
                         "fill": number(words=("mean", "zero"), doc="mean: the input encoder's mean"), "seed": SEED},
                 paper="https://arxiv.org/abs/1806.07421")
def rise(model, x, target, *, batch_size=None, n_masks=6000, s=8, p=0.1, score="prob", fill="mean", seed=0):
    fillv = _rise_fill(model, fill)
    fillv = fillv.to(x) if torch.is_tensor(fillv) else fillv
    masks = rise_masks(int(n_masks), int(s), float(p), tuple(x.shape[-2:]), seed, x.device)
    # x ⊙ M + fill ⊙ (1 - M) keeps the masked-in pixels: "replace by the fill where 1 - M".  With
    # fill = the encoder's mean this is the original's normalise(x) ⊙ M in the network's input space.
    scores = torch.stack(masked_scores(model, x, 1 - masks, fillv, target_score(target, score == "prob"),
                                       batch_size=batch_size))  # (N, K)
    return (torch.einsum("nk,khw->nhw", scores, masks[:, 0]) / (n_masks * p))[:, None]
