"""Helpers shared by the methods: batching and batch sizes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..batching import activation_bytes_per_image, fit_batch
from ..errors import ConfigError

DEFAULT_BATCH = 64


def auto_batch_size(model: nn.Module, x: torch.Tensor, batch_size: int | None = None, *,
                    per_item_factor: float = 3.0, memory_fraction: float = 0.5, default: int = DEFAULT_BATCH,
                    cap: int = 4096) -> int:
    """Images per forward pass: ``batch_size`` if given; on CUDA the largest power of two whose
    activations (measured by one probe forward, times ``per_item_factor``: ~3 with a backward
    pass, ~1 forward-only) fit in ``memory_fraction`` of the free memory; elsewhere ``default``."""
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ConfigError("batch size must be at least 1")
        return int(batch_size)
    if x.device.type != "cuda":
        return default
    free, _total = torch.cuda.mem_get_info(x.device)
    per_image = activation_bytes_per_image(model, x) * max(per_item_factor, 1.0)
    return fit_batch(free * memory_fraction, per_image, cap)


def batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
            batch_size: int | None) -> torch.Tensor:
    """Run ``fn`` on chunks of (x, target) and concatenate the results."""
    bs = batch_size or DEFAULT_BATCH
    return torch.cat([fn(x[i : i + bs], target[i : i + bs]) for i in range(0, len(x), bs)])
