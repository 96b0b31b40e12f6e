"""Properties of the pure functions, over inputs hypothesis draws (issue 17, item 5): masks cover the
image, subspace and vector distances are symmetric and in range, deletion / insertion AUCs stay in
the curve's range, checkpoint metadata round-trips any JSON-able config, and the `-p` parser never
raises anything but its own error.  Each test draws few, small examples (well under 5 s each)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interpcli import artifacts
from interpcli.cli._options import method_params, parse_kv
from interpcli.errors import ConfigError
from interpcli.metadata import read_metadata
from interpcli.methods import get_method, list_methods
from interpcli.metrics.fidelity import auc, pixel_ranks, step_counts
from interpcli.models import Classifier
from interpcli.perturb import MaskSet, rise_masks, sliding_boxes
from interpcli.segments import grid_labels, label_masks, superpixels
from interpcli.subspace import pca_basis, subspace_distance, vector_distance

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------- masks

@st.composite
def windows(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    window = draw(st.integers(1, min(h, w)))
    return h, w, window, draw(st.integers(1, window))


@FAST
@given(windows())
def test_sliding_windows_cover_every_pixel(hws):
    h, w, window, stride = hws
    boxes = sliding_boxes(h, w, window, stride)
    masks = MaskSet.from_boxes((h, w), boxes).all()
    assert masks.shape == (len(boxes), 1, h, w) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert bool((masks.sum(0) >= 1).all()), "a pixel no window occludes"
    assert bool(((boxes[:, 1] - boxes[:, 0]) <= window).all() and (boxes[:, 1] <= h).all() and (boxes[:, 3] <= w).all())


@FAST
@given(st.integers(1, 6), st.integers(1, 5), st.floats(0.05, 1.0), st.integers(2, 24), st.integers(2, 24),
       st.integers(0, 2**31 - 1))
def test_rise_masks_are_in_0_1_and_keep_everything_at_p_1(n, s, p, h, w, seed):
    m = rise_masks(n, s, p, (h, w), seed)
    assert m.shape == (n, 1, h, w) and bool(((m >= 0) & (m <= 1)).all())
    assert torch.equal(m, rise_masks(n, s, p, (h, w), seed))  # seeded
    assert bool((rise_masks(n, s, 1.0, (h, w), seed) == 1).all())  # p = 1 keeps every pixel


@FAST
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 60))
def test_grid_superpixels_partition_the_image(h, w, n):
    masks = label_masks(superpixels(torch.zeros(1, 1, h, w), n, "grid")[0])
    assert bool((masks.sum(0) == 1).all())  # every pixel in exactly one segment
    assert bool((masks.flatten(1).sum(1) >= 1).all())  # no empty segment
    assert grid_labels(h, w, n).max() < h * w


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(6, 16), st.sampled_from([1, 3]), st.integers(2, 30))
def test_slic_superpixels_partition_the_image(seed, size, c, n):
    x = torch.rand(1, c, size, size, generator=torch.Generator().manual_seed(seed))
    labels = superpixels(x, n)[0]
    masks = label_masks(labels)
    assert bool((masks.sum(0) == 1).all()) and bool((masks.flatten(1).sum(1) >= 1).all())


# ---------------------------------------------------------------------------------------------- distances

@st.composite
def bases(draw):
    d = draw(st.integers(2, 12))
    k1, k2 = draw(st.integers(1, d)), draw(st.integers(1, d))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return pca_basis(torch.randn(d, d, generator=g), k1), pca_basis(torch.randn(d, d, generator=g), k2)


@FAST
@given(bases())
def test_subspace_distance_is_in_0_1_and_symmetric(pq):
    p, q = pq
    d_pq, d_qp = float(subspace_distance(p, q)), float(subspace_distance(q, p))
    assert -1e-12 <= d_pq <= 1 + 1e-12 and math.isclose(d_pq, d_qp, abs_tol=1e-9)
    assert abs(float(subspace_distance(p, p))) < 1e-9


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@FAST
@given(st.integers(1, 16).flatmap(lambda d: st.tuples(st.lists(finite, min_size=d, max_size=d),
                                                       st.lists(finite, min_size=d, max_size=d))),
       st.sampled_from(["cosine", "cos2", "l2"]))
def test_vector_distance_is_symmetric_and_in_range(ab, kind):
    a, b = (torch.tensor(v, dtype=torch.float64) for v in ab)
    d = float(vector_distance(a, b, kind))
    assert math.isclose(d, float(vector_distance(b, a, kind)), abs_tol=1e-12)
    assert 0 <= d <= {"cosine": 2, "cos2": 1, "l2": 2}[kind] + 1e-12


# ---------------------------------------------------------------------------------------------- AUCs

@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=64))
def test_auc_of_a_curve_in_0_1_is_in_its_range(curve):
    a = float(auc(np.array(curve)))
    assert min(curve) - 1e-12 <= a <= max(curve) + 1e-12 and 0 <= a <= 1


@FAST
@given(st.integers(1, 400), st.integers(1, 500))
def test_deletion_steps_go_from_nothing_to_everything(hw, step):
    c = step_counts(hw, step)
    assert int(c[0]) == 0 and int(c[-1]) == hw and bool((c[1:] > c[:-1]).all())


@FAST
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1), st.booleans())
def test_pixel_ranks_are_a_permutation(h, w, seed, ties):
    g = torch.Generator().manual_seed(seed)
    sal = torch.randint(0, 3, (2, h, w), generator=g).float() if ties else torch.randn(2, h, w, generator=g)
    sal[0, 0, 0] = float("nan")
    r = pixel_ranks(sal, seed)
    assert all(torch.equal(r[i].flatten().sort().values, torch.arange(h * w)) for i in range(2))


# ---------------------------------------------------------------------------------------------- checkpoints

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)

_MODEL = {}


def _tiny_model() -> Classifier:
    if "m" not in _MODEL:
        torch.manual_seed(0)
        _MODEL["m"] = Classifier("lenet", 3, (1, 8, 8), {"kind": "identity"}, ["a", "b", "c"])
    return _MODEL["m"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_checkpoint_metadata_round_trips_any_json_config(config):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        artifacts.save_checkpoint(path, _tiny_model(), train_config=config, dataset={"name": "x"})
        assert read_metadata(path)["train_config"] == config
        _, meta = artifacts.load_checkpoint(path)
        assert meta["train_config"] == config and json.loads(json.dumps(config)) == config


# ---------------------------------------------------------------------------------------------- -p parser

_METHODS = list_methods()
anything = st.one_of(json_values, st.floats(), st.integers(-10**400, 10**400), st.text())


@FAST
@given(st.lists(st.text(max_size=30) | st.builds(lambda m, k, v: f"{m}.{k}={v}", st.sampled_from(_METHODS),
                                                 st.text(max_size=8), st.text(max_size=12)), max_size=4),
       st.lists(st.sampled_from(_METHODS), min_size=1, max_size=3, unique=True))
def test_the_param_parser_raises_only_its_own_error(items, methods):
    try:
        out = method_params(methods, items)
    except ConfigError:
        return
    assert set(out) == set(methods)


@FAST
@given(st.sampled_from(_METHODS), st.data())
def test_parameter_checks_raise_only_config_errors(method, data):
    info = get_method(method)
    if not info.params:
        return
    name = data.draw(st.sampled_from(sorted(info.params)))
    value = data.draw(anything)
    try:
        info.check({name: value})
    except ConfigError:
        pass


def test_parse_kv_takes_anything_after_the_equals_sign():
    deep = "[" * 100_000  # json.loads would recurse too deep: the value stays a string
    assert parse_kv([f"a={deep}", "b=[1, 2]", "c=x=y"], "--param") == {"a": deep, "b": [1, 2], "c": "x=y"}
    with pytest.raises(ConfigError):
        parse_kv(["no-equals-sign"], "--param")
