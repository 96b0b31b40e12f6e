"""LIME and Kernel SHAP on superpixels: the batched solvers against scikit-learn, agreement
with Captum's Lime and with exact Shapley values, localisation, determinism, superpixels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from interpcli.errors import ConfigError
from interpcli.methods import attribute
from interpcli.methods.surrogate import lime_samples, lime_weights, weighted_ridge
from interpcli.models import Classifier
from interpcli.segments import label_masks, region_means, superpixels

from .test_methods_perturbation import PatchModel


class Tiny(nn.Module):
    """A small non-linear classifier of (3, 16, 16) images: cheap enough for Captum's per-sample loop."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3, generator=g) * 0.5)
        self.w2 = nn.Parameter(torch.randn(3, 4 * 4 * 4, generator=g) * 0.5)

    def forward(self, x):
        h = torch.tanh(F.conv2d(x, self.w1, padding=1))
        return F.avg_pool2d(h, 4).flatten(1) @ self.w2.T


def _resnet():
    torch.manual_seed(0)
    return Classifier("resnet20", 10, (3, 16, 16), {"kind": "identity"}).eval()


def _blocky(n: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    """Images made of 4x4 blocks of flat colour (structure for SLIC to find)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, c, 4, 4, generator=g), size=(16, 16), mode="nearest")


def _coefs(amap: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The per-superpixel values of a (1, H, W) map painted on labels (H, W)."""
    k = int(labels.max()) + 1
    return torch.stack([amap[0][labels == j][0] for j in range(k)])


@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_batched_ridge_equals_sklearn(alpha):
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(0)
    counts = [7, 5, 3]
    z = (torch.rand(3, 60, 7, generator=g) < 0.5).float()
    for i, k in enumerate(counts):
        z[i, :, k:] = 0  # padding columns of images with fewer features
    y, w = torch.randn(3, 60, generator=g), torch.rand(3, 60, generator=g)
    coef, intercept = weighted_ridge(z, y, w, alpha)
    for i, k in enumerate(counts):
        ref = Ridge(alpha=alpha, fit_intercept=True).fit(z[i, :, :k].numpy(), y[i].numpy(), sample_weight=w[i].numpy())
        assert np.allclose(coef[i, :k].numpy(), ref.coef_, atol=1e-5)
        assert np.allclose(float(intercept[i]), ref.intercept_, atol=1e-5)
        assert torch.all(coef[i, k:] == 0)


@pytest.mark.parametrize("score,fill", [("prob", "superpixel"), ("logit", 0.0)])
def test_lime_equals_captum_lime_on_the_same_samples(score, fill):
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    model, x, t = Tiny().eval(), _blocky(2) * 0.8 + 0.1 * torch.rand(2, 3, 16, 16), torch.tensor([0, 2])
    n, params = 120, {"n_segments": 16, "segmentation": "grid", "kernel_width": 0.5, "alpha": 1.0, "seed": 3}
    ours = attribute(model, x, t, "lime", n_samples=n, score=score, fill=fill, **params)
    labels = superpixels(x, 16, "grid")
    counts = labels.flatten(1).amax(1) + 1
    z = lime_samples(counts, n, seed=3)
    baselines = region_means(x, labels) if fill == "superpixel" else torch.full_like(x, fill)
    forward = (lambda inp: model(inp).softmax(1)) if score == "prob" else model
    for i in range(2):
        k = int(counts[i])

        def perturb(_inp, **_kw):
            for s in range(n):
                yield z[i, s, :k][None]

        def similarity(_orig, _pert, interp, **_kw):
            return lime_weights(interp[:, None].double(), counts[i : i + 1], 0.5).float().flatten()

        ref = Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=similarity,
                   perturb_func=perturb).attribute(x[i : i + 1], baselines=baselines[i : i + 1], target=int(t[i]),
                                                   feature_mask=labels[i][None, None].expand(1, 3, 16, 16),
                                                   n_samples=n, perturbations_per_eval=40)
        scale = float(ref[0, 0].abs().max())
        assert scale > (1e-2 if score == "logit" else 1e-5)  # not trivially zero
        assert torch.allclose(ours[i, 0], ref[0, 0], atol=1e-4 * scale), (ours[i, 0] - ref[0, 0]).abs().max() / scale


def _coalition_values(model, x, labels, fill, target):
    """f(x with the superpixels of S kept, the rest filled) for every subset S, as {S: value}."""
    masks = label_masks(labels)  # (K, 1, H, W)
    subsets = list(itertools.product([0, 1], repeat=len(masks)))
    keep = torch.einsum("sk,kchw->schw", torch.tensor(subsets, dtype=torch.float), masks)
    with torch.no_grad():
        values = model(x * keep + fill * (1 - keep))[:, target]
    return dict(zip(subsets, values.tolist()))


def test_kernelshap_enumerated_equals_exact_shapley_values():
    model, x, fill = Tiny().eval(), torch.rand(2, 3, 16, 16), 0.3
    # 4 grid cells: 2^4 - 2 = 14 coalitions fit into n_samples - 2, so all are enumerated.
    ours = attribute(model, x, 2, "kernelshap", n_samples=16, n_segments=4, segmentation="grid", fill=fill)
    labels = superpixels(x, 4, "grid")
    for i in range(2):
        v = _coalition_values(model, x[i], labels[i], fill, 2)
        m = 4
        exact = torch.zeros(m)
        for j in range(m):
            for bits, val in v.items():
                if bits[j]:
                    continue
                s = sum(bits)
                with_j = tuple(1 if q == j else b for q, b in enumerate(bits))
                exact[j] += math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) * (v[with_j] - val)
        assert torch.allclose(_coefs(ours[i], labels[i]), exact, atol=1e-4)


