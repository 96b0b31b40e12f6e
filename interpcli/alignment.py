"""Alignment scores of unit gradients (``interp noise-grad``), as running sums over chunks of inputs.

    sums = AlignmentSums(n_units, center)
    for grads, inputs, is_noise in chunks:          # grads (U, k, C, H, W), inputs (k, C, H, W)
        sums.add(grads, inputs, is_noise)
    sums.scores()                                   # per unit: the lists of alignment_scores

Every score is a sum over inputs divided by a count, so the gradients of a whole test set never
need to be in memory together: the mean cosine between two different noise gradients is
(|Σ û|² - Σ |û|²) / (S (S - 1)) over the unit-normalised gradients û, the spread is
(Σ |g|² - |Σ g|² / S) / Σ |g|², in float64.  :meth:`AlignmentSums.add_sums` joins the sums of
other processes (torchrun ranks, shards).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["AlignmentSums", "alignment_scores", "cosine"]

_EPS = 1e-12
_KEYS = ("unit_sum", "unit_sq", "grad_sum", "grad_sq", "all_sum", "noise_cos", "image_cos", "zeros", "counts")


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine over the last three dimensions (float64; 0 where a vector is 0)."""
    a, b = a.flatten(-3).double(), b.flatten(-3).double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(_EPS)


class AlignmentSums:
    """Running sums of :func:`alignment_scores` for ``n_units`` units; ``center`` is the noise mean
    (per channel) subtracted from an input before its cosine with the gradient."""

    def __init__(self, n_units: int, center: Sequence[float], size: int | None = None):
        self.center = torch.tensor(list(center), dtype=torch.float64).view(-1, 1, 1)
        self.sums: dict[str, torch.Tensor] = {}
        self.n_units = n_units
        if size is not None:  # zeros of every sum (a process that adds nothing still has its share to give)
            z = lambda *s: torch.zeros(*s, dtype=torch.float64)
            self.sums = {"unit_sum": z(n_units, size), "unit_sq": z(n_units), "grad_sum": z(n_units, size),
                         "grad_sq": z(n_units), "all_sum": z(n_units, size), "noise_cos": z(n_units),
                         "image_cos": z(n_units), "zeros": z(n_units), "counts": z(2)}

    def add(self, grads: torch.Tensor, inputs: torch.Tensor, is_noise: Sequence[bool]) -> None:
        """Add the gradients (U, k, C, H, W) of k inputs (k, C, H, W)."""
        noise = torch.as_tensor(list(is_noise), dtype=torch.bool)
        g = grads.flatten(2).double()                                               # (U, k, D)
        cos_in = cosine(grads, inputs.double() - self.center)                       # (U, k)
        gn = g[:, noise]
        unit = gn / gn.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        counts = torch.tensor([float(noise.sum()), float((~noise).sum())], dtype=torch.float64)
        self.add_sums({"unit_sum": unit.sum(1), "unit_sq": (unit ** 2).sum((1, 2)), "grad_sum": gn.sum(1),
                       "grad_sq": (gn ** 2).sum((1, 2)), "all_sum": g.sum(1), "noise_cos": cos_in[:, noise].sum(1),
                       "image_cos": cos_in[:, ~noise].sum(1),
                       "zeros": (g.abs().amax(-1) == 0).double().sum(1), "counts": counts})

    def add_sums(self, sums: dict[str, torch.Tensor]) -> None:
        for k in _KEYS:
            v = sums[k].double()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()

    def mean_gradient(self, shape: Sequence[int]) -> torch.Tensor:
        """(U, *shape) float32: the mean gradient over the noise samples (over every input when
        there are none)."""
        s, m = (int(c) for c in self.sums["counts"].tolist())
        mean = self.sums["grad_sum"] / s if s else self.sums["all_sum"] / max(m, 1)
        return mean.float().view(self.n_units, *shape)

    def scores(self) -> dict[str, list[float | None]]:
        """Per unit: ``noise_consistency``, ``noise_spread``, ``noise_alignment``,
        ``image_alignment``, ``zero_gradient`` (see :func:`alignment_scores`)."""
        t = self.sums
        s, m = (int(c) for c in t["counts"].tolist())
        out: dict[str, list[float | None]] = {k: [] for k in ("noise_consistency", "noise_spread", "noise_alignment",
                                                              "image_alignment", "zero_gradient")}
        for u in range(self.n_units):
            total = float(t["grad_sq"][u])
            cons = (float(t["unit_sum"][u].square().sum()) - float(t["unit_sq"][u])) / (s * (s - 1)) if s >= 2 else None
            spread = (total - float(t["grad_sum"][u].square().sum()) / s) / total if s >= 2 and total > 0 else None
            out["noise_consistency"].append(cons)
            out["noise_spread"].append(None if spread is None else max(spread, 0.0))
            out["noise_alignment"].append(float(t["noise_cos"][u]) / s if s else None)
            out["image_alignment"].append(float(t["image_cos"][u]) / m if m else None)
            out["zero_gradient"].append(float(t["zeros"][u]) / (s + m) if s + m else 0.0)
        return out


def alignment_scores(grads: torch.Tensor, inputs: torch.Tensor, is_noise: Sequence[bool],
                     center: Sequence[float]) -> dict[str, list[float | None]]:
    """Per unit (rows of ``grads`` (U, N, C, H, W)), numbers to compare architectures by:

    - ``noise_consistency``: mean cosine between the gradients of two different noise samples
      (1: the unit responds to one fixed pattern, as a linear filter does);
    - ``noise_spread``: sum_s |g_s - mean g|^2 / sum_s |g_s|^2 over noise samples (0 for a
      linear filter, 1 - 1/S for gradients without a common part);
    - ``noise_alignment`` / ``image_alignment``: mean cosine between the gradient and its input
      minus ``center`` (the noise mean), on noise samples / on real images;
    - ``zero_gradient``: fraction of samples where the gradient is exactly zero (a dead unit).
    None where a score needs samples that are not there (two noise samples, one image)."""
    sums = AlignmentSums(len(grads), center)
    sums.add(grads, inputs, is_noise)
    return sums.scores()
