"""Layers and representations of a model: the one place that knows where to look inside a network.

    phi = FeatureExtractor(model)            # penultimate representation, (N, D)
    phi = FeatureExtractor(model, "layer2")  # a named module's output, flattened
    with capture_output(layer_of(model, "layer3")) as store:
        model(x)                             # store["out"] is the layer's (graph-attached) output

Every architecture declares its ``classifier_layer`` (the decision layer) and its
``feature_layer`` in the model registry (:class:`~interpcli.models.ModelInfo`; a
:class:`~interpcli.models.Classifier` exposes them as attributes, and any other module may
set a ``classifier_layer`` attribute itself): the penultimate representation is the
classifier layer's *input*, a 4-D map reduced by the arch's ``feature_pool``.  Nothing is
guessed from parameter names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._base import resolve_layer

__all__ = ["FeatureExtractor", "feature_module", "capture_output", "layer_of", "reduce_features", "layer_shapes",
           "POOLS"]

POOLS = ("auto", "avg", "max", "flatten")


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


def layer_of(model: nn.Module, layer: str | None) -> nn.Module:
    """The named layer of ``model.net`` (default: the arch's CAM layer, ``target_layer``)."""
    name = layer or getattr(model, "target_layer", None)
    if not name:
        raise ConfigError("this method needs --layer (the model names no default layer)")
    return resolve_layer(_net(model), name)


@contextlib.contextmanager
def capture_output(module: nn.Module) -> Iterator[dict]:
    """Keep the (graph-attached) output of ``module`` in ``store['out']``; the hook is removed on exit."""
    store: dict = {}

    def hook(_m, _i, out):
        store["out"] = out

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def feature_module(model: nn.Module, layer: str | None) -> tuple[nn.Module | None, bool]:
    """(module, take_its_input): the declared classifier layer's input by default, else the
    named module's output; (None, False) for ``logits`` / ``probs``."""
    if layer in ("logits", "probs"):
        return None, False
    if layer:
        return resolve_layer(_net(model), layer), False
    name = getattr(model, "classifier_layer", None)
    if not name:
        raise ConfigError("the model declares no classifier layer (a `classifier_layer` attribute); pass --layer NAME")
    return resolve_layer(_net(model), name), True


def reduce_features(f: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) by ``avg`` or ``max`` over space; anything else flattened to (B, D)."""
    f = f.float()
    if f.dim() == 4 and pool == "avg":
        return f.mean((2, 3))
    if f.dim() == 4 and pool == "max":
        return f.amax((2, 3))
    return f.flatten(1)


class _Stop(Exception):
    """Raised by the hook to end the forward pass at the feature layer."""


class FeatureExtractor:
    """φ(x): (B, C, H, W) -> (B, d) float, the forward pass stopped at the feature layer.

    ``layer``: None (the penultimate representation: the classifier layer's input, pooled
    as the arch declares), ``logits``, ``probs`` or a module path (its output, flattened
    unless ``pool`` says otherwise).
    """

    def __init__(self, model: nn.Module, layer: str | None = None, pool: str = "auto"):
        if pool not in POOLS:
            raise ConfigError(f"pool must be {', '.join(POOLS)}; got '{pool}'")
        self.model, self.layer = model, layer
        self.module, self.take_input = feature_module(model, layer)
        if pool == "auto":
            pool = getattr(model, "feature_pool", "avg") if layer is None else "flatten"
        self.pool = pool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            out = self.model(x).float()
            return out.softmax(1) if self.layer == "probs" else out
        store: dict[str, torch.Tensor] = {}

        def stop(value: torch.Tensor) -> None:
            store["f"] = value
            raise _Stop

        if self.take_input:
            handle = self.module.register_forward_pre_hook(lambda _m, inputs: stop(inputs[0]))
        else:
            handle = self.module.register_forward_hook(lambda _m, _i, out: stop(out))
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "f" not in store:
            raise ConfigError(f"the feature layer was not reached in the forward pass (layer {self.layer!r})")
        return reduce_features(store["f"], self.pool)


def layer_shapes(model: nn.Module, shape: tuple[int, ...] | None = None) -> list[dict]:
    """Every named module of ``model.net`` in forward order, with its type, its output shape for
    one image of ``shape`` (default ``model.input_shape``; filled with 0.5) and its unit count
    (the output's dimension 1), after a first ``logits`` row: the names ``--layer`` takes."""
    net = _net(model)
    shape = tuple(shape or model.input_shape)
    seen: dict[str, dict] = {}
    handles = []
    for name, module in net.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name, module=module):
            if name not in seen:  # a module called twice: its first call
                ok = isinstance(out, torch.Tensor)
                seen[name] = {"name": name, "type": type(module).__name__,
                              "shape": list(out.shape[1:]) if ok else type(out).__name__,
                              "units": int(out.shape[1]) if ok and out.dim() >= 2 else None}

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            p = next(model.parameters(), None)
            logits = model(torch.full((1, *shape), 0.5, device=p.device if p is not None else None))
    finally:
        for h in handles:
            h.remove()
    return [{"name": "logits", "type": "output", "shape": list(logits.shape[1:]), "units": int(logits.shape[1])},
            *seen.values()]
