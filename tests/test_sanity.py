"""``metrics.sanity``: cascading model randomisation (Adebayo et al. 2018)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from interpcli.artifacts import load_model
from interpcli.data import load_dataset
from interpcli.errors import ConfigError
from interpcli.metrics.sanity import (
    cascading_randomisation,
    grayscale,
    randomisation_order,
    rank_correlation,
    reinitialise,
    ssim,
)

# ---------------------------------------------------------------------------------------------- similarity

def test_rank_correlation_with_ties_by_hand():
    a = np.array([[1.0, 2, 2, 3, 5]])
    b = np.array([[2.0, 1, 4, 4, 6]])
    # Average ranks: a -> 1, 2.5, 2.5, 4, 5; b -> 2, 1, 3.5, 3.5, 5; both have mean 3.
    # Centred: a -> -2, -.5, -.5, 1, 2; b -> -1, -2, .5, .5, 2.
    # Sum of products 2 + 1 - .25 + .5 + 4 = 7.25; sums of squares 9.5 and 9.5.
    assert rank_correlation(a, b)[0] == pytest.approx(7.25 / 9.5, rel=1e-12)
    rows = np.array([[3.0, 1, 2, 0], [1, 1, 1, 1], [0, 1, 2, 3]])
    got = rank_correlation(rows, rows[::-1])  # row 0 vs row 2, row 1 (constant) vs itself, row 2 vs row 0
    # ranks 4, 2, 3, 1 vs 1, 2, 3, 4: centred products -2.25 + .25 + .25 - 2.25 = -4, over 5.
    assert got[0] == pytest.approx(-0.8) and np.isnan(got[1]) and got[2] == pytest.approx(-0.8)
    assert rank_correlation(rows[[0, 2]], rows[[0, 2]]).tolist() == [1.0, 1.0]  # exactly
    assert rank_correlation(rows[[2]], 10 * rows[[2]] ** 3).tolist() == [1.0]  # monotone: ranks only
    # (N, C, H, W) inputs flatten from the second axis.
    assert rank_correlation(torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3)).shape == (2,)


def test_grayscale_is_pair_saliencys_normalisation_and_ssim_of_equal_maps_is_one():
    m = np.zeros((1, 2, 10, 10))
    m[0, 0] = np.arange(100).reshape(10, 10)
    m[0, 1] = -np.arange(100).reshape(10, 10)
    g = grayscale(m)  # |.| summed: 2 * (0..99); min 0; 99th percentile 2 * 98.01
    assert g.shape == (1, 10, 10) and g[0, 0, 0] == 0 and g[0, 9, 9] == 1
    assert g[0, 5, 0] == pytest.approx(100 / (2 * 98.01))
    assert np.isnan(grayscale(np.ones((1, 1, 4, 4)))).all()
    assert ssim(g, g)[0] == pytest.approx(1.0)
    assert np.isnan(ssim(g[:, :2, :2], g[:, :2, :2])).all()  # too small for a 3x3 window


# ---------------------------------------------------------------------------------------------- layers

class _Net(nn.Module):
    """Registered in another order than executed (the forward pass decides); ReLU has no state."""

    def __init__(self):
        super().__init__()
        self.head, self.unused = nn.Linear(3, 3), nn.Linear(3, 3)
        self.conv, self.bn, self.relu = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.fc(self.relu(self.bn(self.conv(x))).flatten(1)))


def test_layers_are_found_in_forward_order_and_listed_top_down():
    names = [n for n, _ in randomisation_order(_Net().eval(), torch.rand(1, 1, 6, 6))]
    assert names == ["head", "fc", "bn", "conv"]


def test_reinitialise_is_seeded_resets_bn_statistics_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)
    bn.running_mean += 5
    bn.weight.data += 1
    state = torch.get_rng_state()
    reinitialise(conv, 7)
    w = conv.weight.detach().clone()
    reinitialise(conv, 7)
    assert torch.equal(conv.weight, w)
    reinitialise(conv, 8)
    assert not torch.equal(conv.weight, w)
    reinitialise(bn, 7)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.weight, torch.ones(3))
    assert torch.equal(torch.get_rng_state(), state)

    class Scaled(nn.Module):  # no reset_parameters: the fallback draws
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 5))
            self.s = nn.Parameter(torch.ones(()))

    s = Scaled()
    reinitialise(s, 3)
    assert s.w.abs().max() <= 1 / 5**0.5 and s.w.std() > 0  # U(+-1/sqrt(fan_in))
    assert abs(float(s.s.detach())) < 0.1  # N(0, 0.01²)


# ---------------------------------------------------------------------------------------------- the check

@pytest.fixture(scope="module")
def lenet_and_digits(digits_ckpt):
    model = load_model(digits_ckpt)
    x, _ = load_dataset("digits").split("test")
    x = x[:16].float() / 255
    with torch.no_grad():
        t = model(x).argmax(1)
    return model, x, t


def test_cascading_randomisation_destroys_gradients_but_not_input_dominated_maps(lenet_and_digits):
    model, x, t = lenet_and_digits
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    steps = []
    res = cascading_randomisation(model, x, t, ["grad", "ixg", "gradcam"], seed=0,
                                  progress=lambda i, n, name: steps.append((i, n, name)))
    # The model itself is untouched: weights bitwise, buffers and train mode.
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    assert res.layers == ["net.fc", "net.fc2", "net.fc1", "net.conv2", "net.conv1"]
    assert steps[0] == (0, 5, "(trained)") and steps[-1] == (5, 5, "net.conv1")
    for m in res.methods:
        for metric in (res.spearman_abs, res.spearman_signed):
            assert metric[m].shape == (6, 16) and bool((metric[m][0] == 1.0).all())
        assert np.allclose(res.ssim[m][0], 1.0, atol=1e-9)
    final = res.means("spearman_abs")
    # Gradients follow the weights: with every layer random they are no longer rank-correlated.
    assert final["grad"][-1] < 0.3 and res.means("spearman_signed")["grad"][-1] < 0.3
    assert final["gradcam"][-1] < 0.3
    # |input x gradient| is 0 wherever the pixel is 0: its ranks mostly follow the digit itself, so
    # it stays correlated with a random model - the input-dominance Adebayo et al. warn about.
    assert final["ixg"][-1] > 0.7
    assert np.array_equal(res.targets, t.numpy())
    json.dumps(res.to_dict())


def test_cascading_randomisation_is_deterministic_with_a_seed(lenet_and_digits):
    model, x, t = lenet_and_digits
    a = cascading_randomisation(model, x, t, ["grad"], seed=3, max_layers=2, with_ssim=False)
    b = cascading_randomisation(model, x, t, ["grad"], seed=3, max_layers=2, with_ssim=False)
    c = cascading_randomisation(model, x, t, ["grad"], seed=4, max_layers=2, with_ssim=False)
    assert a.layers == ["net.fc", "net.fc2"] and a.spearman_abs["grad"].shape == (3, 16)
    assert np.array_equal(a.spearman_abs["grad"], b.spearman_abs["grad"], equal_nan=True)
    assert np.array_equal(a.spearman_signed["grad"], b.spearman_signed["grad"], equal_nan=True)
    assert not np.array_equal(a.spearman_abs["grad"][1:], c.spearman_abs["grad"][1:], equal_nan=True)
    assert np.isnan(a.ssim["grad"]).all()
    assert a.params == {"grad": {"abs": False}}


def test_the_reference_conventions_are_available(lenet_and_digits):
    bn = nn.BatchNorm2d(3)
    bn.running_mean += 5
    bn.weight.data += 1
    reinitialise(bn, 7, keep_stats=True)  # Adebayo et al.'s TF code: moving statistics are not trainable
    assert torch.equal(bn.running_mean, torch.full((3,), 5.0)) and torch.equal(bn.weight, torch.ones(3))
    model, x, t = lenet_and_digits
    fixed = cascading_randomisation(model, x, t, ["grad"], seed=3, max_layers=2, with_ssim=False)
    pred = cascading_randomisation(model, x, t, ["grad"], seed=3, max_layers=2, with_ssim=False, target_mode="pred")
    assert pred.target_mode == "pred" and pred.to_dict()["target_mode"] == "pred"
    assert np.array_equal(pred.spearman_abs["grad"][0], fixed.spearman_abs["grad"][0])  # trained model: same targets
    # a random head predicts other classes, whose maps differ
    assert not np.array_equal(pred.spearman_abs["grad"][1:], fixed.spearman_abs["grad"][1:])
    with pytest.raises(ConfigError, match="target_mode"):
        cascading_randomisation(model, x, t, ["grad"], target_mode="label")
