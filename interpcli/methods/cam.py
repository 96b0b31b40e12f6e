"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

The channel weights are the spatial means of the target logit's gradient at ``layer``
(default: the arch's ``target_layer``, its last layer whose output is spatial, more than
1x1, at the default input); the map is ReLU(sum_k w_k A_k), bilinearly upsampled to the
input.  Computed inside autograd with one forward and one backward pass per batch, no
copies to NumPy.  A layer whose output is not a spatial map (1x1, or not 4-D) would give
a constant map and is refused (:class:`~interpcli.errors.ConfigError`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.features import capture_output, layer_of
from ._common import batched
from ._registry import register_method
from .params import text

_LAYER = {"layer": text(nullable=True, doc="module path of the layer; null: the arch's CAM layer")}


def _spatial_layer(model, x: torch.Tensor) -> str | None:
    """A layer whose output is spatial on ``x``: the arch's CAM layer if it is, else the last such module."""
    net, seen = getattr(model, "net", model), []

    def record(name: str):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1:
                seen.append(name)
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in net.named_modules()
             if name and "parametrizations" not in name]  # parametrizations output weights, not maps
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    default = getattr(model, "target_layer", None)
    return default if default in seen else (seen[-1] if seen else None)


def _check_spatial(act: torch.Tensor, model, x: torch.Tensor, name: str | None) -> None:
    """Refuse a layer whose output is not a spatial map: its CAM would be constant."""
    if isinstance(act, torch.Tensor) and act.dim() == 4 and act.shape[-2] * act.shape[-1] > 1:
        return
    if isinstance(act, torch.Tensor) and act.dim() == 4:
        what = f"has a {act.shape[-2]}x{act.shape[-1]} output at this input size"
    else:
        shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
        what = f"outputs {shape}, not an (N, C, H, W) map"
    hint = _spatial_layer(model, x)
    raise ConfigError(f"layer {name} {what}; Grad-CAM needs a spatial layer, e.g. "
                      + (f"layer={hint}" if hint else "an earlier convolution"))


def _activation_and_grad(model, layer, x, target, name):
    with capture_output(layer) as store, torch.enable_grad():
        logits = model(x)
        act = store["out"]
        _check_spatial(act, model, x, name)
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), act)
    return act.detach(), g


@register_method("gradcam", description="Grad-CAM at the last spatial layer (or --param layer=NAME)", kind="cam",
                 uses_gradients=True, signed=False, needs_layer=True, defaults={"layer": None}, params=_LAYER,
                 paper="https://arxiv.org/abs/1610.02391")
def gradcam(model, x, target, *, batch_size=None, layer=None):
    module, name = layer_of(model, layer), layer or getattr(model, "target_layer", None)

    def one(xb, tb):
        act, g = _activation_and_grad(model, module, xb, tb, name)
        cam = F.relu((g.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
        return F.interpolate(cam, size=xb.shape[-2:], mode="bilinear", align_corners=False)

    return batched(one, x, target, batch_size)


@register_method("gradcam++", description="Grad-CAM++: positive gradients weighted by closed-form alphas",
                 kind="cam", uses_gradients=True, signed=False, needs_layer=True, defaults={"layer": None},
                 params=_LAYER, paper="https://arxiv.org/abs/1710.11063")
def gradcam_pp(model, x, target, *, batch_size=None, layer=None):
    """Chattopadhay et al. 2018, eq. 19 with the exponential-output closed form of the higher
    derivatives (as pytorch-grad-cam): alpha = g^2 / (2 g^2 + sum(A) g^3), w = sum(alpha relu(g))."""
    module, name = layer_of(model, layer), layer or getattr(model, "target_layer", None)

    def one(xb, tb):
        act, g = _activation_and_grad(model, module, xb, tb, name)
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + act.sum((2, 3), keepdim=True) * g3
        alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
        cam = F.relu((w * act).sum(1, keepdim=True))
        return F.interpolate(cam, size=xb.shape[-2:], mode="bilinear", align_corners=False)

    return batched(one, x, target, batch_size)
