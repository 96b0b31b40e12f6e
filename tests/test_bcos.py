"""B-cos layers and networks: the definitions, the dynamic-linear identity, and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from interpcli import TrainConfig, load_model, train
from interpcli.artifacts import save_checkpoint
from interpcli.errors import ConfigError
from interpcli.models import Classifier, get_model_info, list_models
from interpcli.models.bcos import (
    BatchNormUncentered2d,
    BcosConv2d,
    BcosLinear,
    LogitLayer,
    PositionNormUncentered2d,
    contributions,
    explanation_mode,
)
from interpcli.models.bcos_layers import bcos_scale, maxout_scale

from .conftest import shared_npz

BCOS = list_models(family="bcos")


def test_registry_has_the_bcos_family():
    assert {"bcos-resnet20", "bcos-resnet56", "bcos-vgg9", "bcos-lenet"} <= set(BCOS)
    for name in BCOS:
        info = get_model_info(name)
        assert info.encoding == "bcos6" and info.recipe["loss"] == "bce"


def test_b1_is_a_linear_layer_with_unit_norm_weights():
    torch.manual_seed(0)
    conv = BcosConv2d(4, 5, 3, 1, 1, b=1.0)
    x = torch.randn(2, 4, 8, 8)
    w = conv.weight / conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(conv(x), F.conv2d(x, w, padding=1), atol=1e-6)
    lin = BcosLinear(7, 3, b=1.0)
    v = torch.randn(5, 7)
    assert torch.allclose(lin(v), v @ (lin.weight / lin.weight.norm(dim=1, keepdim=True)).T, atol=1e-6)


@pytest.mark.parametrize("b", [1.5, 2.0, 2.5])
def test_bcos_linear_is_cos_to_the_b_times_norm(b):
    torch.manual_seed(1)
    lin = BcosLinear(6, 4, b=b)
    x = torch.randn(3, 6)
    w = lin.weight / lin.weight.norm(dim=1, keepdim=True)
    cos = (x @ w.T) / x.norm(dim=1, keepdim=True)
    expected = x.norm(dim=1, keepdim=True) * cos.abs() ** b * cos.sign()
    assert torch.allclose(lin(x), expected, rtol=1e-4, atol=1e-5)


def test_bcos_conv_uses_the_patch_norm_and_maxout():
    torch.manual_seed(2)
    conv = BcosConv2d(3, 2, 3, stride=1, padding=1, b=2.0, max_out=2)
    x = torch.randn(1, 3, 5, 5)
    out = conv(x)
    xp = F.pad(x, (1, 1, 1, 1))
    w = conv.weight / conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for i in range(5):
        for j in range(5):
            patch = xp[0, :, i : i + 3, j : j + 3].flatten()
            lin = (w.flatten(1) @ patch).view(2, 2).amax(1)  # MaxOut before the cosine scaling
            expected = lin * lin.abs() / (patch.norm() ** 2 + 1e-6).sqrt()
            assert torch.allclose(out[0, :, i, j], expected, atol=1e-5)


def test_learnable_b_stays_at_least_one_and_trains():
    torch.manual_seed(0)
    lin = BcosLinear(4, 2, b=1.0, learnable_b=True)
    assert float(lin.b.value().detach()) == pytest.approx(1.0, abs=1e-3)
    opt = torch.optim.Adam(lin.parameters(), lr=1.0)
    for _ in range(50):  # a loss that wants B as small as possible
        loss = lin.b.value() * 10
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert float(lin.b.value().detach()) >= 1.0
    lin2 = BcosLinear(4, 2, b=2.0, learnable_b=True)
    assert float(lin2.b.value().detach()) == pytest.approx(2.0, rel=1e-6)
    x = torch.randn(3, 4)
    lin2(x).sum().backward()
    assert lin2.b.rho.grad is not None and lin2.b.rho.grad != 0


def test_uncentred_norms():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) + 2.0
    bn = BatchNormUncentered2d(3).train()
    y = bn(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(y, x / (var + 1e-5).sqrt().view(1, -1, 1, 1), atol=1e-6)  # not centred
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * var, atol=1e-5)  # biased, as B-cos v2
    bn.eval()
    assert torch.allclose(bn(x), x / (bn.running_var + 1e-5).sqrt().view(1, -1, 1, 1))
    pn = PositionNormUncentered2d(3)
    assert torch.allclose(pn(x), x / (x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).sqrt(), atol=1e-6)


def test_logit_layer_bias():
    assert LogitLayer(10).bias == pytest.approx(-math.log(9))
    # zero evidence -> sigmoid probability 1/C
    assert torch.sigmoid(LogitLayer(10)(torch.zeros(1, 10))) == pytest.approx(torch.full((1, 10), 0.1))


def _model(name, norm=None, dtype=torch.float64):
    info = get_model_info(name)
    kw = {"width": 0.25} if name == "bcos-vgg9" else {}
    if norm:
        kw["norm"] = norm
    return Classifier(name, 10, info.default_input, {"kind": "bcos6"}, arch_kwargs=kw).to(dtype)


@pytest.mark.parametrize("name", BCOS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_contributions_sum_to_the_logit(name, mode):
    torch.manual_seed(0)
    model = _model(name)
    model.train(mode == "train")
    x = torch.rand(3, *model.input_shape, dtype=torch.float64)
    target = torch.tensor([0, 4, 9])
    e = contributions(model, x, target)
    assert e.contributions.shape == (3, 2 * model.input_shape[0], *model.input_shape[1:])
    evidence = e.logits.gather(1, target[:, None])[:, 0] - e.bias
    total = e.contributions.sum((1, 2, 3))
    assert torch.allclose(total, evidence, rtol=1e-4, atol=0), (total, evidence)
    # ... and the logits are those of the ordinary forward pass (explanation mode changes gradients only).
    model.eval()
    assert torch.allclose(e.logits, model(x), rtol=1e-6) if mode == "eval" else True


@pytest.mark.parametrize("norm", ["bnu", "pnu"])
def test_contributions_exact_with_uncentred_norms(norm):
    torch.manual_seed(0)
    model = _model("bcos-resnet20", norm=norm)
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    model.train()
    model(x)  # give BatchNorm running statistics that differ from 1
    for mode in (True, False):
        model.train(mode)
        e = contributions(model, x, 2)
        evidence = e.logits[:, 2] - e.bias
        assert torch.allclose(e.contributions.sum((1, 2, 3)), evidence, rtol=1e-4, atol=0)


def test_contributions_float32_on_a_trained_model(tmp_path):
    out = tmp_path / "b.safetensors"
    train(TrainConfig(arch="bcos-lenet", dataset="digits", epochs=3, seed=0), out=out, device="cpu")
    model = load_model(out)
    from interpcli.data import load_dataset

    x = load_dataset("digits").x_test[:16].float() / 255
    e = contributions(model, x, model(x).argmax(1))
    evidence = e.logits.max(1).values - e.bias
    assert torch.allclose(e.contributions.sum((1, 2, 3)), evidence, rtol=1e-4, atol=1e-5 * float(evidence.abs().max()))


def test_explanation_mode_detaches_and_restores():
    torch.manual_seed(0)
    lin = BcosLinear(5, 1, b=2.0)
    x = torch.randn(1, 5, requires_grad=True)
    with explanation_mode(lin):
        assert lin.explain
        (g,) = torch.autograd.grad(lin(x).sum(), x)
    assert not lin.explain
    w = lin.weight / lin.weight.norm()
    scale = (x @ w.T).abs() / x.norm()
    assert torch.allclose(g, scale * w, atol=1e-6)  # gradient = the dynamic linear weight
    (g_full,) = torch.autograd.grad(lin(x).sum(), x)
    assert not torch.allclose(g_full, g)


def test_contributions_refuse_standard_models():
    with pytest.raises(ConfigError, match="B-cos"):
        contributions(Classifier("resnet20", 10, (3, 32, 32), {"kind": "identity"}), torch.rand(1, 3, 32, 32), 0)


def test_bcos_vgg9_matches_the_v1_configuration():
    net = _model("bcos-vgg9", dtype=torch.float32).net
    full = Classifier("bcos-vgg9", 10, (3, 32, 32), {"kind": "bcos6"}).net
    convs = [m for m in full.modules() if isinstance(m, BcosConv2d)]
    assert [c.c_out for c in convs] == [64, 64, 128, 128, 128, 256, 256, 256, 10]
    assert [c.stride for c in convs] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert [c.k for c in convs] == [3] * 8 + [1] and all(c.max_out == 2 for c in convs)
    assert convs[0].scale == pytest.approx(10 ** (-2 + 1.5 * 0.5)) and full.logits.temperature == 100.0
    assert net(torch.rand(2, 6, 32, 32)).shape == (2, 10)


def test_bcos_resnet_has_no_relu_and_classifies_before_pooling():
    net = _model("bcos-resnet56", dtype=torch.float32).net
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert len(net.layer1) == 9 and net.classifier.k == 1
    assert all(getattr(m, "bias", None) is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_bcos_lenet_learns_digits(tmp_path):
    res = train(TrainConfig(arch="bcos-lenet", dataset="digits", epochs=20, seed=0), device="cpu")
    assert res.metrics["test_acc"] >= 0.85  # chance 0.1


def _two_class_cifar(tmp_path, n_train=512, n_test=200):
    with np.load(shared_npz("cifar10"), allow_pickle=False) as z:
        def pick(x, y, n):
            m = np.isin(y, [0, 1])
            return x[m][:n], y[m][:n]
        xtr, ytr = pick(z["x_train"], z["y_train"], n_train)
        xte, yte = pick(z["x_test"], z["y_test"], n_test)
    p = tmp_path / "planecar.npz"
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(["airplane", "automobile"]))
    return p


@pytest.mark.parametrize("arch,kw", [("bcos-resnet20", {}), ("bcos-vgg9", {"width": 0.25})])
def test_bcos_cifar_archs_learn_digits(arch, kw):
    # The CIFAR nets are fully convolutional: on the 8x8 digits they train in seconds on a CPU.
    res = train(TrainConfig(arch=arch, dataset="digits", arch_kwargs=kw, epochs=3, batch_size=64, lr=3e-3, seed=0),
                device="cpu")
    assert res.metrics["test_acc"] >= 0.7  # chance 0.1


@pytest.mark.slow
@pytest.mark.parametrize("arch,kw", [("bcos-resnet20", {}), ("bcos-resnet56", {"norm": "bnu"}),
                                     ("bcos-vgg9", {"width": 0.25})])
def test_bcos_cifar_nets_learn_plane_vs_car(tmp_path, arch, kw):
    # Without normalisation the 56-layer net barely moves in 3 short epochs (0.55); with the v2
    # uncentred BatchNorm it learns.  The no-norm default follows the v2 CIFAR base config.
    data = _two_class_cifar(tmp_path, n_train=1024)
    res = train(TrainConfig(arch=arch, dataset=str(data), arch_kwargs=kw, epochs=3, batch_size=32, lr=3e-3, seed=0),
                device="cpu")
    assert res.metrics["test_acc"] >= 0.7  # chance 0.5


@pytest.mark.parametrize("name", BCOS)
def test_checkpoint_round_trip_keeps_contributions(tmp_path, name):
    torch.manual_seed(0)
    model = _model(name, dtype=torch.float32).eval()
    out = tmp_path / "m.safetensors"
    save_checkpoint(out, model)
    again = load_model(out)
    x = torch.rand(2, *model.input_shape)
    assert torch.equal(model(x), again(x))
    assert torch.equal(contributions(model, x, 1).contributions, contributions(again, x, 1).contributions)


def _composed(out, norm, m, b, detach):
    """MaxOut (amax) then the scale, as plain autograd ops: the reference of the fused node."""
    o = out.unflatten(1, (-1, m)).amax(2) if m > 1 else out
    return bcos_scale(o, norm, b, detach)


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("b", [2.0, 1.5, 2.5])
@pytest.mark.parametrize("detach", [False, True])
def test_fused_maxout_scale_equals_the_composed_ops(m, b, detach):
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 4 * m, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    norm = (torch.rand(3, 1, 5, 6, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    fused = maxout_scale(out, norm, m, b, detach)
    ref = _composed(out, norm, m, b, detach)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(fused.shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((fused * w).sum(), (out, norm), allow_unused=True)
    gb = torch.autograd.grad((ref * w).sum(), (out, norm), allow_unused=True)
    for a_, b_ in zip(ga, gb):
        if b_ is None:
            assert a_ is None or torch.count_nonzero(a_) == 0
        else:
            torch.testing.assert_close(a_, b_, rtol=1e-10, atol=1e-12)
    if not detach:
        assert torch.autograd.gradcheck(lambda o, n: maxout_scale(o, n, m, b, False), (out, norm))


def test_the_fused_node_is_used_for_a_fixed_b_and_not_for_a_learnable_one():
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    fixed = BcosConv2d(3, 4, 3, padding=1, max_out=2)
    assert fixed(x).grad_fn.name().endswith("_MaxOutScaleBackward")
    learn = BcosConv2d(3, 4, 3, padding=1, max_out=2, learnable_b=True)
    y = learn(x)
    y.sum().backward()
    assert learn.b.rho.grad is not None and not y.grad_fn.name().endswith("_MaxOutScaleBackward")


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("m", [1, 2])
def test_fused_conv_equals_composed_in_either_memory_format(fmt, m):
    """The whole B-cos convolution (patch norm node, MaxOut chunks, in-place MaxOut gradient in the
    gradient's own layout) against the composed ops, for contiguous and channels_last tensors."""
    from interpcli.models.bcos_layers import composed_ops

    torch.manual_seed(0)
    conv = BcosConv2d(5, 4, 3, stride=2, padding=1, max_out=m).double().to(memory_format=fmt)
    x = torch.randn(3, 5, 9, 9, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_(True)
    w = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    y = conv(x)
    gx, gw = torch.autograd.grad((y * w).sum(), (x, conv.weight))
    with composed_ops():
        y_ref = conv(x)
        gx_ref, gw_ref = torch.autograd.grad((y_ref * w).sum(), (x, conv.weight))
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0), (5, 1, 2)])
def test_patch_norm_node_equals_the_composed_ops_and_passes_gradcheck(k, stride, padding):
    from interpcli.models.bcos_layers import patch_norm

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    fused, ref = patch_norm(x, k, stride, padding, fused=True), patch_norm(x, k, stride, padding, fused=False)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    # the definition: the L2 norm of each zero-padded k x k patch over all channels
    patches = torch.nn.functional.unfold(x, k, padding=padding, stride=stride)
    side = (7 + 2 * padding - k) // stride + 1
    torch.testing.assert_close(fused.flatten(1), (patches.square().sum(1) + 1e-6).sqrt().view(2, side * side))
    assert torch.autograd.gradcheck(lambda t: patch_norm(t, k, stride, padding, fused=True), (x,))


def test_fused_nodes_refuse_double_backward_and_the_composed_ops_give_it():
    """The fused nodes are once-differentiable (an error, never a silently wrong second derivative);
    composed_ops() gives exact higher derivatives."""
    from interpcli.models.bcos_layers import composed_ops

    torch.manual_seed(0)
    conv = BcosConv2d(2, 3, 3, padding=1, max_out=2).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(conv(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
    with composed_ops():
        assert torch.autograd.gradgradcheck(lambda t: conv(t), (x,))
