"""``interp eval``: accuracy, per-class accuracy and confusion matrix of a checkpoint."""

from __future__ import annotations

import os
from typing import Any

from ..data import checkpoint_dataset
from ..errors import ConfigError
from ..evaluate import evaluate
from ._common import open_checkpoint

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str | None = None, data_dir: str | None = None,
                        split: str = "test", device: str = "auto", batch_size: int = 1000,
                        limit_test: int | None = None) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on a dataset split
    (default: the dataset it was trained on, with its recorded ``--limit-train`` / ``--limit-test``
    subsets).  ``split``: ``train``, ``test`` or ``val`` (the validation split of a run trained
    with ``--val-split`` / ``--folds``, rebuilt from its metadata).  ``limit_test``: None the
    recorded test subset, 0 the whole test split, N a stratified subset of N."""
    if limit_test is not None and limit_test < 0:
        raise ConfigError(f"--limit-test must be >= 0 (0: the whole test split), got {limit_test}")
    model = open_checkpoint(checkpoint, device, tf32=True)
    ds, name = checkpoint_dataset(model.meta, dataset, data_dir, limit_test)
    if tuple(ds.input_shape) != tuple(model.input_shape):
        raise ConfigError(f"dataset '{name}' has images {tuple(ds.input_shape)} but the model expects "
                          f"{tuple(model.input_shape)}")
    if ds.num_classes != model.num_classes:
        raise ConfigError(f"dataset '{name}' has {ds.num_classes} classes but the model {model.num_classes}")
    x, y = ds.split(split)
    res = evaluate(model, x, y, model.num_classes, batch_size)
    return {"checkpoint": str(checkpoint), "dataset": name, "split": split, "classes": model.classes, **res}
