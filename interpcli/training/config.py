"""What defines a training run: :class:`TrainConfig` (resolved against the arch's recipe and the
dataset's augmentation), the result, and the progress-reporter protocol."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Protocol

from ..data import get_dataset_info
from ..data.loader import TRANSLATE_PADS
from ..errors import ConfigError
from ..models import get_model_info

__all__ = ["TrainConfig", "TrainResult", "Reporter", "Silent", "OPTIMIZERS", "SCHEDULES", "LOSSES", "TRANSLATE_PADS"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "step", "constant")
LOSSES = ("ce", "bce", "l1")



@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run.  ``None`` means: the arch's recipe, else the default.

    Attributes:
        arch, dataset: registry names (``interp models``, ``interp datasets``); ``dataset``
            may also be a path to an ``.npz`` file or an image folder.
        data_dir: where the dataset's files are (default ``$INTERP_DATA_DIR`` or ``./data``).
        dataset_options: loader options (``n_train`` for ``pulses``, ``image_size`` for ``folder``).
        classes: train on these classes only (names or indices), relabelled in this order.
        limit_train, limit_test: short runs on real data: a stratified subset of this many
            training / test images (drawn with ``seed``; None: all), recorded in the checkpoint
            so ``interp eval`` and ``explain`` use the same test subset.
        arch_kwargs: options of the architecture (``interp models --json`` lists them).
        epochs, batch_size: batch size is global (summed over ranks under torchrun).
        lr: peak learning rate for a batch of ``batch_size``.
        optimizer: sgd (Nesterov when momentum > 0), adam or adamw.
        schedule: per-step learning-rate shape: cosine, onecycle (linear warm-up over the
            first quarter then linear decay to 0), step (x0.1 at 50% and 75%), constant.
        weight_decay: applied to weights with 2+ dimensions only (not to biases or norms).
        loss: ce (cross-entropy), bce (one-vs-all binary cross-entropy) or l1 (L1 to one-hot).
        val_split / folds, fold: held-out validation inside the training split (stratified).
        snapshot_every: store the first layer's kernels every N optimiser steps (0: never).
        flip, translate: training augmentation; ``None`` uses the dataset's default.
        translate_pad: how translations pad the image: ``zero`` (random crop with zero
            padding, as torchvision's ``RandomCrop(padding=...)``) or ``reflect``.
        amp: bf16 autocast on CUDA.  channels_last: memory format of weights and batches
            (``None``: the device's preference for the arch family,
            :func:`~interpcli.device.prefers_channels_last`).
    """

    arch: str
    dataset: str
    data_dir: str | None = None
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    classes: list[str] | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    loss: str | None = None
    seed: int = 0
    val_split: float = 0.0
    folds: int = 0
    fold: int = 0
    snapshot_every: int = 0
    flip: bool | None = None
    translate: int | None = None
    translate_pad: str = "zero"
    eval_batch_size: int = 1000
    amp: bool = True
    channels_last: bool | None = None
    compile: bool = False

    _DEFAULTS = dict(epochs=10, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9, schedule="cosine",
                     weight_decay=5e-4, label_smoothing=0.0, loss="ce")

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled from the arch's recipe, then the defaults; validated."""
        info = get_model_info(self.arch)
        ds_aug = get_dataset_info(self.dataset).augment
        recipe = info.recipe
        out = dataclasses.replace(self)
        for k, v in self._DEFAULTS.items():
            if getattr(out, k) is None:
                setattr(out, k, recipe.get(k, v))
        if out.flip is None:
            out.flip = bool(recipe.get("flip", ds_aug["flip"]) if recipe.get("augment", True) else False)
        if out.translate is None:
            out.translate = int(recipe.get("translate", ds_aug["translate"]) if recipe.get("augment", True) else 0)
        out.validate()
        return out

    def validate(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule '{self.schedule}'; valid: {', '.join(SCHEDULES)}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ConfigError(f"unknown loss '{self.loss}'; valid: {', '.join(LOSSES)}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError("--weight-decay must be >= 0")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConfigError("--label-smoothing must be in [0, 1)")
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError("--momentum must be in [0, 1)")
        for opt, n in (("--limit-train", self.limit_train), ("--limit-test", self.limit_test)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ConfigError(f"{opt} must be a positive number of images, got {n!r}")
        if self.snapshot_every < 0:
            raise ConfigError("--snapshot-every must be >= 0")
        if self.translate is not None and self.translate < 0:
            raise ConfigError("--translate must be >= 0")
        if self.translate_pad not in TRANSLATE_PADS:
            raise ConfigError(f"unknown --translate-pad '{self.translate_pad}'; valid: {', '.join(TRANSLATE_PADS)}")
        if self.eval_batch_size <= 0:
            raise ConfigError("eval batch size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    checkpoint: Path | None
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    files: list[Path]


class Reporter(Protocol):
    """What the loop tells a progress display (the CLI's is rich; the library's is silent)."""

    def start(self, cfg: TrainConfig, steps_per_epoch: int, start_epoch: int) -> None: ...
    def step(self, epoch: int, i: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


class Silent:
    """The library's reporter: says nothing."""

    def start(self, *a: Any) -> None: ...
    def step(self, *a: Any) -> None: ...
    def epoch(self, *a: Any) -> None: ...
    def finish(self) -> None: ...
