"""Grad-CAM and Grad-CAM++ against pytorch-grad-cam (the reference the benchmark compares with).

pytorch-grad-cam min-max normalises each map and then resizes it with OpenCV; at a layer of the
input's resolution there is no resizing, so the normalised maps must agree.  Its Grad-CAM++
adds 1e-6 to the alphas' denominator, which dominates when gradients are ~1e-4 (a random
ResNet's); the logits are scaled by 1000 so that both compute the same formula.
"""

from __future__ import annotations

import pytest
import torch

from interpcli.methods import attribute
from interpcli.models import Classifier

pgc = pytest.importorskip("pytorch_grad_cam")


def _minmax(a: torch.Tensor) -> torch.Tensor:
    a = a - a.amin((-2, -1), keepdim=True)
    return a / (a.amax((-2, -1), keepdim=True) + 1e-7)


@pytest.mark.parametrize("method,ref", [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus")])
def test_cam_equals_pytorch_grad_cam(method, ref):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = Classifier("resnet20", 10, (3, 16, 16), {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}).eval()
    with torch.no_grad():
        model.net.fc.weight.mul_(1000)
        model.net.fc.bias.mul_(1000)
    x, t = torch.rand(4, 3, 16, 16), torch.tensor([0, 3, 5, 9])
    ours = attribute(model, x, t, method, layer="layer1")[:, 0]  # layer1 keeps 16x16: no resizing
    with getattr(pgc, ref)(model=model, target_layers=[model.layer("layer1")]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
    assert theirs.shape == ours.shape
    assert torch.allclose(_minmax(ours), theirs, atol=1e-3)  # 0.1 % of the normalised range (float32 sums)
