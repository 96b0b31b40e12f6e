"""Training curves from ``RUN.log.jsonl`` files (``interp plot-log``, ``interp report``).

    logs = load_logs(["runs/a.log.jsonl", "runs/b.safetensors"])   # a checkpoint stands for its log
    png = curves_png(logs)

One run is drawn as ``interp kernels --loss-log`` draws it (:func:`~interpcli.kernels.loss_profile_png`:
loss, training and test accuracy in three panels, chance level, a stuck run shaded in red);
several runs are overlaid in the same three panels, one colour per run
(:func:`~interpcli.reporting.figures.training_curves_png`).  The stuck-run verdict is
:func:`~interpcli.kernels.stuck_run`, with the class count of the checkpoint beside the log.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InterpError
from ..kernels import loss_profile_png, read_loss_log, stuck_run
from ..metadata import read_metadata
from .figures import training_curves_png

__all__ = ["RunLog", "LOG_SUFFIX", "log_of", "checkpoint_of", "load_logs", "curves_png", "log_summary"]

LOG_SUFFIX = ".log.jsonl"


@dataclasses.dataclass
class RunLog:
    """One run's log: ``label`` (the file name without ``.log.jsonl``), ``path``, the per-epoch
    ``history``, the stuck-run ``verdict`` and the ``checkpoint`` beside it (None if absent)."""

    label: str
    path: Path
    history: list[dict[str, Any]]
    verdict: dict[str, Any]
    checkpoint: Path | None = None


def log_of(path: str | os.PathLike) -> Path:
    """The log of ``path``: itself, or for ``RUN.safetensors`` the ``RUN.log.jsonl`` beside it."""
    p = Path(path)
    if p.name.endswith(".safetensors"):
        log = p.with_name(p.name[: -len(".safetensors")] + LOG_SUFFIX)
        if not log.is_file():
            raise ConfigError(f"'{p}' has no training log beside it ({log.name})")
        return log
    return p


def checkpoint_of(log: Path) -> Path | None:
    """``RUN.safetensors`` beside ``RUN.log.jsonl``, when it exists."""
    if not log.name.endswith(LOG_SUFFIX):
        return None
    ckpt = log.with_name(log.name[: -len(LOG_SUFFIX)] + ".safetensors")
    return ckpt if ckpt.is_file() else None


def _num_classes(ckpt: Path | None) -> int | None:
    try:
        return int(read_metadata(ckpt)["num_classes"]) if ckpt is not None else None
    except (InterpError, KeyError, TypeError, ValueError):
        return None


def _label(log: Path, taken: set[str]) -> str:
    name = log.name[: -len(LOG_SUFFIX)] if log.name.endswith(LOG_SUFFIX) else log.stem
    label = name if name not in taken else f"{log.parent.name}/{name}"
    while label in taken:
        label += "'"
    taken.add(label)
    return label


def load_logs(paths: Sequence[str | os.PathLike], what: str = "log") -> list[RunLog]:
    """Read each log (a checkpoint stands for the log beside it), with its verdict."""
    if not paths:
        raise ConfigError("give at least one RUN.log.jsonl (or the checkpoint beside it)")
    taken: set[str] = set()
    out = []
    for p in paths:
        log = log_of(p)
        history = read_loss_log(log, what)
        ckpt = checkpoint_of(log)
        out.append(RunLog(_label(log, taken), log, history, stuck_run(history, _num_classes(ckpt)), ckpt))
    return out


def curves_png(logs: Sequence[RunLog], title: str = "") -> bytes:
    """The figure of one run (the loss profile) or of several runs overlaid (see the module doc)."""
    if len(logs) == 1:
        return loss_profile_png(logs[0].history, logs[0].verdict, title or str(logs[0].path))
    return training_curves_png({r.label: r.history for r in logs}, {r.label: r.verdict for r in logs}, title)


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    v = next((r[key] for r in reversed(history) if isinstance(r.get(key), (int, float))), None)
    return float(v) if v is not None and math.isfinite(v) else None


def log_summary(r: RunLog) -> dict[str, Any]:
    """What a table shows of a run's log: epochs, the last loss and accuracies, the best test
    accuracy, and the stuck verdict."""
    accs = [float(x["test_acc"]) for x in r.history if isinstance(x.get("test_acc"), (int, float))]
    return {"label": r.label, "log": str(r.path), "checkpoint": str(r.checkpoint) if r.checkpoint else None,
            "epochs": len(r.history), "loss": _last(r.history, "loss"), "train_acc": _last(r.history, "train_acc"),
            "val_acc": _last(r.history, "val_acc"), "test_acc": _last(r.history, "test_acc"),
            "best_test_acc": max(accs) if accs else None, "stuck": r.verdict.get("stuck"),
            "reason": r.verdict.get("reason", "")}
