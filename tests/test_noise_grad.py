"""`interp noise-grad`: unit gradients on noise and images, the batched backward against the
per-unit loop, rendering, alignment scores, determinism and the errors of unit selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from interpcli.artifacts import load_npz
from interpcli.cli import app
from interpcli.errors import ConfigError
from interpcli.inputs import InputSpec
from interpcli.kernel_viz import render
from interpcli.models import Classifier, get_model_info
from interpcli.noisegrad import NoiseGradConfig, alignment_scores, noise_distribution, noise_images, unit_gradients
from interpcli.ops.noise_grad import noise_grad, noise_grad_checkpoint

from .test_bad_inputs import _one_line_error


class LinearUnits(nn.Module):
    """Four units, each a fixed linear filter of the whole image (an 8x8 conv on an 8x8 input)."""

    input_shape = (3, 8, 8)
    classes = ["a", "b", "c", "d"]

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 8)
        self.flat = nn.Flatten(1)

    def forward(self, x):
        return self.flat(self.conv(x))


def _small(arch: str, **kw) -> Classifier:
    c, _, _ = get_model_info(arch).default_input
    size = {"smp-gumbel": 30, "smp-directional": 32}.get(arch, 16)
    torch.manual_seed(0)
    return Classifier(arch, 2, (c, size, size), {"kind": get_model_info(arch).encoding} if
                      get_model_info(arch).encoding != "normalize" else
                      {"kind": "normalize", "mean": [0.4] * c, "std": [0.2] * c}, arch_kwargs=kw).eval()


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------- known values

@pytest.mark.parametrize("layer,reduce", [("logits", "max"), ("conv", "max"), ("conv", "mean")])
def test_a_linear_unit_returns_its_filter(layer, reduce):
    model = LinearUnits().eval()
    res = noise_grad(model, NoiseGradConfig(layer=layer, reduce=reduce, samples=5, seed=3))
    w = model.conv.weight.detach()
    assert res.gradients.shape == (4, 5, 3, 8, 8)
    assert torch.allclose(res.gradients, w[:, None].expand_as(res.gradients), atol=1e-6)
    # the picture is the filter, up to the rendering's scale
    assert np.allclose(render(res.gradients), render(w)[:, None].repeat(5, 1), atol=1e-6)
    scores = res.scores()["summary"]
    assert scores["noise_consistency"] == pytest.approx(1.0) and scores["noise_spread"] == pytest.approx(0, abs=1e-9)


def test_rendering_minmax_and_percentile():
    g = np.array([[[-2.0, 0.0], [1.0, 2.0]]])[None]                # (1, 1, 2, 2)
    assert np.allclose(render(g, "minmax")[0, 0], [[0, 0.5], [0.75, 1]])
    p = render(g, "percentile", 100)[0, 0]                          # p = max|g| = 2: g / 4 + 1/2
    assert np.allclose(p, [[0, 0.5], [0.75, 1]])
    assert np.allclose(render(np.zeros((1, 3, 2, 2))), 0.5)        # constant: mid-grey, no division by 0
    clipped = render(np.array([[[[0.0, 0.0, 0.0, 10.0]]]]), "percentile", 50)  # p50 of |g| is 0: falls back to max
    assert clipped.max() == 1.0 and clipped.min() == 0.5


def test_alignment_scores_on_known_gradients():
    x = torch.zeros(3, 1, 2, 2)
    x[2] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])                  # an "image"
    g = torch.zeros(1, 3, 1, 2, 2)
    g[0, 0, 0, 0, 0], g[0, 1, 0, 0, 1], g[0, 2, 0, 0, 0] = 1.0, 1.0, 2.0   # orthogonal noise gradients
    s = alignment_scores(g, x, [True, True, False], [0.0])
    assert s["noise_consistency"] == [pytest.approx(0.0)] and s["noise_spread"] == [pytest.approx(0.5)]
    assert s["image_alignment"] == [pytest.approx(1.0)] and s["zero_gradient"] == [0.0]


# ---------------------------------------------------------------------------------------------- batched == loop

@pytest.mark.parametrize("arch,layer,reduce", [
    ("smp-directional", "features.conv2", "max"),     # the units of the research log's figures
    ("smp-gumbel", "features.conv2", "max"),          # Gumbel units
    ("smp-gumbel", "head.smpool", "max"),             # SoftMaxPool groups (2-D output)
    ("resnet20", "layer2", "mean"),
    ("bcos-lenet", "logits", "max"),                  # six-channel encoding inside the model
])
def test_batched_and_folded_backward_equal_the_per_unit_loop(arch, layer, reduce):
    kw = {"width": 12} if arch.startswith("smp") else ({"width": 8} if arch == "resnet20" else {})
    model = _small(arch, **kw)
    x = torch.rand(3, *model.input_shape, generator=torch.Generator().manual_seed(0))
    units = [0, 1] if layer in ("head.smpool", "logits") else [0, 1, 3]
    ref = unit_gradients(model, x, units, layer, reduce, mode="loop")
    assert float(ref.abs().max()) > 0
    for mode in ("batched", "fold", "auto"):
        got = unit_gradients(model, x, units, layer, reduce, mode=mode, batch_rows=4)  # several chunks
        assert torch.allclose(got, ref, atol=1e-5 * float(ref.abs().max()), rtol=0), mode


def test_noise_is_standard_normal_in_the_networks_input_space():
    model = _small("resnet20", width=8)
    mean, std = noise_distribution(model)
    assert mean == pytest.approx([0.4] * 3) and std == pytest.approx([0.2] * 3)
    z = model.encoder(noise_images(64, model.input_shape, mean, std, seed=1))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    assert noise_distribution(_small("bcos-lenet")) == ([0.5], [0.25])  # no statistics: N(0.5, 0.25^2)
    assert noise_distribution(model, 0.0, [1, 2, 3]) == ([0.0] * 3, [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="1 or 3 values"):
        noise_distribution(model, [0.1, 0.2])


# ---------------------------------------------------------------------------------------------- checkpoint / CLI

def test_same_seed_same_npz_and_images_beside_noise(digits_ckpt, tmp_path):
    cfg = NoiseGradConfig(layer="conv2", units="0:4", samples=3, seed=7, average=True)
    spec = InputSpec(indices="0:2")
    _, files = noise_grad_checkpoint(digits_ckpt, tmp_path / "a", cfg, inputs=spec, device="cpu")
    noise_grad_checkpoint(digits_ckpt, tmp_path / "b", cfg, inputs=spec, device="cpu")
    noise_grad_checkpoint(digits_ckpt, tmp_path / "c", NoiseGradConfig(layer="conv2", units="0:4", samples=3, seed=8),
                          device="cpu")
    a, meta = load_npz(tmp_path / "a" / "noise_grad.npz")
    b, meta_b = load_npz(tmp_path / "b" / "noise_grad.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a) and meta == meta_b
    assert not np.array_equal(a["gradients"][:, :3], load_npz(tmp_path / "c" / "noise_grad.npz")[0]["gradients"])
    assert a["gradients"].shape == (4, 5, 1, 8, 8) and list(a["kinds"]) == ["noise"] * 3 + ["image"] * 2
    assert a["mean_gradient"].shape == (4, 1, 8, 8) and a["values"].shape == (5, 4)
    assert meta["config"]["noise_mean"] == pytest.approx([float(v) for v in meta["config"]["noise_mean"]])
    assert meta["checkpoint"]["arch"] == "lenet" and [f.name for f in files] == ["noise_grad.npz", "scores.json",
                                                                                  "grid.png"]
    scores = json.loads((tmp_path / "a" / "scores.json").read_text())
    assert len(scores["units"]) == 4 and scores["summary"]["image_alignment"] is not None


def test_cli_writes_paths_and_lists_layers(digits_ckpt, tmp_path):
    r = invoke("noise-grad", digits_ckpt, "--samples", "2", "--classes", "0,3", "--device", "cpu", "-q",
               "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(tmp_path / "o" / f) for f in ("noise_grad.npz", "scores.json", "grid.png")]
    arrays, meta = load_npz(tmp_path / "o" / "noise_grad.npz")
    assert list(arrays["unit_names"]) == ["0", "3"] and meta["layer"] == "logits"
    r = invoke("noise-grad", digits_ckpt, "--layers")
    assert r.exit_code == 0 and r.stdout.splitlines()[:3] == ["logits", "conv1", "relu1"]
    rows = json.loads(invoke("noise-grad", digits_ckpt, "--layers", "--json").stdout)
    assert rows[1] == {"name": "conv1", "type": "Conv2d", "shape": [6, 8, 8], "units": 6}
    assert invoke("noise-grad", digits_ckpt, "-o", tmp_path / "o").exit_code == 2  # exists: needs --force


@pytest.mark.parametrize("args,needles", [
    (["--layer", "conv9"], ["layer 'conv9' not found", "conv1"]),
    (["--layer", "conv2", "--units", "0:40"], ["--units", "has 16 units", "of 0..15"]),
    (["--layer", "conv2", "--units", "a:b"], ["--units", "START:STOP"]),
    (["--classes", "11"], ["--classes '11' selects [11] of 0..9"]),
    (["--classes", "cat"], ["--classes", "names"]),
    (["--layer", "conv2", "--classes", "1"], ["--classes selects class logits"]),
    (["--units", "0:3"], ["--units selects channels of a --layer"]),
    (["--samples", "0"], ["nothing to compute"]),
    (["--noise-std", "0"], ["--noise-std must be positive"]),
    (["--noise-mean", "x"], ["--noise-mean"]),
    (["--reduce", "median"], ["'median' is not one of"]),
])
def test_selection_errors_are_one_clear_line(digits_ckpt, tmp_path, args, needles):
    _one_line_error(invoke("noise-grad", digits_ckpt, *args, "-o", tmp_path / "o"), *needles)
    assert not (tmp_path / "o").exists()
