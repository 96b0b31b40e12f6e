"""Batch sizes from what a model's layers produce: one probe forward of one image with hooks
on the leaf modules gives each layer's output size; :func:`cpu_forward_batch` keeps the largest
layer output of a CPU forward pass in the cache, :func:`fit_batch` fits a memory budget (used by
:func:`interpcli.methods._common.auto_batch_size` on CUDA)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["activation_bytes_per_image", "largest_activation_bytes", "fit_batch", "cpu_forward_batch",
           "CPU_CACHE_BUDGET"]


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


def fit_batch(budget_bytes: float, per_image_bytes: float, cap: int = 4096) -> int:
    """The largest power of two n <= cap with n * per_image_bytes <= budget_bytes (at least 1)."""
    n = int(budget_bytes // max(per_image_bytes, 1))
    return max(1, min(cap, 1 << (n.bit_length() - 1) if n > 0 else 1))


CPU_CACHE_BUDGET = 4 << 20  # bytes of one layer's output per forward on the CPU (bench/explain.py)


def cpu_forward_batch(model: nn.Module, x: torch.Tensor, lo: int = 16, hi: int = 256) -> int:
    """Images per forward-only pass on the CPU: the largest power of two in [lo, hi] whose
    largest layer output fits in :data:`CPU_CACHE_BUDGET`.  Forward passes are memory-bound on
    the CPU: at 32x32, resnet56 runs 1.5x faster per image in batches of 32-64 than of 256
    (docs/benchmarks.md), since each layer's output then stays in the cache."""
    return max(lo, min(hi, fit_batch(CPU_CACHE_BUDGET, largest_activation_bytes(model, x), hi)))
