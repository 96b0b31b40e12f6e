"""The perturbation engine: masks x scores, and the representation-space methods ROSA / OSA-DAS / GDS.

    from interpcli import load_model
    from interpcli.occlude import OccludeConfig, occlude
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
  first).

Map = Σ_j s_j M_j / Σ_j M_j (each mask's score spread over the pixels it covers, normalised
by coverage; pixels no mask covers get 0).  All occluded images (x augmented views) of an
image go through the model in batches of ``batch_size``; features are taken once per view
with a forward hook that stops the forward pass at the feature layer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from .augment import Views, apply_views, draw_views, noise_images
from .errors import ConfigError
from .subspace import difference_subspace, pca_basis, project_basis, project_vectors, subspace_distance, vector_distance

__all__ = ["OccludeConfig", "OccludeResult", "occlude", "MASKS", "SCORES", "FILLS", "FeatureExtractor",
           "feature_module", "sliding_boxes", "load_mask_file", "image_gds", "image_gdss", "dataset_gds",
           "load_extra_views", "occlude_explanation"]

MASKS = ("sliding", "rise", "superpixels", "file")
SCORES = ("class", "repr", "subspace", "gds")
FILLS = ("zero", "mean", "blur", "noise")
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
    pool: str = "auto"              # 4-D features: auto (avg at the penultimate layer, flatten elsewhere) | avg | max | flatten
    augment: str = "weak"           # subspace: the augmentation preset of the views
    views: int = 16                 # subspace / gds: augmented views per image (view 0 is the image itself)
    k: int = 4                      # subspace dimension
    angles: str = "all"             # canonical angles used: all | first | an int
    gds_from: str = "image"         # image (four augmentation sets) | dataset (class subspaces of training features)
    gds_dim: float = 0.5            # GDS dimension: an int, or a fraction of the rank
    gds_mode: str = "repr"          # gds: compare projected vectors (repr) or projected subspaces (subspace)
    gds_sets: tuple[str, ...] = ("weak", "strong", "noise:weak", "noise:strong")
    gds_per_class: int = 100        # dataset GDS: training images per class
    extra_views: str | None = None  # NPZ with `views` (V, C, H, W) or (N, V, C, H, W): one more GDS set
    grad_prune: float | None = None  # score only this fraction of masks, ranked by gradient saliency
    grad_prune_rest: str = "scaled"  # the rest: scaled (their saliency x fitted scale) | zero
    seed: int = 0
    batch_size: int | None = None   # images per forward pass (default 256)

    def check(self) -> None:
        if self.masks not in MASKS:
            raise ConfigError(f"unknown masks '{self.masks}'; use {', '.join(MASKS)}")
        if self.score not in SCORES:
            raise ConfigError(f"unknown score '{self.score}'; use {', '.join(SCORES)}")
        if not (isinstance(self.fill, (int, float)) or self.fill in FILLS):
            try:
                self.fill = float(self.fill)
            except (TypeError, ValueError):
                raise ConfigError(f"unknown fill '{self.fill}'; use {', '.join(FILLS)} or a number") from None
        if self.class_score not in ("logit", "prob"):
            raise ConfigError("class_score must be logit or prob")
        if self.gds_mode not in ("repr", "subspace"):
            raise ConfigError("gds_mode must be repr or subspace")
        if self.gds_from not in ("image", "dataset"):
            raise ConfigError("gds_from must be image or dataset")
        if self.pool not in ("auto", "avg", "max", "flatten"):
            raise ConfigError("pool must be auto, avg, max or flatten")
        if self.grad_prune is not None and not 0 < float(self.grad_prune) <= 1:
            raise ConfigError("grad_prune must be a fraction in (0, 1]")
        if self.grad_prune_rest not in ("scaled", "zero"):
            raise ConfigError("grad_prune_rest must be scaled or zero")
        if self.masks == "file" and not self.mask_file:
            raise ConfigError("masks 'file' needs a mask file (--mask-file)")
        if self.score in ("subspace", "gds") and self.views < 1:
            raise ConfigError("views must be positive")
        if self.score == "subspace" or (self.score == "gds" and self.gds_mode == "subspace"):
            if self.k > self.views:
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


# ---------------------------------------------------------------------------------------------- masks

class MaskSet:
    """K masks of one image, (K, 1, H, W) in [0, 1], materialised in chunks (1 = occluded)."""

    def __init__(self, size: tuple[int, int], dense: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None):
        self.size, self._dense, self._boxes = size, dense, boxes

    def __len__(self) -> int:
        return len(self._dense) if self._dense is not None else len(self._boxes)

    def get(self, idx: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        if self._dense is not None:
            return self._dense[idx.to(self._dense.device)].to(device)
        h, w = self.size
        b = self._boxes[idx].to(device)
        ys = torch.arange(h, device=device)
        xs = torch.arange(w, device=device)
        inside_y = (ys[None] >= b[:, 0, None]) & (ys[None] < b[:, 1, None])
        inside_x = (xs[None] >= b[:, 2, None]) & (xs[None] < b[:, 3, None])
        return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]


def sliding_boxes(h: int, w: int, window: int, stride: int) -> torch.Tensor:
    """Window boxes (K, 4) = y0, y1, x0, x1 at the positions of the ``occlusion`` method (Captum's:
    ceil((size - window)/stride) + 1 per axis, the last one cut by the border)."""
    from .methods.perturbation import _occlusion_positions

    ys, xs = _occlusion_positions(h, w, window, stride)
    return torch.tensor([(y, min(y + window, h), x, min(x + window, w)) for y in ys for x in xs])


def _labels_to_masks(labels: torch.Tensor, what: str) -> torch.Tensor:
    values = torch.unique(labels)
    if len(values) == 0:
        raise ConfigError(f"{what} has no regions")
    return (labels[None] == values[:, None, None]).float()[:, None]


def load_mask_file(path: str | os.PathLike, n: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """Label maps from a PNG (one map for every image) or an NPZ (`labels` (H, W) or (N, H, W),
    or `masks` (K, H, W) / (N, K, H, W) binary) -> per image (K, 1, H, W) masks.

    Label 0 is a region like any other unless the NPZ sets ``background=-1`` style negatives:
    negative labels are ignored (not occluded by any mask).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"mask file not found: {p}")
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read mask file '{p}': {e}") from None
        if "masks" in arrays:
            m = torch.from_numpy(arrays["masks"].astype(np.float32))
            per = [m] * n if m.dim() == 3 else list(m)
            out = [x[:, None] for x in per]
        elif "labels" in arrays:
            lab = torch.from_numpy(arrays["labels"].astype(np.int64))
            per = [lab] * n if lab.dim() == 2 else list(lab)
            out = [_labels_to_masks(x.masked_fill(x < 0, -1), f"mask file '{p}'") for x in per]
            out = [m[1:] if bool((x < 0).any()) else m for m, x in zip(out, per)]
        else:
            raise ConfigError(f"mask file '{p}' has neither a 'labels' nor a 'masks' array")
    else:
        from PIL import Image, UnidentifiedImageError

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
        boxes = sliding_boxes(h, w, int(cfg.window), int(cfg.stride))
        return [MaskSet((h, w), boxes=boxes)] * n
    if cfg.masks == "rise":
        from .methods.perturbation import rise_masks

        m = 1 - rise_masks(int(cfg.n_masks), int(cfg.s), float(cfg.p), (h, w), cfg.seed)
        return [MaskSet((h, w), dense=m)] * n
    if cfg.masks == "superpixels":
        from .segments import label_masks, superpixels

        labels = superpixels(x.cpu(), int(cfg.n_segments), cfg.segmentation)
        return [MaskSet((h, w), dense=label_masks(lab)) for lab in labels]
    return [MaskSet((h, w), dense=m) for m in load_mask_file(cfg.mask_file, n, (h, w))]


