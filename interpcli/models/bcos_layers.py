"""B-cos layers (Böhle, Fritz, Schiele, CVPR 2022, https://arxiv.org/abs/2205.10268; TPAMI 2024,
https://arxiv.org/abs/2306.10898; ../shared/METHODS.md section 1): the B-cos convolution and
linear layer (unit-norm weights, MaxOut, ``|cos|^(B-1)`` scaling), the uncentred norms, the
logit layer, and :func:`explanation_mode`, which detaches every dynamic factor so that the
network is exactly ``y = W(x) x``.  The networks built from them are in :mod:`.bcos`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["Detachable", "BParam", "bcos_scale", "maxout_scale", "chunk_major", "patch_norm", "FUSED", "composed_ops",
           "BcosConv2d", "BcosLinear", "BatchNormUncentered2d", "PositionNormUncentered2d", "NORMS", "make_norm",
           "LogitLayer", "explanation_mode"]


class Detachable(nn.Module):
    """A module whose dynamic (input-dependent) factors are detached in explanation mode."""

    explain: bool = False


class BParam(nn.Module):
    """The exponent B, fixed or learnable with B = 1 + softplus(ρ) >= 1 (a constraint no step can break)."""

    def __init__(self, b: float, learnable: bool):
        super().__init__()
        if b < 1:
            raise ValueError(f"B must be >= 1, got {b}")
        self.learnable = learnable
        if learnable:
            # softplus^{-1}(b - 1), with a floor so that B = 1 stays representable (and trainable).
            self.rho = nn.Parameter(torch.tensor(math.log(math.expm1(max(b - 1, 1e-4)))))
        else:
            self.fixed = float(b)

    def value(self) -> torch.Tensor | float:
        return 1 + F.softplus(self.rho) if self.learnable else self.fixed


def bcos_scale(out: torch.Tensor, norm: torch.Tensor, b: torch.Tensor | float, explain: bool) -> torch.Tensor:
    """``out * |out / norm|^(B-1)``, the scale detached in explanation mode."""
    if isinstance(b, float) and b == 1.0:
        return out
    if isinstance(b, float) and b == 2.0:
        scale = out.abs() / norm
    else:
        scale = (out.abs() / norm + 1e-6).pow(b - 1)
    return out * (scale.detach() if explain else scale)


FUSED = True  # MaxOut + scale as one autograd node for a fixed B (False: the composed ops, the reference)


@contextlib.contextmanager
def composed_ops() -> Iterator[None]:
    """Inside, B-cos layers run MaxOut and the scale as separate ops instead of the fused node:
    for passes that look at every op (DeepLIFT's rule-based propagation traces the network and
    gives ``amax`` its max rule and the scale its product / quotient rules), and for higher
    derivatives (``create_graph=True``), which the fused nodes refuse (``once_differentiable``)."""
    global FUSED
    old, FUSED = FUSED, False
    try:
        yield
    finally:
        FUSED = old


def _fused(b: torch.Tensor | float) -> bool:
    return FUSED and isinstance(b, float) and b != 1.0


def chunk_major(w: torch.Tensor, m: int) -> torch.Tensor:
    """Rows (or channels) ordered as MaxOut groups (c0j0, c0j1, c1j0, ...) -> as m chunks
    (c0j0, c1j0, ..., c0j1, c1j1, ...): the layout the fused node reads without strides."""
    return w.unflatten(0, (-1, m)).transpose(0, 1).flatten(0, 1) if m > 1 else w


class _MaxOutScale(torch.autograd.Function):
    """MaxOut and the B-cos scale in one autograd node, for a fixed B: ``o = max_j out_j`` over
    the m channel chunks of ``out`` (N, m·C, ...), ``y = o · (|o|/n + ε)^(B-1)`` (ε = 0 for B = 2,
    as :func:`bcos_scale`), the scale's derivative dropped in explanation mode (``detach``).

    Saves |o|/n, y, n and the MaxOut choice (a 1/0 mask in o's dtype for MaxOut 2, indices
    otherwise) instead of
    the composed ops' comparison tensors and the gradient expanded through ``amax``'s equality
    mask.  A tie goes to the first chunk (``amax`` splits its gradient).  Exact: tests/test_bcos.py
    (gradcheck in float64; equal to the composed ops to float rounding)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, norm: torch.Tensor, m: int, b: float, detach: bool) -> torch.Tensor:
        choice = None
        if m == 1:
            o = out
        elif m == 2:
            first, second = out.unflatten(1, (2, -1)).unbind(1)
            o = torch.maximum(first, second)
            choice = torch.ge(first, second, out=torch.empty_like(o))  # 1.0 / 0.0 in o's dtype and layout:
            # the backward's products read it without a bool -> float copy (4-5x faster on the CPU)
        else:
            o, choice = out.unflatten(1, (m, -1)).max(1)
        r = o.abs().div_(norm)  # |o| / n: the B = 2 scale
        scale = r if b == 2.0 else (r + 1e-6).pow(b - 1)
        y = o * scale if m == 1 else o.mul_(scale)  # o is our own buffer for MaxOut > 1: no new one
        ctx.save_for_backward(r, y, norm, choice)
        ctx.m, ctx.b, ctx.detach = m, b, detach
        return y

    @staticmethod
    @once_differentiable  # no graph of the backward: for higher derivatives use composed_ops()
    def backward(ctx, g: torch.Tensor):
        r, y, norm, choice = ctx.saved_tensors  # y = o · scale, so g · o · scale' is g · y · (...)
        b, m = ctx.b, ctx.m
        g_n = None
        if b == 2.0:
            if ctx.detach:  # the scale is a constant: nothing flows to the norm
                g_o = g * r
            else:  # d/do [o |o| / n] = 2 |o| / n ;  d/dn = -o |o| / n² = -y / n
                g_o = torch.mul(g, r).mul_(2)
                if ctx.needs_input_grad[1]:
                    g_n = -(g * y).sum(1, keepdim=True) / norm
        else:
            s = r + 1e-6
            p = s.pow(b - 1)
            if ctx.detach:  # the scale is a constant: nothing flows to the norm
                g_o = g * p
            else:  # d/do [o s^(B-1)] = s^(B-1) + (B-1) r s^(B-2) ;  d/dn = -(B-1) o r s^(B-2) / n = -(B-1) y r / (s n)
                t = (b - 1) * r / s
                g_o = g * p * (1 + t)
                if ctx.needs_input_grad[1]:
                    g_n = -(g * y * t).sum(1, keepdim=True) / norm
        if m == 1:
            return g_o, g_n, None, None, None
        if m == 2:
            if _is_batched(g_o):  # under vmap (is_grads_batched): functional ops only
                first = g_o * choice
                gv = torch.stack([first, g_o - first], 1)
            else:  # both chunks written in place into one buffer (in g's memory format): no stack copy,
                # no float copy of the mask, no layout change before the convolution's backward
                cl = g_o.dim() == 4 and not g_o.is_contiguous() and g_o.is_contiguous(memory_format=torch.channels_last)
                gv = torch.empty((g_o.shape[0], 2 * g_o.shape[1], *g_o.shape[2:]), dtype=g_o.dtype,
                                 device=g_o.device,
                                 memory_format=torch.channels_last if cl else torch.contiguous_format)
                g0, g1 = gv.unflatten(1, (2, -1)).unbind(1)
                torch.mul(g_o, choice, out=g0)
                torch.sub(g_o, g0, out=g1)
                return gv, g_n, None, None, None
        else:
            gv = torch.zeros((g_o.shape[0], m, *g_o.shape[1:]), dtype=g_o.dtype, device=g_o.device)
            gv = gv.scatter(1, choice.unsqueeze(1), g_o.unsqueeze(1))
        return gv.flatten(1, 2), g_n, None, None, None


