"""``metrics.stats``: every reference value is worked out by hand here (closed forms, exact
enumeration of sign patterns), never by calling scipy in the test."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from interpcli.errors import ConfigError
from interpcli.metrics.stats import holm, paired_test, pairwise_tests, rank_biserial, summarize


def _signed_rank_p(d, ranks):
    """Two-sided p of the signed-rank test by enumerating all 2^n sign patterns of the given
    ranks of |d|: P(min(R+, R-) <= W_observed) under the null (every pattern equally likely)."""
    total = sum(ranks)
    w_obs = min(sum(r for x, r in zip(d, ranks) if x > 0), sum(r for x, r in zip(d, ranks) if x < 0))
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(ranks)):
        plus = sum(r for s, r in zip(signs, ranks) if s > 0)
        hits += min(plus, total - plus) <= w_obs + 1e-9
    return w_obs, hits / 2 ** len(ranks)


# ---------------------------------------------------------------------------------------------- summarize

def test_summarize_mean_sd_median_and_dropped_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, float("nan"), float("inf")])
    assert (s["n"], s["n_nan"]) == (4, 2)
    assert s["mean"] == 2.5 and s["median"] == 2.5
    # sum of squared deviations: 1.5² + 0.5² + 0.5² + 1.5² = 5, over n - 1 = 3.
    assert s["std"] == pytest.approx(math.sqrt(5 / 3), rel=1e-12)


def test_bootstrap_interval_is_seeded_contains_the_mean_and_matches_theory():
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 0.2, 400)
    a, b = summarize(x, seed=7), summarize(x, seed=7)
    assert a == b
    assert summarize(x, seed=8)["ci_low"] != a["ci_low"]
    assert a["ci_low"] < a["mean"] < a["ci_high"]
    # Large-sample theory: the 95% interval of a mean is about mean +- 1.96 sd / sqrt(n).
    half = 1.96 * a["std"] / math.sqrt(400)
    assert (a["ci_high"] - a["ci_low"]) / 2 == pytest.approx(half, rel=0.1)
    assert abs((a["ci_high"] + a["ci_low"]) / 2 - a["mean"]) < 0.1 * half
    narrow = summarize(x, level=0.5, seed=7)
    assert a["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < a["ci_high"]


def test_summarize_degenerate_inputs_are_nan_not_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty, one = summarize([]), summarize([float("nan"), 0.4])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "std", "median", "ci_low", "ci_high"))
    assert (one["n"], one["n_nan"], one["mean"]) == (1, 1, 0.4)
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    with pytest.raises(ConfigError):
        summarize([1, 2], level=1.5)


# ---------------------------------------------------------------------------------------------- paired tests

def test_paired_t_test_against_the_closed_form():
    # Three pairs: differences 0.2, 0.5, 1.1; mean 0.6; deviations -0.4, -0.1, 0.5.
    a, b = [1.2, 2.5, 4.1], [1.0, 2.0, 3.0]
    sd = math.sqrt((0.16 + 0.01 + 0.25) / 2)
    t = 0.6 / (sd / math.sqrt(3))
    # Student t with 2 degrees of freedom: P(|T| > t) = 1 - t / sqrt(2 + t²).
    p = 1 - t / math.sqrt(2 + t * t)
    r = paired_test(a, b)
    assert r["n"] == 3 and r["mean_diff"] == pytest.approx(0.6, rel=1e-12)
    assert r["t"] == pytest.approx(t, rel=1e-9) and r["p_t"] == pytest.approx(p, rel=1e-9)
    assert r["cohen_dz"] == pytest.approx(0.6 / sd, rel=1e-9)
    # Two pairs (1 degree of freedom, Cauchy): P(|T| > t) = 1 - 2 atan(t) / pi.
    r2 = paired_test([1.0, 3.0], [0.5, 2.0])  # differences 0.5, 1.0
    sd2 = math.sqrt((0.25**2 + 0.25**2) / 1)
    t2 = 0.75 / (sd2 / math.sqrt(2))
    assert r2["t"] == pytest.approx(t2, rel=1e-9)
    assert r2["p_t"] == pytest.approx(1 - 2 * math.atan(t2) / math.pi, rel=1e-9)


def test_wilcoxon_with_ties_against_enumerated_sign_patterns():
    # d = a - b = 1, -0.5, 2, 2, -1, 6.  |d| ranked: 0.5 -> 1; the two 1s -> 2.5; the two 2s -> 4.5; 6 -> 6.
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b = [0.0, 2.5, 1.0, 2.0, 6.0, 0.0]
    d = [1, -0.5, 2, 2, -1, 6]
    ranks = [2.5, 1, 4.5, 4.5, 2.5, 6]
    w, p = _signed_rank_p(d, ranks)
    assert w == 3.5 and p == 12 / 64  # R+ = 2.5 + 4.5 + 4.5 + 6 = 17.5, R- = 1 + 2.5 = 3.5
    r = paired_test(a, b)
    assert r["wilcoxon_w"] == 3.5
    assert r["p_wilcoxon"] == pytest.approx(p, abs=1e-12)
    assert r["rank_biserial"] == pytest.approx((17.5 - 3.5) / 21, rel=1e-12)


def test_wilcoxon_without_ties_drops_zero_differences_and_is_exact():
    # Differences 0.3, -0.1, 0.45, 0.2, 0.6, -0.25, 0.7, 0.15 and one zero (dropped).
    d = [0.3, -0.1, 0.45, 0.2, 0.6, -0.25, 0.7, 0.15]
    # |d| ranks: 0.1 -> 1, 0.15 -> 2, 0.2 -> 3, 0.25 -> 4, 0.3 -> 5, 0.45 -> 6, 0.6 -> 7, 0.7 -> 8.
    ranks = [5, 1, 6, 3, 7, 4, 8, 2]
    w, p = _signed_rank_p(d, ranks)
    assert w == 5  # R- = 1 + 4
    a = np.array(d + [0.0]) + 2.0
    b = np.full(9, 2.0)
    r = paired_test(a, b)
    assert r["n"] == 9 and r["wilcoxon_w"] == 5
    assert r["p_wilcoxon"] == pytest.approx(p, abs=1e-12)
    # Rank subsets of {1..8} summing to <= 5: {}, 1, 2, 3, 4, 5, 1+2, 1+3, 1+4, 2+3; both tails: 2 * 10 / 256.
    assert p == 20 / 256
    assert r["rank_biserial"] == pytest.approx((31 - 5) / 36, rel=1e-12)
    assert rank_biserial(np.array(d)) == r["rank_biserial"]


def test_pairs_with_a_nan_are_dropped():
    a = [1.2, 2.5, float("nan"), 4.1, 7.0]
    b = [1.0, 2.0, 1.0, 3.0, float("inf")]
    assert paired_test(a, b) == paired_test([1.2, 2.5, 4.1], [1.0, 2.0, 3.0])


def test_degenerate_paired_inputs_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = paired_test([1.0], [0.0])
        same = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
        shift = paired_test([1.5, 2.5, 3.5, 4.5, 5.5], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert one["n"] == 1 and all(math.isnan(one[k]) for k in ("t", "p_t", "p_wilcoxon", "cohen_dz"))
    assert same["mean_diff"] == 0 and all(math.isnan(same[k]) for k in ("t", "p_t", "p_wilcoxon", "wilcoxon_w"))
    # Constant differences: no spread for a t-test, but the signed-rank test is exact: only the
    # all-plus and all-minus patterns of 5 signs reach W = 0, so p = 2 / 32.
    assert math.isnan(shift["p_t"]) and math.isnan(shift["cohen_dz"])
    assert shift["wilcoxon_w"] == 0 and shift["p_wilcoxon"] == pytest.approx(2 / 32) and shift["rank_biserial"] == 1
    with pytest.raises(ValueError):
        paired_test([1, 2], [1, 2, 3])


# ---------------------------------------------------------------------------------------------- Holm

def test_holm_adjustment_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06.
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    got = holm([0.01, float("nan"), 0.02])  # NaN does not count: m = 2
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.02)
    assert list(holm([0.5, 0.6])) == [1.0, 1.0]
    assert holm([]).shape == (0,)


def test_pairwise_tests_cover_every_pair_with_holm_across_the_family():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 30)
    scores = {"grad": base, "ixg": base + 0.05 + rng.normal(0, 0.02, 30), "rise": base + rng.normal(0, 0.3, 30)}
    rows = pairwise_tests(scores)
    assert [(r["a"], r["b"]) for r in rows] == [("grad", "ixg"), ("grad", "rise"), ("ixg", "rise")]
    for key in ("p_t", "p_wilcoxon"):
        assert np.allclose([r[f"{key}_holm"] for r in rows], holm([r[key] for r in rows]))
        assert all(r[f"{key}_holm"] >= r[key] for r in rows)
    assert rows[0]["mean_diff"] < 0 and rows[0]["p_t_holm"] < 1e-6
    assert "p_t_holm" not in pairwise_tests(scores, correction="none")[0]
    with pytest.raises(ConfigError):
        pairwise_tests(scores, correction="sidak")
