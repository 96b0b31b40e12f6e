"""Consistency, min-size, deletion and insertion (interpcli.metrics.fidelity) against closed forms
and against a line-by-line transcription of RISE's ``CausalMetric.single_run``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from interpcli.errors import ConfigError
from interpcli.metrics.fidelity import (
    EPS,
    FidelityConfig,
    auc,
    parse_fractions,
    pixel_ranks,
    rise_blur,
    score_maps,
    step_counts,
    substrate,
)
from interpcli.perturb import MaskSet

H = W = 8
PATCH = (slice(2, 6), slice(1, 5))  # 16 of the 64 pixels


class PatchModel(nn.Module):
    """Two classes: logit 1 = sum of the patch's pixels, logit 0 = a threshold just below 16 (all of a
    patch of ones): the image is class 1 only while every patch pixel is kept."""

    def forward(self, x):
        s = x[:, :, PATCH[0], PATCH[1]].sum((1, 2, 3))
        return torch.stack([torch.full_like(s, 15.5), s], 1)


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits.to(x).expand(len(x), -1) + 0 * x.sum((1, 2, 3))[:, None]


def _patch_image(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, H, W, generator=g) * 0.2  # background: too dim to matter
    x[:, :, PATCH[0], PATCH[1]] = 1.0
    return x


def _truth(x):
    m = torch.zeros_like(x)
    m[:, :, PATCH[0], PATCH[1]] = x[:, :, PATCH[0], PATCH[1]]
    return m


def test_parse_fractions():
    assert parse_fractions(4) == (0.25, 0.5, 0.75, 1.0)
    assert parse_fractions("0.5,0.01,0.5") == (0.01, 0.5)
    for bad in ("0", "abc", "0.5,1.5", "-0.1"):
        with pytest.raises(ConfigError):
            parse_fractions(bad)


def test_true_relevance_gives_the_patch_share_as_min_size_and_beats_random_in_deletion():
    x = _patch_image()
    model = PatchModel()
    targets = torch.ones(3, dtype=torch.long)
    rand = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    cfg = FidelityConfig(fractions=parse_fractions(H * W), step=4, baseline="black", deletion_fill="black")
    res = score_maps(model, x, targets, {"truth": _truth(x), "random": rand}, cfg)
    np.testing.assert_array_equal(res.scores["min-size"]["truth"], [16 / 64] * 3)
    assert (res.scores["min-size"]["random"] > 0.5).all()
    # class output at q* = 1/4: the probability vector is kept to within the patch's dimmed background
    assert (res.scores["deletion"]["truth"] < res.scores["deletion"]["random"]).all()
    # deleting 4 of the patch's pixels (step 1) already flips the class: the curve drops at once
    assert res.curves["deletion"]["truth"][0, 0] > 0.5 > res.curves["deletion"]["truth"][0, 1]
    # insertion of the truth: class 1 comes back exactly when the 16th patch pixel is in (step 4)
    assert res.curves["insertion"]["truth"][0, 3] < 0.5 < res.curves["insertion"]["truth"][0, 4]


def test_consistency_closed_forms():
    x = _patch_image(n=2)
    model = PatchModel()
    targets = torch.ones(2, dtype=torch.long)
    fr = parse_fractions(H * W)
    res = score_maps(model, x, targets, {"truth": _truth(x)},
                     FidelityConfig(metrics=("consistency",), fractions=fr, baseline="black", output="class"))
    np.testing.assert_allclose(res.scores["consistency"]["truth"], [4.0, 4.0])  # [kept] / |S| = 1 / (16/64)
    np.testing.assert_array_equal(res.curves["kept"]["truth"][0], (np.arange(1, 65) >= 16).astype(np.float32))
    res = score_maps(model, x, targets, {"truth": _truth(x)},
                     FidelityConfig(metrics=("consistency",), fractions=fr, baseline="black", output="prob"))
    # the model ignores the background: f(S) = f(X) exactly at q* = 16/64, and the guard gives 1 / (eps q*)
    np.testing.assert_allclose(res.scores["consistency"]["truth"], 1 / (EPS * 0.25))
    assert res.curves["distance"]["truth"][0, -1] == 0  # q = 1: nothing masked


def test_consistency_of_the_probability_vector_by_hand():
    model = Normalised()
    model.encoder = _Encoder(model.mean)
    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(5))
    maps = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(6))
    fr = (0.1, 0.3, 0.6, 1.0)
    res = score_maps(model, x, model(x).argmax(1), {"m": maps},
                     FidelityConfig(metrics=("consistency", "min-size"), fractions=fr))
    with torch.no_grad():
        p0 = model(x).softmax(1)
        rel = maps.sum(1).flatten(1)
        for i in range(3):
            order = torch.argsort(rel[i], descending=True)
            ds, kept = [], []
            for q in fr:
                keep = torch.zeros(100, dtype=torch.bool)
                keep[order[: math.ceil(q * 100)]] = True
                s = torch.where(keep.view(1, 1, 10, 10), x[i : i + 1], model.mean)  # encoder zero elsewhere
                p = model(s).softmax(1)
                ds.append(float((p - p0[i]).norm()))
                kept.append(bool(p.argmax() == p0[i].argmax()))
            np.testing.assert_allclose(res.curves["distance"]["m"][i], ds, atol=1e-6)
            first = next((k for k, q in enumerate(fr) if kept[k] and q < 1), None)
            want_c = 0.0 if first is None else 1 / (max(ds[first], EPS) * fr[first])
            np.testing.assert_allclose(res.scores["consistency"]["m"][i], want_c, rtol=1e-5)
            assert res.scores["min-size"]["m"][i] == (1.0 if first is None else fr[first])


def test_no_fraction_below_one_keeps_the_class():
    x = _patch_image(n=1)
    res = score_maps(PatchModel(), x, torch.ones(1, dtype=torch.long), {"zero": torch.zeros_like(x)},
                     FidelityConfig(metrics=("consistency", "min-size"), fractions=(0.1, 0.2, 1.0), baseline="black"))
    assert res.scores["min-size"]["zero"][0] == 1.0 and res.scores["consistency"]["zero"][0] == 0.0


def test_deletion_and_insertion_auc_of_a_constant_model_is_the_constant():
    model = Constant([0.0, math.log(3.0)])  # softmax = (1/4, 3/4)
    x = torch.rand(2, 3, 6, 5)
    maps = torch.randn(2, 3, 6, 5)
    res = score_maps(model, x, torch.tensor([1, 0]), {"m": maps},
                     FidelityConfig(metrics=("deletion", "insertion"), step=7))
    assert res.curves["deletion"]["m"].shape == (2, math.ceil(30 / 7) + 1)
    for name in ("deletion", "insertion"):
        np.testing.assert_allclose(res.scores[name]["m"], [0.75, 0.25], rtol=1e-6)
    res = score_maps(model, x, torch.tensor([1, 0]), {"m": maps},
                     FidelityConfig(metrics=("deletion",), step=7, score="logit"))
    np.testing.assert_allclose(res.scores["deletion"]["m"], [math.log(3.0), 0.0], atol=1e-6)


def test_auc_and_step_counts():
    assert step_counts(10, 4).tolist() == [0, 4, 8, 10]
    np.testing.assert_allclose(auc(np.array([1.0, 0.5, 0.0])), 0.5)
    np.testing.assert_allclose(auc(np.array([[0.0, 1.0, 1.0, 1.0]])), [2.5 / 3])


def test_pixel_ranks_order_and_seeded_ties():
    sal = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert pixel_ranks(sal).tolist() == [[[3, 0], [1, 2]]]
    flat = torch.zeros(1, 8, 8)
    a, b, c = pixel_ranks(flat, seed=0), pixel_ranks(flat, seed=0), pixel_ranks(flat, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.flatten().tolist()) == list(range(64))
    assert a.flatten()[:8].tolist() != list(range(8))  # not raster order


def test_rank_masks_materialise_deletion_steps():
    ranks = torch.tensor([[3, 0], [1, 2]])
    m = MaskSet.from_ranks(ranks, torch.tensor([0, 1, 2, 4])).all()
    assert m[:, 0].tolist() == [[[0, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 1], [1, 0]], [[1, 1], [1, 1]]]
    inv = MaskSet.from_ranks(ranks, torch.tensor([1]), invert=True).all()
    assert inv[0, 0].tolist() == [[1, 0], [1, 1]]


class Normalised(nn.Module):
    """A small random CNN behind (x - mean) / std, like an interp Classifier's encoder."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(32, 5))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)

    def normalised(self, z):  # the model on an already normalised input (RISE's view)
        return self.net(z)


