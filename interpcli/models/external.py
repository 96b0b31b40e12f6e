"""Architectures defined by other libraries: ``torchvision:NAME`` and ``timm:NAME``.

``torchvision:resnet18`` is the classification model ``resnet18`` of
``torchvision.models.list_models()``, built by ``torchvision.models.get_model(NAME,
weights=None, num_classes=N, **arch_kwargs)``; ``timm:convnext_tiny`` is timm's, built by
``timm.create_model(NAME, pretrained=False, num_classes=N, **arch_kwargs)`` (timm is the
optional extra ``pip install 'interpcli[timm]'``).  Weights are never downloaded: the network
starts random, and ``interp import`` loads a user's own weights into it and writes an
ordinary checkpoint whose ``arch`` is that name, so :func:`~interpcli.artifacts.load_model`
rebuilds it through the registry like any other arch (``register_model_source``).

Each torchvision family names its layers below (CAM layer, first convolution, decision
layer, feature layer, as ``@register_model`` does); timm models name their first convolution
and classifier in their pretrained config, and their CAM layer is the last stage of their
``feature_info`` when it outputs a channels-first spatial map.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._registry import ModelInfo, get_model_info, register_model_source

__all__ = ["torchvision_names", "timm_module", "default_preprocessing", "adapt_kwargs", "IMAGENET_MEAN",
           "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TIMM_MISSING = "timm is not installed; `pip install 'interpcli[timm]'` (or `pip install timm`) to use timm:NAME"

# (pattern, target_layer, first_layer, classifier_layer, feature_layer, feature_pool, default side)
_TV_FAMILIES: list[tuple[str, str | None, str, str, str | None, str, int]] = [
    (r"resnet|resnext|wide_resnet", "layer4", "conv1", "fc", "layer4", "avg", 224),
    (r"regnet_", "trunk_output", "stem.0", "fc", "trunk_output", "avg", 224),
    (r"vgg", "features", "features.0", "classifier.6", "classifier.5", "flatten", 224),
    (r"alexnet", "features", "features.0", "classifier.6", "classifier.5", "flatten", 224),
    (r"densenet", "features", "features.conv0", "classifier", None, "flatten", 224),  # relu is functional
    (r"efficientnet|mobilenet_v2", "features", "features.0.0", "classifier.1", "features", "avg", 224),
    (r"mobilenet_v3", "features", "features.0.0", "classifier.3", "classifier.2", "flatten", 224),
    (r"mnasnet", "layers", "layers.0", "classifier.1", "layers", "avg", 224),
    (r"shufflenet", "conv5", "conv1.0", "fc", "conv5", "avg", 224),
    (r"squeezenet", "features", "features.0", "classifier.1", "features", "avg", 224),
    (r"convnext", "features", "features.0.0", "classifier.2", "classifier.1", "flatten", 224),
    (r"swin", "permute", "features.0.0", "head", "flatten", "flatten", 224),  # permute: NHWC back to NCHW
    (r"maxvit", "blocks.3", "stem.0.0", "classifier.5", "classifier.4", "flatten", 224),  # maxvit_t: 4 blocks
    (r"vit_", None, "conv_proj", "heads.head", None, "flatten", 224),  # tokens, not a spatial map
    (r"googlenet", "inception5b", "conv1.conv", "fc", "inception5b", "avg", 224),
    (r"inception_v3", "Mixed_7c", "Conv2d_1a_3x3.conv", "fc", "Mixed_7c", "avg", 299),
]


def torchvision_names() -> list[str]:
    """torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision.models as tvm  # noqa: PLC0415 (heavy, ~1 s: imported when a torchvision arch is used)

    return tvm.list_models(module=tvm)


def timm_module() -> Any:
    """The ``timm`` package; a :class:`~interpcli.errors.ConfigError` saying how to install it."""
    try:
        import timm  # noqa: PLC0415 (the optional extra)
    except ImportError:
        raise ConfigError(_TIMM_MISSING) from None
    return timm


