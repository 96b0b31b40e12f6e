"""Building blocks of ``interp train`` (the loop itself is :func:`interpcli.ops.train.train`)."""

from .config import LOSSES, OPTIMIZERS, SCHEDULES, Reporter, Silent, TrainConfig, TrainResult
from .optim import lr_factor, make_loss, make_optimizer
from .state import sidecar

__all__ = ["TrainConfig", "TrainResult", "Reporter", "Silent", "OPTIMIZERS", "SCHEDULES", "LOSSES", "make_loss",
           "lr_factor", "make_optimizer", "sidecar"]
