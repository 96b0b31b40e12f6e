"""Architectures.  Each family lives in one file and registers itself on import."""

from . import (  # noqa: F401  (registration side effects)
    airbench,
    bcos,  # noqa: F401,E402
    external,  # noqa: F401  (torchvision:NAME and timm:NAME, resolved on use)
    protopnet,  # noqa: F401,E402
    resnet_cifar,
    small_cnn,
    vgg_cifar,
    whitebox,  # noqa: F401,E402
)
from ._base import Classifier, first_layer, resolve_layer
from ._registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = [
    "ModelInfo",
    "register_model",
    "create_model",
    "get_model_info",
    "list_models",
    "Classifier",
    "resolve_layer",
    "first_layer",
]
