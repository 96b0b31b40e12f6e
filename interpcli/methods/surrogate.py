"""Surrogate-model methods on superpixels: one linear model per image, fitted to the model's
scores on random on/off patterns of the image's superpixels (:mod:`interpcli.segments`).

- ``lime``: LIME (Ribeiro, Singh, Guestrin, KDD 2016, https://arxiv.org/abs/1602.04938) with
  the semantics of the ``lime`` package's ``LimeImageExplainer``: Bernoulli(0.5) patterns
  (the first all ones), switched-off superpixels filled with their mean colour, weights
  sqrt(exp(-d² / width²)) with d the cosine distance to the all-ones pattern, and
  ``Ridge(alpha=1)`` with an intercept as the surrogate.
- ``kernelshap``: Kernel SHAP (Lundberg & Lee, NeurIPS 2017, https://arxiv.org/abs/1705.07874):
  coalitions drawn from the Shapley kernel distribution (all of them, with their kernel
  weights, when the budget allows), a linear fit with φ_0 = f(fill) and the efficiency
  constraint Σ φ = f(x) - f(fill) imposed exactly (Lagrange multiplier).

The map of an image gives every pixel the coefficient of its superpixel: (N, 1, H, W).

Speed: the perturbed images of all images go through the model in batches of
``batch_size`` (:func:`interpcli.perturb.masked_scores`, under inference mode; the masks
are painted from the patterns chunk by chunk); the surrogates of all images
are fitted in one batched float64 solve on the CPU (images with fewer superpixels are
padded with zero columns, whose coefficients come out 0), so the cost beyond the forward
passes is building the masks and one (N, M+1, M+1) solve.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..perturb import MaskSet, make_baseline, masked_scores, target_score
from ..segments import SEGMENTATIONS, region_means, superpixels
from ._registry import register_method
from .params import SEED, integer, number, one_of

__all__ = ["weighted_ridge", "constrained_lstsq", "lime_samples", "kernelshap_samples", "lime_weights", "fill_image"]

# --- surrogate fits ---------------------------------------------------------------------------

def weighted_ridge(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 1.0,
                   fit_intercept: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched weighted ridge regression, as scikit-learn's
    ``Ridge(alpha, fit_intercept).fit(z[n], y[n], sample_weight=w[n])`` for every n.

    z (N, S, M), y (N, S), w (N, S) >= 0.  Returns (coef (N, M), intercept (N,)) in float64:
    argmin Σ_s w_s (y_s - b - z_s·β)² + alpha |β|², the intercept b unpenalised (solved by
    centring on the weighted means).  An all-zero column (padding) gets coefficient 0.
    """
    z, y, w = z.double(), y.double(), w.double()
    m = z.shape[-1]
    if fit_intercept:
        sw = w.sum(1, keepdim=True).clamp_min(1e-300)
        zm = (w[..., None] * z).sum(1, keepdim=True) / sw[..., None]  # (N, 1, M)
        ym = (w * y).sum(1, keepdim=True) / sw  # (N, 1)
        z, y = z - zm, y - ym
    gram = z.transpose(1, 2) @ (w[..., None] * z)
    rhs = z.transpose(1, 2) @ (w * y)[..., None]
    reg = alpha if alpha > 0 else 1e-12 * float(gram.diagonal(dim1=1, dim2=2).mean().clamp_min(1.0))
    coef = torch.linalg.solve(gram + reg * torch.eye(m, dtype=gram.dtype), rhs)[..., 0]
    intercept = (ym[:, 0] - (zm[:, 0] * coef).sum(1)) if fit_intercept else torch.zeros(len(coef), dtype=coef.dtype)
    return coef, intercept


def constrained_lstsq(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, total: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
    """Batched argmin_φ Σ_s w_s (y_s - z_s·φ)² subject to Σ_{valid j} φ_j = total, φ_j = 0 off valid.

    z (N, S, M), y (N, S), w (N, S), total (N,), valid (N, M) bool.  Solved exactly through
    the KKT system [[ZᵀWZ, v], [vᵀ, 0]] [φ; λ] = [ZᵀWy; total] (float64), with a 1e-10
    relative ridge on ZᵀWZ so that too few samples still give an answer.
    """
    z, y, w = z.double(), y.double(), w.double()
    n, _, m = z.shape
    v = valid.double()
    gram = z.transpose(1, 2) @ (w[..., None] * z)
    scale = gram.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-12)  # (N,)
    kkt = torch.zeros(n, m + 1, m + 1, dtype=torch.float64)
    kkt[:, :m, :m] = gram + torch.diag_embed(v * 1e-10 * scale[:, None] + (1 - v))
    kkt[:, :m, m] = v
    kkt[:, m, :m] = v
    rhs = torch.cat([(z.transpose(1, 2) @ (w * y)[..., None])[..., 0], total.double()[:, None]], 1)
    return torch.linalg.solve(kkt, rhs)[:, :m] * v