def test_kernelshap_completeness_and_exactness_on_an_additive_model():
    # Sampled coalitions (2^16 - 2 > 254): a linear model is fitted exactly by any sample.
    g = torch.Generator().manual_seed(1)
    wpix = torch.randn(1, 3, 16, 16, generator=g)

    class Linear(nn.Module):
        num_classes = 2

        def forward(self, x):
            s = (x * wpix).sum((1, 2, 3))
            return torch.stack([s, -s], 1)

    x, fill = torch.rand(2, 3, 16, 16), 0.2
    ours = attribute(Linear(), x, 0, "kernelshap", n_samples=256, n_segments=16, segmentation="grid", fill=fill)
    labels = superpixels(x, 16, "grid")
    for i in range(2):
        contrib = ((x[i] - fill) * wpix[0]).sum(0)
        exact = torch.stack([contrib[labels[i] == j].sum() for j in range(16)])
        assert torch.allclose(_coefs(ours[i], labels[i]), exact, atol=1e-4)

    # Completeness on a ResNet and SLIC superpixels: Σ φ = f(x) - f(fill).
    model, x = _resnet(), _blocky(2)
    ours = attribute(model, x, 3, "kernelshap", n_samples=96, n_segments=12)
    labels = superpixels(x, 12)
    with torch.no_grad():
        delta = model(x)[:, 3] - model(torch.zeros_like(x))[:, 3]
    for i in range(2):
        assert int(labels[i].max()) + 1 > 2
        assert abs(float(_coefs(ours[i], labels[i]).sum() - delta[i])) < 1e-4


@pytest.mark.parametrize("method,params", [("lime", {"n_samples": 300, "fill": 0.0}),
                                           ("kernelshap", {"n_samples": 128})])
def test_maximum_lies_in_the_only_patch_that_matters(method, params):
    # The patch [4:8, 8:12] is exactly one cell of the 4x4 grid.  (lime's default fill, the
    # superpixel's mean colour, would leave PatchModel's summed brightness unchanged.)
    x = torch.rand(2, 3, 16, 16) * 0.5 + 0.5
    a = attribute(PatchModel(), x, 0, method, n_segments=16, segmentation="grid", **params)[:, 0]
    for amap in a:
        r, c = divmod(int(amap.argmax()), 16)
        assert 4 <= r < 8 and 8 <= c < 12, (r, c)
        assert amap[4:8, 8:12].min() > 5 * amap[:4].abs().max()


@pytest.mark.parametrize("method", ["lime", "kernelshap"])
def test_seed_and_batch_size(method):
    model, x = Tiny().eval(), _blocky(3)
    kw = {"n_samples": 80, "n_segments": 10}
    a = attribute(model, x, 1, method, batch_size=7, **kw)
    b = attribute(model, x, 1, method, batch_size=64, **kw)
    assert a.shape == (3, 1, 16, 16) and a.abs().max() > 0
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(b, attribute(model, x, 1, method, batch_size=64, **kw))
    assert not torch.equal(b, attribute(model, x, 1, method, batch_size=64, seed=1, **kw))


def test_superpixels():
    x = _blocky(2)
    g = superpixels(x, 6, "grid")  # 2 rows x 3 columns
    assert g.shape == (2, 16, 16) and g.dtype == torch.long
    assert torch.equal(g[0].unique(), torch.arange(6)) and torch.equal(g[0], g[1])
    assert int(superpixels(x, 16, "grid")[0].max()) + 1 == 16
    assert int(superpixels(torch.rand(1, 3, 32, 32), 50, "grid").max()) + 1 == 49  # 7 x 7, "about 50"
    for c in (1, 3):
        lab = superpixels(_blocky(2, c), 16)
        for labels in lab:
            k = int(labels.max()) + 1
            assert k > 1 and torch.equal(labels.unique(), torch.arange(k))
            masks = label_masks(labels)
            assert masks.shape == (k, 1, 16, 16) and torch.equal(masks.sum(0), torch.ones(1, 16, 16))
    means = region_means(x, g)
    assert torch.allclose(means[0, :, :8, :6].mean((1, 2)), x[0, :, :8, :6].mean((1, 2)), atol=1e-6)


@pytest.mark.parametrize("call", [
    lambda x: superpixels(x, 0),
    lambda x: superpixels(x, 10, "watershed"),
    lambda x: superpixels(x, 10, compactness=0),
    lambda x: superpixels(x[0], 10),
    lambda x: attribute(Tiny(), x, 0, "lime", n_samples=0),
    lambda x: attribute(Tiny(), x, 0, "lime", score="margin", n_samples=4),
    lambda x: attribute(Tiny(), x, 0, "kernelshap", fill="nope", n_samples=4, segmentation="grid"),
    lambda x: attribute(Tiny(), x, 0, "kernelshap", n_samples=1),
    lambda x: attribute(Tiny(), x, 0, "lime", n_samples="many"),
])
def test_bad_parameters_raise_config_error(call):
    with pytest.raises(ConfigError):
        call(_blocky(1))
