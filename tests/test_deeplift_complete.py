"""DeepLIFT is complete on every registered architecture (summation-to-delta, Shrikumar et al.
2017): sum over (C, H, W) of the attributions = f_t(x) - f_t(baseline), for a black and a
blurred baseline, on the fast path and off it.  Tolerance, relative to max(1, |Δf|): 1e-4
where every nonlinearity has an exact rule (elementwise activations, max pooling, products,
quotients), 1e-3 where a unit takes the path-averaged gradient (SoftMaxPool's softmax, B-cos
norms, ProtoPNet's distances).  ``explain`` records and warns about completeness gaps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from interpcli.inputs import Inputs
from interpcli.methods import attribute
from interpcli.models import Classifier, get_model_info, list_models
from interpcli.ops.explain import explain
from interpcli.perturb import make_baseline

from .test_sweep import ARCH, NUM_CLASSES

EXACT = {"airbench94", "lenet", "pulse-cnn", "pulse-cnn-paper", "resnet20", "resnet56", "vgg9"}


def _model(arch: str) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    info = get_model_info(arch)
    kwargs, size = ARCH[arch]
    c = info.default_input[0]
    enc = {"kind": "normalize", "mean": [0.5] * c, "std": [0.25] * c} if info.encoding == "normalize" \
        else {"kind": info.encoding}
    torch.manual_seed(0)
    model = Classifier(arch, NUM_CLASSES, (c, size, size), enc, arch_kwargs=kwargs)
    # BatchNorm statistics of random images, as training would leave them: without them the
    # deep random ResNets have logits ~1e3, and float32 rounding alone is ~1e-4 of a small Δf.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model(torch.rand(16, c, size, size, generator=torch.Generator().manual_seed(2)))
    x = torch.rand(3, c, size, size, generator=torch.Generator().manual_seed(1))
    return model.eval(), x, torch.tensor([0, 1, 2])


def _gap(model, x, t, baseline: str, **kw) -> float:
    a = attribute(model, x, t, "deeplift", baseline=baseline, **kw)
    with torch.no_grad():
        delta = (model(x) - model(make_baseline(baseline, x))).gather(1, t[:, None])[:, 0]
    return float(((a.sum((1, 2, 3)) - delta).abs() / delta.abs().clamp_min(1)).max())


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("arch", list_models())
def test_deeplift_sums_to_the_output_difference(arch, fast):
    model, x, t = _model(arch)
    tol = 1e-4 if arch in EXACT else 1e-3
    gaps = {b: _gap(model, x, t, b, fast=fast) for b in ("black", "blurred")}
    assert max(gaps.values()) < tol, gaps


class _Shifted(torch.nn.Module):
    """Global max pooling of ``x + shift``: from the black baseline, the reference is ``shift``."""

    def __init__(self, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("shift", shift)
        self.pool, self.flat = torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten()

    def forward(self, x):
        return self.flat(self.pool(x + self.shift))


def test_max_pooling_rule_shares_delta_between_the_two_arg_maxes():
    """Input (3, 1, 0, 0), reference (0, 2, 0, 0): Δy = 3 - 2 = 1, Δx = (3, -1) at the two
    arg-maxes, λ = (3 - 1) / ((3 - 1) + (2 - 0)) = 1/2: attributions (1.5, -0.5, 0, 0)."""
    ref = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]]])
    x = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]]]]) - ref
    a = attribute(_Shifted(ref), x, 0, "deeplift")
    assert torch.allclose(a, torch.tensor([[[[1.5, -0.5], [0.0, 0.0]]]]))
    a = attribute(_Shifted(torch.zeros_like(ref)), x + ref, 0, "deeplift")  # same arg-max: all of Δy to it
    assert torch.allclose(a, torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]]))


def test_explain_records_the_completeness_gap_and_warns_once():
    model, x, _ = _model("lenet")
    inputs = Inputs(x, torch.full((len(x),), -1), [f"x{i}" for i in range(len(x))])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = explain(model, inputs, ["deeplift", "intgrad", "grad"], params={"intgrad": {"steps": 1}})
    gap = res.extras["completeness_gap_deeplift"]
    assert gap.shape == (len(x),) and float(np.max(gap)) < 1e-4
    assert res.extras["completeness_gap_intgrad"].shape == (len(x),) and "completeness_gap_grad" not in res.extras
    texts = [str(w.message) for w in seen if "completeness" in str(w.message)]
    assert len(texts) == 1 and "intgrad" in texts[0], texts  # one step of intgrad is far from complete