# --- samples ----------------------------------------------------------------------------------

def lime_samples(counts: torch.Tensor, n_samples: int, seed: int = 0) -> torch.Tensor:
    """LIME's interpretable samples: (N, n_samples, max K) float, row 0 all ones, the others
    Bernoulli(0.5) on each image's K_n superpixels (``lime_image``), zero beyond K_n."""
    g = torch.Generator().manual_seed(int(seed))
    kmax = int(counts.max())
    z = torch.zeros(len(counts), n_samples, kmax)
    for i, k in enumerate(counts.tolist()):
        z[i, :, :k] = torch.randint(0, 2, (n_samples, k), generator=g).float()
    z[:, 0] = (torch.arange(kmax) < counts[:, None]).float()
    return z


def lime_weights(z: torch.Tensor, counts: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """sqrt(exp(-d² / width²)), d = cosine distance between z (N, S, K) and the all-ones vector
    of each image's K_n features: 1 - sqrt(|z| / K_n) (1 for the empty pattern, as scikit-learn)."""
    d = 1 - torch.sqrt(z.double().sum(-1) / counts.double()[:, None])
    return torch.sqrt(torch.exp(-(d**2) / kernel_width**2))


def _shapley_kernel(m: int) -> torch.Tensor:
    """π(s) = (M-1) / (C(M, s) s (M-s)) for s = 0..M (0 at the ends: those are constraints)."""
    s = torch.arange(m + 1, dtype=torch.float64)
    out = torch.zeros(m + 1, dtype=torch.float64)
    inner = s[1:m]
    binom = torch.tensor([math.comb(m, int(k)) for k in inner], dtype=torch.float64)
    out[1:m] = (m - 1) / (binom * inner * (m - inner))
    return out


def kernelshap_samples(counts: torch.Tensor, n_samples: int,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel SHAP coalitions: (z (N, R, max K), weights (N, R), rows (N,)).

    Row 0 is the full and row 1 the empty coalition (weight 0: they enter as φ_0 = f(empty)
    and the efficiency constraint).  With B = n_samples - 2 rows left: if 2^K - 2 <= B, every
    other coalition once with its Shapley-kernel weight π(|z|); else B coalitions drawn in
    complementary pairs (z, 1 - z), |z| with probability ∝ (K-1) / (|z| (K-|z|)), then a
    uniform subset of that size, each of weight 1 / B.  Weights sum to 1 per image; rows
    beyond ``rows[n]`` are padding (weight 0).
    """
    g = torch.Generator().manual_seed(int(seed))
    budget = n_samples - 2
    kmax = int(counts.max())
    zs, ws = [], []
    for k in counts.tolist():
        if k <= 1:  # nothing to sample: φ = f(x) - f(empty) by the constraint
            z, w = torch.zeros(0, k), torch.zeros(0, dtype=torch.float64)
        elif k < 62 and 2**k - 2 <= budget:  # enumerate
            codes = torch.arange(1, 2**k - 1)
            z = ((codes[:, None] >> torch.arange(k)) & 1).float()
            w = _shapley_kernel(k)[z.sum(1).long()]
        else:
            half = math.ceil(budget / 2)
            p = _shapley_kernel(k)[1:k]
            sizes = torch.multinomial(p / p.sum(), half, replacement=True, generator=g) + 1
            ranks = torch.rand(half, k, generator=g).argsort(1).argsort(1)
            z = (ranks < sizes[:, None]).float()
            z = torch.stack([z, 1 - z], 1).reshape(2 * half, k)[:budget]
            w = torch.ones(len(z), dtype=torch.float64)
        zs.append(torch.cat([torch.ones(1, k), torch.zeros(1, k), z]))
        ws.append(torch.cat([torch.zeros(2, dtype=torch.float64), w / w.sum().clamp_min(1e-300)]))
    rows = torch.tensor([len(z) for z in zs])
    zpad = torch.zeros(len(zs), int(rows.max()), kmax)
    wpad = torch.zeros(len(zs), int(rows.max()), dtype=torch.float64)
    for i, (z, w) in enumerate(zip(zs, ws)):
        zpad[i, : len(z), : z.shape[1]] = z
        wpad[i, : len(w)] = w
    return zpad, wpad, rows


# --- forward passes ---------------------------------------------------------------------------

def fill_image(x: torch.Tensor, labels: torch.Tensor, fill) -> torch.Tensor | float:
    if fill == "superpixel":
        return region_means(x, labels)
    if fill == "mean":
        return x.mean((2, 3), keepdim=True)
    if fill == "blurred":
        return make_baseline("blurred", x)
    try:
        return float(fill)
    except (TypeError, ValueError):
        raise ConfigError(f"fill must be a number, superpixel, mean or blurred, not {fill!r}") from None


def _pattern_scores(model, x, target, labels, z, rows, fill, batch_size, prob) -> torch.Tensor:
    """Scores (N, R) float64 on the CPU of every image under its patterns z (N, R, K) (1 = keep
    the superpixel, 0 = replace it by ``fill``); padding rows (>= rows[n]) get 0."""
    drop = 1 - z
    sets = [MaskSet.from_segments(labels[i], drop[i, : int(rows[i])]) for i in range(len(x))]
    scores = masked_scores(model, x, sets, fill, target_score(target, prob), batch_size=batch_size)
    out = torch.zeros(z.shape[:2], dtype=torch.float64)
    for i, s in enumerate(scores):
        out[i, : len(s)] = s.double().cpu()
    return out


def _features(x, n_segments, segmentation, compactness):
    labels = superpixels(x, int(n_segments), segmentation, float(compactness))
    counts = labels.flatten(1).amax(1).cpu() + 1
    return labels, counts


def _paint(coef: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    n, h, w = labels.shape
    c = coef.to(device=labels.device, dtype=torch.float32)
    return c.gather(1, labels.reshape(n, h * w)).reshape(n, 1, h, w)


_FEATURES = {"n_segments": integer(min=1, doc="superpixels (about)"), "segmentation": one_of(*SEGMENTATIONS),
             "compactness": number(gt=0, doc="SLIC compactness"),
             "fill": number(words=("superpixel", "mean", "blurred"), doc="value of a removed superpixel"),
             "score": one_of("prob", "logit"), "seed": SEED}


@register_method("lime", description="LIME: weighted ridge surrogate on superpixels (lime_image semantics)",
                 kind="perturbation", uses_gradients=False,
                 defaults={"n_samples": 1000, "n_segments": 50, "segmentation": "slic", "compactness": 10.0,
                           "fill": "superpixel", "kernel_width": 0.25, "alpha": 1.0, "score": "prob", "seed": 0},
                 params={**_FEATURES, "n_samples": integer(min=1), "kernel_width": number(gt=0),
                         "alpha": number(ge=0, doc="ridge penalty")},
                 paper="https://arxiv.org/abs/1602.04938")
def lime(model, x, target, *, batch_size=None, n_samples=1000, n_segments=50, segmentation="slic",
         compactness=10.0, fill="superpixel", kernel_width=0.25, alpha=1.0, score="prob", seed=0):
    labels, counts = _features(x, n_segments, segmentation, compactness)
    z = lime_samples(counts, int(n_samples), seed)
    fillv = fill_image(x, labels, fill)
    rows = torch.full((len(x),), int(n_samples))
    y = _pattern_scores(model, x, target, labels, z, rows, fillv, batch_size, score == "prob")
    coef, _ = weighted_ridge(z, y, lime_weights(z, counts, kernel_width), alpha)
    return _paint(coef, labels)


@register_method("kernelshap", description="Kernel SHAP: Shapley values of superpixels by constrained regression",
                 kind="perturbation", uses_gradients=False,
                 defaults={"n_samples": 512, "n_segments": 50, "segmentation": "slic", "compactness": 10.0,
                           "fill": 0.0, "score": "logit", "seed": 0},
                 params={**_FEATURES, "n_samples": integer(min=2, doc="coalitions, with the full and the empty one")},
                 paper="https://arxiv.org/abs/1705.07874")
def kernelshap(model, x, target, *, batch_size=None, n_samples=512, n_segments=50, segmentation="slic",
               compactness=10.0, fill=0.0, score="logit", seed=0):
    labels, counts = _features(x, n_segments, segmentation, compactness)
    z, w, rows = kernelshap_samples(counts, int(n_samples), seed)
    fillv = fill_image(x, labels, fill)
    y = _pattern_scores(model, x, target, labels, z, rows, fillv, batch_size, score == "prob")
    f_full, f_empty = y[:, 0], y[:, 1]
    valid = torch.arange(z.shape[-1]) < counts[:, None]
    phi = constrained_lstsq(z, y - f_empty[:, None], w, f_full - f_empty, valid)
    return _paint(phi, labels)