def _box_sum(sq: torch.Tensor, k: int, stride: int, padding: int) -> torch.Tensor:
    return F.avg_pool2d(sq, k, stride, padding, divisor_override=1) if k > 1 or stride > 1 else sq


class _PatchNorm(torch.autograd.Function):
    """``n = sqrt(Σ_patch Σ_c x² + 1e-6)`` in one node: the backward is ``x · box_sumᵀ(g / n)``, one
    pass over x (the composed ops' ``pow`` backward copies x and multiplies twice)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int, stride: int, padding: int) -> torch.Tensor:
        sq = _box_sum(_wide(x).square().sum(1, keepdim=True), k, stride, padding)
        n = sq.add_(1e-6).sqrt_()
        ctx.save_for_backward(x, n)
        ctx.geom = (k, stride, padding)
        return n

    @staticmethod
    @once_differentiable  # no graph of the backward: for higher derivatives use composed_ops()
    def backward(ctx, g: torch.Tensor):
        x, n = ctx.saved_tensors
        k, stride, padding = ctx.geom
        t = g / n  # d n / d sq = 1 / (2n); d sq / dx = 2x (through the box sum's transpose)
        if k > 1 or stride > 1:
            t = torch.ops.aten.avg_pool2d_backward(t, x[:, :1], [k, k], [stride, stride], [padding, padding],
                                                   False, True, 1)
        return (x * t).to(x.dtype), None, None, None


def patch_norm(x: torch.Tensor, k: int, stride: int = 1, padding: int = 0, fused: bool = True) -> torch.Tensor:
    """The norm of every k x k receptive-field patch of ``x`` (N, C, H, W) over all input channels
    (zero padding counts as zeros), ``sqrt(‖patch‖² + 1e-6)``, shape (N, 1, H', W').  The channel
    sum of squares (3-4x faster on the CPU than ``linalg.vector_norm`` over dim 1, a strided
    reduction), then a k x k box sum; ``fused``: one autograd node (:class:`_PatchNorm`).  Always
    float32 or wider (bf16 / fp16 inputs under autocast are widened)."""
    if fused:
        return _PatchNorm.apply(x, k, stride, padding)
    return (_box_sum(_wide(x).square().sum(1, keepdim=True), k, stride, padding) + 1e-6).sqrt()


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is float16 / bfloat16 (under autocast): norms and variances are
    kept in float32, their sums of squares lose too much in an 8-bit mantissa."""
    if isinstance(x, torch.fx.Proxy):  # traced (DeepLIFT's rules): the dtype is not known, nothing to widen
        return x
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is a functorch batched tensor (a backward run under vmap)."""
    check = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    return bool(check(t)) if check is not None else True


def maxout_scale(out: torch.Tensor, norm: torch.Tensor, max_out: int, b: torch.Tensor | float,
                 explain: bool, chunked: bool = False) -> torch.Tensor:
    """MaxOut over groups of ``max_out`` channels of ``out`` (N, C·m, ...) and the B-cos scale
    against ``norm``.  Groups are consecutive channels, or, with ``chunked``, the m chunks of
    :func:`chunk_major` (what the layers produce when the fused node is used).  The fused node
    for a fixed B; the composed ops for a learnable B (whose own gradient they give) or with
    ``FUSED`` off."""
    if _fused(b):
        if not chunked:
            out = chunk_major(out.transpose(0, 1), max_out).transpose(0, 1)
        return _MaxOutScale.apply(out, norm, max_out, b, explain)
    if max_out > 1:
        out = out.unflatten(1, (max_out, -1)).amax(1) if chunked else out.unflatten(1, (-1, max_out)).amax(2)
    return bcos_scale(out, norm, b, explain)


class BcosConv2d(Detachable):
    """B-cos convolution: unit-norm kernels, ``|cos|^(B-1)`` against each input patch, no bias.

    Args:
        max_out: MaxOut over this many copies of every output unit (taken before scaling).
        b: the alignment exponent B >= 1; ``learnable_b`` makes it a trained parameter.
        scale: a fixed divisor of the output (B-cos v1's per-B ``scale``; 1 in v2).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 b: float = 2.0, max_out: int = 1, learnable_b: bool = False, scale: float = 1.0):
        super().__init__()
        self.c_in, self.c_out, self.k, self.stride, self.padding = c_in, c_out, kernel_size, stride, padding
        self.max_out, self.scale = max_out, scale
        self.weight = nn.Parameter(torch.empty(c_out * max_out, c_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.b = BParam(b, learnable_b)

    def normed_weight(self) -> torch.Tensor:
        return self.weight / self.weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.b.value()
        if _fused(b):  # MaxOut copies as chunks, reordered before normalising (no flatten copy of channels_last)
            w = chunk_major(self.weight, self.max_out)
            w = w / torch.linalg.vector_norm(w, dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        else:
            w = self.normed_weight()
        out = F.conv2d(x, w, None, self.stride, self.padding)
        norm = patch_norm(x, self.k, self.stride, self.padding, fused=_fused(b))
        y = maxout_scale(out, norm, self.max_out, b, self.explain, chunked=_fused(b))
        return y / self.scale if self.scale != 1.0 else y

    def extra_repr(self) -> str:
        b = "learnable" if self.b.learnable else self.b.fixed
        return (f"{self.c_in}, {self.c_out}, k={self.k}, stride={self.stride}, padding={self.padding}, B={b}, "
                f"max_out={self.max_out}")


class BcosLinear(Detachable):
    """B-cos fully connected layer (the linear case of :class:`BcosConv2d`)."""

    def __init__(self, d_in: int, d_out: int, b: float = 2.0, max_out: int = 1, learnable_b: bool = False):
        super().__init__()
        self.d_out, self.max_out = d_out, max_out
        self.weight = nn.Parameter(torch.empty(d_out * max_out, d_in))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.b = BParam(b, learnable_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.b.value()
        w = self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = F.linear(x, chunk_major(w, self.max_out) if _fused(b) else w)
        norm = _wide(x).norm(dim=1, keepdim=True) + 1e-12
        return maxout_scale(out, norm, self.max_out, b, self.explain, chunked=_fused(b))


class BatchNormUncentered2d(Detachable):
    """``γ · x / sqrt(Var_batch(x) + eps)``: BatchNorm without centring or bias (B-cos v2).

    Training uses the (biased) batch variance (of detached x in explanation mode) and updates
    ``running_var`` with that same biased variance, as the official B-cos v2 code
    (``bcos/modules/norms/uncentered_norms/batchnorm_uncentered.py``; unlike
    ``nn.BatchNorm2d``, which stores the unbiased one); evaluation divides by
    ``running_var``, a constant.
    """

    def __init__(self, c: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(c)) if affine else None
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            src = _wide(x.detach() if self.explain else x)
            var = src.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():  # the biased batch variance, as B-cos v2's running_var update
                self.running_var.mul_(1 - self.momentum).add_(var.detach(), alpha=self.momentum)
        else:
            var = self.running_var
        y = x / (var + self.eps).sqrt().view(1, -1, 1, 1)
        return y * self.weight.view(1, -1, 1, 1) if self.weight is not None else y


class PositionNormUncentered2d(Detachable):
    """``γ · x / sqrt(Var_channels(x) + eps)`` at every pixel, uncentred (B-cos v2)."""

    def __init__(self, c: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = _wide(x).var(dim=1, keepdim=True, unbiased=False)
        y = x / ((var.detach() if self.explain else var) + self.eps).sqrt()
        return y * self.weight.view(1, -1, 1, 1) if self.weight is not None else y


NORMS = {"none": None, "bnu": BatchNormUncentered2d, "pnu": PositionNormUncentered2d}


def make_norm(kind: str, c: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}")
    cls = NORMS[kind]
    return nn.Identity() if cls is None else cls(c)


class LogitLayer(nn.Module):
    """``x / T + b`` with the fixed bias b = -log(C - 1): zero evidence gives sigmoid = 1/C."""

    def __init__(self, num_classes: int, temperature: float = 1.0, bias: float | None = None):
        super().__init__()
        self.temperature = float(temperature)
        self.bias = float(-math.log(num_classes - 1) if bias is None else bias) if num_classes > 1 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.temperature + self.bias


@contextlib.contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Detach every dynamic factor, making the network exactly linear in its input: y = W(x) x."""
    mods = [m for m in model.modules() if isinstance(m, Detachable)]
    old = [m.explain for m in mods]
    for m in mods:
        m.explain = True
    try:
        yield model
    finally:
        for m, o in zip(mods, old):
            m.explain = o
