"""Predictions and accuracy of a model on uint8 image tensors (batched, on the model's device)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import autocast, model_device

__all__ = ["predict", "evaluate"]


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, device: torch.device | None = None,
            amp: bool = True, channels_last: bool = False) -> torch.Tensor:
    """Logits for uint8 images ``x`` (N, C, H, W), batched, on ``device`` (default: the model's)."""
    device = device or model_device(model)
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).float().div_(255)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            outs.append(model(xb).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
             batch_size: int = 1000, loss_fn: Callable | None = None, amp: bool = True,
             channels_last: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy, confusion matrix (rows: true class) and loss on (x, y)."""
    logits = predict(model, x, batch_size, amp=amp, channels_last=channels_last)
    y = y.to(logits.device)
    k = num_classes or logits.shape[1]
    pred = logits.argmax(1)
    conf = torch.bincount(y * k + pred, minlength=k * k).reshape(k, k).cpu()
    support = conf.sum(1)
    per_class = (conf.diag().double() / support.clamp_min(1)).tolist()
    loss = loss_fn(logits, y) if loss_fn is not None else F.cross_entropy(logits, y)
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).double().mean()) if len(y) else float("nan"),
        "loss": float(loss),
        "per_class_accuracy": per_class,
        "confusion": conf.tolist(),
    }