class _Encoder:
    def __init__(self, mean):
        self.mean = mean

    def spec(self):
        return {"kind": "normalize"}


def _rise_single_run(model, img, expl, mode, step):
    """RISE ``evaluation.py`` CausalMetric.single_run (mode del / ins), on a normalised image,
    without the plotting; substrate: zeros (del) or gkern(11, 5) blur (ins)."""
    hw = img.shape[-1] * img.shape[-2]
    inp = np.zeros((11, 11))
    inp[5, 5] = 1
    k = torch.from_numpy(gaussian_filter(inp, 5).astype("float32"))
    kern = torch.zeros(3, 3, 11, 11)
    for c in range(3):
        kern[c, c] = k
    sub = (lambda t: torch.zeros_like(t)) if mode == "del" else (lambda t: F.conv2d(t, kern, padding=5))
    with torch.no_grad():
        c = model(img).softmax(1).argmax(1)[0]
        n_steps = (hw + step - 1) // step
        start, finish = (img.clone(), sub(img)) if mode == "del" else (sub(img), img.clone())
        scores = np.empty(n_steps + 1)
        order = np.flip(np.argsort(expl.reshape(-1, hw), axis=1), axis=-1)
        for i in range(n_steps + 1):
            scores[i] = model(start).softmax(1)[0, c]
            if i < n_steps:
                coords = order[:, step * i : step * (i + 1)]
                start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.numpy().reshape(1, 3, hw)[0, :, coords]
    return scores


