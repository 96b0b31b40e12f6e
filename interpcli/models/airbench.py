"""The airbench94 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single
GPU", https://arxiv.org/abs/2404.00498; ../shared/METHODS.md section 6.3).

A frozen 2x2 whitening convolution initialised from the eigenvectors of the training
patches' covariance, GELU, three ConvGroups (conv3x3 -> maxpool2 -> BN -> GELU ->
conv3x3 -> BN -> GELU) of widths 64/256/256 with BatchNorm weights frozen at 1, a
global max pool and a bias-free linear head scaled by 1/9.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model

__all__ = ["AirbenchNet"]


class _BN(nn.BatchNorm2d):
    def __init__(self, c: int):
        super().__init__(c, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)  # airbench freezes the BN scale at 1


class _Conv(nn.Conv2d):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1, bias=False)
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])  # identity-initialised first in_channels filters


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = _Conv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _BN(c_out)
        self.conv2 = _Conv(c_out, c_out)
        self.norm2 = _BN(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, int, int] = (64, 256, 256),
                 scaling: float = 1 / 9):
        super().__init__()
        whiten_width = 2 * in_chans * 2 * 2
        self.whiten = nn.Conv2d(in_chans, whiten_width, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        self.layer1 = ConvGroup(whiten_width, widths[0])
        self.layer2 = ConvGroup(widths[0], widths[1])
        self.layer3 = ConvGroup(widths[1], widths[2])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)
        self.scaling = scaling
        self.num_features = widths[2]

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening weights: eigenvectors of the 2x2-patch covariance of ``x`` (encoded images)."""
        c = x.shape[1]
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, c, 2, 2).flatten(1)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov.double())
        eigval, eigvec = eigval.flip(0).float(), eigvec.T.flip(0).float()
        w = (eigvec / torch.sqrt(eigval.clamp_min(0) + eps)[:, None]).reshape(-1, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([w, -w]).to(self.whiten.weight))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1)) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    "airbench94", description="fast CIFAR net of airbench94: whitening conv + 3 ConvGroups (64/256/256)",
    default_input=(3, 32, 32), target_layer="layer3", first_layer="whiten",
    classifier_layer="fc", feature_layer="layer3", feature_pool="max", paper="https://arxiv.org/abs/2404.00498",
    recipe=dict(optimizer="sgd", lr=0.8, momentum=0.85, weight_decay=5e-4, label_smoothing=0.2, batch_size=1024,
                epochs=10, schedule="onecycle", translate=2),
)
def airbench94(num_classes: int, input_shape: tuple[int, int, int], widths: list[int] = [64, 256, 256],  # noqa: B006
               scaling: float = 1 / 9) -> nn.Module:
    if len(widths) != 3:
        raise ValueError("widths must have three entries")
    return AirbenchNet(num_classes, input_shape[0], tuple(widths), scaling)

