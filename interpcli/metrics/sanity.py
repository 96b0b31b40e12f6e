"""Cascading model randomisation: the model-parameter sanity check of Adebayo et al. 2018,
"Sanity checks for saliency maps" (NeurIPS, https://arxiv.org/abs/1810.03292; code:
github.com/adebayoj/sanity_checks_saliency, ``src/randomize_inceptionv3.py`` @ 4859f75).

The layers of a copy of the model are re-initialised one at a time from the logits downwards,
cumulatively; after each step every method explains the same images for the same targets, and
each map is compared with the map of the trained model.  A method whose maps stay similar
while the weights that produce the prediction are destroyed does not explain the model.

Similarity, per image (as the paper's Fig. 2 / 4): the Spearman rank correlation of the maps
summed over channels with their sign ("signed", the paper's "no abs") and of the sums of absolute
values over channels ("abs", PAIR saliency's grayscale view), and the SSIM of the grayscale maps
normalised to [0, 1] as ``VisualizeImageGrayscale`` of github.com/PAIR-code/saliency does
(``saliency/core/visualization.py``: minus the minimum, divided by the 99th percentile minus the
minimum, clipped).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from scipy import stats as sps
from skimage.metrics import structural_similarity
from torch.nn.utils import parametrize

from ..device import model_device
from ..errors import ConfigError
from ..inputs import as_targets
from ..methods import attribute, get_method

__all__ = ["SanityResult", "cascading_randomisation", "randomisation_order", "reinitialise", "rank_correlation",
           "grayscale", "ssim"]


# ----------------------------------------------------------------------------------------
#   Layers and their re-initialisation
# ----------------------------------------------------------------------------------------

def _has_state(m: nn.Module) -> bool:
    """A "layer": a module with parameters of its own (not its children's), or with
    parametrized weights, or a norm layer with running statistics."""
    return (any(True for _ in m.parameters(recurse=False)) or parametrize.is_parametrized(m)
            or _tracks_stats(m))


def _tracks_stats(m: nn.Module) -> bool:
    """BatchNorm / InstanceNorm with running statistics (duck-typed: torch's base class is private)."""
    return callable(getattr(m, "reset_running_stats", None)) and bool(getattr(m, "track_running_stats", False))


def randomisation_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` (see :func:`_has_state`) in the order their forward passes finish
    on one forward of ``x[:1]``, reversed: logits first.  A module called twice counts once (at its
    last call); a layer that the forward never calls is left out."""
    names = {id(m): n for n, m in model.named_modules() if _has_state(m) and ".parametrizations." not in f".{n}."}
    seen: dict[int, int] = {}
    clock = iter(range(1, 1 << 62))

    def hook(m, _i, _o):
        seen[id(m)] = next(clock)

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    mods = {id(m): m for m in model.modules()}
    return [(names[i] or "(root)", mods[i]) for i in sorted(seen, key=seen.get, reverse=True)]


@torch.no_grad()
def _fallback_init(p: torch.Tensor) -> None:
    if p.dim() >= 2:  # what nn.Linear / nn.Conv2d's reset_parameters draw: U(+-1/sqrt(fan_in))
        nn.init.kaiming_uniform_(p, a=math.sqrt(5))
    else:
        p.normal_(0.0, 0.01)


def reinitialise(module: nn.Module, seed: int, keep_stats: bool = False) -> None:
    """Re-initialise ``module``'s own parameters in place, drawing from torch's generator seeded
    with ``seed`` (forked: the caller's random state is untouched).

    A module with a ``reset_parameters()`` (convolutions, linear and norm layers) gets its own
    initialisation, BatchNorm's included: weight 1, bias 0 and running statistics reset (mean 0,
    variance 1), which makes an eval-mode BatchNorm the identity.  Otherwise (and for parametrized
    weights, whose stored ``original`` is re-drawn) each own parameter is drawn anew: tensors of
    two or more dimensions as PyTorch's convolution default (Kaiming uniform, a = sqrt(5), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))), scalars and vectors from N(0, 0.01²).  ``keep_stats``
    keeps the running statistics of norm layers (Adebayo et al.'s TF code: they are not trainable
    variables, so its re-initialisation leaves them).
    """
    dev = next((t.device for t in module.parameters()), torch.device("cpu"))
    stats = {k: v.clone() for k, v in module.named_buffers(recurse=False)} if keep_stats else {}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        if parametrize.is_parametrized(module):
            for p in module.parameters():
                _fallback_init(p)
        elif callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                _fallback_init(p)
        if _tracks_stats(module):
            module.reset_running_stats()
    for k, v in stats.items():
        getattr(module, k).copy_(v)


# ----------------------------------------------------------------------------------------
#   Similarity of maps
# ----------------------------------------------------------------------------------------

def _array(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if torch.is_tensor(a):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def rank_correlation(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (both (N, P),
    or anything that flattens to it from the second axis on): the Pearson correlation of the
    average ranks (ties share the mean of their ranks, as :func:`scipy.stats.spearmanr`).
    NaN for a row where either map is constant."""
    a, b = _array(a), _array(b)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    ra = sps.rankdata(a, axis=1)
    rb = sps.rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    va, vb = (ra * ra).sum(1), (rb * rb).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra * rb).sum(1) / np.sqrt(va * vb)
    return np.where((va > 0) & (vb > 0), np.clip(r, -1.0, 1.0), np.nan)


def grayscale(maps: np.ndarray | torch.Tensor, percentile: float = 99.0) -> np.ndarray:
    """(N, C, H, W) maps -> (N, H, W) in [0, 1]: sum of |map| over channels, minus its minimum,
    divided by (its ``percentile`` - minimum), clipped (PAIR saliency's ``VisualizeImageGrayscale``).
    A map whose percentile equals its minimum is NaN."""
    g = np.abs(_array(maps)).sum(1)
    lo = g.min((1, 2), keepdims=True)
    hi = np.percentile(g, percentile, axis=(1, 2), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip((g - lo) / (hi - lo), 0, 1)
    return np.where(hi > lo, out, np.nan)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al. 2004, :func:`skimage.metrics.structural_similarity`, data range 1) of each
    pair of (N, H, W) images in [0, 1]; the window is 7x7, or the largest odd size that fits a
    smaller map; NaN for a NaN map or one smaller than 3x3."""
    h, w = a.shape[-2:]
    win = min(7, h - (1 - h % 2), w - (1 - w % 2))
    out = np.full(len(a), np.nan)
    if win < 3:
        return out
    for i, (p, q) in enumerate(zip(a, b)):
        if np.isfinite(p).all() and np.isfinite(q).all():
            out[i] = structural_similarity(p, q, data_range=1.0, win_size=win)
    return out


# ----------------------------------------------------------------------------------------
#   The check
# ----------------------------------------------------------------------------------------

def _jsonable(a: np.ndarray) -> list:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


@dataclasses.dataclass
class SanityResult:
    """Similarity of each method's maps before and after each randomisation step.

    Attributes:
        layers: the layers re-initialised, in order (logits first); step i >= 1 has layers[:i] random.
        methods: the methods compared.
        spearman_abs, spearman_signed, ssim: per method, (len(layers) + 1, N): row 0 is the trained
            model against itself (rank correlations exactly 1 unless a map is constant), row i after
            step i.  NaN where undefined (a constant map).
        targets: (N,) the classes explained (the same at every step).
        seed: the seed of the re-initialisation.
        params: per method, the parameters it ran with (defaults included).
    """

    layers: list[str]
    methods: list[str]
    spearman_abs: dict[str, np.ndarray]
    spearman_signed: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    targets: np.ndarray
    seed: int = 0
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    target_mode: str = "fixed"
    keep_bn_stats: bool = False

    def means(self, metric: str = "spearman_abs") -> dict[str, np.ndarray]:
        """Per method, the mean over images (NaN ignored) at each step, (len(layers) + 1,)."""
        out = {}
        for m, a in getattr(self, metric).items():
            ok = np.isfinite(a)
            out[m] = np.where(ok.any(1), np.where(ok, a, 0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN as null): settings, layers, per-step means and the per-image arrays."""
        metrics = ("spearman_abs", "spearman_signed", "ssim")
        return {"layers": list(self.layers), "methods": list(self.methods), "seed": self.seed,
                "target_mode": self.target_mode, "keep_bn_stats": self.keep_bn_stats,
                "params": self.params, "targets": [int(t) for t in self.targets],
                "mean": {k: {m: _jsonable(v[None])[0] for m, v in self.means(k).items()} for k in metrics},
                **{k: {m: _jsonable(v) for m, v in getattr(self, k).items()} for k in metrics}}


def cascading_randomisation(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | int, methods: Sequence[str],
                            *, seed: int = 0, params: dict[str, dict[str, Any]] | None = None,
                            batch_size: int | None = None, max_layers: int | None = None, with_ssim: bool = True,
                            target_mode: str = "fixed", keep_bn_stats: bool = False,
                            progress: Callable[[int, int, str], None] | None = None) -> SanityResult:
    """Cascading randomisation of a deep copy of ``model`` (the model itself is not touched, not
    even its train / eval mode) on images ``x`` (N, C, H, W) in [0, 1] for ``targets`` (the
    original model's classes to explain, kept at every step).

    Step i re-initialises the i-th layer of :func:`randomisation_order` (with
    :func:`reinitialise`, seeded from ``seed`` and i) on top of the earlier ones; ``max_layers``
    stops after that many steps (deep networks).  After each step every method's maps
    (:func:`~interpcli.methods.attribute` with ``params[method]``) are compared with the trained
    model's by :func:`rank_correlation` (signed and absolute) and, with ``with_ssim``, by
    :func:`ssim` of the :func:`grayscale` maps.  ``progress(step, n_steps, layer)`` is called after
    each step (step 0: the trained model).

    ``target_mode``: ``fixed`` (default: the original targets at every step, so the map of the
    same class is compared) or ``pred`` (each randomised model explains its own prediction, as
    Adebayo et al.'s script).  ``keep_bn_stats``: keep norm layers' running statistics when
    they are re-initialised (their TF code), instead of resetting them (default).
    """
    if target_mode not in ("fixed", "pred"):
        raise ConfigError(f"target_mode must be fixed or pred; got '{target_mode}'")
    params = params or {}
    used = {m: {**get_method(m).defaults, **get_method(m).check(params.get(m, {}))} for m in methods}
    net = copy.deepcopy(model).eval()
    dev = model_device(net)
    x = x.to(dev)
    t = as_targets(targets, len(x), getattr(net, "num_classes", None), dev)
    layers = randomisation_order(net, x)
    if max_layers is not None:
        layers = layers[: max(0, int(max_layers))]
    steps = len(layers) + 1

    def maps_of() -> dict[str, torch.Tensor]:
        tt = t
        if target_mode == "pred":
            with torch.inference_mode():
                tt = torch.cat([net(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
        return {m: attribute(net, x, tt, m, batch_size=batch_size, **params.get(m, {})).cpu() for m in methods}

    original = maps_of()
    ref = {m: (original[m].abs().sum(1), original[m].sum(1), grayscale(original[m]) if with_ssim else None)
           for m in methods}
    n = len(x)
    out = {k: {m: np.full((steps, n), np.nan) for m in methods} for k in ("abs", "signed", "ssim")}
    for step in range(steps):
        if step:
            seq = np.random.SeedSequence([int(seed) % 2**32, step]).generate_state(1)[0]
            reinitialise(layers[step - 1][1], int(seq), keep_stats=keep_bn_stats)
        current = original if step == 0 else maps_of()
        for m in methods:
            a = current[m]
            out["abs"][m][step] = rank_correlation(ref[m][0], a.abs().sum(1))
            out["signed"][m][step] = rank_correlation(ref[m][1], a.sum(1))
            if with_ssim:
                out["ssim"][m][step] = ssim(ref[m][2], grayscale(a))
        if progress is not None:
            progress(step, steps - 1, layers[step - 1][0] if step else "(trained)")
    return SanityResult([name for name, _ in layers], list(methods), out["abs"], out["signed"], out["ssim"],
                        t.cpu().numpy(), int(seed), used, target_mode, keep_bn_stats)
