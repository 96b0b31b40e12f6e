"""Modified-backpropagation methods, wrapping Captum.

- ``deeplift``: DeepLIFT with the rescale rule (Shrikumar, Greenside, Kundaje, ICML 2017,
  https://arxiv.org/abs/1704.02685): attributions sum to f(x) - f(baseline) (completeness).
- ``guided-backprop``: guided backpropagation (Springenberg et al., ICLR 2015 workshop,
  https://arxiv.org/abs/1412.6806).

Both hook the model's nonlinearity *modules*, so each ReLU/MaxPool must be its own module
used once and not in place — true of the baseline architectures.
"""

from __future__ import annotations

import torch
from captum.attr import DeepLift, GuidedBackprop

from ._common import batched, make_baseline
from ._registry import register_method


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


@register_method("deeplift", description="DeepLIFT (rescale rule) from a black/blurred/uniform baseline",
                 kind="gradient", uses_gradients=True, defaults={"baseline": "black", "seed": 0},
                 paper="https://arxiv.org/abs/1704.02685")
def deeplift(model, x, target, *, batch_size=None, baseline="black", seed=0):
    base = make_baseline(baseline, x, seed)
    dl = DeepLift(model, multiply_by_inputs=True)
    chunks = []
    bs = batch_size or 64
    for i in range(0, len(x), bs):
        chunks.append(dl.attribute(_leaf(x[i : i + bs]), baselines=base[i : i + bs], target=target[i : i + bs]))
    return torch.cat(chunks)


@register_method("guided-backprop", description="guided backpropagation (only positive gradients through ReLUs)",
                 kind="gradient", uses_gradients=True, paper="https://arxiv.org/abs/1412.6806")
def guided_backprop(model, x, target, *, batch_size=None):
    gbp = GuidedBackprop(model)
    return batched(lambda xb, tb: gbp.attribute(_leaf(xb), target=tb), x, target, batch_size)
