"""`interp import`: a torchvision (or timm) model with weights trained elsewhere becomes an ordinary
checkpoint: its logits are the original model's, every command runs on it, and every bad input
(a pickle with objects, a missing file, a wrong name, weights of another arch, timm missing) is one
`Error:` line, exit code 2, nothing written."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interpcli import load_model
from interpcli.cli import app
from interpcli.models import get_model_info, resolve_layer
from interpcli.models.external import IMAGENET_MEAN, IMAGENET_STD, torchvision_names
from interpcli.ops.import_model import import_model
from interpcli.weights import classifier_outputs

from .conftest import one_line_error

torchvision = pytest.importorskip("torchvision")

CLASSES = ["cat", "dog", "fox", "owl", "eel"]


def _run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


_one_error = one_line_error


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def r18(tmp_path_factory) -> dict:
    """A random-init torchvision ResNet-18 with 5 classes and non-trivial BatchNorm statistics, saved as
    .safetensors and as a wrapped .pth ({'state_dict': {'module.' + key: ...}, 'epoch': 3}), and both imported."""
    from PIL import Image
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("r18")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    net.eval()
    save_file(net.state_dict(), d / "r18.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, d / "r18.pth")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(d / name)
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(d / "small.png")
    (d / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    r = _run("import", "resnet18", d / "r18.safetensors", "--classes", d / "classes.txt", "-o", d / "st.safetensors")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{d / 'st.safetensors'}\n"
    summary, _ = import_model("torchvision:resnet18", d / "r18.pth", d / "pth.safetensors")
    return {"dir": d, "net": net, "st": d / "st.safetensors", "pth": d / "pth.safetensors", "summary": summary}


def test_imported_logits_equal_the_original_models(r18):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = r18["net"]((x - mean) / std)
        for ckpt in (r18["st"], r18["pth"]):
            got = load_model(ckpt)(x)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_the_checkpoint_records_arch_encoding_and_classes(r18):
    r = _run("info", r18["st"], "--json")
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert meta["format_version"] == 1 and meta["kind"] == "checkpoint"
    assert meta["arch"] == "torchvision:resnet18" and meta["input_shape"] == [3, 224, 224]
    assert meta["classes"] == CLASSES and meta["num_classes"] == 5
    assert meta["encoding"]["kind"] == "normalize"
    np.testing.assert_allclose(meta["encoding"]["mean"], IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(meta["encoding"]["std"], IMAGENET_STD, rtol=1e-6)
    assert meta["imported"]["format"] == "safetensors" and len(meta["imported"]["sha256"]) == 64
    s = r18["summary"]  # the .pth: wrapper and DataParallel prefix undone, classes 0..4
    assert s["imported"]["format"] == "torch" and s["imported"]["wrapper"] == "state_dict"
    assert s["imported"]["prefix_removed"] == "module." and s["classes"] == ["0", "1", "2", "3", "4"]
    model = load_model(r18["st"])
    assert model.target_layer == "layer4" and model.classifier_layer == "fc" and model.info.first_layer == "conv1"


def test_explain_grad_and_occlusion_and_kernels_run_on_it(r18, tmp_path):
    d = r18["dir"]
    r = _run("explain", r18["st"], d / "a.png", d / "b.png", "-m", "grad", "-m", "occlusion",
             "--param", "window=112", "--param", "stride=112", "-q", "--no-png", "-o", tmp_path / "ex")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "ex" / "attributions.npz", allow_pickle=False) as z:
        assert z["attr_grad"].shape[0] == 2 and z["attr_grad"].shape[-2:] == (224, 224)
        assert z["attr_occlusion"].shape[-2:] == (224, 224) and np.isfinite(z["attr_occlusion"]).all()
        assert z["logits"].shape == (2, 5)
    r = _run("kernels", r18["st"], "-q", "-o", tmp_path / "k")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "k" / "kernels.png").is_file()


def test_an_image_of_another_size_is_resized_with_a_warning(r18, tmp_path):
    with pytest.warns(UserWarning, match="200x150 px; resized to the model's 224x224 input"):
        r = _run("explain", r18["st"], r18["dir"] / "small.png", "-m", "grad", "-q", "--no-png", "-o",
                 tmp_path / "ex")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "ex" / "attributions.npz", allow_pickle=False) as z:
        assert z["images"].shape == (1, 3, 224, 224)


@pytest.mark.slow
def test_noise_grad_occlude_and_consistency_run_on_it(r18, tmp_path):
    d = r18["dir"]
    r = _run("noise-grad", r18["st"], "-n", "2", "--classes", "cat,dog", "-q", "-o", tmp_path / "ng")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ng" / "noise_grad.npz").is_file()
    r = _run("occlude", r18["st"], d / "a.png", d / "b.png", "--window", "112", "--stride", "56", "-q",
             "-o", tmp_path / "oc")
    assert r.exit_code == 0, r.output
    r = _run("consistency", r18["st"], tmp_path / "oc", "--metric", "consistency,deletion", "--fractions", "4",
             "--step", str(224 * 56), "-q", "-o", tmp_path / "cs")
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_incremental_occlusion_and_batching_match_full_passes_on_it(r18):
    from interpcli.incremental import get_plan
    from interpcli.methods import attribute

    model = load_model(r18["st"])
    assert get_plan(model).incremental_layers(), "the ResNet-18 convolutions are evaluated incrementally"
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 4])
    kw = {"window": 56, "stride": 56}
    full = attribute(model, x, t, "occlusion", incremental=False, batch_size=64, **kw)
    for incremental, batch_size in ((True, 64), (True, 3), ("auto", None)):
        got = attribute(model, x, t, "occlusion", incremental=incremental, batch_size=batch_size, **kw)
        torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-5)


FAMILIES = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "inception_v3", "maxvit_t",
            "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "resnet18", "resnext50_32x4d",
            "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "vgg11_bn", "vit_b_16", "wide_resnet50_2"]


def test_every_torchvision_model_declares_its_decision_layer():
    names = torchvision_names()
    assert "resnet18" in names and "vit_b_16" in names
    assert [n for n in names if not get_model_info(f"torchvision:{n}").classifier_layer] == []


@pytest.mark.parametrize("name", FAMILIES)
def test_each_torchvision_family_names_layers_that_exist(name):
    info = get_model_info(f"torchvision:{name}")
    # shapes only, on the meta device (regnet computes its widths with real tensors)
    with contextlib.nullcontext() if name.startswith("regnet") else torch.device("meta"):
        net = info.fn(num_classes=7, input_shape=info.default_input)
    for layer in (info.target_layer, info.first_layer, info.classifier_layer, info.feature_layer):
        if layer:
            resolve_layer(net, layer)
    assert classifier_outputs(net.state_dict(), info.classifier_layer) == 7


def test_input_size_normalisation_and_classes_are_recorded(r18, tmp_path):
    out = tmp_path / "c.safetensors"
    r = _run("import", "torchvision:resnet18", r18["dir"] / "r18.safetensors", "--input-size", "64", "--mean", "0.5",
             "--std", "0.25,0.25,0.25", "--classes", ",".join(CLASSES), "-q", "--json", "-o", out)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["input_shape"] == [3, 64, 64]
    model = load_model(out)
    assert model.encoder.spec() == {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}
    assert model.classes == CLASSES and model(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    r = _run("import", "resnet18", r18["dir"] / "r18.safetensors", "--encoding", "identity", "-q", "-o",
             tmp_path / "i.safetensors")
    assert r.exit_code == 0, r.output
    assert load_model(tmp_path / "i.safetensors").encoder.spec() == {"kind": "identity"}


def test_a_pickle_with_objects_is_refused_before_it_runs(r18, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    torch.save({"fc.weight": torch.zeros(5, 512), "x": Payload()}, tmp_path / "evil.pth")
    before = _tree(tmp_path)
    _one_error(_run("import", "resnet18", tmp_path / "evil.pth", "-o", tmp_path / "out.safetensors"),
               "evil.pth' holds pickled Python objects", "it would call os.makedirs", "weights_only=True")
    assert not marker.exists() and _tree(tmp_path) == before
    torch.save(r18["net"], tmp_path / "whole.pth")  # a whole pickled module is refused the same way
    _one_error(_run("import", "resnet18", tmp_path / "whole.pth", "-o", tmp_path / "out.safetensors"),
               "holds pickled Python objects", "torchvision.models.resnet.ResNet")


@pytest.mark.parametrize("case", ["missing", "text", "unknown-arch", "bad-source", "other-arch", "num-classes",
                                  "class-count", "existing", "no-state-dict"])
def test_bad_input_is_one_error_line_and_nothing_written(r18, tmp_path, case):
    st = r18["dir"] / "r18.safetensors"
    (tmp_path / "existing.safetensors").write_bytes(b"old")
    (tmp_path / "notes.pth").write_text("not weights\n")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    out = tmp_path / ("existing.safetensors" if case == "existing" else "out.safetensors")
    args, needles = {
        "missing": (["resnet18", tmp_path / "nope.pth"], ["weights file not found", "nope.pth"]),
        "text": (["resnet18", tmp_path / "notes.pth"], ["notes.pth' is not a PyTorch state dict file"]),
        "unknown-arch": (["resnet19", st], ["unknown torchvision model 'resnet19'", "did you mean resnet18"]),
        "bad-source": (["keras:resnet18", st], ["give a torchvision model name"]),
        "other-arch": (["resnet34", st], ["do not fit torchvision:resnet34", "missing keys: layer1.2."]),
        "num-classes": (["resnet18", st, "--num-classes", "7"],
                        ["shape mismatches: fc.weight (5, 512) in the file, (7, 512) in the model"]),
        "class-count": (["resnet18", st, "--classes", "a,b,c"],
                        ["3 class names for 5 classes (the weights' classifier has 5 outputs)"]),
        "existing": (["resnet18", st], ["existing.safetensors' exists; pass --force"]),
        "no-state-dict": (["resnet18", tmp_path / "nostate.pth"], ["holds no state dict", "epoch, lr"]),
    }[case]
    before = _tree(tmp_path)
    line = _one_error(_run("import", *args, "-o", out), *needles)
    assert _tree(tmp_path) == before, line


def test_timm_missing_is_one_error_line(r18, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    _one_error(_run("import", "timm:resnet18", r18["dir"] / "r18.safetensors", "-o", tmp_path / "t.safetensors"),
               "timm is not installed", "pip install 'interpcli[timm]'")
    assert _tree(tmp_path) == []


def test_a_timm_model_imports_when_timm_is_installed(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    save_file(net.state_dict(), tmp_path / "t.safetensors")
    summary, out = import_model("timm:resnet10t", tmp_path / "t.safetensors", tmp_path / "c.safetensors",
                                input_size=64)
    cfg = timm.get_pretrained_cfg("resnet10t")
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = load_model(out)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x - mean) / std), rtol=0, atol=1e-5)
    assert summary["arch"] == "timm:resnet10t" and model.classifier_layer == "fc"
    assert model.target_layer is not None and model.info.first_layer is not None
