"""The occlusion engine: masks x scores, and the representation-space methods ROSA / OSA-DAS / GDS.

    from interpcli import load_model
    from interpcli.occlusion import OccludeConfig, occlude
    model = load_model("runs/r56.safetensors")
    result = occlude(model, images, OccludeConfig(masks="sliding", window=8, stride=4, score="gds"))
    result.maps          # (N, 1, H, W) attribution maps
    result.mask_scores   # list of (K_n,) scores, one per mask

Two independent choices (../shared/METHODS.md section 2):

- **masks** (the regions to occlude, 1 = replaced by the fill): ``sliding`` windows,
  ``rise`` random soft masks (the occluded part is 1 - M), ``superpixels`` (SLIC or a
  grid, one mask per segment), ``file`` (user label maps, one mask per label).
- **score** of each occluded image x_j: ``class`` (drop of the target's logit or
  probability), ``repr`` (ROSA: distance between φ(x) and φ(x_j) at the penultimate layer or
  ``layer``), ``subspace`` (OSA-DAS: 1 - mean cos² of the canonical angles between the PCA
  subspaces of A augmented views of x and of x_j), ``gds`` (ROSA-GDS: representations, or
  subspaces with ``gds_mode="subspace"``, projected onto a Generalized Difference Subspace
  first, :mod:`interpcli.gds`).

Map = Σ_j s_j M_j / Σ_j M_j (:func:`coverage_maps`: each mask's score spread over the pixels
it covers, normalised by coverage; pixels no mask covers get 0).  The occluded images go
through :func:`interpcli.perturb.masked_scores`, the one batched perturbation loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError

from .artifacts import read_npz_arrays
from .augment import draw_views
from .batching import cpu_forward_batch
from .device import full_precision
from .errors import ConfigError, InterpError
from .gds import GDS_SETS, image_gdss, views_features
from .inputs import as_targets
from .models.features import POOLS, FeatureExtractor
from .perturb import FILLS, MaskSet, fill_images, masked_scores, rise_masks, sliding_boxes, target_score
from .segments import label_masks, superpixels
from .subspace import pca_basis, project_basis, project_vectors, subspace_distance, vector_distance

__all__ = ["OccludeConfig", "OccludeResult", "occlude", "coverage_maps", "make_masks", "load_mask_file", "MASKS",
           "SCORES", "FILLS", "METHOD_OF_SCORE"]

MASKS = ("sliding", "rise", "superpixels", "file")
SCORES = ("class", "repr", "subspace", "gds")
METHOD_OF_SCORE = {"class": "occlusion", "repr": "rosa", "subspace": "osa-das", "gds": "gds"}


@dataclasses.dataclass
class OccludeConfig:
    """Every choice of the engine; defaults are the toolkit's (METHODS.md 2.3), not the paper's."""

    masks: str = "sliding"
    window: int = 8                 # sliding: square window side (pixels)
    stride: int = 4                 # sliding: step (pixels)
    fill: str | float = "zero"      # zero | mean (per-channel image mean) | blur | noise | a number
    n_masks: int = 1000             # rise
    s: int = 8                      # rise grid
    p: float = 0.5                  # rise keep-probability
    n_segments: int = 50            # superpixels
    segmentation: str = "slic"      # superpixels: slic | grid
    mask_file: str | None = None    # file: PNG/NPZ label maps
    score: str = "class"
    class_score: str = "logit"      # class: logit | prob
    distance: str = "cosine"        # repr / gds vectors: cosine | cos2 | l2
    layer: str | None = None        # None = penultimate; logits; probs; or a module path
    pool: str = "auto"              # 4-D features: auto (arch's pooling at the penultimate) | avg | max | flatten
    augment: str = "weak"           # subspace: the augmentation preset of the views
    views: int = 16                 # subspace / gds: augmented views per image (view 0 is the image itself)
    k: int = 4                      # subspace dimension
    angles: str = "all"             # canonical angles used: all | first | an int
    gds_from: str = "image"         # image (four augmentation sets) | dataset (class subspaces of training features)
    gds_dim: float = 0.5            # GDS dimension: an int, or a fraction of the rank
    gds_mode: str = "repr"          # gds: compare projected vectors (repr) or projected subspaces (subspace)
    gds_sets: tuple[str, ...] = GDS_SETS
    gds_per_class: int = 100        # dataset GDS: training images per class
    extra_views: str | None = None  # NPZ with `views` (V, C, H, W) or (N, V, C, H, W): one more GDS set
    grad_prune: float | None = None  # score only this fraction of masks, ranked by gradient saliency
    grad_prune_rest: str = "scaled"  # the rest: scaled (their saliency x fitted scale) | zero
    seed: int = 0
    batch_size: int | None = None   # images per forward pass (default: 256; on the CPU cache-sized, 16-256)

    @property
    def uses_views(self) -> bool:
        return self.score == "subspace" or (self.score == "gds" and self.gds_mode == "subspace")

    def check(self) -> None:
        def one_of(name: str, valid: tuple[str, ...]) -> None:
            if getattr(self, name) not in valid:
                raise ConfigError(f"unknown {name} '{getattr(self, name)}'; use {', '.join(valid)}")

        one_of("masks", MASKS)
        one_of("score", SCORES)
        if not (isinstance(self.fill, (int, float)) or self.fill in FILLS):
            try:
                self.fill = float(self.fill)
            except (TypeError, ValueError):
                raise ConfigError(f"unknown fill '{self.fill}'; use {', '.join(FILLS)} or a number") from None
        one_of("class_score", ("logit", "prob"))
        one_of("gds_mode", ("repr", "subspace"))
        one_of("gds_from", ("image", "dataset"))
        one_of("pool", POOLS)
        one_of("grad_prune_rest", ("scaled", "zero"))
        if self.grad_prune is not None and not 0 < float(self.grad_prune) <= 1:
            raise ConfigError("grad_prune must be a fraction in (0, 1]")
        if self.masks == "file" and not self.mask_file:
            raise ConfigError("masks 'file' needs a mask file (--mask-file)")
        if self.score in ("subspace", "gds") and self.views < 1:
            raise ConfigError("views must be positive")
        if self.uses_views and self.k > self.views:
            raise ConfigError(f"k={self.k} is larger than the number of views ({self.views})")
        if self.k < 1:
            raise ConfigError("k must be positive")


@dataclasses.dataclass
class OccludeResult:
    maps: torch.Tensor                   # (N, 1, H, W)
    mask_scores: list[torch.Tensor]      # per image: (K_n,) the score of each mask
    evaluated: list[torch.Tensor]        # per image: (K_n,) bool, False where grad pruning skipped the mask
    config: dict[str, Any]
    gds_dim: list[int] = dataclasses.field(default_factory=list)  # per image (score gds)

    def padded_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, max K) mask scores (NaN past K_n) and evaluated flags, for an NPZ."""
        kmax = max((len(s) for s in self.mask_scores), default=0)
        scores = np.full((len(self.mask_scores), kmax), np.nan, dtype=np.float32)
        evaluated = np.zeros((len(self.mask_scores), kmax), dtype=bool)
        for i, (s, e) in enumerate(zip(self.mask_scores, self.evaluated)):
            scores[i, : len(s)] = s.numpy()
            evaluated[i, : len(e)] = e.numpy()
        return scores, evaluated


