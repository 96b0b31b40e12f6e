"""``metrics.pointing``: the grid pointing game of the B-cos papers (selection, tiling, scoring)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from interpcli.artifacts import load_model
from interpcli.data import load_dataset
from interpcli.errors import ConfigError
from interpcli.metrics.pointing import build_mosaics, cell_of, pointing_game, pointing_scores, select_mosaics


def _oracle_maps(m: int, grid: int, h: int, w: int, seed: int = 0, negative: bool = True) -> torch.Tensor:
    """(m, grid², grid*h, grid*w): random positive mass inside cell k, negative values (or 0) elsewhere."""
    g = torch.Generator().manual_seed(seed)
    maps = -torch.rand(m, grid * grid, grid * h, grid * w, generator=g) * negative
    for k in range(grid * grid):
        r, c = cell_of(k, grid)
        maps[:, k, r * h : (r + 1) * h, c * w : (c + 1) * w] = torch.rand(m, h, w, generator=g) + 0.01
    return maps


# ---------------------------------------------------------------------------------------------- scores

def test_oracle_scores_exactly_one_and_uniform_exactly_one_over_n():
    for grid in (2, 3):
        maps = _oracle_maps(2, grid, 5, 4)
        assert torch.equal(pointing_scores(maps, grid), torch.ones(2, grid * grid, dtype=torch.float64))
        uniform = pointing_scores(torch.full((2, grid * grid, grid * 5, grid * 4), 0.3), grid)
        assert bool((uniform == 1.0 / grid**2).all())
    assert bool((pointing_scores(torch.zeros(1, 4, 8, 8), 2) == 0).all())  # no positive mass: 0, not NaN
    half = torch.zeros(1, 4, 8, 8)
    half[0, :, :4, :4] = 1.0  # cell (0, 0) is element 0's cell
    half[0, :, 4:, 4:] = 1.0
    assert pointing_scores(half, 2)[0].tolist() == [0.5, 0.0, 0.0, 0.5]


def test_smoothing_is_the_references_avg_pool_and_pulls_an_oracle_below_one():
    maps = _oracle_maps(1, 3, 8, 8, negative=False)
    s0, s3, s7 = (pointing_scores(maps, 3, smooth=k)[0] for k in (0, 3, 7))
    assert bool((s0 == 1).all())
    assert bool((s3 < 1).all()) and bool((s7 < s3).all()) and float(s7.min()) > 0.5
    # Odd kernels: exactly F.avg_pool2d(k, stride=1, padding=(k-1)//2) with zero padding counted.
    ref = F.avg_pool2d(maps.double(), 7, stride=1, padding=3)
    assert torch.allclose(s7, pointing_scores(ref, 3)[0], rtol=0, atol=1e-12)
    assert pointing_scores(maps, 3, smooth=4).shape == (1, 9)  # even kernels keep the map size
    assert torch.equal(pointing_scores(maps, 3, smooth=1)[0], s0)


def test_low_resolution_maps_are_upsampled_to_the_mosaic():
    flat = torch.ones(3, 4, 2, 2)  # e.g. a CAM at feature resolution
    assert bool((pointing_scores(flat, 2, size=(16, 16)) == 0.25).all())
    onehot = torch.zeros(1, 4, 2, 2)
    for k in range(4):
        onehot[0, k][cell_of(k, 2)] = 1.0
    assert bool((pointing_scores(onehot, 2, size=(16, 16)) > 0.5).all())
    with pytest.raises(ConfigError, match="equal cells"):
        pointing_scores(torch.ones(1, 4, 7, 8), 2)


# ---------------------------------------------------------------------------------------------- mosaics

def test_mosaics_are_filled_column_by_column_pixel_exact():
    h, w = 3, 5
    images = torch.arange(9, dtype=torch.float32).view(9, 1, 1, 1).expand(9, 2, h, w).clone()
    images[:, 1] += 100  # a second channel, to check channels are not mixed
    blocks = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    mos = build_mosaics(images, blocks, 3)
    assert mos.shape == (2, 2, 3 * h, 3 * w)
    for m in range(2):
        for k in range(9):
            r, c = cell_of(k, 3)
            tile = mos[m, :, r * h : (r + 1) * h, c * w : (c + 1) * w]
            assert torch.equal(tile, images[blocks[m, k]])
    assert [cell_of(k, 3) for k in (0, 1, 3, 5)] == [(0, 0), (1, 0), (0, 1), (2, 1)]
    # The reference's tiling: view (M, g, g, C, H, W), permute (0, 3, 2, 4, 1, 5), reshape.
    ref = images[blocks.reshape(-1)].view(2, 3, 3, 2, h, w).permute(0, 3, 2, 4, 1, 5).reshape(2, 2, 3 * h, 3 * w)
    assert torch.equal(mos, ref)
    # and the scores read the same cells: a map equal to "is this cell k's image" scores 1.
    maps = torch.stack([(mos[:, 0] == blocks[:, k, None, None]).float() for k in range(9)], 1)
    assert bool((pointing_scores(maps, 3) == 1).all())


def test_rescale_keeps_the_input_size_and_pads_a_remainder():
    images = torch.rand(4, 1, 8, 8)
    const = torch.full((4, 1, 8, 8), 0.5)
    m2 = build_mosaics(const, np.array([[0, 1, 2, 3]]), 2, rescale=True)
    assert m2.shape == (1, 1, 8, 8) and torch.allclose(m2, torch.full_like(m2, 0.5))
    m3 = build_mosaics(images.repeat(3, 1, 1, 1)[:9], np.arange(9)[None], 3, rescale=True)
    assert m3.shape == (1, 1, 8, 8)
    assert bool((m3[..., 6:, :] == 0).all()) and bool((m3[..., :, 6:] == 0).all())  # 3 cells of 2 px + padding
    small = F.interpolate(images[:1], size=(2, 2), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(m3[0, :, :2, :2], small[0])


def _logits_with_labels(k=12, n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += rng.normal(1.5, 2.0, n)  # mostly right, some wrong, some unconfident
    return torch.tensor(logits), torch.tensor(labels)


def test_selection_distinct_classes_confidence_order_correct_and_confident():
    logits, labels = _logits_with_labels()
    lg, lb = logits.numpy(), labels.numpy()
    blocks = select_mosaics(logits, labels, 3, 1000)
    assert 0 < len(blocks) < 1000 and blocks.shape[1] == 9
    used = blocks.reshape(-1)
    assert len(set(used.tolist())) == len(used)
    assert all(len(set(lb[b])) == 9 for b in blocks)
    assert bool((lg[used].argmax(1) == lb[used]).all())
    own = lg[used, lb[used]]
    assert bool((1 / (1 + np.exp(-own)) > 0.5).all())
    for c in range(12):
        seq = [lg[i, c] for i in used if lb[i] == c]  # in the order the mosaics use them
        assert seq == sorted(seq, reverse=True)
        ok = np.flatnonzero((lb == c) & (lg.argmax(1) == c))
        assert sorted(seq, reverse=True) == sorted(lg[ok, c], reverse=True)[: len(seq)]  # the most confident first
    assert np.array_equal(select_mosaics(logits, labels, 3, 1000), blocks)
    assert not np.array_equal(select_mosaics(logits, labels, 3, 1000, seed=1)[:5], blocks[:5])
    assert np.array_equal(select_mosaics(logits, labels, 3, 4), blocks[:4])
    loose = select_mosaics(logits, labels, 3, 1000, conf_thresh=0.0)
    assert len(loose) >= len(blocks)


def test_selection_draws_what_the_references_global_numpy_generator_draws():
    logits, labels = _logits_with_labels(k=7, n=200, seed=3)
    lg, lb = logits.numpy(), labels.numpy()
    # The reference's loop, written out: np.random.seed(42) then np.random.choice on the available classes.
    queues = []
    for c in range(7):
        ok = [i for i in range(len(lb)) if lb[i] == c and lg[i].argmax() == c]
        queues.append(sorted(ok, key=lambda i: -lg[i, c]))
    pos = [0] * 7

    def avail(c):
        return pos[c] < len(queues[c]) and 1 / (1 + np.exp(-lg[queues[c][pos[c]], c])) > 0.5

    mask = np.array([avail(c) for c in range(7)])
    state = np.random.get_state()
    try:
        np.random.seed(42)
        expected = []
        while mask.sum() > 4:
            for c in np.random.choice(np.arange(7)[mask], size=4, replace=False):
                expected.append(queues[c][pos[c]])
                pos[c] += 1
                mask[c] = avail(c)
    finally:
        np.random.set_state(state)
    assert select_mosaics(logits, labels, 2, 10**6).reshape(-1).tolist() == expected


def test_more_than_n_classes_must_be_available():
    # Exactly 4 classes with confident, correct images: "while more than n are available" -> none for 2x2.
    logits = torch.eye(4).repeat(5, 1) * 5
    labels = torch.arange(4).repeat(5)
    assert select_mosaics(logits, labels, 2, 10).shape == (0, 4)
    assert select_mosaics(torch.eye(5).repeat(5, 1) * 5, torch.arange(5).repeat(5), 2, 10).shape[0] > 0


# ---------------------------------------------------------------------------------------------- the game

class _ChannelModel(nn.Module):
    """Logit of class c = 10 * mean of input channel c - 2: the gradient of a class is uniform over
    its channel, so ``grad`` spreads evenly (1/n) and ``ixg`` lies exactly on the class's image (1)."""

    num_classes = 5

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return self.scale * x.mean((2, 3)) - 2


