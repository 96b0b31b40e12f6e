"""``interp info``: a checkpoint's metadata, read from the safetensors header only."""

from __future__ import annotations

import os
from typing import Any

from ..metadata import read_metadata  # the header only: no torch, so `interp info` starts fast

__all__ = ["checkpoint_info"]


def checkpoint_info(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Arch, classes, input shape and encoding, dataset, training config, metrics, provenance
    (docs/artifacts.md).  Only the header is read, so this is instant for any checkpoint size;
    a truncated or corrupt file is an :class:`~interpcli.errors.ArtifactError`."""
    return read_metadata(checkpoint)
