"""interp: a command-line workbench for interpretability research on image classifiers.

The library is the product; the ``interp`` command is a thin layer over it.  The flat
public API below is what every command calls::

    from interpcli import load_model, load_dataset, train, TrainConfig, evaluate, attribute
    from interpcli import explain_checkpoint, occlude_checkpoint, Attributions, InputSpec
"""

__version__ = "0.1.0"

from .artifacts import (  # noqa: E402
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    load_model,
    read_metadata,
    save_checkpoint,
)
from .attributions import Attributions  # noqa: E402
from .data import list_datasets, load_dataset  # noqa: E402
from .device import resolve_device, seed_everything  # noqa: E402
from .errors import InterpError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .inputs import Inputs, InputSpec  # noqa: E402
from .methods import attribute, get_method, list_methods  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .ops.evaluate import evaluate_checkpoint  # noqa: E402
from .ops.explain import explain, explain_checkpoint  # noqa: E402
from .ops.occlude import occlude_checkpoint  # noqa: E402
from .ops.train import train  # noqa: E402
from .training import TrainConfig  # noqa: E402

__all__ = [
    "__version__",
    "InterpError",
    "resolve_device",
    "seed_everything",
    "CHECKPOINT_FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "read_metadata",
    "list_datasets",
    "load_dataset",
    "create_model",
    "list_models",
    "TrainConfig",
    "train",
    "evaluate",
    "evaluate_checkpoint",
    "attribute",
    "get_method",
    "list_methods",
    "Attributions",
    "Inputs",
    "InputSpec",
    "explain",
    "explain_checkpoint",
    "occlude_checkpoint",
]
