"""Fidelity to the reference implementations: RISE (fill, mask upsampling), the B-cos colour
rendering, GDS subspace mode with too small a GDS, and subspace distances near zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from interpcli.errors import ConfigError
from interpcli.methods import attribute
from interpcli.models import Classifier
from interpcli.occlusion import OccludeConfig, occlude
from interpcli.perturb import encoder_mean, rise_masks
from interpcli.subspace import pca_basis, project_basis, subspace_distance
from interpcli.viz import bcos_rgba

NORM = {"kind": "normalize", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


def _classifier(encoding: dict) -> Classifier:
    torch.manual_seed(0)
    return Classifier("resnet20", 10, (3, 16, 16), encoding).eval()


# ---------------------------------------------------------------------------------------------- RISE fill

def test_rise_default_masks_the_normalised_tensor_as_the_original():
    """eclique/RISE multiplies the *normalised* input by the masks: masked pixels go to the mean."""
    model, x, t = _classifier(NORM), torch.rand(2, 3, 16, 16), torch.tensor([4, 7])
    n, s, p = 40, 4, 0.3
    ours = attribute(model, x, t, "rise", n_masks=n, s=s, p=p, seed=3)
    masks = rise_masks(n, s, p, (16, 16), seed=3)
    expected = torch.zeros(2, 16, 16)
    with torch.no_grad():
        z = model.encoder(x)  # (x - μ) / σ
        for i in range(2):
            probs = model.net(z[i : i + 1] * masks).softmax(1)[:, t[i]]  # (N,)
            expected[i] = torch.einsum("k,khw->hw", probs, masks[:, 0])
    assert torch.allclose(ours[:, 0], expected / (n * p), atol=1e-5)
    assert torch.equal(ours, attribute(model, x, t, "rise", n_masks=n, s=s, p=p, seed=3, fill="mean"))


def test_rise_fill_zero_and_numbers_fill_pixels():
    model, x, t = _classifier(NORM), torch.rand(1, 3, 16, 16), torch.tensor([2])
    n, s, p = 30, 4, 0.5
    masks = rise_masks(n, s, p, (16, 16), seed=0)
    for fill, value in (("zero", 0.0), (0.25, 0.25), ("0.75", 0.75)):
        ours = attribute(model, x, t, "rise", n_masks=n, s=s, p=p, fill=fill)
        with torch.no_grad():
            probs = model(x * masks + value * (1 - masks)).softmax(1)[:, 2]
        assert torch.allclose(ours[0, 0], torch.einsum("k,khw->hw", probs, masks[:, 0]) / (n * p), atol=1e-5)
    with pytest.raises(ConfigError, match="fill"):
        attribute(model, x, t, "rise", n_masks=4, fill="grey")


def test_encoder_mean_of_each_encoding():
    assert torch.allclose(encoder_mean(_classifier(NORM)), torch.tensor(NORM["mean"]).view(1, 3, 1, 1))
    assert encoder_mean(_classifier({"kind": "identity"})) == 0.0  # the model's input is the pixel
    assert encoder_mean(Classifier("bcos-resnet20", 10, (3, 16, 16), {"kind": "bcos6"})) == 0.5
    assert encoder_mean(nn.Conv2d(3, 4, 3)) == 0.0  # a plain module: no encoder


# ---------------------------------------------------------------------------------------------- RISE masks

@pytest.mark.parametrize("n,s,p,size,seed", [(20, 4, 0.5, (16, 16), 0), (20, 3, 0.5, (20, 14), 1),
                                             (10, 7, 0.3, (24, 24), 2), (6, 2, 0.5, (9, 11), 3),
                                             (4, 1, 1.0, (5, 5), 4)])
def test_rise_masks_equal_skimage_reflect_resize(n, s, p, size, seed):
    """The original: skimage resize(grid, (s+1)*cell, order=1, mode='reflect', anti_aliasing=False),
    then a crop at a random shift in [0, cell).  The draws: the grids, then the row and column shifts."""
    from skimage.transform import resize

    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    g = torch.Generator().manual_seed(seed)
    grid = (torch.rand(n, 1, s, s, generator=g) < p).double()
    dy = torch.randint(0, ch, (n,), generator=g)
    dx = torch.randint(0, cw, (n,), generator=g)
    ours = rise_masks(n, s, p, size, seed=seed)
    for i in range(n):
        up = resize(grid[i, 0].numpy(), ((s + 1) * ch, (s + 1) * cw), order=1, mode="reflect", anti_aliasing=False)
        ref = up[int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w]
        assert np.abs(ours[i, 0].numpy() - ref).max() < 1e-6


# ---------------------------------------------------------------------------------------------- B-cos colours

def _box_mean_zero_padded(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over the k x k window [i - (k-1)//2, i + k//2] with zeros outside, counted."""
    lo, hi = (k - 1) // 2, k // 2
    padded = np.pad(a, ((lo, hi), (lo, hi)))
    out = np.zeros_like(a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = padded[i : i + k, j : j + k].sum() / (k * k)
    return out


@pytest.mark.parametrize("smooth", [15, 5, 4])
def test_bcos_alpha_smoothing_counts_the_padding_as_zeros(smooth):
    """B-cos grad_to_img: F.avg_pool2d(alpha, smooth, stride=1, padding=(smooth-1)//2),
    count_include_pad=True.  Unit-norm weights and positive contributions give alpha = 1
    everywhere; more than 0.5 % of pixels keep 1 after smoothing, so the 99.5th percentile is 1."""
    w = np.zeros((6, 32, 32))
    w[0] = 1.0
    out = bcos_rgba(w, np.ones((32, 32)), smooth=smooth)
    assert out.shape == (32, 32, 4)
    assert np.allclose(out[..., 3], _box_mean_zero_padded(np.ones((32, 32)), smooth), atol=1e-12)
    if smooth == 15:
        assert out[0, 0, 3] == pytest.approx(8 * 8 / 225) and out[0, 16, 3] == pytest.approx(8 * 15 / 225)


# ---------------------------------------------------------------------------------------------- GDS subspace

class _Repr(nn.Module):
    num_classes = 3
    classifier_layer = "fc"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 16 * 16, 12)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.proj(x.flatten(1))))


