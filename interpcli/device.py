"""The one place for device selection, precision, threads and seeding.

Library code never calls ``.cuda()``: it takes its device from :func:`resolve_device`
(commands) or from the model's parameters (methods).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["resolve_device", "seed_everything", "configure_backends", "autocast", "model_device", "full_precision",
           "prefers_channels_last",
           "env_threads"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | None = "auto") -> torch.device:
    """Turn ``auto | cpu | cuda[:N] | mps`` into a :class:`torch.device`.

    ``auto`` (or ``None``) picks cuda, then mps, then cpu.  The environment variable
    ``INTERP_DEVICE`` replaces ``auto``.  Asking for a device that is absent is an error.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = os.environ.get("INTERP_DEVICE", "auto").strip().lower() or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA devices exist")
    elif dev.type == "mps" and not _mps_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    return dev


def configure_backends(device: torch.device, threads: int | None = None, deterministic: bool = False,
                       tf32: bool = True) -> None:
    """Set the per-device performance flags.

    On CPU: one intra-op thread per available core (``threads`` or ``INTERP_THREADS``, a
    positive int, override it).  On CUDA: cuDNN autotuning unless ``deterministic``; TF32 matmuls and
    convolutions when ``tf32`` (training and evaluation) — explanation commands turn it off,
    since its 10-bit mantissa moves attributions by ~1e-3 and breaks identities such as
    DeepLIFT's completeness at that level.
    """
    env = env_threads()  # checked on every device: a bad value is an error, not silently ignored
    if device.type == "cpu":
        n = threads or env or len(os.sched_getaffinity(0))
        torch.set_num_threads(max(1, n))
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def env_threads() -> int | None:
    """``$INTERP_THREADS`` as a positive int (None when unset or empty); anything else is a ConfigError."""
    raw = os.environ.get("INTERP_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"INTERP_THREADS must be a positive number of CPU threads; got '{raw}'")
    return n


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """No TF32 in CUDA matmuls and convolutions inside the block (cuDNN allows it by default);
    the previous flags are restored on exit.  Attribution methods run inside it."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA when ``enabled``; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prefers_channels_last(device: torch.device, family: str = "baseline") -> bool:
    """Whether training should keep weights and batches in ``channels_last``: yes, for every family
    on every device.  oneDNN and cuDNN convolutions are faster there (~1.3x for resnet20 on the
    CPU), and B-cos networks' patch norms and MaxOut, written for either layout (a channel-sum of
    squares and in-place MaxOut gradients in the gradient's own layout), now gain too:
    bcos-resnet20 1.17x, bcos-vgg9 1.11x on one CPU thread (they lost 1.3x before).  Kept as a
    function, with the family, for the layouts a future family or device prefers."""
    return True


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (cpu for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