def _channel_data(n=60, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 5
    images = torch.zeros(n, 5, size, size)
    images[torch.arange(n), labels] = 0.2 + 0.8 * torch.rand(n, size, size, generator=g)
    return images, labels


def test_pointing_game_end_to_end_on_a_model_with_known_answers():
    images, labels = _channel_data()
    calls = []
    res = pointing_game(_ChannelModel(), images, labels, ["grad", "ixg"], grid=2, n_mosaics=6,
                        progress=lambda d, t, m: calls.append((d, t, m)))
    assert res.blocks.shape == (6, 4) and res.classes.shape == (6, 4)
    assert np.array_equal(res.classes, labels.numpy()[res.blocks])
    assert bool((res.scores["grad"] == 0.25).all()) and bool((res.scores["ixg"] == 1.0).all())
    assert (res.baseline, res.oracle) == (0.25, 1.0)
    assert calls[0] == (0, 24, "grad") and calls[-1] == (24, 24, "ixg")
    assert res.params == {"grad": {"abs": False}, "ixg": {}}
    again = pointing_game(_ChannelModel(), images, labels, ["grad", "ixg"], grid=2, n_mosaics=6, batch_size=3)
    assert np.array_equal(again.blocks, res.blocks) and np.array_equal(again.scores["ixg"], res.scores["ixg"])
    d = res.to_dict()
    assert d["n_mosaics"] == 6 and len(d["scores"]["ixg"]) == 6 and d["baseline"] == 0.25


def test_too_few_mosaics_warn_and_none_is_an_error():
    images, labels = _channel_data(n=15)  # 3 images per class: 5 classes -> at most a few 2x2 mosaics
    with pytest.warns(UserWarning, match="mosaics could be built"):
        res = pointing_game(_ChannelModel(), images, labels, ["ixg"], grid=2, n_mosaics=100)
    assert 0 < len(res.blocks) < 100
    with pytest.raises(ConfigError, match="more than 9 classes"):
        pointing_game(_ChannelModel(), images, labels, ["ixg"], grid=3, n_mosaics=1)


def test_a_fixed_size_head_needs_rescale_and_then_plays(digits_ckpt):
    model = load_model(digits_ckpt)
    x, y = load_dataset("digits").split("test")
    images, labels = x[:200].float() / 255, y[:200]
    with pytest.raises(ConfigError, match="rescale=True"):
        pointing_game(model, images, labels, ["grad"], grid=2, n_mosaics=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pointing_game(model, images, labels, ["grad", "gradcam"], grid=2, n_mosaics=8, rescale=True)
    assert res.blocks.shape == (8, 4)
    for s in res.scores.values():
        assert s.shape == (8, 4) and bool(((s >= 0) & (s <= 1)).all())
    again = pointing_game(model, images, labels, ["grad", "gradcam"], grid=2, n_mosaics=8, rescale=True)
    assert all(np.array_equal(again.scores[m], res.scores[m]) for m in res.scores)
