"""Incremental occlusion (Krypton): the same scores and maps as the full forward passes."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from interpcli import incremental as inc
from interpcli.errors import ConfigError
from interpcli.methods import attribute, perturbation
from interpcli.models import Classifier
from interpcli.perturb import MaskSet, masked_scores, occlusion_positions, sliding_boxes, target_score

ENC = {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}


def _model(arch: str, size: int = 64, **kw) -> Classifier:
    torch.manual_seed(0)
    m = Classifier(arch, 10, (3, size, size), ENC, arch_kwargs=kw or None)
    m.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            m(torch.rand(4, 3, size, size) * 1.5 - 0.2)
    return m.eval()


def _plain_and_incremental(model, x, window, stride, fill, target, threshold=inc.DEFAULT_THRESHOLD):
    h, w = x.shape[-2:]
    masks = MaskSet.from_boxes((h, w), sliding_boxes(h, w, window, stride))
    ys, xs = occlusion_positions(h, w, window, stride)
    ref = masked_scores(model, x, masks, fill, target_score(torch.tensor([target])), batch_size=32)[0]
    got = inc.incremental_occlusion_scores(model, x, [(y, x0) for y in ys for x0 in xs], window, fill, target,
                                           batch_size=32, threshold=threshold)
    return ref, got


def _close(a, b, rel=1e-4):
    return float((a - b).abs().max()) <= rel * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("arch,kw,window,stride", [
    ("resnet20", {"width": 8}, 12, 10),  # stride does not divide 64: the last windows are cut by the border
    ("resnet20", {"width": 8}, 20, 11),
    ("vgg9", {"width": 0.25}, 7, 9),  # the last window keeps one column
    ("vgg9", {"width": 0.25}, 16, 16),
    ("lenet", {}, 6, 5),
])
def test_scores_equal_the_full_forward_passes(arch, kw, window, stride):
    model = _model(arch, **kw)
    x = torch.rand(1, 3, 64, 64)
    ref, got = _plain_and_incremental(model, x, window, stride, 0.3, 4)
    assert got.shape == ref.shape and _close(got, ref), float((got - ref).abs().max())


def test_occlusion_maps_identical_with_and_without_incremental():
    model = _model("resnet20", width=8)
    x, t = torch.rand(2, 3, 64, 64), torch.tensor([1, 7])
    params = {"window": 22, "stride": 20, "fill": "mean"}
    plain = attribute(model, x, t, "occlusion", incremental=False, **params)
    fast = attribute(model, x, t, "occlusion", incremental=True, batch_size=16, **params)
    assert fast.shape == (2, 1, 64, 64) and _close(fast, plain)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_threshold_switch_to_full_recomputation(threshold):
    model = _model("resnet20", width=8)
    ref, got = _plain_and_incremental(model, torch.rand(1, 3, 64, 64), 24, 20, 0.0, 2, threshold=threshold)
    assert _close(got, ref)


class Exotic(nn.Module):
    """Convolutions and pools of every supported kind, a residual add and a channel concat."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.GELU()
        self.mp = nn.MaxPool2d(3, stride=2, padding=1)
        self.ap = nn.AvgPool2d(3, stride=1, padding=1)
        self.c3 = nn.Conv2d(16, 8, (1, 3), stride=(1, 2), padding=(0, 1))
        self.c4 = nn.Conv2d(8, 6, 4, stride=3)  # no padding, size not divisible: the border rows are dropped
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.c1(x * 2 - 1))
        y = self.act(self.bn(self.c2(x))) + x
        y = torch.cat([self.mp(y), self.ap(self.mp(x))], dim=1)
        y = self.drop(torch.sigmoid(self.c4(self.c3(y))))
        return self.head(y.mean((2, 3)))


