"""Architectures.  Each family lives in one file and registers itself on import."""

from ._registry import ModelInfo, create_model, get_model_info, list_models, register_model
from ._base import Classifier, first_layer, resolve_layer
from . import resnet_cifar, small_cnn, airbench, vgg_cifar  # noqa: F401  (registration side effects)
from . import bcos  # noqa: F401,E402
from . import whitebox  # noqa: F401,E402
from . import protopnet  # noqa: F401,E402

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
