"""``interp plot-log``: training curves (loss, training and test accuracy per epoch) of one or
more runs from their ``RUN.log.jsonl`` files.

    from interpcli.ops.plot_log import plot_logs
    summary, files = plot_logs(["runs/a.log.jsonl", "runs/b.safetensors"], "curves.png")

One run is drawn as ``interp kernels --loss-log`` draws it (with the stuck-run check); several
are overlaid, one colour per run (:mod:`interpcli.reporting.curves`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import artifacts
from ..errors import ConfigError
from ..reporting.curves import curves_png, load_logs, log_summary

__all__ = ["plot_logs"]


def plot_logs(logs: Sequence[str | os.PathLike], out: str | os.PathLike | None, *, title: str = "",
              force: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """Draw the training curves of ``logs`` (``RUN.log.jsonl`` files, or checkpoints standing for
    the log beside them) into the PNG ``out`` (nothing when None; an existing file only with
    ``force``); returns per run its epochs, last and best values and stuck verdict."""
    if out is not None:
        if Path(out).suffix.lower() != ".png":
            raise ConfigError(f"--out '{out}' must name a .png file")
        artifacts.check_output_path(out, force)
    runs = load_logs(list(logs))
    summary = {"runs": [log_summary(r) for r in runs]}
    if out is None:
        return summary, []
    artifacts.write_bytes(out, curves_png(runs, title))
    return summary, [Path(out)]