# ---------------------------------------------------------------------------------------------- masks

def _labels_to_masks(labels: torch.Tensor, what: str) -> torch.Tensor:
    values = torch.unique(labels)
    if len(values) == 0:
        raise ConfigError(f"{what} has no regions")
    return (labels[None] == values[:, None, None]).float()[:, None]


def _read_label_npz(p: Path, n: int) -> list[torch.Tensor]:
    try:
        arrays = read_npz_arrays(p)
    except InterpError as e:
        raise ConfigError(f"mask file: {e}") from None
    if "masks" in arrays:
        m = torch.from_numpy(arrays["masks"].astype(np.float32))
        return [x[:, None] for x in ([m] * n if m.dim() == 3 else list(m))]
    if "labels" in arrays:
        lab = torch.from_numpy(arrays["labels"].astype(np.int64))
        per = [lab] * n if lab.dim() == 2 else list(lab)
        out = [_labels_to_masks(x.masked_fill(x < 0, -1), f"mask file '{p}'") for x in per]
        return [m[1:] if bool((x < 0).any()) else m for m, x in zip(out, per)]
    raise ConfigError(f"mask file '{p}' has neither a 'labels' nor a 'masks' array")


def load_mask_file(path: str | os.PathLike, n: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """Label maps from a PNG (one map for every image) or an NPZ (`labels` (H, W) or (N, H, W),
    or `masks` (K, H, W) / (N, K, H, W) binary) -> per image (K, 1, H, W) masks.

    Label 0 is a region like any other; negative labels are ignored (not occluded by any mask).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"mask file not found: {p}")
    if p.suffix.lower() == ".npz":
        out = _read_label_npz(p, n)
    else:
        try:
            with Image.open(p) as im:
                lab = torch.from_numpy(np.asarray(im.convert("I") if im.mode not in ("L", "P", "I") else im)
                                       .astype(np.int64))
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(f"cannot read mask file '{p}': {e}") from None
        out = [_labels_to_masks(lab, f"mask file '{p}'")] * n
    if len(out) != n:
        raise ConfigError(f"mask file '{p}' has label maps for {len(out)} images, not {n}")
    for m in out:
        if tuple(m.shape[-2:]) != tuple(size):
            raise ConfigError(f"mask file '{p}' is {tuple(m.shape[-2:])} but the images are {tuple(size)}")
        if len(m) == 0 or float(m.sum()) == 0:
            raise ConfigError(f"mask file '{p}' has no regions")
    return out


def make_masks(cfg: OccludeConfig, x: torch.Tensor) -> list[MaskSet]:
    """One MaskSet per image of x (N, C, H, W)."""
    n, _, h, w = x.shape
    if cfg.masks == "sliding":
        return [MaskSet.from_boxes((h, w), sliding_boxes(h, w, int(cfg.window), int(cfg.stride)))] * n
    if cfg.masks == "rise":
        return [MaskSet.from_dense(1 - rise_masks(int(cfg.n_masks), int(cfg.s), float(cfg.p), (h, w), cfg.seed))] * n
    if cfg.masks == "superpixels":
        labels = superpixels(x.cpu(), int(cfg.n_segments), cfg.segmentation)
        return [MaskSet.from_dense(label_masks(lab)) for lab in labels]
    return [MaskSet.from_dense(m) for m in load_mask_file(cfg.mask_file, n, (h, w))]


def coverage_maps(scores: list[torch.Tensor], masksets: list[MaskSet], device: torch.device | str,
                  chunk: int = 1024) -> torch.Tensor:
    """Σ_k s_k M_k / Σ_k M_k per image (0 where no mask covers a pixel): (N, 1, H, W) float32."""
    maps = []
    for s, ms in zip(scores, masksets):
        total = torch.zeros(ms.size, device=device)
        count = torch.zeros(ms.size, device=device)
        sd = s.to(device)
        for i in range(0, len(ms), chunk):
            idx = torch.arange(i, min(i + chunk, len(ms)))
            m = ms.get(idx, device)[:, 0]
            total += torch.einsum("k,khw->hw", sd[idx.to(device)], m)
            count += m.sum(0)
        maps.append(torch.where(count > 0, total / count.clamp_min(1e-12), torch.zeros_like(total)))
    return torch.stack(maps)[:, None].float()


# ---------------------------------------------------------------------------------------------- engine

def _grad_saliency(model, phi: FeatureExtractor | None, x: torch.Tensor, fill: torch.Tensor,
                   target: torch.Tensor | None) -> torch.Tensor:
    """|∇h ⊙ (x - fill)| summed over channels, (N, H, W): h = target logit (class score) or the
    norm of the representation (class-agnostic scores); one forward + backward."""
    xx = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        h = model(xx).float().gather(1, target[:, None]).sum() if phi is None else phi(xx).norm(dim=1).sum()
        (g,) = torch.autograd.grad(h, xx)
    return (g * (x - fill)).abs().sum(1)


def _prune(cfg: OccludeConfig, saliency: torch.Tensor, masksets: list[MaskSet],
           dev: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: the masks to score (top ``grad_prune`` fraction by saliency proxy) and the proxies."""
    orders, proxies = [], []
    for i, ms in enumerate(masksets):
        kk = len(ms)
        proxy = torch.cat([torch.einsum("khw,hw->k", ms.get(torch.arange(j, min(j + 1024, kk)), dev)[:, 0],
                                        saliency[i]) for j in range(0, kk, 1024)]).cpu()
        keep = max(1, math.ceil(float(cfg.grad_prune) * kk))
        orders.append(torch.argsort(proxy, descending=True, stable=True)[:keep])
        proxies.append(proxy)
    return orders, proxies


def _per_image_score(fn: Callable[[int, torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                   torch.Tensor]:
    """A row score computed image by image: ``fn(i, outputs of image i's rows) -> their scores``."""

    def score(out: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        s = torch.empty(len(img), device=img.device)
        for i in torch.unique_consecutive(img).tolist():
            rows = img == i
            s[rows] = fn(i, out[rows]).float()
        return s

    return score


def _check_gds_dims(cfg: OccludeConfig, gdss: list[torch.Tensor]) -> None:
    """Subspace mode projects k-dim subspaces onto the GDS: with a GDS of at most k dimensions
    both projections span the whole GDS and every score would be 0."""
    small = [d.shape[1] for d in gdss if d.shape[1] <= cfg.k]
    if cfg.gds_mode == "subspace" and small:
        raise ConfigError(f"--gds-mode subspace needs a GDS dimension larger than k, but the GDS dimension is "
                          f"{min(small)} with k={cfg.k} (every score would be 0): raise --gds-dim "
                          f"(now {cfg.gds_dim}) or lower --k")


def occlude(model: nn.Module, x: torch.Tensor, cfg: OccludeConfig | None = None,
            target: torch.Tensor | int | None = None, extra_views: torch.Tensor | None = None,
            gds: torch.Tensor | None = None, progress: Callable[[int, int], None] | None = None) -> OccludeResult:
    """Attribution maps of images ``x`` (N, C, H, W) in [0, 1] on the model's device.

    ``target`` (int or (N,)) is needed for the ``class`` score only.  ``extra_views``
    (V, C, H, W) or (N, V, C, H, W) adds a GDS set; ``gds`` (d, m) overrides the GDS (e.g. one
    from :func:`interpcli.gds.dataset_gds`).  ``progress(done, total)`` is called with the
    number of images done.

    The (image, mask) pairs of all images are evaluated together in chunks of
    ``batch_size`` model inputs (x ``views`` for subspace scores).
    """
    with full_precision():  # no TF32 on CUDA (docs/fidelity.md)
        return _occlude(model, x, cfg, target, extra_views, gds, progress)


def _occlude(model, x, cfg, target, extra_views, gds, progress) -> OccludeResult:
    cfg = cfg or OccludeConfig()
    cfg.check()
    model.eval()
    n, dev = len(x), x.device
    if cfg.score == "class":
        if target is None:
            raise ConfigError("the class score needs a target")
        target = as_targets(target, n, getattr(model, "num_classes", None), dev)
    phi = FeatureExtractor(model, cfg.layer, cfg.pool) if cfg.score != "class" else None
    masksets = make_masks(cfg, x)
    fills = fill_images(cfg.fill, x, cfg.seed)
    bs = int(cfg.batch_size or (cpu_forward_batch(model, x) if dev.type == "cpu" else 256))  # CPU: cache-sized
    k = int(cfg.k)
    views = draw_views(cfg.augment, int(cfg.views), torch.Generator().manual_seed(int(cfg.seed)),
                       include_identity=True) if cfg.uses_views else None

    # what every image is compared with: base score, reference features or subspace, its GDS
    gdss: list[torch.Tensor] = []
    with torch.inference_mode():
        if cfg.score == "gds":
            gdss = [gds.to(dev, torch.float64)] * n if gds is not None else [d for d, _ in image_gdss(
                phi, x, sets=cfg.gds_sets, views=cfg.views, k=k, dim=cfg.gds_dim, seed=cfg.seed, batch_size=bs,
                extra=extra_views)]
            _check_gds_dims(cfg, gdss)
        if cfg.score == "class":
            logits = torch.cat([model(c).float() for c in x.split(bs)])
            refs = (logits.softmax(1) if cfg.class_score == "prob" else logits).gather(1, target[:, None])[:, 0]
        elif cfg.uses_views:
            refs = [pca_basis(f, k) for f in views_features(phi, views, x, bs)]  # (N, A, d) -> bases
            refs = [project_basis(d, r) for d, r in zip(gdss, refs)] if gdss else refs
        else:
            refs = torch.cat([phi(c) for c in x.split(bs)])
            refs = [project_vectors(d, r) for d, r in zip(gdss, refs)] if gdss else refs

    if cfg.score == "class":
        tscore = target_score(target, cfg.class_score == "prob")
        forward, score_fn = model, (lambda out, img: refs[img] - tscore(out, img))
    elif cfg.uses_views:
        def subspace_score(i: int, feats: torch.Tensor) -> torch.Tensor:
            basis = pca_basis(feats, k)
            return subspace_distance(refs[i], project_basis(gdss[i], basis) if gdss else basis, cfg.angles)

        forward, score_fn = (lambda xo: views_features(phi, views, xo, bs)), _per_image_score(subspace_score)
    else:
        def vector_score(i: int, feats: torch.Tensor) -> torch.Tensor:
            return vector_distance(refs[i], project_vectors(gdss[i], feats) if gdss else feats, cfg.distance)

        forward, score_fn = phi, _per_image_score(vector_score)

    # which masks to score (all, or the top fraction by gradient saliency)
    orders, proxies = None, None
    if cfg.grad_prune is not None and float(cfg.grad_prune) < 1:
        orders, proxies = _prune(cfg, _grad_saliency(model, phi, x, fills, target), masksets, dev)
    per = max(1, bs // len(views)) if cfg.uses_views else bs  # (image, mask) pairs per chunk
    scores = [s.cpu() for s in masked_scores(forward, x, masksets, fills, score_fn, batch_size=per, select=orders,
                                             progress=progress)]
    evaluated = [torch.ones(len(ms), dtype=torch.bool) for ms in masksets]
    if orders is not None:
        for i, ms in enumerate(masksets):
            evaluated[i] = torch.zeros(len(ms), dtype=torch.bool)
            evaluated[i][orders[i]] = True
            if not bool(evaluated[i].all()) and cfg.grad_prune_rest == "scaled":
                done = evaluated[i]
                scale = float(scores[i][done].sum() / proxies[i][done].sum().clamp_min(1e-12))
                scores[i][~done] = proxies[i][~done] * scale
    maps = coverage_maps(scores, masksets, dev).cpu()
    return OccludeResult(maps, scores, evaluated, dataclasses.asdict(cfg), [d.shape[1] for d in gdss])