def fill_images(fill: str | float, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The replacement image of each image (N, C, H, W)."""
    if isinstance(fill, (int, float)):
        return torch.full_like(x, float(fill))
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if fill == "blur":
        from .methods._common import make_baseline

        return make_baseline("blurred", x)
    g = torch.Generator().manual_seed(int(seed) + 7)
    return torch.rand(x.shape, generator=g).to(x)


# ---------------------------------------------------------------------------------------------- features

class _Stop(Exception):
    pass


def feature_module(model: nn.Module, layer: str | None) -> tuple[nn.Module | None, bool]:
    """(module, take_its_input): the classifier's input by default, else the named module's output."""
    net = getattr(model, "net", model)
    if layer in ("logits", "probs"):
        return None, False
    if layer:
        from .models._base import resolve_layer

        return resolve_layer(net, layer), False
    last = None
    for m in net.modules():
        if "weight" in m._parameters or hasattr(m, "parametrizations") and "weight" in m.parametrizations:
            last = m
    if last is None or last is net:
        raise ConfigError("cannot find the model's classifier layer; pass --layer NAME")
    return last, True


class FeatureExtractor:
    """φ(x): (B, C, H, W) -> (B, d) float, the forward pass stopped at the feature layer."""

    def __init__(self, model: nn.Module, layer: str | None = None, pool: str = "auto"):
        self.model, self.layer = model, layer
        self.module, self.take_input = feature_module(model, layer)
        self.pool = ("avg" if layer is None else "flatten") if pool == "auto" else pool

    def _reduce(self, f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        if f.dim() == 4 and self.pool == "avg":
            return f.mean((2, 3))
        if f.dim() == 4 and self.pool == "max":
            return f.amax((2, 3))
        return f.flatten(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            out = self.model(x).float()
            return out.softmax(1) if self.layer == "probs" else out
        store: dict[str, torch.Tensor] = {}
        if self.take_input:
            def hook(_m, inputs):
                store["f"] = inputs[0]
                raise _Stop
            handle = self.module.register_forward_pre_hook(hook)
        else:
            def hook(_m, _i, out):
                store["f"] = out
                raise _Stop
            handle = self.module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "f" not in store:
            raise ConfigError(f"layer '{self.layer}' is not used in the forward pass")
        return self._reduce(store["f"])


# ---------------------------------------------------------------------------------------------- GDS

def _views_features(phi: FeatureExtractor, views: Views, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Features of every view of every image: (N, A, d)."""
    out = []
    per = max(1, batch // len(views))
    for i in range(0, len(x), per):
        v = apply_views(views, x[i : i + per])  # (A, n, C, H, W)
        a, n = v.shape[:2]
        f = torch.cat([phi(c) for c in v.reshape(a * n, *v.shape[2:]).split(batch)])
        out.append(f.view(a, n, -1).transpose(0, 1))
    return torch.cat(out)


def image_gdss(phi: FeatureExtractor, x: torch.Tensor, cfg: OccludeConfig,
               extra: torch.Tensor | None = None) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """The GDS of every image of x (N, C, H, W): [(D (d, m), its set bases)], from the
    augmentation sets ``cfg.gds_sets`` (``noise:PRESET`` = that preset applied to one noise
    image) and the optional extra views (V, C, H, W) or (N, V, C, H, W).

    The views of all sets (and images) go through the model together in batches of
    ``batch_size``; the noise sets, the same for every image, are evaluated once."""
    g = torch.Generator().manual_seed(int(cfg.seed) + 1)
    noise = noise_images(1, tuple(x.shape[1:]), g, device=x.device)
    bs = int(cfg.batch_size or 256)
    a, k = int(cfg.views), int(cfg.k)
    sets = []  # (preset views, is the noise image)
    for spec in cfg.gds_sets:
        is_noise = spec.startswith("noise:")
        sets.append((draw_views(spec.split(":", 1)[1] if is_noise else spec, a, g), is_noise))
    noise_bases = [pca_basis(_views_features(phi, v, noise, bs)[0], min(k, a)) for v, is_noise in sets if is_noise]
    image_sets = [v for v, is_noise in sets if not is_noise]
    out = []
    per = max(1, 4096 // max(1, a * len(image_sets)))  # images whose views are built at once
    for i0 in range(0, len(x), per):
        xi = x[i0 : i0 + per]
        views = torch.cat([apply_views(v, xi).transpose(0, 1) for v in image_sets], 1)  # (n, S*A, C, H, W)
        n = len(xi)
        f = torch.cat([phi(c) for c in views.reshape(-1, *x.shape[1:]).split(bs)]).view(n, len(image_sets), a, -1)
        for j in range(n):
            bases, nb = [], iter(noise_bases)
            img = iter(pca_basis(f[j], min(k, a)))  # (S, d, k)
            for _, is_noise in sets:  # keep the order of cfg.gds_sets
                bases.append(next(nb) if is_noise else next(img))
            if extra is not None:
                ex = extra[i0 + j] if extra.dim() == 5 else extra
                fe = torch.cat([phi(c) for c in ex.to(x.device).split(bs)])
                bases.append(pca_basis(fe, min(k, len(fe))))
            d, _ = difference_subspace(bases, cfg.gds_dim)
            out.append((d, bases))
    return out


def image_gds(phi: FeatureExtractor, x: torch.Tensor, cfg: OccludeConfig,
              extra: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The GDS of one image (1, C, H, W) and its set bases (see :func:`image_gdss`)."""
    return image_gdss(phi, x, cfg, extra)[0]


def dataset_gds(model: nn.Module, cfg: OccludeConfig, checkpoint: str | os.PathLike | None = None,
                dataset: str | None = None, data_dir: str | None = None) -> torch.Tensor:
    """GDS of the class subspaces of training features (``gds_per_class`` images per class,
    subspaces of dimension k).  With a checkpoint path the result is cached beside it as
    ``CKPT.gds-<key>.safetensors`` and reused."""
    from . import artifacts
    from .device import model_device
    from .train import checkpoint_dataset

    key = None
    if checkpoint is not None:
        spec = {"sha256": artifacts.sha256_file(checkpoint), "layer": cfg.layer, "pool": cfg.pool, "k": cfg.k,
                "dim": cfg.gds_dim, "per_class": cfg.gds_per_class, "dataset": dataset}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        cache = Path(f"{checkpoint}.gds-{key}.safetensors")
        if cache.is_file():
            tensors, _ = artifacts.load_tensors(cache)
            return tensors["gds"]
    ds, _ = checkpoint_dataset(getattr(model, "meta", {}), dataset, data_dir)
    xs, ys = ds.split("train")
    phi = FeatureExtractor(model, cfg.layer, cfg.pool)
    dev = model_device(model)
    g = torch.Generator().manual_seed(int(cfg.seed))
    bases = []
    with torch.inference_mode():
        for c in torch.unique(ys).tolist():
            idx = torch.nonzero(ys == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)[: int(cfg.gds_per_class)]]
            f = torch.cat([phi(xs[idx[i : i + 256]].to(dev).float() / 255) for i in range(0, len(idx), 256)])
            bases.append(pca_basis(f, min(int(cfg.k), len(f))))
    d, _ = difference_subspace(bases, cfg.gds_dim)
    d = d.contiguous().cpu()
    if key is not None:
        artifacts.save_tensors(cache, {"gds": d}, {"kind": "gds", "format_version": artifacts.CHECKPOINT_FORMAT_VERSION,
                                                  **spec})
    return d


# ---------------------------------------------------------------------------------------------- engine

def _grad_saliency(model, phi: FeatureExtractor, x: torch.Tensor, fill: torch.Tensor, target: torch.Tensor | None,
                   score: str) -> torch.Tensor:
    """|∇h ⊙ (x - fill)| summed over channels, (N, H, W): h = target logit (class score) or the
    norm of the representation (class-agnostic scores); one forward + backward."""
    xx = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if score == "class":
            h = model(xx).float().gather(1, target[:, None]).sum()
        else:
            h = phi(xx).norm(dim=1).sum()
        (g,) = torch.autograd.grad(h, xx)
    return (g * (x - fill)).abs().sum(1)


def _chunks(n: int, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, n, size):
        yield torch.arange(i, min(i + size, n))


def occlude(model: nn.Module, x: torch.Tensor, cfg: OccludeConfig | None = None,
            target: torch.Tensor | int | None = None, extra_views: torch.Tensor | None = None,
            gds: torch.Tensor | None = None, progress: Callable[[int, int], None] | None = None) -> OccludeResult:
    """Attribution maps of images ``x`` (N, C, H, W) in [0, 1] on the model's device.

    ``target`` (int or (N,)) is needed for the ``class`` score only.  ``extra_views``
    (V, C, H, W) or (N, V, C, H, W) adds a GDS set; ``gds`` (d, m) overrides the GDS (e.g. one
    from :func:`dataset_gds`).  ``progress(done, total)`` is called with the number of images done.

    The (image, mask) pairs of all images are evaluated together in chunks of
    ``batch_size`` model inputs (x ``views`` for subspace scores), so small images with
    few masks still fill large batches.
    """
    cfg = cfg or OccludeConfig()
    cfg.check()
    model.eval()
    n = len(x)
    dev = x.device
    if cfg.score == "class":
        if target is None:
            raise ConfigError("the class score needs a target")
        target = torch.as_tensor(target, device=dev).long().clone()  # clone: no inference tensor
        target = target.expand(n).clone() if target.dim() == 0 else target
        k = getattr(model, "num_classes", None)
        if k is not None and n and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ConfigError(f"target class out of range 0..{k - 1}")
    phi = FeatureExtractor(model, cfg.layer, cfg.pool) if cfg.score != "class" else None
    masksets = make_masks(cfg, x)
    fills = fill_images(cfg.fill, x, cfg.seed)
    bs = int(cfg.batch_size or 256)
    use_views = cfg.score == "subspace" or (cfg.score == "gds" and cfg.gds_mode == "subspace")
    views = draw_views(cfg.augment, int(cfg.views), torch.Generator().manual_seed(int(cfg.seed)),
                       include_identity=True) if use_views else None
    per = max(1, bs // len(views)) if use_views else bs  # (image, mask) pairs per chunk

    # what every image is compared with: base score, reference features or subspace, its GDS
    gdss: list[torch.Tensor | None] = [None] * n
    with torch.inference_mode():
        if cfg.score == "gds":
            if gds is not None:
                gdss = [gds.to(dev, torch.float32)] * n
            else:
                gdss = [d for d, _ in image_gdss(phi, x, cfg, extra_views)]
        if cfg.score == "class":
            logits = torch.cat([model(c).float() for c in x.split(bs)])
            refs = (logits.softmax(1) if cfg.class_score == "prob" else logits).gather(1, target[:, None])[:, 0]
        elif use_views:
            feats = _views_features(phi, views, x, bs)  # (N, A, d)
            refs = [pca_basis(f, int(cfg.k)) for f in feats]
            if cfg.score == "gds":
                refs = [project_basis(d, r) for d, r in zip(gdss, refs)]
        else:
            refs = torch.cat([phi(c) for c in x.split(bs)])
            if cfg.score == "gds":
                refs = [project_vectors(d, r) for d, r in zip(gdss, refs)]

    # which masks to score (all, or the top fraction by gradient saliency)
    orders, proxies = [], []
    saliency = None
    if cfg.grad_prune is not None and float(cfg.grad_prune) < 1:
        saliency = _grad_saliency(model, phi, x, fills, target, cfg.score)
    for i, ms in enumerate(masksets):
        kk = len(ms)
        if saliency is None:
            orders.append(torch.arange(kk))
            proxies.append(None)
            continue
        proxy = torch.cat([torch.einsum("khw,hw->k", ms.get(c, dev)[:, 0], saliency[i]) for c in
                           _chunks(kk, 1024)]).cpu()
        keep = max(1, math.ceil(float(cfg.grad_prune) * kk))
        orders.append(torch.argsort(proxy, descending=True, stable=True)[:keep])
        proxies.append(proxy)

    def score_rows(img: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Scores of a chunk's occluded inputs; ``img`` gives the image of each row."""
        s = torch.empty(len(img), device=dev)
        for i in torch.unique(img).tolist():
            rows = img == i
            if cfg.score == "class":
                s[rows] = refs[i] - out[rows]
            elif use_views:
                basis = pca_basis(out[rows], int(cfg.k))
                if cfg.score == "gds":
                    basis = project_basis(gdss[i], basis)
                s[rows] = subspace_distance(refs[i], basis, cfg.angles).float()
            else:
                f = out[rows] if cfg.score != "gds" else project_vectors(gdss[i], out[rows])
                s[rows] = vector_distance(refs[i], f, cfg.distance).float()
        return s

    scores = [torch.zeros(len(ms)) for ms in masksets]
    img_of = torch.cat([torch.full((len(o),), i) for i, o in enumerate(orders)])
    mask_of = torch.cat(orders)
    ends = torch.cumsum(torch.tensor([len(o) for o in orders]), 0)  # pairs done when an image is complete
    with torch.inference_mode():
        for c in _chunks(len(img_of), per):
            img, msk = img_of[c], mask_of[c]
            parts = []
            for i in torch.unique(img).tolist():
                m = masksets[i].get(msk[img == i], dev)
                parts.append(x[i : i + 1] * (1 - m) + fills[i : i + 1] * m)
            xo = torch.cat(parts)
            if cfg.score == "class":
                o = model(xo).float()
                o = (o.softmax(1) if cfg.class_score == "prob" else o).gather(1, target[img.to(dev), None])[:, 0]
            elif use_views:
                o = _views_features(phi, views, xo, bs)  # (c, A, d)
            else:
                o = phi(xo)
            s = score_rows(img.to(dev), o).cpu()
            for i in torch.unique(img).tolist():
                scores[i][msk[img == i]] = s[img == i]
            if progress is not None:
                progress(int((ends <= int(c[-1]) + 1).sum()), n)

    maps, evaluated_all = [], []
    for i, ms in enumerate(masksets):
        kk = len(ms)
        evaluated = torch.zeros(kk, dtype=torch.bool)
        evaluated[orders[i]] = True
        if proxies[i] is not None and not bool(evaluated.all()) and cfg.grad_prune_rest == "scaled":
            proxy = proxies[i]
            scale = float(scores[i][evaluated].sum() / proxy[evaluated].sum().clamp_min(1e-12))
            scores[i][~evaluated] = proxy[~evaluated] * scale
        total = torch.zeros(x.shape[-2:], device=dev)
        count = torch.zeros(x.shape[-2:], device=dev)
        sd = scores[i].to(dev)
        for c in _chunks(kk, 1024):
            m = ms.get(c, dev)[:, 0]
            total += torch.einsum("k,khw->hw", sd[c.to(dev)], m)
            count += m.sum(0)
        maps.append(torch.where(count > 0, total / count.clamp_min(1e-12), torch.zeros_like(total)))
        evaluated_all.append(evaluated)
    gds_dims = [d.shape[1] for d in gdss] if cfg.score == "gds" else []
    return OccludeResult(torch.stack(maps)[:, None].float().cpu(), scores, evaluated_all, dataclasses.asdict(cfg),
                         gds_dims)


def load_extra_views(path: str | os.PathLike, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Extra views from an NPZ ``views`` array: (V, C, H, W) for every image or (N, V, C, H, W);
    float in [0, 1] or uint8."""
    from .explain import npz_images

    v, _ = npz_images(path, "views")
    ok = (v.dim() == 4 and tuple(v.shape[1:]) == tuple(shape)) or (
        v.dim() == 5 and len(v) == n and tuple(v.shape[2:]) == tuple(shape))
    if not ok:
        raise ConfigError(f"'{path}' views are {tuple(v.shape)}; expected (V, {', '.join(map(str, shape))}) "
                          f"or ({n}, V, {', '.join(map(str, shape))})")
    return v


def occlude_explanation(model, inputs, cfg: OccludeConfig, target: str | int = "pred",
                        checkpoint: str | os.PathLike | None = None, dataset: str | None = None,
                        data_dir: str | None = None, progress: Callable[[int, int], None] | None = None,
                        fast: bool = True):
    """:func:`occlude` on :class:`~interpcli.explain.Inputs`, as an
    :class:`~interpcli.explain.ExplainResult` that :func:`~interpcli.explain.save_explanation`
    writes (the map is stored under the method name of the score: occlusion, rosa, osa-das, gds).

    Class-agnostic scores explain each image once (``target`` only labels the rows).  With
    ``fast`` an interp model runs on the eval fast path (:mod:`interpcli.fastpath`)."""
    from .device import model_device
    from .explain import ExplainResult, resolve_targets

    cfg.check()
    dev = model_device(model)
    model.eval()
    from .models import Classifier

    if fast and isinstance(model, Classifier):
        from .fastpath import fast_model_for_layer

        model = fast_model_for_layer(model, cfg.layer if cfg.layer not in ("logits", "probs") else None)
    with torch.inference_mode():
        logits = torch.cat([model(inputs.images[i : i + 256].to(dev)).float().cpu()
                            for i in range(0, len(inputs.images), 256)])
    if cfg.score != "class" and str(target) == "all":
        target = "pred"
    rows, targets = resolve_targets(target, model, logits, inputs.labels)
    x = inputs.images[rows]
    extra = load_extra_views(cfg.extra_views, len(x), tuple(x.shape[1:])) if cfg.extra_views else None
    if extra is not None and extra.dim() == 5:
        extra = extra[rows]
    gds = None
    if cfg.score == "gds" and cfg.gds_from == "dataset":
        gds = dataset_gds(model, cfg, checkpoint, dataset, data_dir)
    res = occlude(model, x.to(dev), cfg, targets.to(dev), extra_views=extra, gds=gds, progress=progress)
    kmax = max(len(s) for s in res.mask_scores)
    scores = np.full((len(x), kmax), np.nan, dtype=np.float32)
    evaluated = np.zeros((len(x), kmax), dtype=bool)
    for i, (s, e) in enumerate(zip(res.mask_scores, res.evaluated)):
        scores[i, : len(s)] = s.numpy()
        evaluated[i, : len(e)] = e.numpy()
    name = METHOD_OF_SCORE[cfg.score]
    params = {k: v for k, v in res.config.items() if v is not None}
    if res.gds_dim:
        params["gds_dims"] = res.gds_dim
    return ExplainResult(x, targets, inputs.labels[rows], logits[rows], [inputs.sources[int(r)] for r in rows],
                         {name: res.maps}, {name: params}, list(model.classes),
                         extras={"mask_scores": scores, "mask_evaluated": evaluated})
