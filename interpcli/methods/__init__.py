"""Attribution methods.  Each family lives in one file and registers itself on import."""

from . import bcos, cam, gradient, perturbation, propagation, representation, surrogate  # noqa: F401  (registration side effects)
from ._registry import MethodInfo, attribute, get_method, list_methods, register_method
from .params import Param

__all__ = ["MethodInfo", "Param", "register_method", "get_method", "list_methods", "attribute"]
