"""Attribution methods.  Each family lives in one file and registers itself on import."""

from ._registry import MethodInfo, attribute, get_method, list_methods, register_method
from . import gradient, cam, bcos, perturbation, propagation, surrogate, representation  # noqa: F401  (registration side effects)

__all__ = ["MethodInfo", "register_method", "get_method", "list_methods", "attribute"]
