"""B-cos networks (Böhle, Fritz, Schiele, "B-cos Networks: Alignment is All We Need for
Interpretability", CVPR 2022, https://arxiv.org/abs/2205.10268; "B-cos Alignment for
Inherently Interpretable CNNs and Vision Transformers", TPAMI 2024,
https://arxiv.org/abs/2306.10898).  Definitions: ../shared/METHODS.md section 1.

A B-cos unit replaces the dot product by ``|cos(x, w)|^(B-1) * (ŵᵀx)`` with unit-norm
``ŵ``: the output is large only where input and weight align.  No layer adds a bias, and
the normalisations are uncentred, so the whole network is *dynamic linear*:
``y(x) = W(x) x``.  In explanation mode (:func:`explanation_mode`) the dynamic factors
(the cosine scale, the norm statistics) are detached from autograd, so the input
gradient of a logit is exactly the row ``W_c(x)`` and ``W_c(x) ⊙ x`` sums to the logit
minus the fixed logit bias (:func:`contributions`).

The networks see images through the six-channel encoding [r, g, b, 1-r, 1-g, 1-b]
(the ``bcos6`` encoding of :class:`~interpcli.models.Classifier`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._registry import register_model
from .bcos_layers import (
    BatchNormUncentered2d,
    BcosConv2d,
    BcosLinear,
    LogitLayer,
    PositionNormUncentered2d,
    explanation_mode,
    make_norm,
)

__all__ = [
    "BcosConv2d", "BcosLinear", "BatchNormUncentered2d", "PositionNormUncentered2d", "LogitLayer",
    "BcosResNet", "BcosVGG9", "BcosLeNet", "explanation_mode", "contributions", "BcosExplanation", "is_bcos",
]


# ----------------------------------------------------------------------------------------
#   Architectures
# ----------------------------------------------------------------------------------------

class _BcosNet(nn.Module):
    """Common interface: ``logit_bias`` is the constant that contributions do not explain."""

    logits: LogitLayer

    @property
    def logit_bias(self) -> float:
        return self.logits.bias


class BcosBlock(nn.Module):
    """conv3x3 -> norm -> conv3x3 -> norm, plus the (B-cos 1x1 conv) shortcut; no ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, **bk):
        super().__init__()
        self.conv1 = BcosConv2d(c_in, c_out, 3, stride, 1, **bk)
        self.bn1 = make_norm(norm, c_out)
        self.conv2 = BcosConv2d(c_out, c_out, 3, 1, 1, **bk)
        self.bn2 = make_norm(norm, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(BcosConv2d(c_in, c_out, 1, stride, 0, **bk), make_norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x)))) + self.shortcut(x)


