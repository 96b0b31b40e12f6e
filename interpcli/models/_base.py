"""The model every command sees: input encoding + registered network.

``Classifier`` takes images in [0, 1] (N, C, H, W) and returns logits.  Its ``encoder``
turns the images into what the network was trained on (per-channel normalisation, or
the six-channel B-cos encoding); its ``net`` is the registered architecture.  Keeping
the encoding inside the model means every attribution is with respect to image pixels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import ArtifactError, ConfigError, did_you_mean
from ._registry import create_model, get_model_info

__all__ = ["Classifier", "Normalize", "Identity", "BcosEncoding", "make_encoder", "resolve_layer", "first_layer"]


class Normalize(nn.Module):
    """(x - mean) / std per channel."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def out_channels(self, c: int) -> int:
        return c

    def spec(self) -> dict[str, Any]:
        return {"kind": "normalize", "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


class Identity(nn.Module):
    """Pixels in [0, 1] as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def out_channels(self, c: int) -> int:
        return c

    def spec(self) -> dict[str, Any]:
        return {"kind": "identity"}


class BcosEncoding(nn.Module):
    """[x, 1 - x] along channels (B-cos, Böhle et al. 2022): every colour is a unique direction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 1 - x], dim=1)

    def out_channels(self, c: int) -> int:
        return 2 * c

    def spec(self) -> dict[str, Any]:
        return {"kind": "bcos6"}


def make_encoder(spec: dict[str, Any]) -> nn.Module:
    kind = spec.get("kind")
    if kind == "normalize":
        return Normalize(spec["mean"], spec["std"])
    if kind == "identity":
        return Identity()
    if kind == "bcos6":
        return BcosEncoding()
    raise ArtifactError(f"unknown input encoding '{kind}'")


class Classifier(nn.Module):
    """``net(encoder(x))`` plus what interp needs to know of the model."""

    def __init__(
        self,
        arch: str,
        num_classes: int,
        input_shape: tuple[int, int, int],
        encoding: dict[str, Any],
        classes: list[str] | None = None,
        arch_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.arch = arch
        self.info = get_model_info(arch)
        self.arch_kwargs = dict(arch_kwargs or {})
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        if len(self.classes) != self.num_classes:
            raise ConfigError(f"{len(self.classes)} class names for {num_classes} classes")
        self.encoder = make_encoder(encoding)
        c, h, w = self.input_shape
        self.net = create_model(arch, self.num_classes, (self.encoder.out_channels(c), h, w), **self.arch_kwargs)
        self.meta: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(x))

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Classifier:
        return cls(
            meta["arch"], meta["num_classes"], meta["input_shape"], meta["encoding"], meta.get("classes"),
            meta.get("arch_kwargs"),
        )

    @property
    def target_layer(self) -> str | None:
        """The default layer of CAM methods (a path in ``net``)."""
        return self.info.target_layer

    @property
    def classifier_layer(self) -> str | None:
        """The decision layer (a path in ``net``); its input is the penultimate representation."""
        return self.info.classifier_layer

    @property
    def feature_layer(self) -> str | None:
        """The module whose output, pooled by ``feature_pool``, is the classifier layer's input."""
        return self.info.feature_layer

    @property
    def feature_pool(self) -> str:
        return self.info.feature_pool

    def layer(self, name: str) -> nn.Module:
        """A submodule of the network by dotted path (``layer3.2.conv2``, relative to ``net``)."""
        return resolve_layer(self.net, name)


def resolve_layer(module: nn.Module, name: str) -> nn.Module:
    """``layer3.2.conv2`` or ``layer3[-1]``: a submodule by dotted path with optional indices."""
    cur = module
    path = name.replace("[", ".").replace("]", "")
    for part in [p for p in path.split(".") if p]:
        try:
            if part.lstrip("-").isdigit() and isinstance(cur, (nn.Sequential, nn.ModuleList)):
                cur = cur[int(part)]
            else:
                cur = getattr(cur, part)
        except (AttributeError, IndexError):
            names = [n for n, _ in module.named_modules() if n]
            raise ConfigError(f"layer '{name}' not found{did_you_mean(name, names) or ';'} some layers: "
                              f"{', '.join(names[:12])}") from None
        if not isinstance(cur, nn.Module):
            raise ConfigError(f"'{name}' is not a layer")
    return cur


def first_layer(net: nn.Module, hint: str | None = None) -> nn.Module | None:
    """The first convolution (or linear layer) of ``net``: the kernels users look at."""
    if hint:
        return resolve_layer(net, hint)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) or (
            hasattr(m, "weight") and isinstance(m.weight, torch.Tensor) and m.weight.dim() == 4
        ):
            return m
    return None
