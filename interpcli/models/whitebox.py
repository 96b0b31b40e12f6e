"""The "white-box" CNNs: shallow convolutional classifiers whose last layer is a
differentiable disjunction over groups of units, one group per class.

Sources: the 314-Foundation research log (``../shared/seeds/000``, Jul-Sep 2024:
SoftMaxPool, Scale, Mean, GumbelConv2d, positively-constrained convolutions and the
reference architectures) and, for context, "Towards White Box Deep Learning"
(https://arxiv.org/abs/2403.09863), whose semantic-feature layers respond with the max
over poses of a template.  The log gives architectures and intent, not formulas; the
definitions here follow ``../shared/METHODS.md`` section 4.2.  GumbelConv2d uses the
Gumbel-softmax / straight-through estimator of Jang, Gu, Poole, "Categorical
Reparameterization with Gumbel-Softmax", ICLR 2017 (https://arxiv.org/abs/1611.01144).

Group sizes adapt to ``num_classes``: the head width is rounded down to a multiple of
``num_classes`` (times ``parts`` for ``smp-conjdisj``), so any number of classes up to
the width works.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from ._registry import register_model

__all__ = ["SoftMaxPool", "Scale", "Mean", "PositiveConv2d", "GumbelConv2d", "WhiteBoxNet"]


def _groups(z: torch.Tensor, groups: int) -> torch.Tensor:
    if z.shape[-1] % groups:
        raise ValueError(f"{z.shape[-1]} units cannot be split into {groups} equal groups")
    return z.unflatten(-1, (groups, z.shape[-1] // groups))


class SoftMaxPool(nn.Module):
    """Differentiable disjunction: one soft maximum per group of consecutive units.

    ``(N, K) -> (N, groups)``.  The default is the softmax-weighted average
    sum_i softmax(z/tau)_i z_i, which lies between the group mean (tau -> inf) and the
    group max (tau -> 0).  ``lse=True`` uses tau * logsumexp(z/tau) instead, an upper
    bound of the max (by at most tau * log(group size)).

    Args:
        groups: number of groups (the classes, for a head).
        tau: temperature.
        learnable_tau: learn log(tau) (so tau stays positive).
        lse: use the log-sum-exp form.
    """

    def __init__(self, groups: int, tau: float = 1.0, learnable_tau: bool = False, lse: bool = False):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.groups, self.lse = groups, lse
        log_tau = torch.tensor(math.log(tau))
        if learnable_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g, tau = _groups(z, self.groups), self.tau
        if self.lse:
            return tau * torch.logsumexp(g / tau, dim=-1)
        return (F.softmax(g / tau, dim=-1) * g).sum(-1)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, lse={self.lse}"


class Scale(nn.Module):
    """A learnable scalar on the logits (an output temperature), initialised to 1."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Mean(nn.Module):
    """Average over ``groups`` equal groups of consecutive units: a soft conjunction of parts."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _groups(z, self.groups).mean(-1)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class _Abs(nn.Module):
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v.abs()

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w


class _Square(nn.Module):
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * v

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w.sqrt()


class _Softplus(nn.Module):
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return F.softplus(v)

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w.clamp_min(1e-6).expm1().log()


_POSITIVE = {"abs": _Abs, "square": _Square, "softplus": _Softplus}


class PositiveConv2d(nn.Conv2d):
    """Conv2d whose weight is >= 0 by construction: ``weight = f(original)``.

    A parametrisation (``torch.nn.utils.parametrize``) rather than a projection, so the
    constraint holds after any optimiser step without a hook in the training loop.
    ``.weight`` is the positive 4-D kernel; the state dict stores
    ``parametrizations.weight.original``.  The initial kernel is the absolute value of
    PyTorch's default initialisation.  The bias is unconstrained.

    Args:
        positive: ``abs`` (|v|, the default: same gradient scale as a plain conv),
            ``square`` (v^2) or ``softplus``.
    """

    def __init__(self, *args, positive: str = "abs", **kwargs):
        super().__init__(*args, **kwargs)
        if positive not in _POSITIVE:
            raise ValueError(f"positive must be one of {sorted(_POSITIVE)}, got '{positive}'")
        with torch.no_grad():
            self.weight.abs_()
        parametrize.register_parametrization(self, "weight", _POSITIVE[positive]())


class GumbelConv2d(nn.Module):
    """A convolution in which every output unit reads one (or ``topk``) input channel(s) per tap.

    For output o and tap (u, v) the logits l[o, :, u, v] over the C_in input channels give
    a selection pi[o, :, u, v] = gumbel_softmax(l[o, :, u, v], tau) and the kernel is
    W[o, c, u, v] = a[o, u, v] * pi[o, c, u, v], with a learnable amplitude a per tap.

    - ``hard=True``: pi is the (top-k) one-hot of the noisy logits in the forward pass and
      the softmax in the backward pass (straight-through estimator).
    - ``hard=False``: pi is the softmax itself (rows sum to 1).
    - Training samples Gumbel noise; eval mode uses the noiseless logits, so it is
      deterministic.  ``.weight`` is always the noiseless kernel (for kernel tools).
    - ``train_progress(t)`` anneals tau geometrically from ``tau_start`` (t=0) to
      ``tau_end`` (t=1): the soft selection (and the straight-through gradient) converges
      to the one-hot one.  ``tau`` is a buffer, saved with the checkpoint.
    - ``logit_std``: initial spread of the logits.  Gumbel noise has a std of 1.28, so
      with a much smaller spread the early training selections are nearly random.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, hard: bool = True, topk: int = 1, tau_start: float = 1.0, tau_end: float = 0.1,
                 logit_std: float = 3.0):
        super().__init__()
        if not 1 <= topk <= in_channels:
            raise ValueError(f"topk must be in [1, {in_channels}], got {topk}")
        if tau_start <= 0 or tau_end <= 0:
            raise ValueError("tau_start and tau_end must be positive")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.hard, self.topk = stride, padding, hard, topk
        self.tau_start, self.tau_end = tau_start, tau_end
        self.logits = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * logit_std)
        # Each output reads topk * k^2 inputs, so that is its fan-in (PyTorch's default bound for a conv).
        bound = 1 / math.sqrt(topk * kernel_size**2)
        self.amplitude = nn.Parameter(torch.empty(out_channels, 1, kernel_size, kernel_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None
        self.register_buffer("tau", torch.tensor(float(tau_start)))

    def train_progress(self, t: float) -> None:
        self.tau.fill_(self.tau_start * (self.tau_end / self.tau_start) ** t)

    def selection(self, sample: bool | None = None) -> torch.Tensor:
        """pi, shaped like the weight (C_out, C_in, k, k); ``sample`` defaults to ``self.training``."""
        scores = self.logits
        if self.training if sample is None else sample:
            scores = scores - torch.empty_like(scores).exponential_().log()  # + Gumbel(0, 1) noise
        soft = F.softmax(scores / self.tau, dim=1)
        if not self.hard:
            return soft
        hard = torch.zeros_like(soft).scatter_(1, scores.topk(self.topk, dim=1).indices, 1.0)
        # Exact zeros off the selection: (0 - s) + s == 0 in floating point.
        return hard - soft.detach() + soft

    @property
    def weight(self) -> torch.Tensor:
        return self.amplitude * self.selection(sample=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.amplitude * self.selection(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, hard={self.hard}, topk={self.topk}, tau={self.tau_start}->{self.tau_end}")


class WhiteBoxNet(nn.Module):
    """``features`` (convolutions ending in global max pooling, one vector per image), then
    ``head`` (ending in SoftMaxPool and Scale).  Layers are named as in the research log
    (``conv1``, ``mp1``, ``bn1``, ...), so ``features.conv2`` is a valid ``--layer``."""

    def __init__(self, features: list[tuple[str, nn.Module]], head: list[tuple[str, nn.Module]]):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(features + [("amp", nn.AdaptiveMaxPool2d(1)),
                                                              ("flatten", nn.Flatten(1))]))
        self.head = nn.Sequential(OrderedDict(head))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ----------------------------------------------------------------------------------------
#   Architectures
# ----------------------------------------------------------------------------------------

def _per_class(width: int, num_classes: int, multiple: int = 1) -> int:
    """Units per class: the largest multiple of ``multiple`` with num_classes * it <= width."""
    n = width // (num_classes * multiple) * multiple
    if n < 1:
        raise ValueError(f"width {width} is too small for {num_classes} classes"
                         + (f" with groups of {multiple}" if multiple > 1 else ""))
    return n


def _out_size(size: int, k: int, s: int = 1, p: int = 0) -> int:
    return (size + 2 * p - k) // s + 1


def _check(h: int, w: int, what: str) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"input too small for {what}")


def _smp_head(num_classes: int, tau: float, learnable_tau: bool, lse: bool) -> list[tuple[str, nn.Module]]:
    return [("smpool", SoftMaxPool(num_classes, tau, learnable_tau, lse)), ("scale", Scale())]


_LOG = "314-Foundation ResearchLog 2024 (../shared/seeds/000); https://arxiv.org/abs/2403.09863"
_RECIPE = dict(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=128, epochs=20, weight_decay=0.0)


@register_model(
    "smp-conjdisj", description="white-box: conv10 -> global max -> BN -> Mean(parts) -> SoftMaxPool -> Scale",
    default_input=(3, 32, 32), target_layer="features.conv1", first_layer="features.conv1", family="whitebox",
    classifier_layer="head", feature_layer="features",
    paper=_LOG, recipe=_RECIPE,
)
def smp_conjdisj(num_classes: int, input_shape: tuple[int, int, int], width: int = 120, parts: int = 5,
                 kernel_size: int = 10, tau: float = 1.0, learnable_tau: bool = False, lse: bool = False,
                 bn_affine: bool = True) -> nn.Module:
    """Conjunction-disjunction model (log, 29.07.2024; ~90% plane vs car): each class is a
    soft maximum over groups of ``parts`` units, each group the mean of its parts."""
    c, h, w = input_shape
    _check(_out_size(h, kernel_size, 2), _out_size(w, kernel_size, 2), f"kernel {kernel_size}")
    width = num_classes * _per_class(width, num_classes, parts)
    return WhiteBoxNet(
        [("conv1", nn.Conv2d(c, width, kernel_size, stride=2))],
        [("bn1", nn.BatchNorm1d(width, affine=bn_affine)), ("mean", Mean(width // parts)),
         *_smp_head(num_classes, tau, learnable_tau, lse)],
    )


@register_model(
    "smp-directional", description="white-box: conv10 -> maxpool3 -> BN -> GELU -> conv4 -> global max -> SoftMaxPool",
    default_input=(3, 32, 32), target_layer="features.act1", first_layer="features.conv1", family="whitebox",
    classifier_layer="head", feature_layer="features",
    paper=_LOG, recipe=_RECIPE,
)
def smp_directional(num_classes: int, input_shape: tuple[int, int, int], width: int = 120, kernel_size: int = 10,
                    tau: float = 1.0, learnable_tau: bool = False, lse: bool = False,
                    bn_affine: bool = True) -> nn.Module:
    """The "simple directional bias" model (log, 29.07.2024; ~94% plane vs car): the max pool
    lets the 4x4 second convolution see parts in roughly fixed relative directions."""
    c, h, w = input_shape
    h, w = (_out_size(_out_size(s, kernel_size, 2), 3, 3) for s in (h, w))
    _check(h - 3, w - 3, "two convolutions (kernels 10 and 4)")
    out = num_classes * _per_class(width, num_classes)
    return WhiteBoxNet(
        [("conv1", nn.Conv2d(c, width, kernel_size, stride=2)), ("mp1", nn.MaxPool2d(3)),
         ("bn1", nn.BatchNorm2d(width, affine=bn_affine)), ("act1", nn.GELU()), ("conv2", nn.Conv2d(width, out, 4))],
        _smp_head(num_classes, tau, learnable_tau, lse),
    )


@register_model(
    "smp-gumbel", description="white-box: conv10 -> maxpool5/10 -> BN -> GELU -> GumbelConv3 -> max -> SoftMaxPool",
    default_input=(3, 32, 32), target_layer="features.act1", first_layer="features.conv1", family="whitebox",
    classifier_layer="head", feature_layer="features",
    paper=_LOG, recipe=_RECIPE,
)
def smp_gumbel(num_classes: int, input_shape: tuple[int, int, int], width: int = 120, out_width: int = 60,
               hard: bool = True, topk: int = 1, tau_start: float = 1.0, tau_end: float = 0.1, logit_std: float = 3.0,
               tau: float = 1.0, learnable_tau: bool = False, lse: bool = False, bn_affine: bool = True) -> nn.Module:
    """Gumbel model (log, 12.08.2024): on a 32x32 input the stride-10 max pool leaves a 3x3
    grid of barely overlapping 10x10 patch detectors, and each Gumbel unit picks one
    detector per grid cell.  ``tau_start``/``tau_end`` anneal the selection; ``tau`` is
    the SoftMaxPool temperature."""
    c, h, w = input_shape
    h, w = (_out_size(_out_size(s, 10), 5, 10, 2) for s in (h, w))
    _check(h - 2, w - 2, "the 3x3 GumbelConv2d after the stride-10 pool (needs inputs of at least 30x30)")
    out = num_classes * _per_class(out_width, num_classes)
    return WhiteBoxNet(
        [("conv1", nn.Conv2d(c, width, 10)), ("mp1", nn.MaxPool2d(5, stride=10, padding=2)),
         ("bn1", nn.BatchNorm2d(width, affine=bn_affine)), ("act1", nn.GELU()),
         ("conv2", GumbelConv2d(width, out, 3, hard=hard, topk=topk, tau_start=tau_start, tau_end=tau_end,
                                       logit_std=logit_std))],
        _smp_head(num_classes, tau, learnable_tau, lse),
    )


def _positive_stack(c: int, channels: list[int], k: int, positive: str, positive_first: bool,
                    out: int) -> list[tuple[str, nn.Module]]:
    """[conv(k)-BN-ReLU, maxpool 2] per entry of ``channels``, then ``conv_out``: conv3 to ``out`` units.

    Every conv but the first is a PositiveConv2d; the first one too if ``positive_first``.
    """
    layers: list[tuple[str, nn.Module]] = []
    for i, ch in enumerate(channels, 1):
        conv = (PositiveConv2d(c, ch, k, padding=k // 2, positive=positive) if i > 1 or positive_first
                else nn.Conv2d(c, ch, k, padding=k // 2))
        layers += [(f"conv{i}", conv), (f"bn{i}", nn.BatchNorm2d(ch)), (f"act{i}", nn.ReLU()),
                   (f"mp{i}", nn.MaxPool2d(2))]
        c = ch
    return layers + [("conv_out", PositiveConv2d(c, out, 3, padding=1, positive=positive))]


def _positive_head(width: int, num_classes: int, tau: float, learnable_tau: bool, lse: bool,
                   bn_affine: bool) -> list[tuple[str, nn.Module]]:
    # affine=False in the last BN: the log (16.09.2024) found it keeps all hidden units in use.
    return [("bn", nn.BatchNorm1d(width, affine=bn_affine)), *_smp_head(num_classes, tau, learnable_tau, lse)]


@register_model(
    "positive-lenet", description="white-box: LeNet-shaped (conv5-pool-conv5-pool-conv3), weights >= 0, SoftMaxPool",
    default_input=(1, 28, 28), target_layer="features.conv_out", first_layer="features.conv1", family="whitebox",
    classifier_layer="head", feature_layer="features",
    paper=_LOG, recipe=_RECIPE,
)
def positive_lenet(num_classes: int, input_shape: tuple[int, int, int], width: int = 120, positive: str = "abs",
                   positive_first: bool = False, tau: float = 1.0, learnable_tau: bool = False, lse: bool = False,
                   bn_affine: bool = False) -> nn.Module:
    """Positively-constrained LeNet (log, 09.09.2024): conv5(6) and conv5(16) with 2x2 max
    pooling, a conv3 to ``width`` units and global max pooling in place of LeNet's fc120,
    then the SoftMaxPool head."""
    c, h, w = input_shape
    _check(h // 4, w // 4, "two 2x2 poolings (needs inputs of at least 4x4)")
    out = num_classes * _per_class(width, num_classes)
    return WhiteBoxNet(_positive_stack(c, [6, 16], 5, positive, positive_first, out),
                       _positive_head(out, num_classes, tau, learnable_tau, lse, bn_affine))


@register_model(
    "positive-vgg", description="white-box: small VGG-style net, 3x3 convs with weights >= 0, SoftMaxPool head",
    default_input=(3, 32, 32), target_layer="features.conv_out", first_layer="features.conv1", family="whitebox",
    classifier_layer="head", feature_layer="features",
    paper=_LOG, recipe=_RECIPE,
)
def positive_vgg(num_classes: int, input_shape: tuple[int, int, int], channels: list[int] = [32, 64],  # noqa: B006
                 width: int = 120, positive: str = "abs", positive_first: bool = False, tau: float = 1.0,
                 learnable_tau: bool = False, lse: bool = False, bn_affine: bool = False) -> nn.Module:
    """Positively-constrained VGG (log, 16-30.09.2024): a 3x3 block per entry of ``channels``,
    a conv3 to ``width`` units, global max pooling, and the SoftMaxPool head after a
    BatchNorm without affine rescaling.  Two blocks by default: the log found deeper
    positive VGGs no better, and with a third block (32, 64, 128) plane vs car trained
    more slowly here."""
    c, h, w = input_shape
    _check(h >> len(channels), w >> len(channels), f"{len(channels)} 2x2 poolings")
    out = num_classes * _per_class(width, num_classes)
    return WhiteBoxNet(_positive_stack(c, list(channels), 3, positive, positive_first, out),
                       _positive_head(out, num_classes, tau, learnable_tau, lse, bn_affine))
