"""Pictures of a sparse decision layer: the path, and what each kept feature responds to.

- :func:`path_png`: validation and test accuracy against the mean number of features per class
  along the path, the dense layer and the chosen point marked.
- :func:`feature_lime`: LIME (Ribeiro et al. 2016, https://arxiv.org/abs/1602.04938) fitted to a
  deep feature's activation rather than a class probability, as Wong et al. (2021) do: the
  ``lime`` method's samples, weights, superpixel fill and weighted ridge
  (:mod:`interpcli.methods.surrogate`), with the scores of :func:`interpcli.perturb.masked_scores`
  being feature ``j`` of the penultimate representation.
- :func:`montage_png`: a feature's K most and K least activating images, each with its LIME
  superpixel map (red: superpixels that raise the feature, blue: that lower it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..methods.surrogate import fill_image, lime_samples, lime_weights, weighted_ridge
from ..models.features import FeatureExtractor
from ..perturb import MaskSet, masked_scores
from ..segments import superpixels
from ..viz import blend, fig_png, pyplot, upscale

__all__ = ["path_png", "feature_lime", "montage_png", "LIME_DEFAULTS", "extremes"]

LIME_DEFAULTS = {"n_samples": 1000, "n_segments": 50, "segmentation": "slic", "compactness": 10.0,
                 "kernel_width": 0.25, "alpha": 1.0, "seed": 0}
_DPI = 110


def path_png(points: Sequence[dict[str, Any]], chosen: int, dense: dict[str, Any] | None = None,
             title: str = "") -> bytes:
    """Accuracy (validation, test) against mean features per class; ``dense``: the original
    layer's record (drawn at its features per class), else the path's densest point is marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    live = [p for p in points if p["nnz"] > 0]
    x = np.array([p["features_per_class"] for p in live])
    for split, style in (("val", "-o"), ("test", "-s")):
        acc = [p[f"{split}_acc"] for p in live]
        if live and acc[0] is not None:
            ax.plot(x, 100 * np.array(acc, dtype=float), style, ms=3, lw=1.2, label=f"{split} accuracy (path)")
    c = points[chosen]
    ax.plot([c["features_per_class"]], [100 * c["val_acc"]], "*", ms=16, color="crimson", zorder=5,
            label=f"chosen: λ index {chosen}, {c['features_per_class']:.1f} features/class")
    ref = dense or (live[-1] if live else None)
    if ref is not None:
        acc = ref.get("test_acc") if ref.get("test_acc") is not None else ref.get("val_acc")
        if acc is not None:
            ax.plot([ref["features_per_class"]], [100 * acc], "D", ms=9, color="black", zorder=5,
                    label=f"dense{' (original layer)' if dense else ''}: {100 * acc:.1f}% "
                          f"{'test' if ref.get('test_acc') is not None else 'val'}")
    ax.set_xscale("log")
    ax.set(xlabel="mean features per class (non-zero weights per class)", ylabel="accuracy (%)",
           title=title or "elastic-net path of the decision layer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig_png(plt, fig, _DPI, 0.1)


def extremes(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the k largest and the k smallest ``values`` (largest / smallest first)."""
    k = min(int(k), len(values))
    return values.topk(k).indices, (-values).topk(k).indices


def feature_lime(model: torch.nn.Module, x: torch.Tensor, feature: int, *, batch_size: int | None = None,
                 **params: Any) -> torch.Tensor:
    """LIME maps (N, 1, H, W) of images ``x`` (N, C, H, W) in [0, 1] for the activation of
    ``feature`` of the penultimate representation (parameters: :data:`LIME_DEFAULTS`)."""
    p = {**LIME_DEFAULTS, **params}
    labels = superpixels(x, int(p["n_segments"]), p["segmentation"], float(p["compactness"]))
    counts = labels.flatten(1).amax(1).cpu() + 1
    z = lime_samples(counts, int(p["n_samples"]), int(p["seed"]))
    drop = (1 - z).to(x.device)
    sets = [MaskSet.from_segments(labels[i], drop[i, :, : int(counts[i])]) for i in range(len(x))]
    phi = FeatureExtractor(model)
    scores = masked_scores(phi, x, sets, fill_image(x, labels, "superpixel"), lambda out, img: out[:, feature],
                           batch_size=batch_size)
    y = torch.stack([s.double().cpu() for s in scores])
    coef, _ = weighted_ridge(z, y, lime_weights(z, counts, float(p["kernel_width"])), float(p["alpha"]))
    n, h, w = labels.shape
    return coef.float().gather(1, labels.cpu().reshape(n, h * w)).reshape(n, 1, h, w)


def montage_png(images: np.ndarray, maps: np.ndarray, activations: Sequence[float], k: int, title: str,
                captions: Sequence[str] = ()) -> bytes:
    """Two rows of ``k`` panels: the first k images (most activating), then the next k (least),
    each with its map blended over it; ``activations`` and ``captions`` under each panel."""
    plt = pyplot()
    fig, axes = plt.subplots(2, k, figsize=(1.9 * k, 4.6), squeeze=False)
    for row, what in enumerate(("most", "least")):
        for j in range(k):
            ax = axes[row, j]
            ax.set_xticks([])
            ax.set_yticks([])
            i = row * k + j
            if i >= len(images):
                ax.axis("off")
                continue
            ax.imshow(upscale(blend(images[i], maps[i], signed=True), 96), interpolation="nearest")
            cap = f"act {activations[i]:.3g}" + (f"\nlabel {captions[i]}" if i < len(captions) and captions[i] else "")
            ax.set_xlabel(cap, fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{what} activating", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig_png(plt, fig, _DPI, 0.1)
