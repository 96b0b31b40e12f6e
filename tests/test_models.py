"""Every registered architecture: builds, runs forward and backward, exposes its layers."""

from __future__ import annotations

import pytest
import torch

from interpcli.errors import ConfigError, UnknownName
from interpcli.models import Classifier, create_model, first_layer, get_model_info, list_models, resolve_layer


def _small_input(name: str) -> tuple[int, int, int]:
    return get_model_info(name).default_input


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_and_layers(name):
    torch.manual_seed(0)
    info = get_model_info(name)
    model = Classifier(name, 3, info.default_input, {"kind": "identity"})
    x = torch.rand(2, *info.default_input, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), "gradient must reach every trainable parameter"
    assert info.target_layer is not None and isinstance(model.layer(info.target_layer), torch.nn.Module)
    fl = first_layer(model.net, info.first_layer)
    assert fl is not None and fl.weight.dim() == 4


@pytest.mark.parametrize("name,expected", [("resnet20", 0.27e6), ("resnet56", 0.85e6)])
def test_cifar_resnet_sizes_match_he_et_al(name, expected):
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters, ResNet-56 0.85M.
    n = sum(p.numel() for p in create_model(name, 10, (3, 32, 32)).parameters())
    assert abs(n - expected) / expected < 0.03


def test_resnet_depth_must_be_6n_plus_2():
    from interpcli.models.resnet_cifar import CifarResNet

    with pytest.raises(ValueError):
        CifarResNet(21, 10)
    assert len(CifarResNet(32, 10).layer1) == 5


def test_bias_option_adds_conv_biases():
    without = create_model("resnet20", 10, (3, 32, 32))
    with_b = create_model("resnet20", 10, (3, 32, 32), bias=True)
    convs = [m for m in with_b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    assert all(m.bias is None for m in without.modules() if isinstance(m, torch.nn.Conv2d))


def test_pulse_cnn_paper_configuration():
    net = create_model("pulse-cnn-paper", 3, (1, 100, 100))
    assert net.conv1.weight.shape == (5, 1, 25, 25)
    assert net.conv2.weight.shape == (1, 5, 25, 25)
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [4096, 1024, 3]
    out = net(torch.rand(2, 1, 100, 100))
    assert (out.abs() <= 1).all()  # tanh output, as in the study


def test_airbench_whitening_decorrelates_patches():
    torch.manual_seed(0)
    net = create_model("airbench94", 10, (3, 32, 32))
    # Correlated colour channels: a shared component plus noise.
    base = torch.randn(256, 1, 32, 32)
    x = torch.cat([base + 0.3 * torch.randn(256, 1, 32, 32) for _ in range(3)], 1)
    net.init_from_data(x, eps=0.0)
    w = net.whiten.weight[:12]  # the positive half: 3 * 2 * 2 eigenvectors
    y = torch.nn.functional.conv2d(x, w).transpose(0, 1).flatten(1)
    cov = torch.cov(y)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert torch.equal(net.whiten.weight[12:], -w)


def test_unknown_arch_and_bad_options():
    with pytest.raises(UnknownName) as e:
        create_model("resnet21", 10, (3, 32, 32))
    assert "resnet20" in str(e.value)
    with pytest.raises(ConfigError, match="no option"):
        create_model("resnet20", 10, (3, 32, 32), depth=3)
    with pytest.raises(ConfigError):
        create_model("lenet", 10, (1, 2, 2))


def test_resolve_layer_paths():
    net = create_model("resnet20", 10, (3, 32, 32))
    assert resolve_layer(net, "layer3.2.conv2") is net.layer3[2].conv2
    assert resolve_layer(net, "layer3[-1]") is net.layer3[-1]
    with pytest.raises(ConfigError, match="not found"):
        resolve_layer(net, "layer4")


def test_encoders():
    x = torch.rand(2, 3, 4, 4)
    m = Classifier("resnet20", 10, (3, 4, 4), {"kind": "normalize", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.1]})
    assert torch.allclose(m.encoder(x)[:, 2], (x[:, 2] - 0.3) / 0.1)
    b = Classifier("resnet20", 10, (3, 4, 4), {"kind": "bcos6"})
    assert b.net.conv1.weight.shape[1] == 6
    assert torch.equal(b.encoder(x), torch.cat([x, 1 - x], 1))


def test_standard_twins_match_bcos_shapes():
    from interpcli.models.bcos import BcosConv2d

    std = create_model("vgg9", 10, (3, 32, 32))
    bc = create_model("bcos-vgg9", 10, (6, 32, 32))
    convs = [m for m in std.modules() if isinstance(m, torch.nn.Conv2d)]
    bconvs = [m for m in bc.modules() if isinstance(m, BcosConv2d)]
    assert [(c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs] == \
        [(c.c_out, c.stride, c.k) for c in bconvs]
    r = create_model("resnet56", 10, (3, 32, 32))
    b = create_model("bcos-resnet56", 10, (6, 32, 32))
    assert [len(getattr(r, f"layer{i}")) for i in (1, 2, 3)] == [len(getattr(b, f"layer{i}")) for i in (1, 2, 3)]


def test_lenet_bias_switch():
    net = create_model("lenet", 10, (1, 28, 28), bias=False)
    assert all(m.bias is None for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_class_aliases_of_the_notes():
    from interpcli.data._registry import Dataset

    ds = Dataset("cifar10", torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 1]),
                 torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.tensor([1, 0]),
                 ["airplane", "automobile", "bird"])
    sub = ds.subset_classes(["plane", "car"])
    assert sub.classes == ["airplane", "automobile"] and sub.y_train.tolist() == [0, 1, 1]
