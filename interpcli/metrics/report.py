"""Tables of explanation scores: one row per image x method x metric, and per metric a summary
per method (:func:`~interpcli.metrics.stats.summarize`) with the paired tests between every two
methods (:func:`~interpcli.metrics.stats.pairwise_tests`, Holm-adjusted).

    report = summarize_scores({"deletion": {"grad": a, "rise": b}})
    report["deletion"]["summary"]["grad"]["mean"], report["deletion"]["tests"][0]["p_wilcoxon_holm"]
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .stats import pairwise_tests, summarize

__all__ = ["BETTER", "summarize_scores", "long_rows", "csv_bytes", "summary_rows"]

# Which direction is better, per metric (shown in tables and figures).
BETTER = {"consistency": "higher", "min-size": "lower", "deletion": "lower", "insertion": "higher",
          "pointing": "higher", "sanity-corr": "lower"}


def summarize_scores(scores: dict[str, dict[str, np.ndarray]], *, n_boot: int = 10000, level: float = 0.95,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per metric: ``summary`` (method -> mean, std, median, bootstrap interval, n, n_nan),
    ``tests`` (every pair of methods: paired t-test and Wilcoxon, effect sizes, Holm-adjusted
    p-values; empty with one method) and ``better`` (``higher`` / ``lower``)."""
    out: dict[str, dict[str, Any]] = {}
    for metric, by_method in scores.items():
        out[metric] = {"better": BETTER.get(metric, "higher"),
                       "summary": {m: summarize(v, n_boot=n_boot, level=level, seed=seed)
                                   for m, v in by_method.items()},
                       "tests": pairwise_tests({m: np.asarray(v, dtype=np.float64) for m, v in by_method.items()})}
    return out


def long_rows(scores: dict[str, dict[str, np.ndarray]], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per image x method x metric: the image's own fields (``rows[i]``: index, source,
    label, target, ...) then ``method``, ``metric``, ``value``."""
    out = []
    for metric, by_method in scores.items():
        for method, values in by_method.items():
            for i, v in enumerate(np.asarray(values, dtype=np.float64).ravel()):
                out.append({**rows[i], "method": method, "metric": metric, "value": float(v)})
    return out


def csv_bytes(records: Sequence[dict[str, Any]]) -> bytes:
    """CSV (header from the first record's keys; floats with full precision)."""
    if not records:
        return b""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue().encode()


def _fmt(v: float) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "nan"
    return f"{v:.4g}"


def summary_rows(report: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Flat, printable rows: metric, method, mean ± sd, 95% interval, n, and, per metric, the
    best method's Holm-adjusted Wilcoxon p-value against each other method (``vs best``)."""
    out = []
    for metric, part in report.items():
        summ = part["summary"]
        sign = 1 if part["better"] == "higher" else -1
        finite = {m: s["mean"] for m, s in summ.items() if math.isfinite(s["mean"])}
        best = max(finite, key=lambda m: sign * finite[m]) if finite else None
        p_vs_best = {}
        for t in part["tests"]:
            if best in (t["a"], t["b"]):
                other = t["b"] if t["a"] == best else t["a"]
                p_vs_best[other] = t.get("p_wilcoxon_holm", t["p_wilcoxon"])
        for m, s in summ.items():
            out.append({"metric": f"{metric} ({part['better']} better)", "method": m + (" *" if m == best else ""),
                        "mean ± sd": f"{_fmt(s['mean'])} ± {_fmt(s['std'])}",
                        "95% CI": f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]", "n": str(s["n"]),
                        "p vs best": "" if m == best or m not in p_vs_best else _fmt(p_vs_best[m])})
    return out


def pointing_rows(res) -> list[dict[str, Any]]:
    """Long rows of a pointing game (:class:`~interpcli.metrics.pointing.PointingResult`): one per mosaic cell."""
    g = res.grid
    return [{"mosaic": i, "cell": k, "row": k % g, "col": k // g, "index": int(res.blocks[i, k]),
             "class": int(res.classes[i, k]), "method": m, "metric": "pointing", "value": float(s[i, k])}
            for m, s in res.scores.items() for i in range(len(res.blocks)) for k in range(g * g)]


def sanity_rows(res) -> list[dict[str, Any]]:
    """Long rows of a sanity check (:class:`~interpcli.metrics.sanity.SanityResult`): one per step, image, metric."""
    rows = []
    names = ["original", *res.layers]
    for m in res.spearman_abs:
        for key in ("spearman_abs", "spearman_signed", "ssim"):
            a = np.asarray(getattr(res, key)[m])
            rows += [{"step": j, "layer": names[j], "image": i, "method": m, "metric": key, "value": float(a[j, i])}
                     for j in range(a.shape[0]) for i in range(a.shape[1])]
    return rows
