"""interp: a command-line workbench for interpretability research on image classifiers.

The library is the product; the ``interp`` command is a thin layer over it.  The flat
public API below is what every command calls::

    from interpcli import load_model, load_dataset, train, TrainConfig, evaluate, attribute
    from interpcli import explain_checkpoint, occlude_checkpoint, Attributions, InputSpec

``import interpcli`` is cheap: each name is imported from its module on first use (PEP 562
``__getattr__`` below), so ``interp --version`` and ``interp info`` never load torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it (imported on first access)
_LAZY = {
    "InterpError": ".errors",
    "resolve_device": ".device",
    "seed_everything": ".device",
    "CHECKPOINT_FORMAT_VERSION": ".metadata",
    "read_metadata": ".metadata",
    "save_checkpoint": ".artifacts",
    "load_checkpoint": ".artifacts",
    "load_model": ".artifacts",
    "list_datasets": ".data",
    "load_dataset": ".data",
    "create_model": ".models",
    "list_models": ".models",
    "TrainConfig": ".training",
    "train": ".ops.train",
    "evaluate": ".evaluate",
    "evaluate_checkpoint": ".ops.evaluate",
    "attribute": ".methods",
    "get_method": ".methods",
    "list_methods": ".methods",
    "Attributions": ".attributions",
    "Inputs": ".inputs",
    "InputSpec": ".inputs",
    "explain": ".ops.explain",
    "explain_checkpoint": ".ops.explain",
    "occlude_checkpoint": ".ops.occlude",
    "noise_grad_checkpoint": ".ops.noise_grad",
    "kernels_checkpoint": ".ops.kernels",
    "sparsify_checkpoint": ".ops.sparsify",
    "compare_runs": ".ops.compare",
    "build_report": ".ops.report",
    "plot_logs": ".ops.plot_log",
    "import_model": ".ops.import_model",
}

__all__ = ["__version__", "InterpError", "resolve_device", "seed_everything", "CHECKPOINT_FORMAT_VERSION",
           "save_checkpoint", "load_checkpoint", "load_model", "read_metadata", "list_datasets", "load_dataset",
           "create_model", "list_models", "TrainConfig", "train", "evaluate", "evaluate_checkpoint", "attribute",
           "get_method", "list_methods", "Attributions", "Inputs", "InputSpec", "explain", "explain_checkpoint",
           "occlude_checkpoint",
           "noise_grad_checkpoint", "kernels_checkpoint",
           "sparsify_checkpoint", "import_model",
           "compare_runs", "build_report", "plot_logs"]  # = "__version__" and the keys of _LAZY (a test checks)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interpcli' has no attribute '{name}'")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps the function ``interpcli.evaluate`` when the submodule of that name is imported
    (Python would otherwise bind the module over it, as an eager ``from .evaluate import
    evaluate`` used to prevent)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from .artifacts import load_checkpoint, load_model, save_checkpoint
    from .attributions import Attributions
    from .data import list_datasets, load_dataset
    from .device import resolve_device, seed_everything
    from .errors import InterpError
    from .evaluate import evaluate
    from .inputs import Inputs, InputSpec
    from .metadata import CHECKPOINT_FORMAT_VERSION, read_metadata
    from .methods import attribute, get_method, list_methods
    from .models import create_model, list_models
    from .ops.compare import compare_runs
    from .ops.evaluate import evaluate_checkpoint
    from .ops.explain import explain, explain_checkpoint
    from .ops.import_model import import_model
    from .ops.kernels import kernels_checkpoint
    from .ops.noise_grad import noise_grad_checkpoint
    from .ops.occlude import occlude_checkpoint
    from .ops.plot_log import plot_logs
    from .ops.report import build_report
    from .ops.sparsify import sparsify_checkpoint
    from .ops.train import train
    from .training import TrainConfig
