"""The decision layer of a model: find it, read it, and put a sparse one in its place.

A model can take a sparse layer when its declared classifier layer (``classifier_layer`` in the
model registry) is an ``nn.Linear`` or a 1x1 ``nn.Conv2d`` *with a bias*, mapping the pooled
penultimate representation (d features) to the C logits: resnet20, resnet56, vgg9 (its 1x1
convolution before global average pooling commutes with the pooling), lenet, pulse-cnn.  The
sparse layer keeps the shape, so the checkpoint rebuilds with the same arch and ``load_model``:
it is a dense layer with zeros, with the standardisation of the features folded in::

    W' = W / std,   b' = b - W' · mean      (logits = W z + b, z = (x - mean) / std)

Other decision layers (B-cos layers, layers without a bias, ProtoPNet's prototype head,
max-pooled features) are refused with a :class:`~interpcli.errors.ConfigError`; their features
can still be sparsified from a file (``--features``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models import resolve_layer

__all__ = ["decision_layer", "layer_weights", "set_layer_weights", "fold_standardisation", "unfold_standardisation",
           "check_affine", "sparse_model"]

_HOW = ("sparsify replaces an nn.Linear (or 1x1 Conv2d) decision layer with a bias, over the pooled penultimate "
        "features (resnet20, resnet56, vgg9, lenet, pulse-cnn); for other models extract features yourself and use "
        "--features FEATS.npz")


def decision_layer(model: nn.Module) -> nn.Module:
    """The model's declared classifier layer, if a sparse layer can replace it (else ConfigError)."""
    name = getattr(model, "classifier_layer", None)
    arch = getattr(model, "arch", type(model).__name__)
    if not name:
        raise ConfigError(f"arch '{arch}' declares no classifier layer, so its penultimate features cannot be "
                          f"found; {_HOW}")
    layer = resolve_layer(getattr(model, "net", model), name)
    kind = type(layer).__name__
    if isinstance(layer, nn.Conv2d) and (layer.kernel_size != (1, 1) or layer.groups != 1):
        raise ConfigError(f"arch '{arch}': its classifier layer '{name}' is a {layer.kernel_size} Conv2d; {_HOW}")
    if type(layer) not in (nn.Linear, nn.Conv2d):
        raise ConfigError(f"arch '{arch}': its classifier layer '{name}' is a {kind}, not a Linear layer; {_HOW}")
    if layer.bias is None:
        raise ConfigError(f"arch '{arch}': its classifier layer '{name}' has no bias, where the sparse layer's "
                          f"intercept (and the folded standardisation) would go; {_HOW}")
    return layer


def layer_weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, d), b (C,)) float64 on the CPU."""
    W = layer.weight.detach().double().cpu()
    return W.reshape(W.shape[0], -1), layer.bias.detach().double().cpu()


def set_layer_weights(layer: nn.Module, W: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(W.reshape(layer.weight.shape).to(layer.weight))
        layer.bias.copy_(b.to(layer.bias))


def fold_standardisation(W: torch.Tensor, b: torch.Tensor, mean: torch.Tensor,
                         std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer on standardised features -> the same layer on raw features (float64)."""
    Wr = W.double() / std.double()
    return Wr, b.double() - Wr @ mean.double()


def unfold_standardisation(W: torch.Tensor, b: torch.Tensor, mean: torch.Tensor,
                           std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer on raw features -> the same layer on standardised features (float64)."""
    return W.double() * std.double(), b.double() + W.double() @ mean.double()


def check_affine(model: nn.Module, images: torch.Tensor, features: torch.Tensor, layer: nn.Module) -> None:
    """The model's logits on ``images`` (uint8) must be ``features`` x the layer (+ bias): else the
    classifier layer does not act on the pooled features alone (ConfigError)."""
    W, b = layer_weights(layer)
    dev = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(images.to(dev).float() / 255).double().cpu()
    expect = features.double() @ W.T + b
    scale = float(expect.abs().max()) or 1.0
    err = float((logits - expect).abs().max())
    if err > 1e-3 * scale + 1e-4:
        raise ConfigError(f"arch '{getattr(model, 'arch', '?')}': its logits are not its classifier layer applied to "
                          f"the pooled penultimate features (max difference {err:.3g}); {_HOW}")


def sparse_model(model: nn.Module, W: torch.Tensor, b: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose decision layer is (W, b) on features standardised by (mean, std)."""
    out = copy.deepcopy(model)
    Wr, br = fold_standardisation(W, b, mean, std)
    set_layer_weights(decision_layer(out), Wr, br)
    return out
