"""Helpers shared by the methods: batching and batch sizes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..errors import ConfigError

DEFAULT_BATCH = 64


def _output_bytes(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Bytes of the input and of every leaf-module output for one image: one probe forward of
    ``x[:1]`` with hooks."""
    sizes = [x[:1].numel() * x.element_size()]

    def hook(_m, _i, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                sizes.append(t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    try:
        with torch.inference_mode():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return sizes


def activation_bytes_per_image(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of all leaf-module outputs for one image (one probe forward of ``x[:1]``)."""
    return sum(_output_bytes(model, x))


def largest_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the largest leaf-module output for one image (one probe forward of ``x[:1]``)."""
    return max(_output_bytes(model, x))


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


CPU_CACHE_BUDGET = 4 << 20  # bytes of one layer's output per forward on the CPU (bench/explain.py)


def cpu_forward_batch(model: nn.Module, x: torch.Tensor, lo: int = 16, hi: int = 256) -> int:
    """Images per forward-only pass on the CPU: the largest power of two in [lo, hi] whose
    largest layer output fits in :data:`CPU_CACHE_BUDGET`.  Forward passes are memory-bound on
    the CPU: at 32x32, resnet56 runs 1.5x faster per image in batches of 32-64 than of 256
    (docs/benchmarks.md), since each layer's output then stays in the cache."""
    return max(lo, min(hi, fit_batch(CPU_CACHE_BUDGET, largest_activation_bytes(model, x), hi)))


def fit_batch(budget_bytes: float, per_image_bytes: float, cap: int = 4096) -> int:
    """The largest power of two n <= cap with n * per_image_bytes <= budget_bytes (at least 1)."""
    n = int(budget_bytes // max(per_image_bytes, 1))
    return max(1, min(cap, 1 << (n.bit_length() - 1) if n > 0 else 1))


def batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
            batch_size: int | None) -> torch.Tensor:
    """Run ``fn`` on chunks of (x, target) and concatenate the results."""
    bs = batch_size or DEFAULT_BATCH
    return torch.cat([fn(x[i : i + bs], target[i : i + bs]) for i in range(0, len(x), bs)])