def _unknown(source: str, name: str, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    where = ("torchvision.models.list_models()" if source == "torchvision" else "timm.list_models()")
    return ConfigError(f"unknown {source} model '{name}'{hint} (the names of {where}; "
                       f"{len(names)} of them)")


def _side(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    c, h, w = (int(s) for s in input_shape)
    if c != 3:
        raise ValueError(f"these models take 3-channel (RGB) images, not {c}")
    return c, h, w


def _torchvision_factory(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
        import torchvision.models as tvm  # noqa: PLC0415 (heavy)

        _, h, w = _side(input_shape)
        if name.startswith("vit_"):  # position embeddings are sized for the input
            if h != w:
                raise ValueError("ViTs take square images")
            kwargs.setdefault("image_size", h)
        if name.startswith("maxvit"):
            kwargs.setdefault("input_size", (h, w))
        try:
            with warnings.catch_warnings():  # googlenet/inception: torchvision's notice on weight init
                warnings.simplefilter("ignore")
                return tvm.get_model(name, weights=None, num_classes=int(num_classes), **kwargs)
        except (AssertionError, RuntimeError) as e:  # torch._assert in the constructors
            raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    build.__name__ = build.__qualname__ = f"torchvision_{name}"
    return build


def _torchvision_info(name: str) -> ModelInfo:
    names = torchvision_names()
    if name not in names:
        raise _unknown("torchvision", name, names)
    row = next((r for r in _TV_FAMILIES if re.match(r[0], name)), None)
    target, first, head, feature, pool, side = row[1:] if row else (None, None, None, None, "flatten", 224)
    return ModelInfo(f"torchvision:{name}", _torchvision_factory(name),
                     f"torchvision's {name} (weights=None; your weights: interp import)", (3, side, side),
                     "normalize", target, first, "torchvision", "https://pytorch.org/vision/stable/models.html",
                     {}, head, feature, pool)


def _timm_factory(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, input_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
        timm = timm_module()
        _, h, w = _side(input_shape)
        size = tuple(timm.get_pretrained_cfg_value(name, "input_size") or (3, 224, 224))[1:]
        if (h, w) != size and "img_size" not in kwargs:
            try:  # transformers size their position embeddings; convolutional nets take no img_size
                return timm.create_model(name, pretrained=False, num_classes=int(num_classes), img_size=(h, w),
                                         **kwargs)
            except TypeError:
                pass
        return timm.create_model(name, pretrained=False, num_classes=int(num_classes), **kwargs)

    build.__name__ = build.__qualname__ = f"timm_{name}"
    return build


def _one(v: Any) -> str | None:
    return (v[0] if v else None) if isinstance(v, (list, tuple)) else v


def _timm_cam_layer(net: nn.Module, side: tuple[int, int]) -> str | None:
    """The last stage of timm's ``feature_info`` when its output is an (N, C, H, W) map with
    H * W > 1 (a transformer's token sequence or (N, H, W, C) stages are not), or None; ``net``
    is on the meta device."""
    info = getattr(net, "feature_info", None)
    last = info[-1] if isinstance(info, list) and info and isinstance(info[-1], dict) else {}
    name, seen = last.get("module"), {}
    try:
        module = net.get_submodule(name) if name else None
    except AttributeError:
        return None
    if module is None:
        return None
    handle = module.register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, *side, device="meta"))
    except Exception:  # an op without a meta kernel: no default CAM layer (pass --param layer=NAME)
        return None
    finally:
        handle.remove()
    out = seen.get("out")
    ok = (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == last.get("num_chs")
          and out.shape[2] * out.shape[3] > 1)
    return name if ok else None


def _timm_info(name: str) -> ModelInfo:
    timm = timm_module()
    if not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    side = tuple(cfg.get("input_size") or (3, 224, 224))
    try:  # shapes only: built and run on the meta device, no memory, no arithmetic
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False, num_classes=2)
        target = _timm_cam_layer(net, side[1:])
    except Exception:
        target = None
    return ModelInfo(f"timm:{name}", _timm_factory(name), f"timm's {name} (pretrained=False; your weights: "
                     "interp import)", side, "normalize", target, _one(cfg.get("first_conv")),
                     "timm", "https://github.com/huggingface/pytorch-image-models", {}, _one(cfg.get("classifier")),
                     None, "flatten")


def default_preprocessing(arch: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input side, mean, std) an arch of a library is usually fed: torchvision's ImageNet
    statistics (and 224, 299 for Inception v3), a timm model's pretrained config."""
    side = get_model_info(arch).default_input[1]
    if arch.startswith("timm:"):
        cfg = timm_module().get_pretrained_cfg(arch.split(":", 1)[1])
        if cfg is not None and cfg.mean and cfg.std:
            return side, tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)
    return side, IMAGENET_MEAN, IMAGENET_STD


def adapt_kwargs(arch: str, keys: set[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Options the weights imply: torchvision's GoogLeNet and Inception v3 are built with
    auxiliary heads, which weights saved without them (as torchvision's own) lack."""
    out = dict(kwargs)
    if arch in ("torchvision:googlenet", "torchvision:inception_v3") and not any(k.startswith("aux") or
                                                                                k.startswith("AuxLogits")
                                                                                for k in keys):
        out.setdefault("aux_logits", False)
    return out


register_model_source("torchvision", _torchvision_info)
register_model_source("timm", _timm_info)
