"""VGG-9: the standard twin of the B-cos v1 CIFAR-10 network (``bcos-vgg9``).

Same depth, widths, kernels and strides (3x3 convolutions with 64, 64, 128, 128, 128, 256,
256, 256 channels, stride 2 at the third and sixth, a 1x1 convolution to the classes and
global average pooling), with BatchNorm and ReLU in place of the B-cos alignment, so
ablations compare like with like.  ``bias=True`` adds additive biases to the convolutions.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model

__all__ = ["VGG9"]


class VGG9(nn.Module):
    WIDTHS = (64, 64, 128, 128, 128, 256, 256, 256)
    STRIDES = (1, 1, 2, 1, 1, 2, 1, 1)

    def __init__(self, num_classes: int, in_chans: int = 3, width: float = 1.0, bias: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for w, s in zip(self.WIDTHS, self.STRIDES):
            w = max(1, round(w * width))
            # ReLU not in place: DeepLIFT's rescale rule reads each ReLU's input
            layers += [nn.Conv2d(c, w, 3, s, 1, bias=bias), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, num_classes, 1, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.classifier(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("vgg9", description="VGG-9: standard twin of bcos-vgg9 (BN + ReLU, 1x1 classifier, GAP)",
                default_input=(3, 32, 32), target_layer="features", first_layer="features.0",
                classifier_layer="classifier", feature_layer="features", feature_pool="avg",
                paper="https://arxiv.org/abs/2205.10268",
                recipe=dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                            batch_size=128, epochs=100))
def vgg9(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0, bias: bool = False) -> nn.Module:
    return VGG9(num_classes, input_shape[0], width, bias)
