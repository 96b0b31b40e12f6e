"""`interp explain` and the core methods: exact identities, agreement with Captum, artifacts."""

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
from interpcli.methods import attribute, get_method, list_methods
from interpcli.models import Classifier

GRADIENT_METHODS = ["grad", "ixg", "smoothgrad", "intgrad"]


def _resnet(seed=0, size=16):
    torch.manual_seed(seed)
    enc = {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}
    return Classifier("resnet20", 10, (3, size, size), enc).eval()


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()


def test_core_methods_are_registered():
    assert {"grad", "ixg", "smoothgrad", "vargrad", "intgrad", "gradcam", "bcos"} <= set(list_methods())
    assert get_method("gradcam").needs_layer and not get_method("gradcam").signed
    assert get_method("bcos").bcos_only


def test_grad_and_ixg_on_a_linear_model():
    model = _linear()
    x = torch.rand(3, 3, 4, 4)
    w = model[1].weight
    g = attribute(model, x, torch.tensor([0, 2, 4]), "grad")
    assert torch.allclose(g, w[[0, 2, 4]].view(3, 3, 4, 4), atol=1e-6)
    a = attribute(model, x, torch.tensor([0, 2, 4]), "ixg")
    assert torch.allclose(a, w[[0, 2, 4]].view(3, 3, 4, 4) * x, atol=1e-6)


@pytest.mark.parametrize("baseline", ["black", "blurred", "uniform"])
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann"])
def test_integrated_gradients_completeness(baseline, rule):
    from interpcli.perturb import make_baseline

    torch.manual_seed(0)
    model = Classifier("resnet20", 10, (3, 32, 32), {"kind": "identity"}).eval()
    x = torch.rand(4, 3, 32, 32)
    t = torch.tensor([1, 3, 5, 7])
    a = attribute(model, x, t, "intgrad", steps=128, baseline=baseline, rule=rule)
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(make_baseline(baseline, x)).gather(1, t[:, None])[:, 0]
    gap = (a.sum((1, 2, 3)) - delta).abs()
    if baseline == "black":  # a large difference: 1 % relative, as the IG paper asks
        assert (gap < 0.01 * delta.abs()).all(), (gap, delta)
    else:  # differences near zero: the gap in logit units
        assert (gap < 0.005).all(), (gap, delta)


