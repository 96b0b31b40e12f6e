"""Weight files made elsewhere: a safetensors file or a PyTorch state dict, read without running code.

    state, source = read_weights("resnet18.pth")          # {name: tensor}, and how it was stored
    state, prefix = fit_state_dict(net, state, "resnet18.pth", "torchvision:resnet18")

A ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file is a pickle; it is read with
``torch.load(weights_only=True)``, PyTorch's restricted unpickler that builds tensors and plain
containers only, so a file that would build any other object (a whole pickled model, or a
payload with ``__reduce__``) is refused before anything in it runs.  Common wrappers are
unwrapped (a dict holding the state dict under ``state_dict``, ``model_state_dict`` or
``model``, with other entries such as the optimiser ignored), and key prefixes added by
``nn.DataParallel`` (``module.``), ``torch.compile`` (``_orig_mod.``) or a training wrapper
(``model.``, as Lightning writes) are stripped.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load as _st_load

from .errors import ArtifactError, ConfigError

__all__ = ["read_weights", "fit_state_dict", "classifier_outputs", "WRAPPERS"]

WRAPPERS = ("state_dict", "model_state_dict", "model")  # where training scripts keep the weights, in this order
_ALWAYS_STRIP = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_SHOWN = 3  # keys named per kind of problem in an error


def _torch_load(p: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch's notice on TorchScript archives: refused below
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # not a pickle torch writes (a text file, an unknown opcode): nothing was run
            why = re.search(r"(Unsupported operand \w+|invalid load key[^.\n]*)", str(e))
            raise ArtifactError(f"'{p}' is not a PyTorch state dict file"
                                + (f" ({why.group(1)})" if why else "")) from None
        what = f" (it would call {found.group(1)})"
        raise ArtifactError(
            f"'{p}' holds pickled Python objects, not only tensors{what}; refused: .pth files are read with "
            "torch.load(weights_only=True). Save the weights alone (torch.save(model.state_dict(), PATH)) or as "
            ".safetensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, AttributeError) as e:
        if "TorchScript" in str(e):
            raise ArtifactError(f"'{p}' is a TorchScript archive, not a state dict; save model.state_dict() "
                                "(torch.save(model.state_dict(), PATH)) or .safetensors") from None
        first = re.split(r"(?<=\.) |\n", str(e).strip())[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"'{p}' is not a PyTorch state dict file ({first[:200]})") from None


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a weight file, and how they were stored: ``format`` (``safetensors`` or
    ``torch``) and ``wrapper`` (the key they were under, or None)."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"weights file not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"'{p}' is a directory; give the weights file")
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise ArtifactError(f"cannot read '{p}': {e.strerror}") from None
    # safetensors: an 8-byte header length, then the JSON header; anything else goes to torch.load
    if p.suffix == ".safetensors" or head[8:9] == b"{":
        try:
            obj: Any = _st_load(p.read_bytes())
        except Exception as e:  # safetensors' own error type
            raise ArtifactError(f"'{p}' is not a valid safetensors file ({str(e)[:200]})") from None
        fmt = "safetensors"
    else:
        obj, fmt = _torch_load(p), "torch"
    wrapper = None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        wrapper = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        obj = obj[wrapper] if wrapper else obj
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise ArtifactError(f"'{p}' holds no state dict (found: {keys or 'nothing'}); save model.state_dict()")
    return tensors, {"format": fmt, "wrapper": wrapper}


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items()}


def _common_first(state: dict[str, torch.Tensor]) -> str | None:
    firsts = {k.split(".", 1)[0] + "." if "." in k else None for k in state}
    return firsts.pop() if len(firsts) == 1 and None not in firsts else None


def strip_prefixes(state: dict[str, torch.Tensor], expected: set[str] | None = None) -> tuple[dict, str]:
    """Remove ``module.`` / ``_orig_mod.`` from every key, and a first component shared by every
    key (``model.``) when that matches more of ``expected``; returns (state, what was removed)."""
    removed = ""
    while (prefix := _common_first(state)) is not None:
        stripped = _strip(state, prefix)
        if prefix not in _ALWAYS_STRIP and (expected is None or len(expected & set(stripped))
                                            <= len(expected & set(state))):
            break
        state, removed = stripped, removed + prefix
    return state, removed


def classifier_outputs(state: dict[str, torch.Tensor], layer: str | None) -> int | None:
    """The number of outputs of the decision layer ``layer`` in ``state`` (rows of its weight), or None."""
    if not layer:
        return None
    state, _ = strip_prefixes(state)
    w = state.get(f"{layer}.weight")
    if w is None:
        w = next((v for k, v in state.items() if k.endswith(f".{layer}.weight")), None)
    return int(w.shape[0]) if w is not None and w.dim() >= 2 else None


def _names(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def fit_state_dict(net: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
                   what: str) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` with its keys matched to ``net`` (prefixes stripped, BatchNorm counters that old
    files lack filled in), checked key by key and shape by shape; a
    :class:`~interpcli.errors.ConfigError` naming a few missing, unexpected and mis-shaped keys
    otherwise.  ``what`` names the network in that message."""
    expected = net.state_dict()
    state, removed = strip_prefixes(dict(state), set(expected))
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = [f"{len(keys)} {kind}: {_names(keys)}" for kind, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
    if problems:
        raise ConfigError(f"the weights of '{path}' do not fit {what}: {'; '.join(problems)}")
    return state, removed
