"""A small ProtoPNet (Chen, Li, Tao, Barnett, Su, Rudin, "This Looks Like That: Deep Learning
for Interpretable Image Recognition", NeurIPS 2019; https://arxiv.org/abs/1806.10574).

CIFAR ResNet-20 features (8x8x64 on a 32x32 input) -> add-on 1x1 convolutions ending in a
sigmoid -> squared L2 distance of every prototype to every latent patch -> global min
pooling -> similarity log((d + 1) / (d + 1e-4)) -> a linear layer initialised +1 for the
prototype's own class and -0.5 for the others (``../shared/METHODS.md`` section 7).

Only the network is here: it trains with plain cross-entropy through ``interp train``.
The cluster and separation losses, the L1 on the last layer, the warm/joint/last-layer
schedule and the prototype push (projection onto training patches) are not implemented.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model
from .resnet_cifar import CifarResNet

__all__ = ["PrototypeLayer", "ProtoPNet", "log_similarity"]

EPS = 1e-4


def log_similarity(d: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """ProtoPNet's 'log' activation: large when the distance is small, log(1/eps) at d = 0."""
    return torch.log((d + 1) / (d + eps))


class PrototypeLayer(nn.Module):
    """``P`` prototypes of shape (D, h, w); maps (N, D, H, W) to squared distances (N, P, H', W').

    ||z - p||^2 = sum(z^2) - 2 <z, p> + sum(p^2) over each patch, all three terms by
    convolution (ProtoPNet's ``_l2_convolution``), clamped at 0 against rounding.
    Prototypes start uniform in [0, 1), the range of the sigmoid add-on.
    """

    def __init__(self, num_prototypes: int, dim: int, size: int = 1):
        super().__init__()
        self.prototypes = nn.Parameter(torch.rand(num_prototypes, dim, size, size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p = self.prototypes
        z2 = F.conv2d(z * z, torch.ones_like(p[:1]))
        zp = F.conv2d(z, p)
        p2 = (p * p).sum((1, 2, 3)).view(1, -1, 1, 1)
        return F.relu(z2 - 2 * zp + p2)


class ProtoPNet(nn.Module):
    """Encoder, add-on, prototype layer, min pooling, log similarity, last layer.

    Prototype j belongs to class ``j // prototypes_per_class``.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, prototypes_per_class: int = 10, prototype_dim: int = 64,
                 depth: int = 20, width: int = 16):
        super().__init__()
        self.encoder = CifarResNet(depth, num_classes, in_chans, width)
        self.encoder.fc = nn.Identity()  # the prototype head replaces the encoder's classifier
        c = self.encoder.num_features
        d = prototype_dim
        self.add_on = nn.Sequential(nn.Conv2d(c, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1), nn.Sigmoid())
        self.num_prototypes = prototypes_per_class * num_classes
        self.prototypes = PrototypeLayer(self.num_prototypes, prototype_dim)
        self.last_layer = nn.Linear(self.num_prototypes, num_classes, bias=False)
        self.register_buffer("prototype_class", torch.arange(self.num_prototypes) // prototypes_per_class,
                             persistent=False)
        own = F.one_hot(self.prototype_class, num_classes).T.float()
        with torch.no_grad():
            self.last_layer.weight.copy_(own - 0.5 * (1 - own))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The latent patches (N, D, H, W) the prototypes are compared with."""
        return self.add_on(self.encoder.forward_features(x))

    def min_distance_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distances (N, P, H, W) of every prototype to every latent patch; their
        spatial minimum is the distance that enters the similarity."""
        return self.prototypes(self.forward_features(x))

    def prototype_similarities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, P): log((d + 1) / (d + 1e-4)) of each prototype's minimum distance."""
        return log_similarity(self.min_distance_maps(x).amin(dim=(2, 3)))

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.last_layer(log_similarity(self.prototypes(z).amin(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    "protopnet", description="ProtoPNet head (10 prototypes/class, 64-d, 1x1) on CIFAR ResNet-20 features",
    default_input=(3, 32, 32), target_layer="add_on", first_layer="encoder.conv1", family="prototype",
    classifier_layer="last_layer",
    paper="https://arxiv.org/abs/1806.10574",
    recipe=dict(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=128, epochs=30, weight_decay=0.0),
)
def protopnet(num_classes: int, input_shape: tuple[int, int, int], prototypes_per_class: int = 10,
              prototype_dim: int = 64, depth: int = 20, width: int = 16) -> nn.Module:
    return ProtoPNet(num_classes, input_shape[0], prototypes_per_class, prototype_dim, depth, width)
