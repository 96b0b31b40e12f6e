"""Subspace routines against closed forms: distances, canonical angles, uncentred PCA, GDS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interpcli.errors import ConfigError
from interpcli.subspace import (
    canonical_cosines,
    difference_subspace,
    pca_basis,
    project_basis,
    project_vectors,
    subspace_distance,
    vector_distance,
)


def _rotation(d: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _proj(b: torch.Tensor) -> torch.Tensor:
    return b @ b.mT


def test_identical_and_orthogonal_subspaces():
    r = _rotation(6)
    p, q = r[:, :3], r[:, 3:]
    assert float(subspace_distance(p, p)) == pytest.approx(0.0, abs=1e-12)
    assert float(subspace_distance(p, p @ _rotation(3, 1))) == pytest.approx(0.0, abs=1e-12)  # another basis
    assert float(subspace_distance(p, q)) == pytest.approx(1.0, abs=1e-12)


def test_canonical_angles_of_known_rotations():
    a, b = 0.3, 1.1
    e = torch.eye(4, dtype=torch.float64)
    p = e[:, :2]
    q = torch.stack([math.cos(a) * e[0] + math.sin(a) * e[2], math.cos(b) * e[1] + math.sin(b) * e[3]], 1)
    r = _rotation(4, 3)  # the angles do not depend on the frame
    cos = canonical_cosines(r @ p, r @ q)
    assert torch.allclose(cos, torch.tensor([math.cos(a), math.cos(b)], dtype=torch.float64), atol=1e-12)
    expected = 1 - (math.cos(a) ** 2 + math.cos(b) ** 2) / 2
    assert float(subspace_distance(r @ p, r @ q)) == pytest.approx(expected, abs=1e-12)
    assert float(subspace_distance(p, q, "first")) == pytest.approx(1 - math.cos(a) ** 2, abs=1e-12)
    assert float(subspace_distance(p, q, 2)) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ConfigError):
        subspace_distance(p, q, 3)


def test_uncentred_pca_is_the_autocorrelation_eigenspace():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 7, generator=g, dtype=torch.float64) + 3.0  # a large mean: centring would matter
    b = pca_basis(x, 3, normalise=False)
    assert torch.allclose(b.mT @ b, torch.eye(3, dtype=torch.float64), atol=1e-12)
    evals, evecs = np.linalg.eigh((x.mT @ x).numpy())  # autocorrelation X^T X of rows = X X^T of columns
    ref = torch.from_numpy(evecs[:, ::-1][:, :3].copy())
    assert torch.allclose(_proj(b), _proj(ref), atol=1e-10)
    # the first direction of vectors that all point one way is that direction (no centring)
    v = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    same = v * torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    assert torch.allclose(_proj(pca_basis(same, 1)), _proj((v / 3)[:, None]), atol=1e-12)
    with pytest.raises(ConfigError):
        pca_basis(x, 11)


def test_pca_is_batched():
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    b = pca_basis(x, 2)
    assert b.shape == (4, 5, 2)
    for i in range(4):
        assert torch.allclose(_proj(b[i]), _proj(pca_basis(x[i], 2)), atol=1e-10)


def test_gds_of_two_lines_is_their_difference():
    theta = 0.7
    u = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    v = torch.tensor([math.cos(theta), math.sin(theta), 0.0], dtype=torch.float64)
    d, evals = difference_subspace([u[:, None], v[:, None]], 1)
    diff = (u - v) / (u - v).norm()
    assert torch.allclose(_proj(d), _proj(diff[:, None]), atol=1e-12)
    assert float(evals[0]) == pytest.approx(1 - math.cos(theta), abs=1e-12)
    both, evals2 = difference_subspace([u[:, None], v[:, None]], 2)  # all of the rank: the sum space
    assert torch.allclose(evals2, torch.tensor([1 - math.cos(theta), 1 + math.cos(theta)], dtype=torch.float64))


def test_gds_drops_the_shared_direction():
    e = torch.eye(5, dtype=torch.float64)
    p1, p2 = e[:, [0, 1]], e[:, [0, 2]]  # share e0
    d, evals = difference_subspace([p1, p2], 2)
    assert torch.allclose(_proj(d), _proj(e[:, [1, 2]]), atol=1e-12)
    assert torch.allclose(evals, torch.ones(2, dtype=torch.float64))
    d_frac, _ = difference_subspace([p1, p2], 0.67)  # fraction of the rank 3 -> 2 directions
    assert d_frac.shape == (5, 2)
    with pytest.raises(ConfigError):
        difference_subspace([p1, p2], 4)


def test_projection_onto_the_gds():
    e = torch.eye(5, dtype=torch.float64)
    gds = e[:, [1, 2]]
    inside = (e[:, [1]] + e[:, [2]]) / math.sqrt(2)
    pb = project_basis(gds, inside)
    assert pb.shape == (2, 1) and torch.allclose(pb.abs(), torch.full((2, 1), 1 / math.sqrt(2), dtype=torch.float64))
    assert torch.allclose(project_vectors(gds, torch.tensor([3.0, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64)),
                          torch.tensor([4.0, 5.0], dtype=torch.float64))


def test_vector_distances():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[2.0, 2.0]])  # 45 degrees, another length
    c = math.cos(math.pi / 4)
    assert float(vector_distance(a, b, "cosine")) == pytest.approx(1 - c, abs=1e-6)
    assert float(vector_distance(a, b, "cos2")) == pytest.approx(0.5, abs=1e-6)
    assert float(vector_distance(a, b, "l2")) == pytest.approx(math.sqrt(2 - 2 * c), abs=1e-6)
    assert float(vector_distance(a, -a, "cos2")) == pytest.approx(0.0, abs=1e-6)  # sign-blind
    with pytest.raises(ConfigError):
        vector_distance(a, b, "manhattan")


def test_tiny_vector_distances_keep_their_precision_from_float32_features():
    # the dot product in float32 rounds 1 - cos = 5e-7 to 0 or to 6e-8 steps; the chord does not
    theta = 1e-3
    a = torch.tensor([[3.0, 1.0, 2.0]])
    u = a / a.norm()
    v = torch.tensor([[1.0, -3.0, 0.0]]) / math.sqrt(10)  # orthogonal to u
    b = (math.cos(theta) * u + math.sin(theta) * v) * 7.0
    assert float(vector_distance(a, b, "cosine")) == pytest.approx(1 - math.cos(theta), rel=1e-2)
    assert float(vector_distance(a, b, "cos2")) == pytest.approx(math.sin(theta) ** 2, rel=1e-2)
    assert float(vector_distance(a, b, "l2")) == pytest.approx(2 * math.sin(theta / 2), rel=1e-3)