class BcosResNet(_BcosNet):
    """The B-cos v2 CIFAR ResNets: depth 6n+2, widths 16/32/64, classifier (1x1 B-cos conv) before pooling."""

    def __init__(self, depth: int, num_classes: int, in_chans: int = 6, width: int = 16, b: float = 2.0,
                 max_out: int = 2, learnable_b: bool = False, norm: str = "none"):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110); got {depth}")
        n = (depth - 2) // 6
        bk = dict(b=b, max_out=max_out, learnable_b=learnable_b)
        self.conv1 = BcosConv2d(in_chans, width, 3, 1, 1, **bk)
        self.bn1 = make_norm(norm, width)
        layers, c = [], width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BcosBlock(c, w, 2 if (i > 0 and j == 0) else 1, norm, **bk))
                c = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.classifier = BcosConv2d(c, num_classes, 1, 1, 0, **bk)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logits = LogitLayer(num_classes)
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.bn1(self.conv1(x)))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pool(self.classifier(x)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# B-cos v1 CIFAR-10: per-B output scale 10^(-2 + 1.5 (2.5 - B)) and logit temperature 10^t.
_V1_T = {1.0: -3, 1.25: -3, 1.5: -2, 1.75: 1, 2.0: 2, 2.25: 2, 2.5: 3}


class BcosVGG9(_BcosNet):
    """The B-cos v1 CIFAR-10 network: 9 B-cos convolutions (MaxOut 2), global average pool, x/T + b.

    Kernels 3 (1 for the last), strides 1,1,2,1,1,2,1,1,1, widths 64,64,128,128,128,256,256,256,C.
    ``scale`` and ``temperature`` default to the v1 values for B (METHODS.md 1.6).
    """

    WIDTHS = (64, 64, 128, 128, 128, 256, 256, 256)
    STRIDES = (1, 1, 2, 1, 1, 2, 1, 1, 1)

    def __init__(self, num_classes: int, in_chans: int = 6, b: float = 2.0, max_out: int = 2,
                 learnable_b: bool = False, width: float = 1.0, scale: float | None = None,
                 temperature: float | None = None):
        super().__init__()
        scale = 10 ** (-2 + 1.5 * (2.5 - b)) if scale is None else scale
        if temperature is None:
            t = _V1_T.get(float(b))
            if t is None:
                raise ValueError(f"no published temperature for B={b}; pass temperature=")
            temperature = 10.0**t
        widths = [max(1, round(w * width)) for w in self.WIDTHS] + [num_classes]
        layers, c = [], in_chans
        for i, (w, s) in enumerate(zip(widths, self.STRIDES)):
            last = i == len(widths) - 1
            layers.append(BcosConv2d(c, w, 1 if last else 3, s, 0 if last else 1, b=b, max_out=max_out,
                                     learnable_b=learnable_b, scale=scale))
            c = w
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = layers[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logits = LogitLayer(num_classes, temperature)
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pool(self.classifier(x)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class BcosLeNet(_BcosNet):
    """LeNet's shape (conv5-pool-conv5-pool-fc120-fc84-fc) with B-cos layers and no ReLU."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: int = 6, hidden: int = 120,
                 b: float = 2.0, max_out: int = 2, learnable_b: bool = False):
        super().__init__()
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise ValueError("bcos-lenet needs inputs of at least 4x4")
        bk = dict(b=b, max_out=max_out, learnable_b=learnable_b)
        self.conv1 = BcosConv2d(c, width, 5, 1, 2, **bk)
        self.conv2 = BcosConv2d(width, 16, 5, 1, 2, **bk)
        self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)  # one module per use (propagation rules hook them)
        self.num_features = 16 * (h // 4) * (w // 4)
        self.fc1 = BcosLinear(self.num_features, hidden, **bk)
        self.fc2 = BcosLinear(hidden, 84, **bk)
        self.fc = BcosLinear(84, num_classes, **bk)
        self.logits = LogitLayer(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool2(self.conv2(self.pool1(self.conv1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.fc(self.fc2(self.fc1(x.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_V2 = "https://arxiv.org/abs/2306.10898"
_V1 = "https://arxiv.org/abs/2205.10268"
# The papers' CIFAR-10 recipe: Adam 1e-3, batch 64, 100 epochs, cosine, BCE, flip + crop(pad 4).
_RECIPE = dict(optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="cosine", batch_size=64,
               epochs=100, loss="bce")


@register_model("bcos-resnet20", description="B-cos v2 CIFAR ResNet-20 (B=2, MaxOut 2, no ReLU)",
                default_input=(3, 32, 32), encoding="bcos6", target_layer="layer3", first_layer="conv1",
                classifier_layer="classifier", feature_layer="layer3", feature_pool="avg",
                family="bcos", paper=_V2, recipe=_RECIPE)
def bcos_resnet20(num_classes: int, input_shape: tuple[int, int, int], width: int = 16, b: float = 2.0,
                  max_out: int = 2, learnable_b: bool = False, norm: str = "none") -> nn.Module:
    return BcosResNet(20, num_classes, input_shape[0], width, b, max_out, learnable_b, norm)


@register_model("bcos-resnet56", description="B-cos v2 CIFAR ResNet-56 (B=2, MaxOut 2, no ReLU)",
                default_input=(3, 32, 32), encoding="bcos6", target_layer="layer3", first_layer="conv1",
                classifier_layer="classifier", feature_layer="layer3", feature_pool="avg",
                family="bcos", paper=_V2, recipe=_RECIPE)
def bcos_resnet56(num_classes: int, input_shape: tuple[int, int, int], width: int = 16, b: float = 2.0,
                  max_out: int = 2, learnable_b: bool = False, norm: str = "none") -> nn.Module:
    return BcosResNet(56, num_classes, input_shape[0], width, b, max_out, learnable_b, norm)


@register_model("bcos-vgg9", description="B-cos v1 CIFAR-10 net: 9 B-cos convs, MaxOut 2 (published B=1..2.5)",
                default_input=(3, 32, 32), encoding="bcos6", target_layer="features.7", first_layer="features.0",
                classifier_layer="classifier", feature_layer="features", feature_pool="avg",
                family="bcos", paper=_V1, recipe=_RECIPE)
def bcos_vgg9(num_classes: int, input_shape: tuple[int, int, int], b: float = 2.0, max_out: int = 2,
              learnable_b: bool = False, width: float = 1.0, scale: float | None = None,
              temperature: float | None = None) -> nn.Module:
    return BcosVGG9(num_classes, input_shape[0], b, max_out, learnable_b, width, scale, temperature)


@register_model("bcos-lenet", description="LeNet-shaped B-cos net for small inputs (MNIST, digits)",
                default_input=(1, 28, 28), encoding="bcos6", target_layer="conv2", first_layer="conv1",
                classifier_layer="fc", feature_layer="fc2",
                family="bcos", paper=_V1, recipe=dict(_RECIPE, lr=5e-3, batch_size=128, epochs=20))
def bcos_lenet(num_classes: int, input_shape: tuple[int, int, int], width: int = 6, hidden: int = 120,
               b: float = 2.0, max_out: int = 2, learnable_b: bool = False) -> nn.Module:
    return BcosLeNet(num_classes, input_shape, width, hidden, b, max_out, learnable_b)


# ----------------------------------------------------------------------------------------
#   Explanations
# ----------------------------------------------------------------------------------------

def is_bcos(model: nn.Module) -> bool:
    net = getattr(model, "net", model)
    return isinstance(net, _BcosNet)


class BcosExplanation(NamedTuple):
    """``weights`` W_t(x) and ``contributions`` W_t(x) ⊙ x on the encoded input (N, C_enc, H, W);
    ``logits`` (N, classes); ``bias`` the fixed logit bias.  contributions.sum((1,2,3)) = logit_t - bias."""

    weights: torch.Tensor
    contributions: torch.Tensor
    logits: torch.Tensor
    bias: float


def contributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int) -> BcosExplanation:
    """The dynamic linear map W_target(x) of a B-cos model and the per-pixel contributions.

    ``model`` is a :class:`~interpcli.models.Classifier` with a B-cos network (images in
    [0, 1], encoded to [x, 1-x]) or a bare B-cos network (input already encoded).
    """
    if not is_bcos(model):
        raise ConfigError("contributions need a B-cos model (arch bcos-*)")
    net = getattr(model, "net", model)
    enc = model.encoder(x) if hasattr(model, "encoder") else x
    enc = enc.detach().clone().requires_grad_(True)
    target = torch.as_tensor(target, device=x.device).long().expand(len(x)) if not torch.is_tensor(target) or \
        target.dim() == 0 else target.to(x.device).long()
    with explanation_mode(net), torch.enable_grad():
        logits = net(enc)
        (w,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), enc)
    return BcosExplanation(w.detach(), (w * enc).detach(), logits.detach(), net.logit_bias)
