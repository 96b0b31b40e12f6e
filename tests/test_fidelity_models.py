"""Fidelity of models and training to their sources: CAM layers that are spatial, the
pulse-cnn-paper recipe and dropout of its research note, zero-padded translations, and the
B-cos uncentred BatchNorm's running variance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from interpcli import artifacts
from interpcli.artifacts import save_checkpoint, save_npz
from interpcli.cli import app
from interpcli.data import DeviceLoader, augment_batch
from interpcli.errors import ConfigError
from interpcli.methods import attribute
from interpcli.models import Classifier, get_model_info, list_models
from interpcli.models.bcos_layers import BatchNormUncentered2d
from interpcli.training import TrainConfig
from interpcli.training.state import load_state

# ----------------------------------------------------------------------------------------
#   Grad-CAM layers
# ----------------------------------------------------------------------------------------

# Small widths (3 classes) keep the test fast; the spatial structure of the default input is kept.
SMALL = {
    "airbench94": {"widths": [8, 16, 16]},
    "bcos-lenet": {"width": 4, "hidden": 16},
    "bcos-resnet20": {"width": 4},
    "bcos-resnet56": {"width": 4},
    "bcos-vgg9": {"width": 0.125},
    "lenet": {"width": 4, "hidden": 16},
    "positive-lenet": {"width": 12},
    "positive-vgg": {"channels": [8, 8], "width": 12},
    "protopnet": {"prototypes_per_class": 2, "prototype_dim": 8, "width": 4},
    "pulse-cnn": {"kernels": 2, "conv2_channels": 2, "hidden": [8]},
    "pulse-cnn-paper": {"kernels": 2, "hidden": [16, 8]},
    "resnet20": {"width": 4},
    "resnet56": {"width": 4},
    "smp-conjdisj": {"width": 15},
    "smp-directional": {"width": 12},
    "smp-gumbel": {"width": 12, "out_width": 6},
    "vgg9": {"width": 0.125},
}
CAM_ARCHS = [a for a in list_models() if get_model_info(a).target_layer]


def _model(arch: str, seed: int = 0) -> Classifier:
    info = get_model_info(arch)
    c = info.default_input[0]
    enc = {"kind": "bcos6"} if info.encoding == "bcos6" else {"kind": "normalize", "mean": [0.5] * c, "std": [0.25] * c}
    torch.manual_seed(seed)
    return Classifier(arch, 3, info.default_input, enc, arch_kwargs=SMALL.get(arch, {})).eval()


def test_every_cam_arch_has_small_options():
    assert set(CAM_ARCHS) <= set(SMALL)


@pytest.mark.parametrize("arch", CAM_ARCHS)
def test_default_cam_layer_is_spatial_and_maps_are_not_constant(arch):
    model = _model(arch)
    x = torch.rand(4, *model.input_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2, 0])
    for method in ("gradcam", "gradcam++"):
        maps = attribute(model, x, t, method)
        assert maps.shape == (4, 1, *model.input_shape[1:])
        flat = maps.flatten(1)
        spread = flat.amax(1) - flat.amin(1)  # upsampling a 1x1 map leaves float noise: a relative test
        assert (spread > 1e-3 * flat.abs().amax(1)).any(), f"{arch} {method}: constant maps at {model.target_layer}"


@pytest.mark.parametrize("arch", ["smp-directional", "smp-gumbel"])
def test_cam_refuses_a_layer_with_a_1x1_output(arch):
    model = _model(arch)
    x = torch.rand(2, *model.input_shape)
    for method in ("gradcam", "gradcam++"):
        with pytest.raises(ConfigError, match=r"features\.conv2.*1x1.*e\.g\."):
            attribute(model, x, 0, method, layer="features.conv2")


def test_cam_refuses_a_layer_without_a_spatial_map():
    model = _model("lenet")
    with pytest.raises(ConfigError, match="fc1"):
        attribute(model, torch.rand(2, 1, 28, 28), 0, "gradcam", layer="fc1")


def test_cli_refusal_of_a_1x1_layer_is_one_line_and_exit_2(tmp_path):
    model = _model("smp-directional")
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model)
    npz = save_npz(tmp_path / "x.npz", images=np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32))
    r = CliRunner().invoke(app, ["explain", str(ckpt), "--npz", str(npz), "-m", "gradcam", "-p",
                                 "layer=features.conv2", "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2, r.output
    assert "1x1" in r.output and "features.conv2" in r.output


# ----------------------------------------------------------------------------------------
#   pulse-cnn-paper: recipe and dropout as in the research note (../shared/seeds/003)
# ----------------------------------------------------------------------------------------

def test_pulse_cnn_paper_recipe_has_no_weight_decay():
    cfg = TrainConfig(arch="pulse-cnn-paper", dataset="pulses").resolved()
    assert cfg.weight_decay == 0
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.loss, cfg.batch_size) == ("sgd", 0.1, 0.0, "l1", 1000)


def _dropout_calls(model: Classifier, x: torch.Tensor) -> list[int]:
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, i, _o: sizes.append(i[0][0].numel()))
             for m in model.net.modules() if isinstance(m, nn.Dropout)]
    model.train()
    model(x)
    for h in hooks:
        h.remove()
    return sizes


def test_pulse_cnn_paper_applies_dropout_once_before_fc1():
    model = _model("pulse-cnn-paper")
    sizes = _dropout_calls(model, torch.rand(2, 1, 100, 100))
    assert sizes == [model.net.num_features]


def test_pulse_cnn_keeps_its_dropout():
    model = Classifier("pulse-cnn", 3, (1, 100, 100), {"kind": "identity"},
                       arch_kwargs={**SMALL["pulse-cnn"], "dropout": 0.5})
    assert _dropout_calls(model, torch.rand(2, 1, 100, 100)) == [model.net.num_features, 8]


# ----------------------------------------------------------------------------------------
#   Translation padding
# ----------------------------------------------------------------------------------------

def _ones(n: int = 16) -> torch.Tensor:
    return torch.ones(n, 1, 6, 6, dtype=torch.uint8)


def test_translate_pads_with_zeros_by_default():
    out = augment_batch(_ones(), flip=False, translate=2, gen=torch.Generator().manual_seed(0))
    border = torch.cat([out[..., 0, :], out[..., -1, :], out[..., 0], out[..., -1]], -1)
    assert (border == 0).any(), "some shifts bring zero padding into the image"
    assert (out[..., 2:-2, 2:-2] == 1).all(), "the centre is never padding"


def test_translate_reflect_never_pads_with_zeros():
    for seed in range(4):
        out = augment_batch(_ones(), flip=False, translate=2, gen=torch.Generator().manual_seed(seed), pad="reflect")
        assert (out == 1).all()


def test_translate_zero_and_reflect_draw_the_same_shifts():
    x = torch.randint(1, 256, (12, 2, 7, 9), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    z = augment_batch(x, True, 2, torch.Generator().manual_seed(3))
    r = augment_batch(x, True, 2, torch.Generator().manual_seed(3), pad="reflect")
    inside = z != 0
    assert torch.equal(z[inside], r[inside])


def test_bad_pad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="zero, reflect"):
        augment_batch(_ones(), False, 2, torch.Generator(), pad="circular")
    with pytest.raises(ConfigError, match="translate-pad"):
        TrainConfig(arch="lenet", dataset="digits", translate_pad="circular").resolved()


def test_device_loader_passes_the_pad_mode():
    y = torch.zeros(16, dtype=torch.long)
    zero = torch.cat([b for b, _ in DeviceLoader(_ones(), y, 8, translate=2)])
    refl = torch.cat([b for b, _ in DeviceLoader(_ones(), y, 8, translate=2, translate_pad="reflect")])
    assert (zero == 0).any() and (refl == 1 / 255).all()


def test_train_config_translate_pad_default_and_cli_option():
    assert TrainConfig(arch="lenet", dataset="digits").resolved().translate_pad == "zero"
    r = CliRunner().invoke(app, ["train", "--help"])
    assert "--translate-pad" in r.output


def _state(path, config: dict):
    meta = {"format_version": artifacts.CHECKPOINT_FORMAT_VERSION, "kind": "train-state", "config": config}
    artifacts.save_tensors(path, {"x": torch.zeros(1)}, meta)
    return path


def test_resume_state_without_translate_pad_compares_equal_to_the_default(tmp_path):
    cfg = TrainConfig(arch="lenet", dataset="digits", epochs=2).resolved()
    old = {k: v for k, v in cfg.to_dict().items() if k != "translate_pad"}
    load_state(_state(tmp_path / "old.state.safetensors", old), cfg)  # an older run resumes
    with pytest.raises(ConfigError, match="translate_pad"):
        load_state(_state(tmp_path / "new.state.safetensors", old), dataclasses.replace(cfg, translate_pad="reflect"))


# ----------------------------------------------------------------------------------------
#   B-cos uncentred BatchNorm
# ----------------------------------------------------------------------------------------

def test_uncentered_bn_running_var_uses_the_biased_variance():
    """As B-cos v2 (bcos/modules/norms/uncentered_norms/batchnorm_uncentered.py): var(unbiased=False)."""
    m = 0.1
    bn = BatchNormUncentered2d(4, momentum=m).train()
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 3 + 1
    bn(x)
    expected = (1 - m) + m * x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(bn.running_var, expected, rtol=1e-6, atol=1e-7)
