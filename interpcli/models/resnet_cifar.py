"""CIFAR ResNets (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, section 4.2; https://arxiv.org/abs/1512.03385).

Depth 6n + 2: a 3x3 stem with 16 channels, three stages of n basic blocks with 16, 32
and 64 channels (stride 2 at the start of stages 2 and 3), global average pooling and a
linear classifier.  Shortcuts that change shape are 1x1 convolutions with BatchNorm
(option B), as in the B-cos papers' CIFAR baselines.  ``bias=True`` adds additive biases
to the convolutions (the B-cos ablation compares networks with and without them).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model

__all__ = ["CifarResNet", "BasicBlock"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(c_out)
        # One ReLU module per use, not in place: propagation rules (DeepLIFT, guided backprop) hook modules.
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=bias), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_chans: int = 3, width: int = 16, bias: bool = False):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110); got {depth}")
        n = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        layers, c = [], width
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1, bias))
                c = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_PAPER = "https://arxiv.org/abs/1512.03385"
_RECIPE = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", batch_size=128, epochs=100)


@register_model(
    "resnet20", description="CIFAR ResNet-20 (He et al. 2016), 0.27M params", default_input=(3, 32, 32),
    target_layer="layer3", first_layer="conv1", paper=_PAPER, recipe=_RECIPE,
    classifier_layer="fc", feature_layer="layer3", feature_pool="avg",
)
def resnet20(num_classes: int, input_shape: tuple[int, int, int], width: int = 16, bias: bool = False) -> nn.Module:
    return CifarResNet(20, num_classes, input_shape[0], width, bias)


@register_model(
    "resnet56", description="CIFAR ResNet-56 (He et al. 2016), 0.85M params", default_input=(3, 32, 32),
    target_layer="layer3", first_layer="conv1", paper=_PAPER, recipe=_RECIPE,
    classifier_layer="fc", feature_layer="layer3", feature_pool="avg",
)
def resnet56(num_classes: int, input_shape: tuple[int, int, int], width: int = 16, bias: bool = False) -> nn.Module:
    return CifarResNet(56, num_classes, input_shape[0], width, bias)
