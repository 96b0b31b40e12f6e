"""Subspace routines of the mutual-subspace family (Fukui lab conventions, ../shared/METHODS.md 2.2).

All functions are batched over leading dimensions and work on any device.

- :func:`pca_basis`: the top-k left singular vectors of a set of vectors *without centring*
  (eigenvectors of the autocorrelation matrix X Xᵀ), an orthonormal basis (..., d, k).
- :func:`canonical_cosines`: cosines of the canonical (principal) angles between two subspaces,
  the singular values of ΦᵀΨ.
- :func:`subspace_distance`: 1 - mean cos² θ_i (MSM dissimilarity; 0 = same subspace,
  1 = orthogonal), over all angles, the first one, or the first k.
- :func:`difference_subspace`: the Generalized Difference Subspace (Fukui & Maki, TPAMI 2015)
  of a set of subspaces: eigenvectors of G = Σ_c Φ_c Φ_cᵀ with the *smallest* non-zero
  eigenvalues.
- :func:`project_basis` / :func:`project_vectors`: onto a GDS (Dᵀ Φ re-orthonormalised by QR;
  Dᵀ v).

Precision: bases are float64 from :func:`pca_basis` through the canonical angles
(:func:`canonical_cosines`, :func:`subspace_distance`, :func:`project_basis` all compute in
float64 whatever their inputs).  In float32, cos² of a canonical angle is only known to
~1e-7, which floors distances there: a true distance of 1e-6 came out ~20 % off.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["pca_basis", "canonical_cosines", "subspace_distance", "difference_subspace", "project_basis",
           "project_vectors", "vector_distance", "DISTANCES"]

DISTANCES = ("cosine", "cos2", "l2")


def pca_basis(vectors: torch.Tensor, k: int, normalise: bool = True,
              dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Uncentred PCA: ``vectors`` (..., n, d) -> orthonormal basis (..., d, k) of their top-k span.

    Each vector is L2-normalised first when ``normalise``.  ``k`` may not exceed n or d.
    Computed in float64 and returned as ``dtype`` (default float64, for canonical angles;
    None = the dtype of ``vectors``).
    """
    n, d = vectors.shape[-2:]
    if not 1 <= k <= min(n, d):
        raise ConfigError(f"subspace dimension k={k} must be in 1..{min(n, d)} (views {n}, feature size {d})")
    x = vectors.double()
    if normalise:
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u, _, _ = torch.linalg.svd(x.mT, full_matrices=False)  # (..., d, min(n, d))
    return u[..., :k].to(dtype or vectors.dtype)


def canonical_cosines(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Cosines of the canonical angles, descending: singular values of pᵀq, (..., min(k1, k2)),
    computed and returned in float64."""
    return torch.linalg.svdvals(p.double().mT @ q.double()).clamp(0.0, 1.0)


def _angles(cos: torch.Tensor, angles: str | int) -> torch.Tensor:
    if angles == "all":
        return cos
    if angles == "first":
        return cos[..., :1]
    k = int(angles)
    if not 1 <= k <= cos.shape[-1]:
        raise ConfigError(f"angles={k} must be in 1..{cos.shape[-1]} (the smaller subspace dimension)")
    return cos[..., :k]


def subspace_distance(p: torch.Tensor, q: torch.Tensor, angles: str | int = "all") -> torch.Tensor:
    """1 - mean cos² of the canonical angles between span(p) and span(q) (bases (..., d, k)), float64."""
    return 1.0 - _angles(canonical_cosines(p, q), angles).pow(2).mean(-1)


def vector_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Distance of feature vectors (..., d): ``cosine`` 1 - cos, ``cos2`` 1 - cos², ``l2`` ‖â - b̂‖.

    Computed in float64 from the chord h = ‖â - b̂‖ (1 - cos = h²/2, 1 - cos² = (1 - cos)(1 + cos)),
    which has no cancellation: distances of nearly parallel vectors keep their relative precision
    (1 - cos from the dot product loses it below ~1e-7 in float32)."""
    if kind not in DISTANCES:
        raise ConfigError(f"unknown distance '{kind}'; use {', '.join(DISTANCES)}")
    a, b = a.double(), b.double()
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    h = (an - bn).norm(dim=-1)
    if kind == "l2":
        return h
    one_minus_cos = (0.5 * h.pow(2)).clamp(0.0, 2.0)
    return one_minus_cos if kind == "cosine" else one_minus_cos * (2.0 - one_minus_cos)


def difference_subspace(bases: list[torch.Tensor] | torch.Tensor, dim: int | float,
                        rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GDS of subspaces with bases Φ_c (d, k_c): (D (d, dim), eigenvalues of its directions).

    ``dim`` is a number of directions, or a fraction in (0, 1) of the rank of G = Σ Φ_c Φ_cᵀ.
    Directions with eigenvalue below ``rtol`` x the largest (outside every subspace) are
    excluded; of the rest the ``dim`` smallest are kept (the principal subspace shared by
    the classes has the largest eigenvalues and is dropped).
    """
    stacked = torch.cat(list(bases), dim=-1) if isinstance(bases, (list, tuple)) else bases
    g = (stacked.double() @ stacked.double().mT)
    evals, evecs = torch.linalg.eigh(g)  # ascending
    keep = evals > rtol * evals[-1].clamp_min(1e-300)
    evals, evecs = evals[keep], evecs[:, keep]
    rank = len(evals)
    n = int(round(dim * rank)) if isinstance(dim, float) and 0 < dim < 1 else int(dim)
    if not 1 <= n <= rank:
        raise ConfigError(f"GDS dimension {dim} must be in 1..{rank} (the rank of the summed projections)")
    return evecs[:, :n].to(stacked.dtype), evals[:n].to(stacked.dtype)


def project_basis(gds: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Project a subspace (..., d, k) onto the GDS (d, m): orthonormalised Dᵀ Φ, (..., m, k'), float64."""
    q, _ = torch.linalg.qr(gds.double().mT @ basis.double())
    return q


def project_vectors(gds: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Coordinates of vectors (..., d) in the GDS (d, m): (..., m), in the wider of the two dtypes."""
    dt = torch.promote_types(vectors.dtype, gds.dtype)
    return vectors.to(dt) @ gds.to(dt)
