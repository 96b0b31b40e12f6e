"""``interp occlude``: occlusion maps (masks x scores, ROSA / OSA-DAS / GDS) of a checkpoint.

    from interpcli.occlusion import OccludeConfig
    from interpcli.ops.occlude import occlude_checkpoint
    result, files = occlude_checkpoint("runs/r56.safetensors", "out/gds", OccludeConfig(score="gds"))

:func:`occlude_inputs` is the same on a loaded model and :class:`~interpcli.inputs.Inputs`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import dist
from ..attribution_store import PNG_ROWS, merge_results
from ..attributions import Attributions, check_output_folder
from ..device import model_device
from ..fastpath import fast_model_for_layer
from ..gds import dataset_gds, load_extra_views
from ..inputs import Inputs, InputSpec, resolve_targets
from ..methods import get_method
from ..models import Classifier
from ..occlusion import METHOD_OF_SCORE, OccludeConfig, occlude
from ._common import checkpoint_record, open_checkpoint
from ._stream import Scale, Step, run_key, stream
from .explain import logits_of

__all__ = ["occlude_inputs", "occlude_checkpoint", "merge_occlusions", "prepare", "Scale"]


def occlude_inputs(model, inputs: Inputs, cfg: OccludeConfig, target: str | int = "pred", *,
                   checkpoint: str | os.PathLike | None = None, dataset: str | None = None,
                   data_dir: str | None = None, progress: Callable[[int, int], None] | None = None,
                   fast: bool = True, extra_views: torch.Tensor | None = None,
                   gds: torch.Tensor | None = None) -> Attributions:
    """:func:`~interpcli.occlusion.occlude` on :class:`~interpcli.inputs.Inputs`, as
    :class:`~interpcli.attributions.Attributions` (the map stored under the method name of the
    score: occlusion, rosa, osa-das, gds; the mask scores as extras).

    Class-agnostic scores explain each image once (``target`` only labels the rows).  With
    ``fast`` an interp model runs on the eval fast path (:mod:`interpcli.fastpath`).
    ``checkpoint`` / ``dataset`` / ``data_dir``: where a dataset GDS comes from and is cached;
    ``extra_views`` / ``gds``: the extra views of these images and the GDS, when already loaded
    (else read as ``cfg`` says)."""
    cfg.check()
    model, gds = prepare(model, cfg, fast, checkpoint, dataset, data_dir, gds)
    dev = model_device(model)
    logits = logits_of(model, inputs.images)
    if cfg.score != "class" and str(target) == "all":
        target = "pred"
    rows, targets = resolve_targets(target, model, logits, inputs.labels)
    x = inputs.images[rows]
    extra = extra_views
    if extra is None and cfg.extra_views:
        extra = load_extra_views(cfg.extra_views, len(inputs.images), tuple(x.shape[1:]))
    if extra is not None and extra.dim() == 5:
        extra = extra[rows]
    res = occlude(model, x.to(dev), cfg, targets.to(dev), extra_views=extra, gds=gds, progress=progress)
    scores, evaluated = res.padded_scores()
    name = METHOD_OF_SCORE[cfg.score]
    params = {k: v for k, v in res.config.items() if v is not None}
    if res.gds_dim:
        params["gds_dims"] = res.gds_dim
    return Attributions(x, targets, inputs.labels[rows], logits[rows], [inputs.sources[int(r)] for r in rows],
                        {name: res.maps}, {name: params}, {name: get_method(name).signed}, list(model.classes),
                        extras={"mask_scores": scores, "mask_evaluated": evaluated})


def prepare(model, cfg: OccludeConfig, fast: bool = True, checkpoint: str | os.PathLike | None = None,
            dataset: str | None = None, data_dir: str | None = None,
            gds: torch.Tensor | None = None) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """The model to occlude with (eval mode; the fast path with ``fast``) and the dataset GDS
    when ``cfg`` asks for one (``gds``, if given, is kept): made once for every chunk."""
    model.eval()
    if fast and isinstance(model, Classifier):
        model = fast_model_for_layer(model, cfg.layer if cfg.layer not in ("logits", "probs") else None)
    if gds is None and cfg.score == "gds" and cfg.gds_from == "dataset":
        gds = dataset_gds(model, layer=cfg.layer, pool=cfg.pool, k=cfg.k, dim=cfg.gds_dim, per_class=cfg.gds_per_class,
                          seed=cfg.seed, checkpoint=checkpoint, dataset=dataset, data_dir=data_dir)
    return model, gds


def occlude_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None, cfg: OccludeConfig, *,
                       inputs: InputSpec | None = None, target: str | int = "pred", fast: bool = True,
                       device: str = "auto", png: bool = True, force: bool = False, scale: Scale | None = None,
                       progress: Callable[[int, int], None] | None = None) -> tuple[Attributions, list[Path]]:
    """Occlusion maps of ``inputs`` (default: 8 test images of the checkpoint's dataset) written to
    ``out`` (``attributions.npz``, PNGs; nothing when ``out`` is None); seeded by ``cfg.seed``.  An
    existing non-empty ``out`` is refused (before any work) unless ``force``, which replaces it as a whole.

    As :func:`~interpcli.ops.explain.explain_checkpoint`: ``scale.chunk`` images at a time, each
    chunk one part of ``out``; ``scale.shard`` or torchrun's ranks take a share of the chunks
    (every chunk is occluded with ``cfg.seed``); with ``out`` the result returned holds the first
    chunk's rows.  ``progress(images done, images)``."""
    cfg.check()
    scale = (scale or Scale()).check()
    if out is not None:
        check_output_folder(out, force)
    inputs = inputs or InputSpec()
    with dist.session(device) as (_, _, dev):
        model = open_checkpoint(checkpoint, str(dev), cfg.seed)
        record = checkpoint_record(checkpoint, model)
        source = inputs.open(model)
        data_dir = str(inputs.data_dir) if inputs.data_dir else None
        fast_model, gds = prepare(model, cfg, fast, checkpoint, inputs.dataset, data_dir)
        extra = load_extra_views(cfg.extra_views, len(source), tuple(model.input_shape)) if cfg.extra_views else None

        def compute(x: Inputs, c: int, step: Step | None) -> Attributions:
            report = (lambda d, n: step(d / max(n, 1), "")) if step else None
            mine = extra[c * scale.chunk : c * scale.chunk + len(x.images)] if extra is not None and extra.dim() == 5 \
                else extra
            return occlude_inputs(fast_model, x, cfg, target, progress=report, fast=False, extra_views=mine, gds=gds)

        key = run_key(checkpoint=record["sha256"], config=dataclasses.asdict(cfg), target=str(target),
                      inputs=inputs.describe(), n=len(source), chunk=scale.chunk, kind="occlude")
        return stream(source, compute, out, scale, png=png, force=force, record=record, key=key,
                      progress=(lambda d, n, _label: progress(d, n)) if progress else None)


def merge_occlusions(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False,
                     png: bool = True, png_rows: int = PNG_ROWS) -> list[Path]:
    """The single result of a ``--shard I/N`` run of ``interp occlude`` from its shards' folders."""
    check_output_folder(out, force)
    return merge_results(folders, out, force=force, png=png, png_rows=png_rows)
