"""``interp explain``: attribution maps of a checkpoint's predictions by registered methods.

    from interpcli.ops.explain import explain_checkpoint
    result, files = explain_checkpoint("runs/r20.safetensors", "out/r20", ["grad", "intgrad"],
                                       inputs=InputSpec(indices="0:16"))

:func:`explain` is the same on a loaded model and :class:`~interpcli.inputs.Inputs`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attributions import Attributions
from ..device import model_device
from ..inputs import Inputs, InputSpec, resolve_targets
from ..methods import attribute, get_method
from ..models.bcos import contributions
from ..perturb import make_baseline
from ..viz import bcos_rgba
from ._common import checkpoint_record, open_checkpoint

__all__ = ["explain", "explain_checkpoint", "logits_of"]


def logits_of(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Float logits (N, classes) on the CPU, batched, under inference mode."""
    dev = model_device(model)
    with torch.inference_mode():
        return torch.cat([model(images[i : i + batch_size].to(dev)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def explain(model, inputs: Inputs, methods: Sequence[str], target: str | int = "pred",
            params: dict[str, dict[str, Any]] | None = None, batch_size: int | None = None, *,
            fast: bool = True, compile: bool = False, tf32: bool = False,
            progress: Callable[[int, str], None] | None = None) -> Attributions:
    """Attributions of every method for the requested targets (the model is used in eval mode).

    ``fast`` / ``compile``: the eval fast path of :func:`~interpcli.methods.attribute`;
    ``progress(i, name)`` is called after the i-th method."""
    model.eval()
    dev = model_device(model)
    infos = [get_method(m) for m in methods]
    params = params or {}
    logits = logits_of(model, inputs.images)
    rows, targets = resolve_targets(target, model, logits, inputs.labels)
    x = inputs.images[rows]
    maps, used = {}, {}
    for info in infos:
        mine = params.get(info.name, {})
        maps[info.name] = attribute(model, x.to(dev), targets.to(dev), info.name, batch_size=batch_size,
                                    fast=fast, compile=compile, tf32=tf32, **mine).cpu()
        used[info.name] = {**info.defaults, **mine}
        if progress is not None:
            progress(len(used), info.name)
    extras = _completeness_gaps(model, x, targets, logits[rows], maps, used, infos)
    if "bcos" in maps:  # the papers' colour picture of W(x) needs the six-channel map
        e = contributions(model, x.to(dev), targets.to(dev))
        extras["bcos_rgba"] = np.stack([bcos_rgba(w, c.sum(0)) for w, c in
                                        zip(e.weights.cpu().numpy(), e.contributions.cpu().numpy())]).astype(np.float32)
    return Attributions(x, targets, inputs.labels[rows], logits[rows], [inputs.sources[int(r)] for r in rows],
                        maps, used, {i.name: i.signed for i in infos}, list(model.classes), extras=extras)


def _completeness_gaps(model, x, targets, logits, maps, used, infos) -> dict[str, np.ndarray]:
    """``completeness_gap_<method>`` (M,): |sum(attr) - (f_t(x) - f_t(baseline))| / max(1, |Δf|) of
    every method that promises completeness, from the baseline it used; one warning for gaps > 1e-3."""
    gaps, large = {}, []
    for info in (i for i in infos if i.complete):
        base = make_baseline(used[info.name]["baseline"], x, used[info.name]["seed"])
        delta = (logits - logits_of(model, base)).gather(1, targets[:, None].cpu())[:, 0].double()
        gap = (maps[info.name].double().sum((1, 2, 3)) - delta).abs() / delta.abs().clamp_min(1)
        gaps[f"completeness_gap_{info.name}"] = gap.float().numpy()
        if float(gap.max()) > 1e-3:
            large.append(f"{info.name} {float(gap.max()):.2g}")
    if large:
        warnings.warn("attributions do not sum to f(x) - f(baseline) (largest relative gap): " + ", ".join(large)
                      + "; recorded as completeness_gap_<method> in the result", stacklevel=3)
    return gaps


def explain_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None, methods: Sequence[str], *,
                       inputs: InputSpec | None = None, target: str | int = "pred",
                       params: dict[str, dict[str, Any]] | None = None, batch_size: int | None = None,
                       fast: bool = True, compile: bool = False, tf32: bool = False, seed: int = 0,
                       device: str = "auto",
                       png: bool = True, progress: Callable[[int, str], None] | None = None,
                       ) -> tuple[Attributions, list[Path]]:
    """Explain the checkpoint's predictions on ``inputs`` (default: 8 test images of its dataset)
    and write ``out`` (``attributions.npz``, PNGs; nothing when ``out`` is None).

    Methods with a ``seed`` parameter get ``seed`` unless ``params`` set one.  Returns the
    result (with the checkpoint's path, sha256 and arch recorded) and the files written."""
    for m in methods:
        get_method(m)  # unknown names fail before the model is loaded
    model = open_checkpoint(checkpoint, device, seed)
    params = {m: dict((params or {}).get(m, {})) for m in methods}
    for m in methods:
        if "seed" in get_method(m).defaults:
            params[m].setdefault("seed", seed)
    result = explain(model, (inputs or InputSpec()).load(model), methods, target, params, batch_size, fast=fast,
                     compile=compile, tf32=tf32, progress=progress)
    result.checkpoint = checkpoint_record(checkpoint, model)
    return result, (result.save(out, png=png) if out is not None else [])
