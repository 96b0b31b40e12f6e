"""Generalized Difference Subspaces of a model's representation (ROSA-GDS, ../shared/METHODS.md 2.3).

    phi = FeatureExtractor(model)
    d, bases = image_gdss(phi, x, views=16, k=4)[0]   # GDS (d, m) of image 0 and its set bases
    d = dataset_gds(model, k=4, checkpoint="runs/r56.safetensors")  # from class subspaces, cached

- :func:`image_gdss`: per image, the GDS of the PCA subspaces of its augmentation sets
  (weak / strong presets of the image and of one noise image, plus optional extra views);
  all views of all sets and images go through the model together in batches.
- :func:`dataset_gds`: the GDS of the class subspaces of training features, cached in the
  user cache folder (:func:`cache_dir`) as ``gds-<key>.safetensors`` (the key hashes the
  checkpoint's sha256 and every option), never beside the checkpoint, whose folder may be
  read-only or globbed (``runs/*.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from . import artifacts
from .augment import Views, apply_views, draw_views, noise_images
from .data import checkpoint_dataset
from .device import model_device
from .errors import ConfigError, InterpError
from .inputs import npz_images
from .models.features import FeatureExtractor
from .subspace import difference_subspace, pca_basis

__all__ = ["views_features", "image_gdss", "dataset_gds", "load_extra_views", "cache_dir", "GDS_SETS"]

GDS_SETS = ("weak", "strong", "noise:weak", "noise:strong")


def views_features(phi: FeatureExtractor, views: Views, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Features of every view of every image: (N, A, d), in batches of ``batch`` model inputs."""
    out = []
    per = max(1, batch // len(views))
    for i in range(0, len(x), per):
        v = apply_views(views, x[i : i + per])  # (A, n, C, H, W)
        a, n = v.shape[:2]
        f = torch.cat([phi(c) for c in v.reshape(a * n, *v.shape[2:]).split(batch)])
        out.append(f.view(a, n, -1).transpose(0, 1))
    return torch.cat(out)


def image_gdss(phi: FeatureExtractor, x: torch.Tensor, *, sets: Sequence[str] = GDS_SETS, views: int = 16,
               k: int = 4, dim: float | int = 0.5, seed: int = 0, batch_size: int = 256,
               extra: torch.Tensor | None = None) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """The GDS of every image of x (N, C, H, W): [(D (d, m), its set bases)], from the
    augmentation ``sets`` (``noise:PRESET`` = that preset applied to one noise image) of
    ``views`` views each, subspaces of dimension ``k``, GDS dimension ``dim`` (an int or a
    fraction of the rank), and the optional extra views (V, C, H, W) or (N, V, C, H, W).

    The views of all sets (and images) go through the model together in batches of
    ``batch_size``; the noise sets, the same for every image, are evaluated once."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    noise = noise_images(1, tuple(x.shape[1:]), g, device=x.device)
    a, k = int(views), int(k)
    drawn = []  # (preset views, is the noise image)
    for spec in sets:
        is_noise = spec.startswith("noise:")
        drawn.append((draw_views(spec.split(":", 1)[1] if is_noise else spec, a, g), is_noise))
    noise_bases = [pca_basis(views_features(phi, v, noise, batch_size)[0], min(k, a))
                   for v, is_noise in drawn if is_noise]
    image_sets = [v for v, is_noise in drawn if not is_noise]
    out = []
    per = max(1, 4096 // max(1, a * len(image_sets)))  # images whose views are built at once
    for i0 in range(0, len(x), per):
        xi = x[i0 : i0 + per]
        n = len(xi)
        if image_sets:
            views_x = torch.cat([apply_views(v, xi).transpose(0, 1) for v in image_sets], 1)  # (n, S*A, C, H, W)
            f = torch.cat([phi(c) for c in views_x.reshape(-1, *x.shape[1:]).split(batch_size)])
            f = f.view(n, len(image_sets), a, -1)
        for j in range(n):
            bases, nb = [], iter(noise_bases)
            img = iter(pca_basis(f[j], min(k, a))) if image_sets else iter(())  # (S, d, k)
            for _, is_noise in drawn:  # keep the order of the sets
                bases.append(next(nb) if is_noise else next(img))
            if extra is not None:
                ex = extra[i0 + j] if extra.dim() == 5 else extra
                fe = torch.cat([phi(c) for c in ex.to(x.device).split(batch_size)])
                bases.append(pca_basis(fe, min(k, len(fe))))
            if len(bases) < 2:
                raise ConfigError("a GDS needs at least two subspaces (augmentation sets or extra views)")
            d, _ = difference_subspace(bases, dim)
            out.append((d, bases))
    return out


def dataset_gds(model: nn.Module, *, layer: str | None = None, pool: str = "auto", k: int = 4,
                dim: float | int = 0.5, per_class: int = 100, seed: int = 0,
                checkpoint: str | os.PathLike | None = None, dataset: str | None = None,
                data_dir: str | None = None) -> torch.Tensor:
    """GDS of the class subspaces of training features (``per_class`` images per class,
    subspaces of dimension k).  With a checkpoint path the result is cached in
    :func:`cache_dir` as ``gds-<key>.safetensors`` and reused; when that folder cannot be
    written, the GDS is computed without caching and a warning says so."""
    key = cache = None
    if checkpoint is not None:
        spec = {"sha256": artifacts.sha256_file(checkpoint), "layer": layer, "pool": pool, "k": k,
                "dim": dim, "per_class": per_class, "dataset": dataset}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        cache = cache_dir() / f"gds-{key}.safetensors"
        try:
            if cache.is_file():
                return artifacts.load_tensors(cache)[0]["gds"]
        except (OSError, InterpError, KeyError):
            pass  # unreadable or corrupt: computed again and rewritten
    ds, _ = checkpoint_dataset(getattr(model, "meta", {}), dataset, data_dir)
    xs, ys = ds.split("train")
    phi = FeatureExtractor(model, layer, pool)
    dev = model_device(model)
    g = torch.Generator().manual_seed(int(seed))
    bases = []
    with torch.inference_mode():
        for c in torch.unique(ys).tolist():
            idx = torch.nonzero(ys == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)[: int(per_class)]]
            f = torch.cat([phi(xs[idx[i : i + 256]].to(dev).float() / 255) for i in range(0, len(idx), 256)])
            bases.append(pca_basis(f, min(int(k), len(f))))
    d, _ = difference_subspace(bases, dim)
    d = d.float().contiguous().cpu()  # float32 on disk and for callers, as before (bases are float64)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            artifacts.save_tensors(cache, {"gds": d}, {"kind": "gds",
                                                      "format_version": artifacts.CHECKPOINT_FORMAT_VERSION, **spec})
        except OSError as e:
            warnings.warn(f"GDS cache folder '{cache.parent}' is not writable ({e.strerror or e}); the GDS was "
                          "computed without caching (set INTERP_CACHE_DIR to a writable folder)", stacklevel=2)
    return d


def cache_dir() -> Path:
    """Where interp keeps what it can recompute (dataset GDSs): ``$INTERP_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/interp``, else ``~/.cache/interp``."""
    if os.environ.get("INTERP_CACHE_DIR"):
        return Path(os.environ["INTERP_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "interp"


def load_extra_views(path: str | os.PathLike, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Extra views from an NPZ ``views`` array: (V, C, H, W) for every image or (N, V, C, H, W);
    float in [0, 1] or uint8."""
    v, _ = npz_images(path, "views")
    ok = (v.dim() == 4 and tuple(v.shape[1:]) == tuple(shape)) or (
        v.dim() == 5 and len(v) == n and tuple(v.shape[2:]) == tuple(shape))
    if not ok:
        raise ConfigError(f"'{path}' views are {tuple(v.shape)}; expected (V, {', '.join(map(str, shape))}) "
                          f"or ({n}, V, {', '.join(map(str, shape))})")
    return v
