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

from .. import dist
from ..attribution_store import PNG_ROWS, merge_results
from ..attributions import Attributions, check_output_folder
from ..device import model_device
from ..inputs import Inputs, InputSpec, resolve_targets
from ..methods import MethodInfo, attribute, get_method
from ..models.bcos import contributions
from ..perturb import make_baseline
from ..viz import bcos_rgba
from ._common import checkpoint_record, open_checkpoint
from ._stream import Scale, Step, chunk_seed, run_key, stream

__all__ = ["explain", "explain_checkpoint", "merge_explanations", "logits_of", "rows_independent", "Scale"]


def logits_of(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Float logits (N, classes) on the CPU, batched, under inference mode."""
    dev = model_device(model)
    with torch.inference_mode():
        return torch.cat([model(images[i : i + batch_size].to(dev)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def explain(model, inputs: Inputs, methods: Sequence[str], target: str | int = "pred",
            params: dict[str, dict[str, Any]] | None = None, batch_size: int | None = None, *,
            fast: bool = True, compile: bool = False, tf32: bool = False,
            progress: Callable[[int, int, str], None] | None = None,
            rows_per_call: int | None = None) -> Attributions:
    """Attributions of every method for the requested targets (the model is used in eval mode).

    ``fast`` / ``compile``: the eval fast path of :func:`~interpcli.methods.attribute`.  Each
    method runs on chunks of ``rows_per_call`` rows (default ``max(256, 4 * batch_size)``) and
    ``progress(done_rows, total_rows, method)`` is called as it starts and after every chunk, so
    a long single-method run reports (and the CLI shows an ETA).  The results are those of one
    call on all rows: bitwise on the CPU for most methods (a chunk is whole batches of the
    method), else to float rounding (~1e-7 relative: the model sees other batch sizes).  A method
    whose random draws depend on the whole batch (see :func:`rows_independent`) runs in one call."""
    model.eval()
    dev = model_device(model)
    infos = [get_method(m) for m in methods]
    params = params or {}
    logits = logits_of(model, inputs.images)
    rows, targets = resolve_targets(target, model, logits, inputs.labels)
    x = inputs.images[rows]
    maps, used = {}, {}
    n = len(x)
    for info in infos:
        mine = params.get(info.name, {})
        chunk = max(1, rows_per_call or max(256, 4 * (batch_size or 0))) if rows_independent(info, mine) else n
        if progress is not None:
            progress(0, n, info.name)
        parts = []
        for i in range(0, n, chunk) if n else [0]:
            parts.append(attribute(model, x[i : i + chunk].to(dev), targets[i : i + chunk].to(dev), info.name,
                                   batch_size=batch_size, fast=fast, compile=compile, tf32=tf32, **mine).cpu())
            if progress is not None:
                progress(min(i + chunk, n), n, info.name)
        maps[info.name] = parts[0] if len(parts) == 1 else torch.cat(parts)
        used[info.name] = {**info.defaults, **mine}
    extras = _completeness_gaps(model, x, targets, logits[rows], maps, used, infos)
    if "bcos" in maps:  # the papers' colour picture of W(x) needs the six-channel map
        e = contributions(model, x.to(dev), targets.to(dev))
        extras["bcos_rgba"] = np.stack([bcos_rgba(w, c.sum(0)) for w, c in
                                        zip(e.weights.cpu().numpy(), e.contributions.cpu().numpy())]).astype(np.float32)
    return Attributions(x, targets, inputs.labels[rows], logits[rows], [inputs.sources[int(r)] for r in rows],
                        maps, used, {i.name: i.signed for i in infos}, list(model.classes), extras=extras)


def rows_independent(info: MethodInfo, params: dict[str, Any]) -> bool:
    """Whether the map of a row is the same whatever other rows go in the same call, so the rows
    may be split into chunks.  True of methods without a ``seed``, and of seeded ones whose draws
    are made once for all rows (RISE masks, augmentation views); false where the draws are shaped
    by the batch: per-image samples (``n_samples``: SmoothGrad, VarGrad, LIME, KernelSHAP), a
    ``uniform`` noise baseline, a ``noise`` fill."""
    if "seed" not in info.defaults:
        return True
    p = {**info.defaults, **params}
    return "n_samples" not in p and p.get("baseline") != "uniform" and p.get("fill") != "noise"


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
                       png: bool = True, force: bool = False, scale: Scale | None = None,
                       progress: Callable[[int, int, str], None] | None = None,
                       ) -> tuple[Attributions, list[Path]]:
    """Explain the checkpoint's predictions on ``inputs`` (default: 8 test images of its dataset)
    and write ``out`` (``attributions.npz``, PNGs; nothing when ``out`` is None).

    Methods with a ``seed`` parameter get ``seed`` unless ``params`` set one; an existing
    non-empty ``out`` is refused (before any work) unless ``force``, which replaces it as a whole.

    The images are explained ``scale.chunk`` at a time (default 256), each chunk written as one
    part of ``out`` as soon as it is done (:mod:`interpcli.ops._stream`); ``scale.shard`` (``"I/N"``)
    or torchrun's ranks take a contiguous share of the chunks.  A method whose random draws are
    shaped by the batch (:func:`rows_independent` false) draws with ``seed`` in the first chunk and
    a seed derived from it and the chunk's index in the others, whoever computes the chunk.
    ``progress(images done, images, label)``.

    Returns the result (with the checkpoint's path, sha256 and arch recorded) and the files
    written.  With ``out``, the result holds the first chunk's rows only (the rest is on disk:
    :meth:`Attributions.load`); without, every row of this process's share."""
    for m in methods:
        get_method(m)  # unknown names fail before the model is loaded
    scale = (scale or Scale()).check()
    if out is not None:
        check_output_folder(out, force)
    inputs = inputs or InputSpec()
    params = {m: dict((params or {}).get(m, {})) for m in methods}
    for m in methods:
        if "seed" in get_method(m).defaults:
            params[m].setdefault("seed", seed)
    with dist.session(device) as (_, _, dev):
        model = open_checkpoint(checkpoint, str(dev), seed)
        record = checkpoint_record(checkpoint, model)
        source = inputs.open(model)
        per_chunk = {m for m in methods if not rows_independent(get_method(m), params[m])}

        def compute(x: Inputs, c: int, step: Step | None) -> Attributions:
            mine = {m: {**p, "seed": chunk_seed(p["seed"], c)} if m in per_chunk else p for m, p in params.items()}
            report = (lambda d, n, m: step((methods.index(m) + d / max(n, 1)) / len(methods), m)) if step else None
            res = explain(model, x, methods, target, mine, batch_size, fast=fast, compile=compile, tf32=tf32,
                          progress=report)
            res.params = {m: {**res.params[m], "seed": params[m]["seed"]} if m in per_chunk else res.params[m]
                          for m in methods}
            return res

        key = run_key(checkpoint=record["sha256"], methods=list(methods), params=params, target=str(target),
                      inputs=inputs.describe(), n=len(source), chunk=scale.chunk, kind="explain")
        return stream(source, compute, out, scale, png=png, force=force, record=record, key=key, progress=progress)


def merge_explanations(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False,
                       png: bool = True, png_rows: int = PNG_ROWS) -> list[Path]:
    """The single result of a ``--shard I/N`` run from its shards' output folders (any order;
    checked to be every shard of one run once); written to ``out`` as a whole."""
    check_output_folder(out, force)
    return merge_results(folders, out, force=force, png=png, png_rows=png_rows)
