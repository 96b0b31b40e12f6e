"""The eval fast path: BatchNorm folding, channels_last, the copy cache, auto batch size."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from interpcli import fastpath
from interpcli.batching import activation_bytes_per_image, fit_batch
from interpcli.fastpath import conv_bn_pairs, fast_model, fold_conv_bn, folded_into
from interpcli.methods import attribute, get_method, list_methods
from interpcli.methods._common import auto_batch_size
from interpcli.models import Classifier

NORM = {"kind": "normalize", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def _with_bn_stats(model: Classifier, size: int, seed: int = 0) -> Classifier:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh net has mean 0, var 1)."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, size, size) * 1.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def r20():
    return _with_bn_stats(Classifier("resnet20", 10, (3, 32, 32), NORM), 32)


def _input_grad(model, x, t):
    xl = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(xl).gather(1, t[:, None]).sum(), xl)[0]


@pytest.mark.parametrize("arch, n_bn", [("resnet20", 21), ("resnet56", 57)])
def test_folded_resnet_has_the_same_logits_and_input_gradients(arch, n_bn):
    model = _with_bn_stats(Classifier(arch, 10, (3, 32, 32), NORM), 32)
    fast = fast_model(model)
    assert len(conv_bn_pairs(model.net)) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x, t = torch.rand(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert ((out - ref).abs().max() / ref.abs().max()) < 1e-4
    # Input gradients are exactly equal in real arithmetic: check in float64, where no ReLU
    # pre-activation lies within rounding of zero (in float32 one occasionally flips a kink).
    m64 = copy.deepcopy(model).double()
    g, gf = _input_grad(m64, x.double(), t), _input_grad(fast_model(m64), x.double(), t)
    assert ((gf - g).abs().max() / g.abs().max()) < 1e-4
    g32 = _input_grad(fast, x, t)
    assert (g32 - g).norm() / g.norm() < 1e-2


def test_module_names_are_kept_and_the_original_is_untouched(r20):
    before = {k: v.clone() for k, v in r20.state_dict().items()}
    r20.train()
    fast = fast_model(r20)
    assert r20.training and not fast.training
    r20.eval()
    names = lambda m: {n for n, _ in m.named_modules()}  # noqa: E731
    relus = lambda m: {n for n, x in m.named_modules() if isinstance(x, nn.ReLU)}  # noqa: E731
    assert names(fast) == names(r20) and relus(fast) == relus(r20)
    assert isinstance(fast.layer("layer3"), nn.Sequential) and fast.target_layer == "layer3"
    assert isinstance(fast.layer("layer1.0.bn1"), nn.Identity)
    assert folded_into(fast.layer("layer1.0.conv1")) == "layer1.0.bn1"
    assert fast.layer("layer1.0.conv1").weight.is_contiguous(memory_format=torch.channels_last)
    # the user's model: same tensors, BatchNorms still there, weights in the default layout
    assert all(torch.equal(before[k], v) for k, v in r20.state_dict().items())
    assert isinstance(r20.layer("layer1.0.bn1"), nn.BatchNorm2d) and r20.layer("layer1.0.conv1").bias is None
    assert r20.layer("layer1.0.conv1").weight.is_contiguous()


def test_the_copy_is_cached_until_the_model_changes(r20):
    a = fast_model(r20)
    assert fast_model(r20) is a and fast_model(r20, channels_last=False) is not a
    with torch.no_grad():
        r20.net.fc.bias.add_(1.0)
    b = fast_model(r20)
    assert b is not a and torch.equal(b.net.fc.bias, r20.net.fc.bias)
    with torch.no_grad():
        r20.net.fc.bias.sub_(1.0)
    c = fast_model(r20)
    assert c is not b and fast_model(r20) is c
    r20.load_state_dict(r20.state_dict())  # copies in place: the version counters move
    d = fast_model(r20)
    assert d is not c
    fastpath.clear_cache()
    assert fast_model(r20) is not d


def test_only_direct_conv_bn_pairs_are_folded():
    from interpcli.models.airbench import AirbenchNet

    net = AirbenchNet(10, widths=(8, 16, 16))
    pairs = conv_bn_pairs(net)  # conv1 -> pool -> norm1 is not a pair; conv2 -> norm2 is
    assert pairs == [(f"layer{i}.conv2", f"layer{i}.norm2") for i in (1, 2, 3)]

    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x).abs()

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), Custom(4, 4, 1),
                                     nn.BatchNorm2d(4))
            self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.seq(x)
            return self.bn(y) if y.sum() > 0 else self.bn(self.conv(y))  # data-dependent: fx cannot trace

    net = Untraceable().eval()
    with torch.no_grad():
        net.seq[1].running_mean.uniform_(-1, 1)
    x = torch.rand(2, 3, 8, 8)
    ref = net(x)
    assert fold_conv_bn(net) == [("seq.0", "seq.1")]
    assert torch.allclose(net(x), ref, atol=1e-5)


def test_bcos_model_passes_through_unchanged():
    torch.manual_seed(0)
    model = Classifier("bcos-resnet20", 10, (3, 16, 16), {"kind": "bcos6"}, arch_kwargs={"width": 4}).eval()
    assert conv_bn_pairs(model.net) == []
    fast = fast_model(model)
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), rtol=1e-5, atol=1e-6)
    a, b = attribute(model, x, t, "bcos", fast=False), attribute(model, x, t, "bcos")
    assert ((a - b).abs().max() / a.abs().max()) < 1e-4


SMALL = {"steps": 4, "n_samples": 4, "n_masks": 16, "window": 4, "stride": 4, "views": 2, "k": 2, "n_segments": 4}


@pytest.fixture(scope="module")
def tiny64():
    model = _with_bn_stats(Classifier("resnet20", 10, (3, 8, 8), NORM, arch_kwargs={"width": 4}), 8)
    return model.double()


@pytest.mark.parametrize("method", [m for m in list_methods() if not get_method(m).bcos_only])
def test_every_method_gives_the_same_attributions_on_the_fast_path(tiny64, method):
    # float64: the fast path is exact up to rounding, so no ReLU kink can flip between the two
    info = get_method(method)
    kw = {k: v for k, v in SMALL.items() if k in info.defaults}
    x, t = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), torch.tensor([3])
    a = attribute(tiny64, x, t, method, fast=False, **kw)
    b = attribute(tiny64, x, t, method, **kw)
    assert torch.isfinite(b).all()
    assert ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) < 1e-4


def test_a_hooked_conv_with_a_folded_bn_keeps_its_own_output(tiny64):
    x, t = torch.rand(1, 3, 8, 8, dtype=torch.float64), torch.tensor([2])
    a = attribute(tiny64, x, t, "gradcam", fast=False, layer="layer3.2.conv2")
    b = attribute(tiny64, x, t, "gradcam", layer="layer3.2.conv2")
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.slow  # imports dynamo and compiles with inductor (a C++ compiler on CPU)
def test_compile_is_in_place_and_only_on_request(r20):
    fast = fast_model(r20, compile=True)
    assert fast is not fast_model(r20) and getattr(fast, "_compiled_call_impl", None) is not None
    assert getattr(fast_model(r20), "_compiled_call_impl", None) is None
    assert {n for n, _ in fast.named_modules()} == {n for n, _ in r20.named_modules()}
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    a, b = attribute(r20, x, t, "gradcam", fast=False), attribute(r20, x, t, "gradcam", compile=True)
    assert ((a - b).abs().max() / a.abs().max()) < 1e-3


def test_auto_batch_size(r20):
    x = torch.rand(2, 3, 32, 32)
    assert auto_batch_size(r20, x) == 64  # CPU: the fixed default
    assert auto_batch_size(r20, x, 7) == 7  # an explicit --batch-size wins
    per = activation_bytes_per_image(r20, x)
    assert per > 3 * 32 * 32 * 4 * 10  # 19 convs of >= 16 channels at 32x32 and below
    assert fit_batch(per * 100, per) == 64 and fit_batch(1, per) == 1 and fit_batch(1e15, 1, cap=4096) == 4096
    assert isinstance(fit_batch(per * 100, per), int)


def test_cli_has_the_performance_options():
    from typer.testing import CliRunner

    from interpcli.cli import app

    res = CliRunner().invoke(app, ["explain", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "--no-fast" in res.output and "--compile" in res.output