@pytest.mark.parametrize("mode", ["del", "ins"])
def test_deletion_and_insertion_match_rise_causal_metric(mode):
    model = Normalised()
    model.encoder = _Encoder(model.mean)
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    expl = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(4))  # distinct values: no ties
    target = model(x).argmax(1)
    z = (x - model.mean) / model.std
    ref = _rise_single_run(model.normalised, z.clone(), expl.numpy(), mode, step=10)
    res = score_maps(model, x, target, {"m": expl}, FidelityConfig(metrics=("deletion", "insertion"), step=10))
    ours = res.curves["deletion" if mode == "del" else "insertion"]["m"][0]
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(res.scores["deletion" if mode == "del" else "insertion"]["m"][0],
                               (ref.sum() - ref[0] / 2 - ref[-1] / 2) / (len(ref) - 1), atol=2e-5)


def test_rise_blur_is_the_blur_of_the_normalised_image():
    x = torch.rand(2, 3, 9, 9)
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    inp = np.zeros((11, 11))
    inp[5, 5] = 1
    k = torch.from_numpy(gaussian_filter(inp, 5).astype("float32"))
    ref = F.conv2d((x - mean) / std, k.expand(3, 1, 11, 11), padding=5, groups=3) * std + mean
    torch.testing.assert_close(rise_blur(x, mean), ref, atol=1e-6, rtol=1e-5)
    model = Normalised()
    model.encoder = _Encoder(mean)
    torch.testing.assert_close(substrate("encoder", model, x), mean.expand_as(x))
    torch.testing.assert_close(substrate("blur", model, x), ref, atol=1e-6, rtol=1e-5)


def test_repr_output_is_class_agnostic_and_bad_configs_are_refused():
    model = Normalised()
    model.classifier_layer = "4"  # the Linear's input: the pooled, flattened features
    x = torch.rand(2, 3, 12, 12)
    maps = torch.randn(2, 1, 12, 12)
    a = score_maps(model, x, torch.tensor([0, 1]), {"m": maps},
                   FidelityConfig(metrics=("consistency",), output="repr", fractions=(0.5, 1.0)))
    b = score_maps(model, x, torch.tensor([3, 2]), {"m": maps},
                   FidelityConfig(metrics=("consistency",), output="repr", fractions=(0.5, 1.0)))
    np.testing.assert_array_equal(a.curves["distance"]["m"], b.curves["distance"]["m"])  # targets do not matter
    with torch.no_grad():
        f = F.normalize(model.net[:4]((x - model.mean) / model.std), dim=1)
    assert np.allclose(a.curves["distance"]["m"][:, -1], 0) and f.shape == (2, 32)
    for bad in (dict(metrics=("nope",)), dict(output="x"), dict(baseline="grey"), dict(step=0), dict(score="z")):
        with pytest.raises(ConfigError):
            FidelityConfig(**bad).check()
