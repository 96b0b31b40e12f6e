"""DeepLIFT and guided backprop: completeness, agreement with Captum, sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpcli.methods import attribute
from interpcli.models import Classifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _resnet(seed=0):
    torch.manual_seed(seed)
    return Classifier("resnet20", 10, (3, 16, 16), {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}).eval()


def test_deeplift_completeness_on_a_resnet():
    model, x, t = _resnet(), torch.rand(4, 3, 16, 16), torch.tensor([1, 3, 5, 7])
    a = attribute(model, x, t, "deeplift")
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    assert torch.allclose(a.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-5)


def test_agreement_with_captum():
    from captum.attr import DeepLift, GuidedBackprop

    model, x, t = _resnet(), torch.rand(3, 3, 16, 16), torch.tensor([0, 4, 9])
    ref = DeepLift(model).attribute(x.clone().requires_grad_(), baselines=torch.zeros_like(x), target=t)
    assert torch.allclose(attribute(model, x, t, "deeplift"), ref.detach(), atol=1e-6)
    ref = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t)
    assert torch.allclose(attribute(model, x, t, "guided-backprop"), ref.detach(), atol=1e-6)


@pytest.mark.parametrize("method", ["deeplift", "guided-backprop"])
def test_model_randomisation_and_batch_size(method):
    x = torch.rand(3, 3, 16, 16)
    a = attribute(_resnet(0), x, 2, method, batch_size=1)
    assert torch.allclose(a, attribute(_resnet(0), x, 2, method, batch_size=64), atol=1e-6)
    b = attribute(_resnet(1), x, 2, method)
    assert np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1] < 0.9


def test_own_rescale_pass_and_captum_fallback():
    from captum.attr import DeepLift

    from interpcli.methods.propagation import _rescale_supported

    res = _resnet()
    torch.manual_seed(1)
    lenet = Classifier("lenet", 10, (1, 28, 28), {"kind": "identity"}).eval()  # max-pooling: our max rule
    assert _rescale_supported(res) and _rescale_supported(lenet)
    x = torch.rand(3, 1, 28, 28)
    ref = DeepLift(lenet).attribute(x.clone().requires_grad_(), baselines=torch.zeros_like(x), target=2)
    ours = attribute(lenet, x, 2, "deeplift", fast=False)
    with torch.no_grad():
        delta = lenet(x)[:, 2] - lenet(torch.zeros_like(x))[:, 2]
    assert torch.allclose(ours.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-5)  # complete, where Captum's
    assert not torch.allclose(ref.detach().sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-5)  # max-pool rule is not
    x = torch.rand(3, 3, 16, 16)
    for baseline in ("blurred", "uniform"):  # completeness of our pass for other baselines too
        from interpcli.perturb import make_baseline

        a = attribute(res, x, 4, "deeplift", baseline=baseline)
        with torch.no_grad():
            delta = res(x)[:, 4] - res(make_baseline(baseline, x))[:, 4]
        assert torch.allclose(a.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-5)


def test_rescale_pass_where_input_equals_baseline():
    """Δz = 0 everywhere takes the local-gradient branch (a single image, as in the fast-path test)."""
    a = attribute(_resnet(), torch.zeros(1, 3, 16, 16), 3, "deeplift")
    assert a.shape == (1, 3, 16, 16) and float(a.abs().max()) == 0.0


def test_the_fast_path_copy_takes_the_rescale_pass():
    from interpcli.fastpath import fast_model
    from interpcli.methods.propagation import _rescale_supported

    assert _rescale_supported(fast_model(_resnet()))  # folded BatchNorms leave eval-mode Identities
