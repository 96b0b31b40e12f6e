"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

The channel weights are the spatial means of the target logit's gradient at ``layer``
(default: the arch's ``target_layer``, the last spatial stage); the map is
ReLU(sum_k w_k A_k), bilinearly upsampled to the input.  Computed inside autograd with
one forward and one backward pass per batch, no copies to NumPy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.features import capture_output, layer_of
from ._common import batched
from ._registry import register_method


def _activation_and_grad(model, layer, x, target):
    with capture_output(layer) as store, torch.enable_grad():
        logits = model(x)
        act = store["out"]
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), act)
    return act.detach(), g


@register_method("gradcam", description="Grad-CAM at the last spatial layer (or --param layer=NAME)", kind="cam",
                 uses_gradients=True, signed=False, needs_layer=True, defaults={"layer": None},
                 paper="https://arxiv.org/abs/1610.02391")
def gradcam(model, x, target, *, batch_size=None, layer=None):
    module = layer_of(model, layer)

    def one(xb, tb):
        act, g = _activation_and_grad(model, module, xb, tb)
        cam = F.relu((g.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
        return F.interpolate(cam, size=xb.shape[-2:], mode="bilinear", align_corners=False)

    return batched(one, x, target, batch_size)


@register_method("gradcam++", description="Grad-CAM++: positive gradients weighted by closed-form alphas",
                 kind="cam", uses_gradients=True, signed=False, needs_layer=True, defaults={"layer": None},
                 paper="https://arxiv.org/abs/1710.11063")
def gradcam_pp(model, x, target, *, batch_size=None, layer=None):
    """Chattopadhay et al. 2018, eq. 19 with the exponential-output closed form of the higher
    derivatives (as pytorch-grad-cam): alpha = g^2 / (2 g^2 + sum(A) g^3), w = sum(alpha relu(g))."""
    module = layer_of(model, layer)

    def one(xb, tb):
        act, g = _activation_and_grad(model, module, xb, tb)
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + act.sum((2, 3), keepdim=True) * g3
        alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
        cam = F.relu((w * act).sum(1, keepdim=True))
        return F.interpolate(cam, size=xb.shape[-2:], mode="bilinear", align_corners=False)

    return batched(one, x, target, batch_size)