class Unsupported(nn.Module):
    """A flip (a spatial op the rules do not know), a spatially varying parameter, then convs."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 4, 40, 40))
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 3, 3, stride=2)

    def forward(self, x):
        x = torch.relu(self.c1(x)) + self.pos  # spatially varying operand: full from here
        x = self.c2(x).flip(-1)
        return self.c3(x).flatten(1)[:, :3]


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        y = self.c(x)
        return y.mean((2, 3)) if float(y.sum()) > -1e9 else -y.mean((2, 3))  # data-dependent branch


@pytest.mark.parametrize("cls", [Exotic, Unsupported])
def test_other_graphs_stay_exact(cls):
    torch.manual_seed(1)
    model = cls().eval()
    if cls is Exotic:
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, 3, 40, 40)
    ref, got = _plain_and_incremental(model, x, 9, 6, 0.5, 1)
    assert _close(got, ref)
    layers = inc.get_plan(model).incremental_layers()
    if cls is Exotic:
        assert layers == ["c1", "c2", "mp", "mp_1", "ap", "c3", "c4"]
    else:
        assert layers == ["c1", "c2"]  # static analysis: the flip stops it (the parameter only at run time)


def test_untraceable_model_falls_back_to_full_passes():
    torch.manual_seed(0)
    model, x = Untraceable().eval(), torch.rand(1, 3, 64, 64)
    with pytest.raises(inc.IncrementalUnsupported):
        inc.get_plan(model)
    plain = attribute(model, x, 0, "occlusion", window=16, stride=16, incremental=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        forced = attribute(model, x, 0, "occlusion", window=16, stride=16, incremental=True)
    assert torch.allclose(forced, plain) and any("incremental" in str(m.message) for m in w)


def test_auto_uses_incremental_from_128_pixels(monkeypatch):
    calls = []
    real = inc.incremental_occlusion_scores
    monkeypatch.setattr(perturbation, "incremental_occlusion_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = _model("lenet", 128)
    attribute(model, torch.rand(1, 3, 128, 128), 0, "occlusion", window=64, stride=64)
    assert calls == [1]
    small = _model("lenet", 64)
    attribute(small, torch.rand(1, 3, 64, 64), 0, "occlusion", window=32, stride=32)
    attribute(model, torch.rand(1, 3, 128, 128), 0, "occlusion", window=64, stride=64, incremental="false")
    assert calls == [1]
    attribute(small, torch.rand(1, 3, 64, 64), 0, "occlusion", window=32, stride=32, incremental="true")
    assert calls == [1, 1]
    with pytest.raises(ConfigError):
        attribute(model, torch.rand(1, 3, 128, 128), 0, "occlusion", incremental="sometimes")


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (3, 2, 1, 1), (5, 2, 2, 1), (1, 2, 0, 1), (3, 1, 2, 2),
                                     (4, 3, 0, 1), (2, 2, 0, 1), (7, 2, 3, 1)])
def test_changed_region_through_a_conv_matches_brute_force(k, s, p, d):
    torch.manual_seed(k * 100 + s * 10 + p)
    conv = nn.Conv2d(1, 1, (k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.rand_like(conv.weight) + 0.5)  # no zero weights: every tap is seen
    n = 19
    x = torch.rand(1, 1, n, 1)
    with torch.no_grad():
        y = conv(x)
    size_out = y.shape[2]
    for lo in range(n):
        for hi in range(lo + 1, min(n, lo + 5) + 1):
            xp = x.clone()
            xp[:, :, lo:hi] += 1.0
            with torch.no_grad():
                changed = ((conv(xp) - y).abs()[0, 0, :, 0] > 1e-6).nonzero().flatten().tolist()
            o_lo, o_hi = inc.conv_out_range(lo, hi, k, s, p, d, size_out)
            if d == 1:  # a contiguous receptive field: exactly the outputs that change
                assert changed == list(range(o_lo, o_hi)), (lo, hi, changed, o_lo, o_hi)
            else:  # dilated kernels have holes: a superset
                assert set(changed) <= set(range(o_lo, o_hi)), (lo, hi, changed, o_lo, o_hi)
