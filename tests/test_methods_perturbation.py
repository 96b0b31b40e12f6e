"""Occlusion and RISE: agreement with Captum / the formula, localisation, determinism, batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from interpcli.methods import attribute
from interpcli.methods.perturbation import rise_masks
from interpcli.models import Classifier


class PatchModel(nn.Module):
    """Logit 0 = summed brightness of the patch [4:8, 8:12]; logit 1 = 0.  Nothing else matters."""

    num_classes = 2

    def forward(self, x):
        s = x[:, :, 4:8, 8:12].sum((1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], 1)


def _resnet():
    torch.manual_seed(0)
    return Classifier("resnet20", 10, (3, 16, 16), {"kind": "identity"}).eval()


@pytest.mark.parametrize("window,stride", [(4, 2), (5, 3), (8, 4)])
def test_occlusion_equals_captum(window, stride):
    from captum.attr import Occlusion

    model, x, t = _resnet(), torch.rand(3, 3, 16, 16), torch.tensor([1, 2, 3])
    ours = attribute(model, x, t, "occlusion", window=window, stride=stride, fill=0.25)
    ref = Occlusion(model).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                     baselines=0.25, target=t)
    assert ours.shape == (3, 1, 16, 16)
    assert torch.allclose(ours, ref[:, :1], atol=1e-5) and torch.allclose(ref[:, 0], ref[:, 2])


def test_rise_equals_the_formula():
    model, x, t = _resnet(), torch.rand(2, 3, 16, 16), torch.tensor([4, 7])
    n, s, p = 50, 4, 0.3
    ours = attribute(model, x, t, "rise", n_masks=n, s=s, p=p, seed=3)
    masks = rise_masks(n, s, p, (16, 16), seed=3)
    expected = torch.zeros(2, 16, 16)
    with torch.no_grad():
        for i in range(2):
            for m in masks:
                prob = model(x[i : i + 1] * m).softmax(1)[0, t[i]]
                expected[i] += prob * m[0]
    assert torch.allclose(ours[:, 0], expected / (n * p), atol=1e-5)


def test_rise_masks_follow_the_paper():
    m = rise_masks(400, 4, 0.25, (16, 16), seed=0)
    assert m.shape == (400, 1, 16, 16) and m.min() >= 0 and m.max() <= 1
    assert abs(float(m.mean()) - 0.25) < 0.03  # bilinear upsampling keeps the keep-probability
    assert torch.equal(m, rise_masks(400, 4, 0.25, (16, 16), seed=0))
    assert not torch.equal(m, rise_masks(400, 4, 0.25, (16, 16), seed=1))


@pytest.mark.parametrize("method,params", [("occlusion", {"window": 4, "stride": 2}),
                                           ("rise", {"n_masks": 500, "s": 4, "p": 0.5, "score": "logit"})])
def test_maximum_lies_in_the_only_patch_that_matters(method, params):
    x = torch.rand(2, 3, 16, 16) * 0.5 + 0.5
    a = attribute(PatchModel(), x, 0, method, **params)[:, 0]
    for amap in a:
        r, c = divmod(int(amap.argmax()), 16)
        assert 4 <= r < 8 and 8 <= c < 12, (r, c)
        inside = amap[4:8, 8:12].mean()
        outside = torch.cat([amap[:2].flatten(), amap[-2:].flatten()]).mean()
        assert inside > 1.2 * outside.abs()  # RISE maps carry the mean score everywhere


@pytest.mark.parametrize("method,params", [("occlusion", {"window": 4, "stride": 4, "fill": "mean"}),
                                           ("rise", {"n_masks": 64, "s": 4})])
def test_batch_size_and_seed(method, params):
    model, x = _resnet(), torch.rand(3, 3, 16, 16)
    a = attribute(model, x, 2, method, batch_size=1, **params)
    b = attribute(model, x, 2, method, batch_size=64, **params)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(b, attribute(model, x, 2, method, batch_size=64, **params))
