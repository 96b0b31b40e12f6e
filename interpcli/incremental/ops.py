"""Which traced operations can run on changed regions, and small helpers on their parameters."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["POINTWISE_MODULES", "POINTWISE_FUNCS", "POINTWISE_METHODS", "CAT", "pair", "spatially_constant",
           "is_inplace", "conv_macs"]

POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d,
    nn.PReLU,
)
POINTWISE_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pos, operator.iadd,
    operator.imul, operator.isub, operator.itruediv,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    torch.abs, torch.exp, torch.square, torch.sqrt,
    F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardswish, F.hardtanh, F.mish, F.softplus, F.sigmoid,
    F.tanh,
}
POINTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "abs", "exp",
    "square", "sqrt", "contiguous", "float", "add_", "mul_", "relu_", "clamp_", "clamp_min_",
}
CAT = {torch.cat, torch.concat}


def pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def spatially_constant(v: Any) -> bool:
    """A static operand that broadcasts the same way at every pixel."""
    if not torch.is_tensor(v):
        return isinstance(v, (int, float, bool)) or v is None
    return v.dim() == 0 or (v.shape[-1] == 1 and (v.dim() < 2 or v.shape[-2] == 1))


def is_inplace(node: fx.Node, mod: nn.Module | None) -> bool:
    if mod is not None:
        return bool(getattr(mod, "inplace", False))
    if node.op == "call_method" and str(node.target).endswith("_"):
        return True
    return node.target in (operator.iadd, operator.imul, operator.isub, operator.itruediv) or \
        bool(node.kwargs.get("inplace", False))


def conv_macs(m: nn.Conv2d, out: torch.Tensor) -> float:
    k = m.kernel_size[0] * m.kernel_size[1]
    return float(out.numel()) * (m.in_channels // m.groups) * k

