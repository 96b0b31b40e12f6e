"""Helpers shared by the methods: batching, layer hooks, baselines."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

DEFAULT_BATCH = 64


def batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
            batch_size: int | None) -> torch.Tensor:
    """Run ``fn`` on chunks of (x, target) and concatenate the results."""
    bs = batch_size or DEFAULT_BATCH
    return torch.cat([fn(x[i : i + bs], target[i : i + bs]) for i in range(0, len(x), bs)])


def layer_of(model: nn.Module, layer: str | None) -> nn.Module:
    """The named layer of ``model.net`` (default: the arch's CAM layer)."""
    name = layer or getattr(model, "target_layer", None)
    if not name:
        raise ConfigError("this method needs --layer (the model names no default layer)")
    return model.layer(name) if hasattr(model, "layer") else model.get_submodule(name)


@contextlib.contextmanager
def capture_output(module: nn.Module) -> Iterator[dict]:
    """Keep the (graph-attached) output of ``module`` in ``store['out']``; the hook is removed on exit."""
    store: dict = {}

    def hook(_m, _i, out):
        store["out"] = out

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def make_baseline(kind: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``black`` (zeros), ``blurred`` (Gaussian blur, sigma = 1/10 of the image size), ``uniform`` noise."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "uniform":
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(x.shape, generator=g).to(x)
    if kind == "blurred":
        sigma = max(x.shape[-1], x.shape[-2]) / 10
        k = int(2 * round(3 * sigma) + 1)
        t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        g1 = torch.exp(-0.5 * (t / sigma) ** 2)
        g1 = g1 / g1.sum()
        c = x.shape[1]
        xp = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="replicate")
        xp = F.conv2d(xp, g1.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
        return F.conv2d(xp, g1.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    raise ConfigError(f"unknown baseline '{kind}'; use black, blurred or uniform")