def test_smoothgrad_with_sigma_zero_is_grad_and_is_seeded():
    model = _resnet()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(attribute(model, x, 2, "smoothgrad", sigma=0.0), attribute(model, x, 2, "grad"))
    a = attribute(model, x, 2, "smoothgrad", n_samples=8, seed=1)
    b = attribute(model, x, 2, "smoothgrad", n_samples=8, seed=1)
    c = attribute(model, x, 2, "smoothgrad", n_samples=8, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_agreement_with_captum():
    from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    model = _resnet()
    x = torch.rand(3, 3, 16, 16)
    t = torch.tensor([0, 4, 9])
    ref = {
        "grad": Saliency(model).attribute(x.clone(), target=t, abs=False),
        "ixg": InputXGradient(model).attribute(x.clone(), target=t),
        "intgrad": IntegratedGradients(model).attribute(x.clone(), baselines=torch.zeros_like(x), target=t,
                                                        n_steps=32, method="gausslegendre"),
    }
    cam = LayerGradCam(model, model.net.layer3).attribute(x.clone(), target=t, relu_attributions=True)
    ref["gradcam"] = LayerAttribution.interpolate(cam, (16, 16), interpolate_mode="bilinear")
    for name, r in ref.items():
        kw = {"steps": 32} if name == "intgrad" else {}
        ours = attribute(model, x, t, name, **kw)
        assert torch.allclose(ours, r.detach(), rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("method", GRADIENT_METHODS + ["gradcam"])
def test_model_randomisation_changes_attributions(method):
    # Adebayo et al. 2018: an explanation that survives re-initialising the weights explains nothing.
    x = torch.rand(2, 3, 16, 16)
    a = attribute(_resnet(0), x, 1, method)
    b = attribute(_resnet(1), x, 1, method)
    corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert corr < 0.9


def test_batch_size_does_not_change_results():
    model = _resnet()
    x = torch.rand(5, 3, 16, 16)
    for m in ("grad", "gradcam", "intgrad"):
        assert torch.allclose(attribute(model, x, 3, m, batch_size=1), attribute(model, x, 3, m, batch_size=64),
                              atol=1e-5), m


def test_bcos_method_sums_to_logit_minus_bias():
    torch.manual_seed(0)
    model = Classifier("bcos-lenet", 10, (1, 12, 12), {"kind": "bcos6"}).eval().double()
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    a = attribute(model, x, 4, "bcos")
    assert a.shape == (3, 1, 12, 12)
    with torch.no_grad():
        evidence = model(x)[:, 4] - model.net.logit_bias
    assert torch.allclose(a.double().sum((1, 2, 3)), evidence, rtol=1e-4)


def test_attribute_input_errors():
    model = _resnet()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ConfigError, match="out of range"):
        attribute(model, x, 10, "grad")
    with pytest.raises(ConfigError, match="no parameter"):
        attribute(model, x, 1, "grad", steps=3)
    with pytest.raises(ConfigError, match="B-cos"):
        attribute(model, x, 1, "bcos")
    with pytest.raises(ConfigError, match="layer 'nope' not found"):
        attribute(model, x, 1, "gradcam", layer="nope")


# ----------------------------------------------------------------------------------------
#   CLI and artifacts
# ----------------------------------------------------------------------------------------

def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_explain_cli_writes_documented_artifacts(digits_ckpt, tmp_path):
    out = tmp_path / "expl"
    r = _run("explain", digits_ckpt, "--indices", "0:3", "-m", "grad", "-m", "intgrad", "-p", "intgrad.steps=16",
             "--target", "label", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    files = r.stdout.split()
    assert files[0] == str(out / "attributions.npz") and str(out / "grid.png") in files
    assert len([f for f in files if f.endswith(".png")]) == 3 * 2 + 1
    arrays, meta = load_npz(out / "attributions.npz")
    assert arrays["attr_grad"].shape == (3, 1, 8, 8) and arrays["attr_intgrad"].shape == (3, 1, 8, 8)
    assert arrays["images"].shape == (3, 1, 8, 8) and arrays["logits"].shape == (3, 10)
    assert np.array_equal(arrays["targets"], arrays["labels"])
    assert list(arrays["sources"]) == ["digits:test:0", "digits:test:1", "digits:test:2"]
    assert meta["methods"] == ["grad", "intgrad"] and meta["params"]["intgrad"]["steps"] == 16
    from interpcli.artifacts import sha256_file

    assert meta["checkpoint"]["sha256"] == sha256_file(digits_ckpt)
    from PIL import Image

    with Image.open(out / "grid.png") as im:
        assert im.size[0] > 200


def test_explain_cli_on_image_files_and_all_targets(digits_ckpt, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(img)
    r = _run("explain", digits_ckpt, img, "--target", "all", "-m", "gradcam", "-o", tmp_path / "o", "--no-png",
             "--json", "-q")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["n"] == 10
    arrays, _ = load_npz(tmp_path / "o" / "attributions.npz")
    assert arrays["targets"].tolist() == list(range(10)) and arrays["attr_gradcam"].shape == (10, 1, 8, 8)


@pytest.mark.parametrize("args,needle", [
    (["--method", "nope"], "'nope' is not one of"),
    (["--target", "12"], "out of range"),
    (["--target", "giraffe"], "--target must be"),
    (["-m", "bcos"], "B-cos model"),
    (["-m", "gradcam", "-p", "layer=nope"], "layer 'nope' not found"),
    (["-p", "steps=3"], "no selected method"),
    (["--indices", "0:999"], "--indices"),
])
def test_explain_cli_bad_input(digits_ckpt, tmp_path, args, needle):
    out = tmp_path / "o"
    r = _run("explain", digits_ckpt, *args, "-o", out, "-q")
    assert r.exit_code == 2, r.output
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], r.stderr
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".o.")] == []


