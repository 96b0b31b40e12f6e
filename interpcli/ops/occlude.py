"""``interp occlude``: occlusion maps (masks x scores, ROSA / OSA-DAS / GDS) of a checkpoint.

    from interpcli.occlusion import OccludeConfig
    from interpcli.ops.occlude import occlude_checkpoint
    result, files = occlude_checkpoint("runs/r56.safetensors", "out/gds", OccludeConfig(score="gds"))

:func:`occlude_inputs` is the same on a loaded model and :class:`~interpcli.inputs.Inputs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..attributions import Attributions, check_output_folder
from ..device import model_device
from ..fastpath import fast_model_for_layer
from ..gds import dataset_gds, load_extra_views
from ..inputs import Inputs, InputSpec, resolve_targets
from ..methods import get_method
from ..models import Classifier
from ..occlusion import METHOD_OF_SCORE, OccludeConfig, occlude
from ._common import checkpoint_record, open_checkpoint
from .explain import logits_of

__all__ = ["occlude_inputs", "occlude_checkpoint"]


def occlude_inputs(model, inputs: Inputs, cfg: OccludeConfig, target: str | int = "pred", *,
                   checkpoint: str | os.PathLike | None = None, dataset: str | None = None,
                   data_dir: str | None = None, progress: Callable[[int, int], None] | None = None,
                   fast: bool = True) -> Attributions:
    """:func:`~interpcli.occlusion.occlude` on :class:`~interpcli.inputs.Inputs`, as
    :class:`~interpcli.attributions.Attributions` (the map stored under the method name of the
    score: occlusion, rosa, osa-das, gds; the mask scores as extras).

    Class-agnostic scores explain each image once (``target`` only labels the rows).  With
    ``fast`` an interp model runs on the eval fast path (:mod:`interpcli.fastpath`).
    ``checkpoint`` / ``dataset`` / ``data_dir``: where a dataset GDS comes from and is cached."""
    cfg.check()
    dev = model_device(model)
    model.eval()
    if fast and isinstance(model, Classifier):
        model = fast_model_for_layer(model, cfg.layer if cfg.layer not in ("logits", "probs") else None)
    logits = logits_of(model, inputs.images)
    if cfg.score != "class" and str(target) == "all":
        target = "pred"
    rows, targets = resolve_targets(target, model, logits, inputs.labels)
    x = inputs.images[rows]
    extra = load_extra_views(cfg.extra_views, len(x), tuple(x.shape[1:])) if cfg.extra_views else None
    if extra is not None and extra.dim() == 5:
        extra = extra[rows]
    gds = None
    if cfg.score == "gds" and cfg.gds_from == "dataset":
        gds = dataset_gds(model, layer=cfg.layer, pool=cfg.pool, k=cfg.k, dim=cfg.gds_dim, per_class=cfg.gds_per_class,
                          seed=cfg.seed, checkpoint=checkpoint, dataset=dataset, data_dir=data_dir)
    res = occlude(model, x.to(dev), cfg, targets.to(dev), extra_views=extra, gds=gds, progress=progress)
    scores, evaluated = res.padded_scores()
    name = METHOD_OF_SCORE[cfg.score]
    params = {k: v for k, v in res.config.items() if v is not None}
    if res.gds_dim:
        params["gds_dims"] = res.gds_dim
    return Attributions(x, targets, inputs.labels[rows], logits[rows], [inputs.sources[int(r)] for r in rows],
                        {name: res.maps}, {name: params}, {name: get_method(name).signed}, list(model.classes),
                        extras={"mask_scores": scores, "mask_evaluated": evaluated})


def occlude_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None, cfg: OccludeConfig, *,
                       inputs: InputSpec | None = None, target: str | int = "pred", fast: bool = True,
                       device: str = "auto", png: bool = True, force: bool = False,
                       progress: Callable[[int, int], None] | None = None) -> tuple[Attributions, list[Path]]:
    """Occlusion maps of ``inputs`` (default: 8 test images of the checkpoint's dataset) written to
    ``out`` (``attributions.npz``, PNGs; nothing when ``out`` is None); seeded by ``cfg.seed``.  An
    existing non-empty ``out`` is refused (before any work) unless ``force``, which replaces it as a whole."""
    cfg.check()
    if out is not None:
        check_output_folder(out, force)
    inputs = inputs or InputSpec()
    model = open_checkpoint(checkpoint, device, cfg.seed)
    result = occlude_inputs(model, inputs.load(model), cfg, target, checkpoint=checkpoint, dataset=inputs.dataset,
                            data_dir=str(inputs.data_dir) if inputs.data_dir else None, progress=progress, fast=fast)
    result.checkpoint = checkpoint_record(checkpoint, model)
    return result, (result.save(out, png=png, force=force) if out is not None else [])
