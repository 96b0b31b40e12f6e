"""Attribution-method registry: ``@register_method`` on a function with one signature.

    fn(model, x, target, *, batch_size=None, **params) -> Tensor

``model`` is a :class:`~interpcli.models.Classifier` (images in [0, 1] -> logits), ``x`` a
float batch (N, C, H, W) on the model's device, ``target`` int64 (N,) class indices.  The
result is (N, C, H, W) (per input channel) or (N, 1, H, W) (one map per image, for CAM and
perturbation methods), float32, detached.  Adding a method is one file with one decorated
function and its import in ``methods/__init__.py``; the decorator declares every parameter of
``defaults`` in ``params`` (:mod:`.params`: ``integer(min=1)``, ``number(gt=0)``,
``one_of(...)``...), and :func:`attribute` checks and coerces the values with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ..batching import cpu_forward_batch
from ..device import full_precision
from ..errors import ConfigError, UnknownName
from ..fastpath import fast_model_for_layer
from ..inputs import as_targets
from ..models import Classifier
from ..models.bcos import is_bcos
from ._common import auto_batch_size
from .params import Param, check_params

__all__ = ["MethodInfo", "register_method", "get_method", "list_methods", "attribute"]


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method.

    Attributes:
        name: registry name (``interp explain --method NAME``).
        fn: the attribution function.
        description: one line for listings.
        kind: ``gradient``, ``cam``, ``perturbation`` or ``model`` (model-specific).
        uses_gradients: needs backward passes (else runs under inference mode).
        class_specific: the map depends on the target class.
        signed: values can be negative (diverging colour map) or not (sequential).
        needs_layer: takes a ``layer`` parameter (default: the arch's target layer).
        bcos_only: only for B-cos models.
        complete: the attributions sum to f_t(x) - f_t(baseline) (``baseline`` and ``seed``
            parameters); ``interp explain`` records the gap per row and warns when it is large.
        defaults: default parameters (documented, recorded in artifacts).
        params: the declaration of each parameter in ``defaults`` (type, range, choices:
            :mod:`.params`); :func:`attribute` checks and coerces every value with it.
        paper: reference URL.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    kind: str
    uses_gradients: bool
    class_specific: bool = True
    signed: bool = True
    needs_layer: bool = False
    bcos_only: bool = False
    complete: bool = False
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: dict[str, Param] = dataclasses.field(default_factory=dict)
    paper: str | None = None

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` checked against the declarations and coerced to their types (unknown
        names and bad values: :class:`~interpcli.errors.ConfigError`)."""
        return check_params(self.name, self.params, params)


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(name: str, **info: Any) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' registered twice")
        m = MethodInfo(name=name, fn=fn, **info)
        if set(m.params) != set(m.defaults):
            raise ValueError(f"method '{name}': declare every parameter in params= (and no other): "
                             f"{', '.join(sorted(set(m.params) ^ set(m.defaults)))}")
        if m.check(m.defaults) != m.defaults:
            raise ValueError(f"method '{name}': a default does not pass its declaration")
        _REGISTRY[name] = m
        return fn

    return deco


def list_methods(kind: str | None = None) -> list[str]:
    return sorted(n for n, i in _REGISTRY.items() if kind is None or i.kind == kind)


def get_method(name: str) -> MethodInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownName("method", name, list(_REGISTRY)) from None


def attribute(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | int, method: str,
              batch_size: int | None = None, *, fast: bool = True, compile: bool = False, tf32: bool = False,
              **params: Any) -> torch.Tensor:
    """Attributions of ``method`` for ``target`` (an int or (N,) classes) on images ``x``.

    Every parameter is checked and coerced to its declared type (:mod:`.params`; ``"4"`` for an
    integer is 4).  Unknown parameters, values of the wrong type or out of range, a target out
    of range and B-cos-only methods on other models are :class:`~interpcli.errors.ConfigError`.
    The model is put in eval mode.  With ``fast`` (default) a
    :class:`~interpcli.models.Classifier` runs on the eval fast path
    (:func:`interpcli.fastpath.fast_model`: BatchNorm folded into the convolutions,
    channels_last; a cached copy, the model itself is not modified); ``compile`` also
    compiles that copy with ``torch.compile``.  Other modules run as given.  On CUDA the method
    runs in full float32 (no TF32 in matmuls and convolutions) unless ``tf32``: TF32 is 2-3x
    faster on recent GPUs but moves attributions by ~1e-3 relative.  Without
    ``batch_size``, CUDA runs pick one from the free memory (:func:`~._common.auto_batch_size`),
    perturbation methods on the CPU one whose layer outputs stay in the cache
    (:func:`interpcli.batching.cpu_forward_batch`); otherwise each method's default.
    """
    info = get_method(method)
    params = info.check(params)
    if info.bcos_only and not is_bcos(model):
        raise ConfigError(f"method '{method}' needs a B-cos model (arch bcos-*)")
    target = as_targets(target, len(x), getattr(model, "num_classes", None), x.device)
    model.eval()
    kwargs = {**info.defaults, **params}
    if batch_size is None and x.device.type == "cuda":
        batch_size = auto_batch_size(model, x, per_item_factor=3.0 if info.uses_gradients else 1.0)
    run = _fast_model_for(model, info, kwargs, fast, compile) if (fast or compile) and isinstance(model, Classifier) \
        else model
    if batch_size is None and x.device.type == "cpu" and info.kind == "perturbation":
        batch_size = cpu_forward_batch(run, x)  # forward-bound: a batch whose layer outputs stay in the cache
    # Full float32 on CUDA unless ``tf32``: TF32 moves attributions by ~1e-3 (docs/fidelity.md).
    with contextlib.nullcontext() if tf32 else full_precision():
        out = info.fn(run, x, target, batch_size=batch_size, **kwargs)
    return out.detach().float().contiguous()


def _fast_model_for(model: torch.nn.Module, info: MethodInfo, kwargs: dict[str, Any], fast: bool,
                    compile: bool) -> torch.nn.Module:
    """The fast-path copy a method runs on (unfolded where it hooks a folded conv); the fast
    path is for interp's own models (encoder + net), other modules run as given."""
    layer = (kwargs.get("layer") or getattr(model, "target_layer", None)) if (
        info.needs_layer or "layer" in info.defaults) else None
    return fast_model_for_layer(model, layer, fast=fast, compile=compile)
