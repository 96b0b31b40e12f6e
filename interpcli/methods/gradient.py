"""Gradient methods, wrapping Captum (https://captum.ai) where it does the job.

- ``grad``: the input gradient of the target logit (Simonyan et al. 2014, https://arxiv.org/abs/1312.6034).
- ``ixg``: input x gradient (Shrikumar et al. 2016, https://arxiv.org/abs/1605.01713).
- ``smoothgrad`` / ``vargrad``: mean / variance of gradients under Gaussian input noise
  (Smilkov et al. 2017, https://arxiv.org/abs/1706.03825; Adebayo et al. 2018).
- ``intgrad``: Integrated Gradients (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365),
  attributions summing to f(x) - f(baseline) (completeness).
"""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from ..perturb import BASELINES, make_baseline
from ._common import batched
from ._registry import register_method
from .params import SEED, boolean, integer, number, one_of


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf that requires grad (Captum warns when it has to switch that on itself)."""
    return x.detach().clone().requires_grad_(True)


def _saliency(model, x, target, abs: bool) -> torch.Tensor:
    return Saliency(model).attribute(_leaf(x), target=target, abs=abs)


@register_method("grad", description="gradient of the target logit w.r.t. the pixels", kind="gradient",
                 uses_gradients=True, defaults={"abs": False}, params={"abs": boolean(doc="absolute gradient")},
                 paper="https://arxiv.org/abs/1312.6034")
def grad(model, x, target, *, batch_size=None, abs=False):
    return batched(lambda xb, tb: _saliency(model, xb, tb, abs), x, target, batch_size)


@register_method("ixg", description="input x gradient", kind="gradient", uses_gradients=True,
                 paper="https://arxiv.org/abs/1605.01713")
def ixg(model, x, target, *, batch_size=None):
    return batched(lambda xb, tb: InputXGradient(model).attribute(_leaf(xb), target=tb), x, target, batch_size)


_NOISE = {"n_samples": integer(min=1), "sigma": number(ge=0, doc="noise standard deviation (pixels)"), "seed": SEED}


def _noise_tunnel(model, x, target, batch_size, kind, n_samples, sigma, seed):
    # Captum draws the noise from torch's global generator: fork it so results depend on `seed` only.
    # One chunk holds batch_size noisy images: batch_size // n_samples originals, all their samples.
    per_chunk = max(1, (batch_size or 256) // n_samples)
    nt = NoiseTunnel(Saliency(model))
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return batched(lambda xb, tb: nt.attribute(_leaf(xb), nt_type=kind, nt_samples=int(n_samples),
                                                   stdevs=float(sigma),
                                                   target=tb, abs=False), x, target, per_chunk)


@register_method("smoothgrad", description="mean gradient under Gaussian noise (sigma in pixel units)",
                 kind="gradient", uses_gradients=True, defaults={"n_samples": 25, "sigma": 0.15, "seed": 0},
                 params=_NOISE, paper="https://arxiv.org/abs/1706.03825")
def smoothgrad(model, x, target, *, batch_size=None, n_samples=25, sigma=0.15, seed=0):
    if sigma == 0:  # no noise: every sample is the plain gradient
        return grad(model, x, target, batch_size=batch_size)
    return _noise_tunnel(model, x, target, batch_size, "smoothgrad", n_samples, sigma, seed)


@register_method("vargrad", description="variance of the gradient under Gaussian noise", kind="gradient",
                 uses_gradients=True, signed=False, defaults={"n_samples": 25, "sigma": 0.15, "seed": 0},
                 params=_NOISE, paper="https://arxiv.org/abs/1810.03292")
def vargrad(model, x, target, *, batch_size=None, n_samples=25, sigma=0.15, seed=0):
    return _noise_tunnel(model, x, target, batch_size, "vargrad", n_samples, sigma, seed)


_IG_METHODS = {"riemann": "riemann_middle", "gausslegendre": "gausslegendre"}


@register_method("intgrad", description="Integrated Gradients from a black/blurred/uniform baseline",
                 kind="gradient", uses_gradients=True, complete=True,
                 defaults={"steps": 64, "baseline": "black", "rule": "gausslegendre", "seed": 0},
                 params={"steps": integer(min=1), "baseline": one_of(*BASELINES), "rule": one_of(*_IG_METHODS),
                         "seed": SEED},
                 paper="https://arxiv.org/abs/1703.01365")
def intgrad(model, x, target, *, batch_size=None, steps=64, baseline="black", rule="gausslegendre", seed=0):
    # Captum's internal batch counts interpolated images (inputs x steps).
    return IntegratedGradients(model).attribute(_leaf(x), baselines=make_baseline(baseline, x, seed), target=target,
                                                n_steps=int(steps), method=_IG_METHODS[rule],
                                                internal_batch_size=max(batch_size or 512, len(x)))
