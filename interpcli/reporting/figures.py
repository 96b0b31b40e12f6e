"""Figures of runs (matplotlib, Agg, PNG bytes): the violin plot of ``interp compare`` and the
training curves of several runs overlaid (``interp plot-log``, ``interp report``).

Drawn for people comparing runs: every run is a point (with a handful of seeds a violin alone
would hide how few there are), the mean +- 1 sd as a bar beside them, n under each group, one
colour per group or run throughout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..viz import fig_png, pyplot

__all__ = ["violin_png", "training_curves_png", "CURVE_PANELS"]

_DPI = 110
# (log key, axis label, other keys drawn dashed in the same panel)
CURVE_PANELS = (("loss", "loss", ("test_loss", "val_loss")), ("train_acc", "training accuracy", ()),
                ("test_acc", "test accuracy", ("val_acc",)))


def _colours(plt, n: int) -> list[str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def violin_png(values: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> bytes:
    """One panel per metric (``values[metric][group]``: one value per run): per group a violin
    (when it has 2+ distinct values), every run as a jittered point, and the mean with a +-1 sd
    bar to its right; the tick labels give n."""
    plt = pyplot()
    metrics = list(values)
    n_groups = max(len(v) for v in values.values())
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6, 1.3 * n_groups + 1.6) * len(metrics) ** 0.8, 4.4),
                             squeeze=False, layout="constrained")
    rng = np.random.default_rng(0)  # the same jitter on every run of the command
    for ax, metric in zip(axes[0], metrics):
        groups = list(values[metric])
        col = _colours(plt, len(groups))
        data = [np.asarray(values[metric][g], dtype=np.float64) for g in groups]
        data = [d[np.isfinite(d)] for d in data]
        pos = np.arange(1, len(groups) + 1)
        shown = [(p, d) for p, d in zip(pos, data) if len(d) > 1 and np.ptp(d) > 0]
        if shown:
            parts = ax.violinplot([d for _, d in shown], positions=[p for p, _ in shown], showextrema=False,
                                  widths=0.7)
            for body, (p, _) in zip(parts["bodies"], shown):
                body.set_facecolor(col[p - 1])
                body.set_alpha(0.3)
        for p, d, c in zip(pos, data, col):
            if not len(d):
                continue
            ax.scatter(p + rng.uniform(-0.08, 0.08, len(d)), d, color=c, s=22, edgecolor="k", lw=0.4, zorder=3)
            sd = d.std(ddof=1) if len(d) > 1 else 0.0
            ax.errorbar(p + 0.22, d.mean(), yerr=sd, fmt="o", color="k", ms=4, capsize=3, lw=1, zorder=4)
        ax.set_xticks(pos, [f"{g}\nn={len(d)}" for g, d in zip(groups, data)], rotation=20 if len(groups) > 4 else 0,
                      ha="right" if len(groups) > 4 else "center", fontsize=8)
        ax.set_xlim(0.4, len(groups) + 0.6)
        ax.set_title(f"{metric} (points: runs; bar: mean ± sd)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig_png(plt, fig, _DPI, 0.1)


def training_curves_png(runs: Mapping[str, Sequence[Mapping[str, Any]]], verdicts: Mapping[str, Any] | None = None,
                        title: str = "") -> bytes:
    """Loss, training accuracy and test accuracy against epoch for several runs (``runs[label]``:
    the per-epoch records of ``RUN.log.jsonl``), three stacked panels sharing the epoch axis, one
    colour per run (validation and test loss dashed in its colour); a run whose verdict
    (:func:`~interpcli.kernels.stuck_run`) is stuck is marked ``STUCK`` in the legend."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 7.8), dpi=100, sharex=True)
    col = _colours(plt, len(runs))
    for (label, history), c in zip(runs.items(), col):
        ep = [r.get("epoch", i + 1) for i, r in enumerate(history)]
        stuck = bool((verdicts or {}).get(label, {}).get("stuck"))
        for ax, (key, _, extra) in zip(axes, CURVE_PANELS):
            if any(key in r for r in history):
                ax.plot(ep, [r.get(key, np.nan) for r in history], color=c, marker="o", ms=2.5, lw=1.5,
                        label=f"{label}{'  STUCK' if stuck else ''}")
            for other in extra:
                if any(other in r for r in history):
                    ax.plot(ep, [r.get(other, np.nan) for r in history], color=c, ls="--", lw=1,
                            label=f"{label} {other}")
    for ax, (_, name, _) in zip(axes, CURVE_PANELS):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig_png(plt, fig, pad=0.1)
