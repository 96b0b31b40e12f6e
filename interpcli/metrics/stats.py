"""Honest statistics over per-image scores: spread, bootstrap intervals and paired tests.

One number per method hides how much the images disagree and whether two methods differ by
more than chance.  :func:`summarize` gives the mean with its sample standard deviation, the
median and a percentile-bootstrap interval of the mean; :func:`paired_test` compares two methods
scored on the same images (paired t-test and Wilcoxon signed-rank test, with effect sizes);
:func:`pairwise_tests` runs every pair of methods and adjusts the p-values for the number of
comparisons (Holm 1979).

Non-finite scores (NaN, +-inf: an image a metric is undefined on) are dropped and counted,
never propagated silently.  Degenerate inputs (fewer than two values, differences that are all
zero or have no spread) give NaN statistics, never an exception or a warning.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from ..errors import ConfigError

__all__ = ["summarize", "paired_test", "pairwise_tests", "holm", "rank_biserial"]

# Bootstrap resamples are drawn in chunks of about this many indices (memory stays ~16 MB).
_BOOT_CHUNK = 2_000_000


def _finite(values: Any) -> tuple[np.ndarray, int]:
    a = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(a)
    return a[keep], int(a.size - keep.sum())


def summarize(values: Sequence[float] | np.ndarray, *, n_boot: int = 10000, level: float = 0.95,
              seed: int = 0) -> dict[str, float | int]:
    """Mean, spread and a bootstrap confidence interval of per-image scores.

    Returns ``n`` (finite values used), ``n_nan`` (non-finite values dropped), ``mean``,
    ``std`` (sample standard deviation, ddof=1; NaN when n < 2), ``median``, and ``ci_low`` /
    ``ci_high``: the percentile bootstrap interval of the mean at ``level`` (Efron & Tibshirani
    1993, ch. 13): ``n_boot`` resamples of the n values with replacement, drawn with
    ``numpy.random.default_rng(seed)``, so the interval is the same on every run; NaN when
    n < 2 (one value has no sampling spread to resample).
    """
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be at least 1, got {n_boot}")
    x, dropped = _finite(values)
    n = int(x.size)
    nan = float("nan")
    out: dict[str, float | int] = {"n": n, "n_nan": dropped, "mean": nan, "std": nan, "median": nan,
                                   "ci_low": nan, "ci_high": nan}
    if n == 0:
        return out
    out.update(mean=float(x.mean()), median=float(np.median(x)))
    if n < 2:
        return out
    out["std"] = float(x.std(ddof=1))
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_CHUNK // n)
    means = np.concatenate([x[rng.integers(0, n, size=(min(rows, n_boot - i), n))].mean(1)
                            for i in range(0, n_boot, rows)])
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    out.update(ci_low=float(lo), ci_high=float(hi))
    return out


def rank_biserial(d: Sequence[float] | np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of differences ``d`` (Kerby 2014, the simple
    difference formula): (R+ - R-) / (R+ + R-), with R+ / R- the sums of the ranks of |d| (average
    ranks for ties) over the positive / negative differences.  Zero differences are dropped (as
    in the Wilcoxon test's default); NaN when none is left.  In [-1, 1]: +1 when every
    difference is positive."""
    d = np.asarray(d, dtype=np.float64).ravel()
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return float("nan")
    r = sps.rankdata(np.abs(d))
    plus, minus = float(r[d > 0].sum()), float(r[d < 0].sum())
    return (plus - minus) / (plus + minus)


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """Paired comparison of two methods' scores on the same images (``a[i]`` and ``b[i]`` belong
    to image i).  Pairs where either score is not finite are dropped.

    Returns ``n`` (pairs used), ``mean_diff`` (mean of a - b), ``t`` and ``p_t`` (paired
    two-sided t-test, :func:`scipy.stats.ttest_rel`), ``cohen_dz`` (mean difference / sample
    standard deviation of the differences), ``wilcoxon_w`` and ``p_wilcoxon`` (two-sided
    Wilcoxon signed-rank test, :func:`scipy.stats.wilcoxon` with its defaults: zero differences
    are dropped (``zero_method="wilcox"``); tied |differences| get average ranks; W = min(R+, R-);
    the p-value is exact for up to 50 non-zero differences without ties, an exhaustive
    sign-flip permutation for up to 13 with ties, else the tie-corrected normal approximation
    without continuity correction) and ``rank_biserial`` (:func:`rank_biserial`).

    NaN where a statistic is undefined: every value when n < 2; the t-test and d_z when the
    differences have no spread (all equal; the Wilcoxon test still answers when they are not
    zero); the Wilcoxon statistics when every difference is zero.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same length, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = int(d.size)
    nan = float("nan")
    out: dict[str, float | int] = {"n": n, "mean_diff": float(d.mean()) if n else nan, "t": nan, "p_t": nan,
                                   "cohen_dz": nan, "wilcoxon_w": nan, "p_wilcoxon": nan, "rank_biserial": nan}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # scipy's precision / small-sample warnings are ours to report as NaN
        if sd > 0 and np.ptp(d) > 0:
            t = sps.ttest_rel(a[keep], b[keep])
            out.update(t=float(t.statistic), p_t=float(t.pvalue), cohen_dz=float(d.mean()) / sd)
        if np.any(d != 0):
            w = sps.wilcoxon(d)
            out.update(wilcoxon_w=float(w.statistic), p_wilcoxon=float(w.pvalue), rank_biserial=rank_biserial(d))
    return out


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979, "A simple sequentially rejective multiple test
    procedure"): with the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted value
    is max over j <= i of min(1, (m - j + 1) p_(j)).  NaN p-values stay NaN and do not count in m.
    It controls the family-wise error rate without assuming independence."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def pairwise_tests(scores: dict[str, np.ndarray], *, correction: str = "holm") -> list[dict[str, Any]]:
    """:func:`paired_test` for every pair of methods (in the order of ``scores``): one dict per
    pair with ``a`` and ``b`` (the method names; differences are a - b) added.  With
    ``correction="holm"`` (default) each dict also holds ``p_t_holm`` and ``p_wilcoxon_holm``,
    the p-values adjusted by :func:`holm` across the family of all pairs (each test separately);
    ``"none"`` adds nothing."""
    if correction not in ("holm", "none"):
        raise ConfigError(f"unknown multiple-comparison correction '{correction}'; valid: holm, none")
    rows = [{"a": a, "b": b, **paired_test(scores[a], scores[b])} for a, b in itertools.combinations(scores, 2)]
    if correction == "holm" and rows:
        for key in ("p_t", "p_wilcoxon"):
            for row, p in zip(rows, holm([r[key] for r in rows])):
                row[f"{key}_holm"] = float(p) if math.isfinite(p) else float("nan")
    return rows