def test_explain_cli_bad_images(digits_ckpt, tmp_path):
    from PIL import Image

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    for f, needle in ((bad, "cannot read image"), (rgb, "3 channel(s) but the model expects 1"),
                      (tmp_path / "missing.png", "not found")):
        r = _run("explain", digits_ckpt, f, "-o", tmp_path / "o", "-q")
        assert r.exit_code == 2 and needle in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_bcos_colour_rendering():
    from interpcli.viz import bcos_rgba

    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 10, 12))
    x = rng.random((3, 10, 12))
    enc = np.concatenate([x, 1 - x])
    contrib = (w * enc).sum(0)
    out = bcos_rgba(w, contrib, smooth=1)
    assert out.shape == (10, 12, 4) and (out >= 0).all() and (out <= 1).all()
    assert np.all(out[..., 3][contrib < 0] < 1e-6)  # negative evidence is transparent
    # a pixel whose weight points at pure red in the [x, 1-x] encoding renders red
    w2 = np.zeros((6, 1, 1))
    w2[0], w2[4], w2[5] = 1.0, 1.0, 1.0
    assert np.allclose(bcos_rgba(w2, np.ones((1, 1)), smooth=1)[0, 0, :3], [1, 0, 0])


def test_explain_cli_bcos_writes_colour_pictures(tmp_path):
    from interpcli import TrainConfig, train

    ckpt = tmp_path / "b.safetensors"
    train(TrainConfig(arch="bcos-lenet", dataset="digits", epochs=1), out=ckpt, device="cpu")
    r = _run("explain", ckpt, "--indices", "0:3", "-m", "bcos", "-o", tmp_path / "o", "-q")
    assert r.exit_code == 0, r.output
    assert str(tmp_path / "o" / "0002_bcos_rgb.png") in r.stdout.split()
    arrays, _ = load_npz(tmp_path / "o" / "attributions.npz")
    assert arrays["bcos_rgba"].shape == (3, 8, 8, 4)
    bias = -np.log(9)
    evidence = arrays["logits"][np.arange(3), arrays["targets"]] - bias
    assert np.allclose(arrays["attr_bcos"].sum((1, 2, 3)), evidence, rtol=1e-3, atol=1e-4)


def test_gradcam_pp_formula():
    class ConvPatch(nn.Module):
        """Class 0 = summed ReLU(conv) over the region [8:16, 0:8] of the feature map; class 1 = 0."""

        num_classes = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.target_layer = None

        def layer(self, name):
            return self.conv

        def forward(self, x):
            a = torch.relu(self.conv(x))
            s = (a[:, :, 8:16, 0:8] ** 2).sum((1, 2, 3))
            return torch.stack([s, torch.zeros_like(s)], 1)

    torch.manual_seed(0)
    model = ConvPatch().eval()
    x = torch.rand(2, 3, 16, 16)
    cam = attribute(model, x, 0, "gradcam++", layer="conv")[:, 0]
    xx = x.clone()
    act = model.conv(xx)
    g = torch.autograd.grad((torch.relu(act)[:, :, 8:16, 0:8] ** 2).sum(), act)[0]
    act = act.detach()
    alpha = g**2 / (2 * g**2 + act.sum((2, 3), keepdim=True) * g**3)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * torch.relu(g)).sum((2, 3), keepdim=True)
    expected = torch.relu((w * act).sum(1))
    assert torch.allclose(cam, expected, atol=1e-5)  # same size: the upsampling is the identity
    assert cam.sum() > 0
