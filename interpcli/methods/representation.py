"""Occlusion scored in representation space: ``rosa``, ``osa-das`` and ``gds``.

Class-agnostic sliding-window occlusion (the target is ignored): each window's score is a
distance between deep features of the image and of the occluded image, so the map says
which parts of the image the representation depends on — for any input, in or out of
distribution.  The engine is :func:`interpcli.occlusion.occlude`; see ``docs/occlude.md``.

- ``rosa``: 1 - cos (or 1 - cos², L2 of normalised features) between φ(x) and φ(x_j) at the
  penultimate layer (project-internal name; METHODS.md 2.3 "vector mode").
- ``osa-das``: OSA-DAS (Valois, Niinuma, Fukui, WACV 2024, https://arxiv.org/abs/2311.15022):
  1 - mean cos² of the canonical angles between the PCA subspaces of the augmented views of x
  and of x_j.
- ``gds``: ROSA-GDS: the features (or, with ``gds_mode=subspace``, the subspaces) projected onto
  the Generalized Difference Subspace of four augmentation sets of the image (weak and
  strong augmentations of the image and of noise) before the distance is taken.
"""

from __future__ import annotations

from ..occlusion import OccludeConfig, occlude
from ..perturb import FILLS
from ..subspace import DISTANCES
from ._registry import register_method
from .params import SEED, integer, number, one_of, text

_COMMON = {"window": 8, "stride": 4, "fill": "zero", "layer": None, "seed": 0, "grad_prune": None}
_VIEWS = {"augment": "weak", "views": 16, "k": 4, "angles": "all"}
_COMMON_PARAMS = {
    "window": integer(min=1), "stride": integer(min=1), "fill": number(words=FILLS), "seed": SEED,
    "layer": text(nullable=True, doc="null: penultimate; logits; probs; or a module path"),
    "grad_prune": number(gt=0, le=1, nullable=True, doc="fraction of windows scored, ranked by gradient saliency"),
}
_VIEWS_PARAMS = {
    "augment": text(doc="augmentation preset: none, weak, strong, optionally PRESET:KEY=VALUE,..."),
    "views": integer(min=1), "k": integer(min=1, doc="subspace dimension"),
    "angles": integer(min=1, words=("all", "first"), doc="canonical angles used"),
}


def _run(model, x, score: str, batch_size, **params):
    cfg = OccludeConfig(masks="sliding", score=score, batch_size=batch_size, **params)
    return occlude(model, x, cfg).maps.to(x.device)


@register_method("rosa", description="representation-space occlusion: feature distance per window (class-agnostic)",
                 kind="perturbation", uses_gradients=False, class_specific=False, signed=False,
                 defaults={**_COMMON, "distance": "cosine"},
                 params={**_COMMON_PARAMS, "distance": one_of(*DISTANCES)})
def rosa(model, x, target, *, batch_size=None, **params):
    return _run(model, x, "repr", batch_size, **params)


@register_method("osa-das", description="OSA-DAS: canonical-angle distance of augmentation subspaces per window",
                 kind="perturbation", uses_gradients=False, class_specific=False, signed=False,
                 defaults={**_COMMON, **_VIEWS}, params={**_COMMON_PARAMS, **_VIEWS_PARAMS},
                 paper="https://arxiv.org/abs/2311.15022")
def osa_das(model, x, target, *, batch_size=None, **params):
    return _run(model, x, "subspace", batch_size, **params)


@register_method("gds", description="ROSA-GDS: feature distance inside the image's generalized difference subspace",
                 kind="perturbation", uses_gradients=False, class_specific=False, signed=False,
                 defaults={**_COMMON, **_VIEWS, "distance": "cosine", "gds_dim": 0.5, "gds_mode": "repr"},
                 params={**_COMMON_PARAMS, **_VIEWS_PARAMS, "distance": one_of(*DISTANCES),
                         "gds_dim": number(gt=0, whole_from=1, doc="a fraction of the rank, or a number of directions"),
                         "gds_mode": one_of("repr", "subspace")},
                 paper="https://arxiv.org/abs/2311.15022")
def gds(model, x, target, *, batch_size=None, **params):
    return _run(model, x, "gds", batch_size, **params)
