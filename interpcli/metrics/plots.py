"""Figures of explanation scores (matplotlib, Agg, PNG bytes): deletion / insertion curves,
per-image score distributions, the pointing game against its baselines, and the sanity check.

Every figure is drawn for people reading a report: one colour per method throughout, means
with a shaded +-1 standard deviation band, the number of images in the legend, and the
reference lines (uniform and oracle of the pointing game, rank correlation 0 and 1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..viz import fig_png, pyplot

__all__ = ["curves_png", "distributions_png", "pointing_png", "sanity_png"]

_DPI = 110


def _colours(plt, names: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(names)}


def curves_png(panels: dict[str, dict[str, np.ndarray]], aucs: dict[str, dict[str, float]], *,
               ylabel: str = "probability of the target class") -> bytes:
    """One panel per curve family (``deletion``, ``insertion``): per method the mean curve over
    images on a [0, 1] axis (fraction of pixels removed / inserted) with a +-1 sd band; the
    legend gives the mean AUC.  ``panels[name][method]``: (N, K)."""
    plt = pyplot()
    names = list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    methods = list(next(iter(panels.values())))
    col = _colours(plt, methods)
    for ax, name in zip(axes[0], names):
        for m, c in panels[name].items():
            c = np.asarray(c, dtype=np.float64)
            t = np.linspace(0, 1, c.shape[1])
            mu, sd = np.nanmean(c, 0), np.nanstd(c, 0)
            ax.plot(t, mu, color=col[m], lw=2, label=f"{m}  AUC {aucs[name][m]:.3f}")
            ax.fill_between(t, mu - sd, mu + sd, color=col[m], alpha=0.15, lw=0)
        n = len(next(iter(panels[name].values())))
        what = "removed" if name == "deletion" else "inserted"
        ax.set(title=f"{name} ({n} images; {'lower' if name == 'deletion' else 'higher'} is better)",
               xlabel=f"fraction of pixels {what}", ylabel=ylabel, xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig_png(plt, fig, _DPI, 0.1)


def distributions_png(scores: dict[str, dict[str, np.ndarray]], better: dict[str, str]) -> bytes:
    """One panel per metric: a violin (the distribution) with a box (quartiles) and the mean (dot)
    per method; the title says whether lower or higher is better.  ``scores[metric][method]``: (N,)."""
    plt = pyplot()
    metrics = list(scores)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 1.2 * len(next(iter(scores.values())))) *
                                                       len(metrics) ** 0.5 + 2, 4.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        methods = list(scores[metric])
        col = _colours(plt, methods)
        data = [np.asarray(scores[metric][m], dtype=np.float64) for m in methods]
        data = [d[np.isfinite(d)] for d in data]
        pos = np.arange(1, len(methods) + 1)
        shown = [(p, d) for p, d in zip(pos, data) if len(d) > 1 and np.ptp(d) > 0]
        if shown:
            parts = ax.violinplot([d for _, d in shown], positions=[p for p, _ in shown], showextrema=False)
            for body, (p, _) in zip(parts["bodies"], shown):
                body.set_facecolor(col[methods[p - 1]])
                body.set_alpha(0.35)
        ax.boxplot([d if len(d) else [np.nan] for d in data], positions=pos, widths=0.18, showfliers=False)
        ax.scatter(pos, [d.mean() if len(d) else np.nan for d in data], color="k", s=18, zorder=3, label="mean")
        ax.set_xticks(pos, methods, rotation=30, ha="right")
        ax.set_title(f"{metric} ({better.get(metric, '')} is better)")
        if metric == "consistency":
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    return fig_png(plt, fig, _DPI, 0.1)


def pointing_png(scores: dict[str, np.ndarray], grid: int) -> bytes:
    """Box plots of the pointing-game scores per method (all cells of all mosaics) with the
    uniform baseline 1/grid² and the oracle 1."""
    plt = pyplot()
    methods = list(scores)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(methods) + 2), 4.4))
    data = [np.asarray(scores[m], dtype=np.float64).ravel() for m in methods]
    pos = np.arange(1, len(methods) + 1)
    ax.boxplot(data, positions=pos, widths=0.5, whis=(0, 100))
    ax.scatter(pos, [d.mean() for d in data], color="k", s=18, zorder=3, label="mean")
    ax.axhline(1 / grid**2, color="tab:red", ls="--", lw=1, label=f"uniform 1/{grid * grid} = {1 / grid ** 2:.3f}")
    ax.axhline(1.0, color="tab:green", ls="--", lw=1, label="oracle 1")
    ax.set_xticks(pos, methods, rotation=30, ha="right")
    ax.set(ylim=(-0.02, 1.05), ylabel="positive attribution in the right cell",
           title=f"grid pointing game {grid}x{grid} ({len(data[0])} cells)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    return fig_png(plt, fig, _DPI, 0.1)


def sanity_png(layers: Sequence[str], corr: dict[str, np.ndarray], what: str = "Spearman rank correlation") -> bytes:
    """Cascading randomisation: per method, the mean (+-1 sd) rank correlation between the
    original map and the map after randomising the layers from the top down to each layer."""
    plt = pyplot()
    labels = ["original", *layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) + 3), 4.4))
    col = _colours(plt, list(corr))
    x = np.arange(len(labels))
    for m, c in corr.items():
        c = np.asarray(c, dtype=np.float64)
        mu, sd = np.nanmean(c, 1), np.nanstd(c, 1)
        ax.plot(x, mu, marker="o", color=col[m], label=m)
        ax.fill_between(x, mu - sd, mu + sd, color=col[m], alpha=0.15, lw=0)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set(ylim=(-1.05, 1.05), ylabel=what, xlabel="randomised down to (cumulative, from the logits)",
           title="sanity check: cascading model randomisation (a faithful map decorrelates)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig_png(plt, fig, _DPI, 0.1)
