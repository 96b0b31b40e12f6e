"""``interp models``, ``interp datasets``, ``interp methods``: what the registries hold, as rows."""

from __future__ import annotations

from typing import Any

from ..data import get_dataset_info, list_datasets
from ..methods import get_method, list_methods
from ..models import create_model, get_model_info, list_models

__all__ = ["model_rows", "dataset_rows", "method_rows"]


def _encoded_input(info) -> tuple[int, int, int]:
    c, h, w = info.default_input
    return (2 * c if info.encoding == "bcos6" else c, h, w)


def model_rows() -> list[dict[str, Any]]:
    """One row per architecture: family, parameter count (10 classes, 3 for the pulse nets),
    default input, encoding, layers, options, recipe, description, paper."""
    rows = []
    for name in list_models():
        info = get_model_info(name)
        net = create_model(name, 10 if name not in ("pulse-cnn", "pulse-cnn-paper") else 3, _encoded_input(info))
        rows.append({"name": name, "family": info.family, "params": sum(p.numel() for p in net.parameters()),
                     "input": list(info.default_input), "encoding": info.encoding, "target_layer": info.target_layer,
                     "first_layer": info.first_layer, "feature_layer": info.feature_layer,
                     "classifier_layer": info.classifier_layer, "feature_pool": info.feature_pool,
                     "options": info.kwargs(), "recipe": info.recipe, "description": info.description,
                     "paper": info.paper})
    return rows


def dataset_rows() -> list[dict[str, Any]]:
    """One row per dataset: input shape, classes, whether it needs files, default augmentation."""
    rows = []
    for name in list_datasets():
        i = get_dataset_info(name)
        rows.append({"name": name, "input": list(i.input_shape) if i.input_shape else None,
                     "classes": i.num_classes, "needs_files": i.needs_files, "augment": i.augment,
                     "description": i.description})
    return rows


def method_rows() -> list[dict[str, Any]]:
    """One row per attribution method: kind, sign, class specificity, parameters and defaults,
    and each parameter's declaration (``params``: type, range or choices, ``accepts`` in words)."""
    return [{"name": n, "kind": (i := get_method(n)).kind, "signed": i.signed, "class_specific": i.class_specific,
             "uses_gradients": i.uses_gradients, "bcos_only": i.bcos_only, "defaults": i.defaults,
             "params": {k: p.as_dict() for k, p in i.params.items()},
             "description": i.description, "paper": i.paper} for n in list_methods()]
