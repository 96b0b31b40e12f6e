"""``interp import``: a model trained elsewhere (a torchvision or timm architecture and a local
weights file) as an interp checkpoint, so that every command works on it.

    from interpcli.ops.import_model import import_model
    summary, path = import_model("resnet18", "resnet18.pth", "runs/r18.safetensors", classes="classes.txt")

The architecture is named as torchvision names it (``resnet18``, ``torchvision:resnet18``) or
``timm:NAME``, and built with random weights (nothing is downloaded); the weights file
(safetensors, or a state dict read by ``torch.load(weights_only=True)``: :mod:`interpcli.weights`)
must fit it exactly.  The checkpoint records the arch, the input size, the normalisation the
model expects (given, or the library's usual one) and the class names; its logits are those of
the original model on the normalised image.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import artifacts
from ..errors import ConfigError
from ..models import Classifier, get_model_info
from ..models.external import adapt_kwargs, default_preprocessing
from ..weights import classifier_outputs, fit_state_dict, read_weights

__all__ = ["import_model", "qualified_arch", "parse_classes", "ENCODINGS"]

ENCODINGS = ("normalize", "identity")
_SOURCES = ("torchvision", "timm")
_MAX_SIDE = 8192


def qualified_arch(arch: str) -> str:
    """``resnet18`` -> ``torchvision:resnet18``; ``timm:NAME`` and ``torchvision:NAME`` as they are."""
    source, sep, name = arch.partition(":")
    if not sep:
        return f"torchvision:{arch}"
    if source not in _SOURCES or not name:
        raise ConfigError(f"arch '{arch}': give a torchvision model name (resnet18), torchvision:NAME or timm:NAME")
    return arch


def parse_classes(classes: str | os.PathLike | Sequence[str] | None) -> list[str] | None:
    """Class names: a list, a file (one name a line; a ``.json`` file: a list of names) or
    ``a,b,c``; blank, repeated or missing names are refused."""
    if classes is None:
        return None
    if isinstance(classes, (list, tuple)):
        names = [str(c) for c in classes]
    else:
        text, p = str(classes), Path(classes)
        if p.is_file():
            try:
                raw = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"cannot read the class names in '{p}': {e}") from None
            if p.suffix == ".json":
                try:
                    names = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"'{p}' is not JSON: {e}") from None
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ConfigError(f"'{p}' must hold a JSON list of class names")
            else:
                names = [line.strip() for line in raw.splitlines() if line.strip()]
        elif "," in text or not (os.sep in text or text.endswith((".txt", ".json"))):
            names = [c.strip() for c in text.split(",")]
        else:
            raise ConfigError(f"class names file not found: {text}")
    if not names or any(not n for n in names):
        raise ConfigError("--classes: class names must not be empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--classes: repeated class name(s) {', '.join(dup[:3])}; names pick targets, so each "
                          "must be unique")
    return names


def _stats(values: Sequence[float] | None, what: str, default: Sequence[float]) -> list[float]:
    v = [float(x) for x in (values if values is not None else default)]
    if len(v) == 1:
        v = v * 3
    if len(v) != 3 or not all(math.isfinite(x) for x in v):
        raise ConfigError(f"--{what} takes 3 finite values (one per RGB channel) or one for all, got {values}")
    if what == "std" and min(v) <= 0:
        raise ConfigError(f"--std values must be > 0, got {values}")
    return v


def _encoding(arch: str, encoding: str | None, mean: Sequence[float] | None,
              std: Sequence[float] | None) -> dict[str, Any]:
    if encoding not in (None, *ENCODINGS):
        raise ConfigError(f"--encoding must be {' or '.join(ENCODINGS)}, got '{encoding}'")
    if encoding == "identity":
        if mean is not None or std is not None:
            raise ConfigError("--encoding identity takes no --mean/--std (the model sees pixels in [0, 1])")
        return {"kind": "identity"}
    if (mean is None) != (std is None):
        raise ConfigError("give both --mean and --std (or neither: the library's usual statistics)")
    _, dmean, dstd = default_preprocessing(arch)
    return {"kind": "normalize", "mean": _stats(mean, "mean", dmean), "std": _stats(std, "std", dstd)}


def _num_classes(info, state: dict[str, torch.Tensor], names: list[str] | None, num_classes: int | None,
                 weights: str | os.PathLike) -> int:
    found = classifier_outputs(state, info.classifier_layer)
    n = num_classes or found or (len(names) if names else None)
    if n is None:
        raise ConfigError(f"cannot tell the number of classes from '{weights}' (no {info.classifier_layer or 'known'}"
                          " classifier weight); pass --num-classes")
    if int(n) < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {n}")
    if names is not None and len(names) != int(n):
        raise ConfigError(f"{len(names)} class names for {n} classes"
                          + (f" (the weights' classifier has {found} outputs)" if found else ""))
    return int(n)


def import_model(arch: str, weights: str | os.PathLike, out: str | os.PathLike, *, input_size: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, encoding: str | None = None,
                 classes: str | os.PathLike | Sequence[str] | None = None, num_classes: int | None = None,
                 arch_kwargs: dict[str, Any] | None = None, force: bool = False) -> tuple[dict[str, Any], Path]:
    """Write the checkpoint ``out`` (``.safetensors``; an existing file only with ``force``) of
    the architecture ``arch`` with the weights of the file ``weights``; returns (summary, path).

    ``input_size``: side of the square images the model takes (default: the arch's usual one,
    224 for most); ``mean``/``std``: the per-channel normalisation it expects (default
    ImageNet's, or a timm model's own), ``encoding="identity"``: none; ``classes``: names
    (list, file or ``a,b,c``; default ``0..N-1``); ``num_classes``: default the classifier
    weight's rows.  Every check runs before anything is written."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out '{out}' must name a .safetensors file")
    artifacts.check_output_path(out, force)
    name = qualified_arch(arch)
    info = get_model_info(name)
    side = input_size if input_size is not None else info.default_input[1]
    if not 1 <= int(side) <= _MAX_SIDE:
        raise ConfigError(f"--input-size must be in 1..{_MAX_SIDE}, got {side}")
    enc = _encoding(name, encoding, mean, std)
    names = parse_classes(classes)
    state, source = read_weights(weights)
    n = _num_classes(info, state, names, num_classes, weights)
    kwargs = adapt_kwargs(name, set(state), arch_kwargs or {})
    model = Classifier(name, n, (3, int(side), int(side)), enc, names, kwargs)
    state, prefix = fit_state_dict(model.net, state, weights, f"{name} with {n} classes")
    model.net.load_state_dict(state, strict=True)
    model.eval()
    try:  # the input size must suit the arch (a ViT's patches, a net too deep for tiny images)
        with torch.no_grad():
            logits = model(torch.full((1, 3, int(side), int(side)), 0.5))
    except Exception as e:
        raise ConfigError(f"{name} does not run on {side}x{side} images: {str(e).splitlines()[0][:200]}") from None
    if tuple(logits.shape) != (1, n):
        raise ConfigError(f"{name} returns logits of shape {tuple(logits.shape)}, not (1, {n})")
    record = {"weights": str(weights), "sha256": artifacts.sha256_file(weights), **source,
              "prefix_removed": prefix or None}
    artifacts.save_checkpoint(out, model, imported=record, argv=artifacts.command_line())
    summary = {"checkpoint": str(out), "arch": name, "arch_kwargs": kwargs, "num_classes": n,
               "classes": model.classes, "input_shape": list(model.input_shape), "encoding": enc,
               "parameters": sum(p.numel() for p in model.net.parameters()), "imported": record}
    return summary, out
