"""Losses, learning-rate schedules and optimisers of the training loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TrainConfig

__all__ = ["make_loss", "lr_factor", "make_optimizer"]

def make_loss(kind: str, num_classes: int, smoothing: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "ce":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)

    def onehot(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        t = F.one_hot(y, num_classes).to(dtype)
        return t * (1 - smoothing) + smoothing / num_classes

    if kind == "bce":
        # One-vs-all BCE on one-hot targets, averaged over batch and classes (the B-cos papers' loss).
        return lambda out, y: F.binary_cross_entropy_with_logits(out, onehot(y, out.dtype))
    return lambda out, y: F.l1_loss(out, onehot(y, out.dtype))


def lr_factor(schedule: str, t: float) -> float:
    """Multiplier of the peak learning rate at training progress ``t`` in [0, 1)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "onecycle":
        return 0.04 + 0.96 * t / 0.25 if t < 0.25 else (1 - t) / 0.75
    if schedule == "step":
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01
    return 1.0


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    betas = (cfg.momentum, 0.999) if cfg.momentum else (0.9, 0.999)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=betas)
