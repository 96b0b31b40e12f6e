"""What every checkpoint-level operation does first: pick the device, seed, load the model."""

from __future__ import annotations

import os
from typing import Any

from ..artifacts import load_model, sha256_file
from ..device import configure_backends, resolve_device, seed_everything
from ..models import Classifier

__all__ = ["open_checkpoint", "checkpoint_record"]


def open_checkpoint(checkpoint: str | os.PathLike, device: str = "auto", seed: int | None = None,
                    tf32: bool = False) -> Classifier:
    """The checkpoint's model in eval mode on ``device`` (``auto``: cuda > mps > cpu), with the
    device's backends configured (TF32 on CUDA only if ``tf32``: explanations run in full float32)
    and every generator seeded with ``seed`` (if given)."""
    dev = resolve_device(device)
    configure_backends(dev, tf32=tf32)
    if seed is not None:
        seed_everything(seed)
    return load_model(checkpoint, dev)


def checkpoint_record(checkpoint: str | os.PathLike, model: Classifier) -> dict[str, Any]:
    """What an artifact records of its parent checkpoint: path, sha256 and arch."""
    return {"path": str(checkpoint), "sha256": sha256_file(checkpoint), "arch": model.arch}
