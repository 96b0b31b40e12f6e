"""Architecture registry (the timm pattern): ``@register_model`` on a factory function.

A factory takes ``num_classes``, ``input_shape`` (C, H, W of the *encoded* input) and
its own keyword arguments, and returns an ``nn.Module`` mapping images to logits.
Adding an architecture is one small file with one decorated function.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ..errors import ConfigError, UnknownName

__all__ = ["ModelInfo", "register_model", "register_model_source", "create_model", "list_models", "get_model_info"]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of an architecture.

    Attributes:
        name: registry name (kebab-case).
        fn: the factory.
        description: one line for ``interp models``.
        default_input: (C, H, W) of the raw image the arch is meant for (for listing).
        encoding: input encoding the arch expects: ``normalize`` (per-channel mean/std of
            the training set), ``identity`` or ``bcos6`` ([r, g, b, 1-r, 1-g, 1-b]).
        target_layer: dotted path of the default layer for CAM-style methods.
        first_layer: dotted path of the first convolution (kernels, snapshots).
        classifier_layer: dotted path of the decision layer; its *input* is the model's
            penultimate representation (the features of ROSA/GDS, sparse decision layers).
        feature_layer: dotted path of the module whose output, reduced by ``feature_pool``,
            is that input (``None`` where the head computes it functionally, as ProtoPNet's
            similarities); the default layer for unit-level views.
        feature_pool: how a 4-D classifier input becomes one vector per image: ``avg``,
            ``max`` or ``flatten``.
        family: ``baseline``, ``bcos``, ``whitebox``, ...
        paper: reference URL.
        recipe: training defaults of the arch's paper (TrainConfig field -> value).
    """

    name: str
    fn: Callable[..., nn.Module]
    description: str
    default_input: tuple[int, int, int]
    encoding: str = "normalize"
    target_layer: str | None = None
    first_layer: str | None = None
    family: str = "baseline"
    paper: str | None = None
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    classifier_layer: str | None = None
    feature_layer: str | None = None
    feature_pool: str = "flatten"

    def kwargs(self) -> dict[str, Any]:
        """The factory's own keyword arguments and their defaults (a factory of another library's
        models, ``**kwargs``, takes what that library takes: see :attr:`open_kwargs`)."""
        sig = inspect.signature(self.fn)
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k not in ("num_classes", "input_shape") and p.default is not inspect.Parameter.empty
        }

    @property
    def open_kwargs(self) -> bool:
        """Whether the factory takes any keyword (``**kwargs``: checked by the library it calls)."""
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(self.fn).parameters.values())


_REGISTRY: dict[str, ModelInfo] = {}
# ``PREFIX:NAME`` architectures of other libraries (torchvision, timm), resolved on first use:
# not in list_models() (nor in the registry sweeps of the tests), but built, saved and rebuilt alike.
_SOURCES: dict[str, Callable[[str], ModelInfo]] = {}
_RESOLVED: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    description: str,
    default_input: tuple[int, int, int],
    encoding: str = "normalize",
    target_layer: str | None = None,
    first_layer: str | None = None,
    family: str = "baseline",
    paper: str | None = None,
    recipe: dict[str, Any] | None = None,
    classifier_layer: str | None = None,
    feature_layer: str | None = None,
    feature_pool: str = "flatten",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        if feature_pool not in ("avg", "max", "flatten"):
            raise ValueError(f"model '{name}': feature_pool must be avg, max or flatten")
        _REGISTRY[name] = ModelInfo(
            name, fn, description, tuple(default_input), encoding, target_layer, first_layer, family, paper,
            dict(recipe or {}), classifier_layer, feature_layer, feature_pool,
        )
        return fn

    return deco


def list_models(family: str | None = None) -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(n for n, i in _REGISTRY.items() if family is None or i.family == family)


def register_model_source(prefix: str, resolve: Callable[[str], ModelInfo]) -> None:
    """Resolve names ``PREFIX:NAME`` with ``resolve(NAME)`` (a :class:`ModelInfo` named
    ``PREFIX:NAME``; an :class:`~interpcli.errors.InterpError` for a name the source lacks)."""
    if prefix in _SOURCES:
        raise ValueError(f"model source '{prefix}' registered twice")
    _SOURCES[prefix] = resolve


def get_model_info(name: str) -> ModelInfo:
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _SOURCES:
        if name not in _RESOLVED:
            _RESOLVED[name] = _SOURCES[prefix](rest)
        return _RESOLVED[name]
    raise UnknownName("arch", name, list(_REGISTRY))


def create_model(name: str, num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    """Build the bare network ``name`` (no input encoding; see :class:`Classifier`)."""
    info = get_model_info(name)
    known = info.kwargs()
    unknown = sorted(set(kwargs) - set(known))
    if unknown and not info.open_kwargs:
        valid = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"arch '{name}' has no option {', '.join(unknown)}; its options: {valid}")
    try:
        return info.fn(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"arch '{name}' cannot be built with {kwargs or 'defaults'} "
                          f"for input {tuple(input_shape)}: {e}") from None