@pytest.mark.parametrize("gds_dim", [2, 1])
def test_gds_subspace_mode_refuses_a_gds_no_larger_than_k(gds_dim):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cfg = OccludeConfig(score="gds", gds_mode="subspace", views=4, k=2, gds_dim=gds_dim, window=8, stride=8)
    with pytest.raises(ConfigError, match=r"GDS dimension .*k=2.*--gds-dim.*--k"):
        occlude(_Repr(), x, cfg)
    with pytest.raises(ConfigError, match="--gds-dim"):  # a given GDS too
        occlude(_Repr(), x, OccludeConfig(score="gds", gds_mode="subspace", views=4, k=2, window=8, stride=8),
                gds=torch.eye(12)[:, :2])
    res = occlude(_Repr(), x, OccludeConfig(score="gds", gds_mode="subspace", views=4, k=2, gds_dim=3, window=8,
                                            stride=8))
    assert res.gds_dim == [3] and float(res.maps.abs().max()) > 0


# ---------------------------------------------------------------------------------------------- precision

def test_tiny_subspace_distances_from_float32_features():
    """Two 4-dim subspaces whose first basis vector is rotated by θ, sin²θ = 4e-6: the
    distance 1 - mean cos² = sin²θ / 4 = 1e-6, from float32 features as the engine has them."""
    d, k, views = 64, 4, 16
    r, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    theta = math.asin(math.sqrt(4e-6))
    p = r[:, :k]
    q = p.clone()
    q[:, 0] = math.cos(theta) * r[:, 0] + math.sin(theta) * r[:, k]
    coef = torch.randn(views, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fp, fq = (coef @ p.mT).float(), (coef @ q.mT).float()  # (views, d) float32 features
    true = 1e-6
    bp, bq = pca_basis(fp, k), pca_basis(fq, k)
    assert float(subspace_distance(bp, bq)) == pytest.approx(true, rel=0.01)
    gds = torch.eye(d)[:, : 2 * k]  # a float32 GDS holding both subspaces (e.g. a cached dataset GDS)
    gds = r @ gds.double()
    gds = gds.float()
    dist = subspace_distance(project_basis(gds, bp), project_basis(gds, bq))
    assert float(dist) == pytest.approx(true, rel=0.01)
