"""Comparing groups of runs (seeds, folds, architectures) on one metric, honestly.

Each group is summarised by n, mean, sample standard deviation (ddof 1), median, min, max and a
percentile-bootstrap interval of the mean (:func:`~interpcli.metrics.stats.summarize`).  Every
two groups a and b are compared by

- **Welch's t-test** (unequal variances; :func:`scipy.stats.ttest_ind` with ``equal_var=False``):
  t = (mean_a - mean_b) / se, se = sqrt(s_a^2 / n_a + s_b^2 / n_b), with the Welch-Satterthwaite
  degrees of freedom df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1)), and
  the interval mean_a - mean_b +- t_{(1+level)/2, df} se;
- **effect sizes**: Cohen's d = (mean_a - mean_b) / s_p with the pooled sd
  s_p = sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)), and Hedges' g = J d with the
  small-sample correction J = 1 - 3 / (4 (n_a + n_b) - 9) (Hedges & Olkin 1985, eq. 5.10's
  approximation);
- when the runs **pair up** (each group has at most one run per pair key, e.g. the same seed and
  fold, and at least two keys are shared), the **paired t-test** and the **Wilcoxon signed-rank
  test** on the shared keys (:func:`~interpcli.metrics.stats.paired_test`: d_z, rank-biserial).

The p-values of each test are Holm-adjusted over the family of all pairs of groups of the
metric (:func:`~interpcli.metrics.stats.holm`).  NaN where a statistic is undefined (a group of
one run, no spread), never an exception.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from ..metrics.stats import holm, paired_test, summarize

__all__ = ["welch_test", "group_summary", "compare_groups", "pair_values", "fmt", "summary_rows", "pair_rows"]

NAN = float("nan")


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
               level: float = 0.95) -> dict[str, float | int]:
    """Welch's t-test of mean(a) = mean(b) and the effect sizes (see the module doc); non-finite
    values are dropped.  Keys: ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``mean_diff``, ``se``,
    ``welch_t``, ``welch_df``, ``p_welch`` (two-sided), ``ci_low`` / ``ci_high`` (of the
    difference), ``cohen_d``, ``hedges_g``."""
    x, y = _finite(a), _finite(b)
    na, nb = int(x.size), int(y.size)
    out: dict[str, float | int] = {"n_a": na, "n_b": nb, "mean_a": float(x.mean()) if na else NAN,
                                   "mean_b": float(y.mean()) if nb else NAN, "mean_diff": NAN, "se": NAN,
                                   "welch_t": NAN, "welch_df": NAN, "p_welch": NAN, "ci_low": NAN, "ci_high": NAN,
                                   "cohen_d": NAN, "hedges_g": NAN}
    if na and nb:
        out["mean_diff"] = out["mean_a"] - out["mean_b"]
    if na < 2 or nb < 2:
        return out
    va, vb = float(x.var(ddof=1)), float(y.var(ddof=1))
    diff = float(out["mean_diff"])
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    if pooled > 0:
        d = diff / pooled
        out.update(cohen_d=d, hedges_g=(1 - 3 / (4 * (na + nb) - 9)) * d)
    qa, qb = va / na, vb / nb
    se = math.sqrt(qa + qb)
    if se == 0:
        return out
    df = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = sps.ttest_ind(x, y, equal_var=False)
    half = float(sps.t.ppf((1 + level) / 2, df)) * se
    out.update(se=se, welch_t=float(res.statistic), welch_df=df, p_welch=float(res.pvalue), ci_low=diff - half,
               ci_high=diff + half)
    return out


def group_summary(values: Sequence[float] | np.ndarray, *, n_boot: int = 10000, level: float = 0.95,
                  seed: int = 0) -> dict[str, float | int]:
    """:func:`~interpcli.metrics.stats.summarize` (n, n_nan, mean, std, median, ci_low, ci_high)
    plus ``min`` and ``max``."""
    out = summarize(values, n_boot=n_boot, level=level, seed=seed)
    x = _finite(values)
    out.update(min=float(x.min()) if x.size else NAN, max=float(x.max()) if x.size else NAN)
    return out


def pair_values(a: Sequence[float], keys_a: Sequence[Any], b: Sequence[float],
                keys_b: Sequence[Any]) -> tuple[list[Any], np.ndarray, np.ndarray, str]:
    """The shared pair keys (sorted as text) with the two groups' values on them, or a reason why
    the groups do not pair: a run without a key, a key twice in one group, fewer than two shared."""
    if any(k is None for k in [*keys_a, *keys_b]):
        return [], np.empty(0), np.empty(0), "not every run has the pair keys"
    for keys in (keys_a, keys_b):
        if len(set(keys)) != len(keys):
            return [], np.empty(0), np.empty(0), "a group holds two runs with the same pair key"
    ia, ib = dict(zip(keys_a, a)), dict(zip(keys_b, b))
    shared = sorted(set(ia) & set(ib), key=str)
    if len(shared) < 2:
        return [], np.empty(0), np.empty(0), f"{len(shared)} shared pair key(s); 2 or more pair runs"
    return shared, np.array([ia[k] for k in shared], float), np.array([ib[k] for k in shared], float), ""


def _adjust(rows: list[dict[str, Any]], key: str) -> None:
    for row, p in zip(rows, holm([r[key] for r in rows])):
        row[f"{key}_holm"] = float(p)


def compare_groups(values: Mapping[str, Sequence[float]], keys: Mapping[str, Sequence[Any]] | None = None, *,
                   n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """One metric over groups of runs: ``summary`` (group -> :func:`group_summary`) and ``tests``
    (every two groups, in order: :func:`welch_test` and, when they pair by ``keys`` (group -> one
    pair key per run, None: unpaired), the paired tests; Holm-adjusted p-values ``*_holm``)."""
    summary = {g: group_summary(v, n_boot=n_boot, level=level, seed=seed) for g, v in values.items()}
    tests = []
    for ga, gb in itertools.combinations(values, 2):
        row: dict[str, Any] = {"a": ga, "b": gb, **welch_test(values[ga], values[gb], level)}
        shared, pa, pb, why = (pair_values(values[ga], keys[ga], values[gb], keys[gb]) if keys is not None
                               else ([], None, None, "no pair keys"))
        paired = paired_test(pa, pb) if shared else {}
        row.update(paired_on=[list(k) for k in shared] or None, paired_note=why, paired_n=paired.get("n", 0),
                   paired_mean_diff=paired.get("mean_diff", NAN), paired_t=paired.get("t", NAN),
                   p_paired=paired.get("p_t", NAN), cohen_dz=paired.get("cohen_dz", NAN),
                   wilcoxon_w=paired.get("wilcoxon_w", NAN), p_wilcoxon=paired.get("p_wilcoxon", NAN),
                   rank_biserial=paired.get("rank_biserial", NAN))
        tests.append(row)
    for key in ("p_welch", "p_paired", "p_wilcoxon"):
        _adjust(tests, key)
    return {"summary": summary, "tests": tests}


# ---------------------------------------------------------------------------------------------- tables

def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits; ``—`` for None or NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.{digits}g}"


def summary_rows(stats: Mapping[str, Any]) -> list[dict[str, str]]:
    """Printable rows of ``stats[metric]["summary"]`` (the JSON of ``interp compare``): metric,
    group, n, mean ± sd, the bootstrap interval, min – max."""
    return [{"metric": metric, "group": g, "n": str(s["n"]), "mean ± sd": f"{fmt(s['mean'])} ± {fmt(s['std'])}",
             "95% CI of mean": f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]",
             "min – max": f"{fmt(s['min'])} – {fmt(s['max'])}"}
            for metric, part in stats.items() for g, s in part["summary"].items()]


def pair_rows(stats: Mapping[str, Any]) -> list[dict[str, str]]:
    """Printable rows of ``stats[metric]["tests"]``: the difference with its Welch interval,
    Welch's t (df) and Holm-adjusted p, Hedges' g, and the paired tests when the runs pair."""
    rows = []
    for metric, part in stats.items():
        for t in part["tests"]:
            paired = bool(t.get("paired_n"))
            rows.append({"metric": metric, "a − b": f"{t['a']} − {t['b']}",
                         "diff [95% CI]": f"{fmt(t['mean_diff'])} [{fmt(t['ci_low'])}, {fmt(t['ci_high'])}]",
                         "Welch t (df)": f"{fmt(t['welch_t'], 3)} ({fmt(t['welch_df'], 3)})",
                         "p Welch (Holm)": fmt(t["p_welch_holm"], 3), "Hedges g": fmt(t["hedges_g"], 3),
                         "paired n": str(t["paired_n"]) if paired else "—",
                         "p paired t (Holm)": fmt(t["p_paired_holm"], 3) if paired else "—",
                         "p Wilcoxon (Holm)": fmt(t["p_wilcoxon_holm"], 3) if paired else "—"})
    return rows
