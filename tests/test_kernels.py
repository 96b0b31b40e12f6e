"""`interp kernels`: montages pixel for pixel, B-cos folding and positive scaling, snapshot
animations, the feature map against conv2d, the loss profile's stuck-run check, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from interpcli.artifacts import load_model, load_npz, save_checkpoint, save_npz
from interpcli.cli import app
from interpcli.kernel_viz import kernel_montage
from interpcli.kernels import feature_map, layer_kernels, load_snapshots, read_loss_log, stuck_run
from interpcli.models import Classifier
from interpcli.ops import kernels as ops_kernels

from .test_bad_inputs import _one_line_error

ENC1 = {"kind": "normalize", "mean": [0.5], "std": [0.25]}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _patterns(o: int, i: int, k: int) -> torch.Tensor:
    """Kernels with values in {-1, -0.5, 0, 0.5, 1}: checkerboards, bars and ramps (max |w| = 1)."""
    g = torch.arange(k)
    base = [((g[:, None] + g[None]) % 2) * 2.0 - 1, (g[:, None] == k // 2).float().expand(k, k),
            torch.linspace(-1, 1, k)[None].expand(k, k), -(g[None] == g[:, None]).float(),
            torch.full((k, k), 0.5), torch.zeros(k, k)]
    w = torch.stack([torch.stack([base[(a + 2 * c) % len(base)] for c in range(i)]) for a in range(o)])
    return (torch.round(w * 2) / 2).float()


def _expected(w: torch.Tensor) -> np.ndarray:
    return np.round(np.clip(w.numpy() / 2 + 0.5, 0, 1) * 255).astype(np.uint8)   # symmetric, m = 1


@pytest.mark.parametrize("arch,shape,layer,kw", [("resnet20", (3, 16, 16), "conv1", {"width": 8}),   # RGB tiles
                                                 ("lenet", (1, 8, 8), "conv1", {}),                # grey tiles
                                                 ("lenet", (1, 8, 8), "conv2", {})])               # kernel x input
def test_montage_reproduces_known_kernels_pixel_for_pixel(tmp_path, arch, shape, layer, kw):
    enc = {"kind": "normalize", "mean": [0.5] * shape[0], "std": [0.25] * shape[0]}
    model = Classifier(arch, 10, shape, enc, arch_kwargs=kw)
    conv = model.layer(layer)
    w = _patterns(*conv.weight.shape[:3])
    with torch.no_grad():
        conv.weight.copy_(w)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model)
    r = invoke("kernels", ckpt, "--layer", layer, "--device", "cpu", "-o", tmp_path / "k")
    assert r.exit_code == 0, r.output
    png = np.asarray(Image.open(tmp_path / "k" / "kernels.png").convert("RGB"))
    layout = kernel_montage(w.numpy(), scale="symmetric", m=1.0, title="x")  # where the tiles are
    exp = _expected(w)
    title_shift = png.shape[1] - layout.image.shape[1]  # the real title may widen the picture; tiles keep x
    assert title_shift >= 0 and png.shape[0] == layout.image.shape[0]
    k = layout.factor
    assert k * w.shape[-1] >= 64
    for (r_, c_), (y, x) in layout.origin.items():
        tile = png[y : y + k * w.shape[-2], x : x + k * w.shape[-1]]
        assert (tile == np.repeat(np.repeat(tile[::k, ::k], k, 0), k, 1)).all()  # nearest-neighbour blocks
        if w.shape[1] == 3:
            o = r_ * int(np.ceil(np.sqrt(len(w)))) + c_
            assert (tile[::k, ::k] == np.moveaxis(exp[o], 0, -1)).all(), (r_, c_)
        elif w.shape[1] == 1:
            o = r_ * int(np.ceil(np.sqrt(len(w)))) + c_
            assert (tile[::k, ::k, 0] == exp[o, 0]).all() and (tile[..., 0] == tile[..., 2]).all()
        else:
            assert (tile[::k, ::k, 0] == exp[r_, c_]).all(), (r_, c_)
    arrays, meta = load_npz(tmp_path / "k" / "kernels.npz")
    assert np.array_equal(arrays["kernels"], w.numpy()) and meta["scale"] == "symmetric" and meta["limit"] == 1.0


def test_bcos_kernels_fold_to_rgb_and_positive_kernels_scale_from_zero():
    torch.manual_seed(0)
    bcos = Classifier("bcos-resnet20", 10, (3, 16, 16), {"kind": "bcos6"}, arch_kwargs={"width": 8})
    w, folded, name = layer_kernels(bcos)
    normed = bcos.layer("conv1").normed_weight().detach()
    assert folded and name == "conv1" and w.shape == (normed.shape[0], 3, 3, 3)
    assert np.allclose(w, (normed[:, :3] - normed[:, 3:]).numpy(), atol=1e-7)
    x = torch.rand(1, 3, 16, 16)  # the folded kernel is the linear response to pixels: w_a.x + w_b.(1-x)
    six = F.conv2d(bcos.encoder(x), normed)
    rgb = F.conv2d(x, torch.from_numpy(w)) + normed[:, 3:].sum((1, 2, 3)).view(1, -1, 1, 1)
    assert torch.allclose(six, rgb, atol=1e-5)
    deeper, folded2, _ = layer_kernels(bcos, "layer1.0.conv1")
    assert not folded2 and deeper.shape[1] == bcos.layer("layer1.0.conv1").weight.shape[1]

    pos = Classifier("positive-lenet", 2, (1, 8, 8), ENC1, arch_kwargs={"width": 10, "positive_first": True})
    w, folded, _ = layer_kernels(pos)
    assert not folded and w.min() >= 0
    grid = kernel_montage(w)                                      # auto -> positive: 0 is black
    exp = np.round(np.clip(w / np.abs(w).max(), 0, 1) * 255).astype(np.uint8)
    assert (grid.tile(0, 0)[..., 0] == exp[0, 0]).all()


def test_gif_has_one_frame_per_snapshot(tmp_path, monkeypatch):
    k = np.random.default_rng(0).normal(size=(5, 4, 1, 3, 3)).astype(np.float32)
    k[2] = k[1]                                                    # two equal snapshots stay two frames
    save_npz(tmp_path / "r.kernels.npz", {"layer": "conv1", "arch": "lenet", "every": 10}, kernels=k,
             steps=np.array([0, 10, 20, 30, 40]), epochs=np.array([0, 0, 1, 1, 2]))
    monkeypatch.setattr(ops_kernels, "ffmpeg_exe", lambda: None)
    r = invoke("kernels", "--snapshots", tmp_path / "r.kernels.npz", "--strip", "3", "-o", tmp_path / "k")
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(tmp_path / "k" / f) for f in ("snapshots.gif", "snapshots_strip.png")]
    assert "no MP4" in r.stderr
    gif = Image.open(tmp_path / "k" / "snapshots.gif")
    assert gif.n_frames == 5 and gif.info.get("loop") == 0
    snaps = load_snapshots(tmp_path / "r.kernels.npz")
    assert [snaps.stamp(i) for i in (0, 1, 4)] == ["step 0 (init)", "step 10 · epoch 1", "step 40 · epoch 3"]
    strip = Image.open(tmp_path / "k" / "snapshots_strip.png")
    assert strip.size[0] > 3 * gif.size[0] and strip.size[1] == gif.size[1]


def test_snapshots_of_a_training_run(digits_ckpt, tmp_path):
    run = digits_ckpt.with_name("lenet.kernels.npz")
    snaps = load_snapshots(run)
    assert snaps.kernels.shape[1:] == (6, 1, 5, 5) and snaps.steps[0] == 0
    r = invoke("kernels", digits_ckpt, "--snapshots", run, "--loss-log", digits_ckpt.with_name("lenet.log.jsonl"),
               "--json", "-q", "-o", tmp_path / "k")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["snapshots"]["frames"] == len(snaps) == Image.open(tmp_path / "k" / "snapshots.gif").n_frames
    assert res["loss_profile"]["stuck"] is False and res["loss_profile"]["chance"] == pytest.approx(0.1)
    assert (tmp_path / "k" / "loss_profile.png").stat().st_size > 1000


def test_feature_map_equals_conv2d(digits_ckpt, tmp_path):
    model = load_model(digits_ckpt)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    fm = feature_map(model, x, kernel=4)
    w = model.layer("conv1").weight.detach()
    assert torch.allclose(fm.map, F.conv2d(model.encoder(x[None]), w[4:5], padding=2)[0, 0], atol=1e-6)
    fm2 = feature_map(model, x, kernel=3, layer="conv2")         # a deeper layer: on its input
    with torch.no_grad():
        h = model.net.pool1(model.net.relu1(model.net.conv1(model.encoder(x[None]))))
    ref = F.conv2d(h, model.layer("conv2").weight[3:4], padding=model.layer("conv2").padding)
    assert torch.allclose(fm2.map, ref[0, 0], atol=1e-5)
    r = invoke("kernels", digits_ckpt, "--index", "5", "--kernel", "2", "-q", "-o", tmp_path / "f")
    assert r.exit_code == 0, r.output
    arrays, meta = load_npz(tmp_path / "f" / "feature_map.npz")
    ref = F.conv2d(torch.from_numpy(arrays["input"])[None], w[2:3], padding=2)[0, 0].numpy()
    assert np.allclose(arrays["feature_map"], ref, atol=1e-6) and meta["source"] == "digits:test:5"


def _history(loss, acc):
    return [{"epoch": i + 1, "loss": a, "train_acc": b, "test_acc": b} for i, (a, b) in enumerate(zip(loss, acc))]


def test_stuck_run_is_flagged():
    stuck = _history([2.0, 1.5, 1.2, 2.302, 2.303, 2.302, 2.302, 2.303], [0.3, 0.5, 0.6, 0.1, 0.11, 0.1, 0.09, 0.1])
    v = stuck_run(stuck, num_classes=10)
    assert v["stuck"] is True and v["since_epoch"] == 4 and "chance" in v["reason"]
    ok = _history([2.0, 1.5, 1.2, 1.0, 0.9, 0.85, 0.8, 0.78], [0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.8, 0.81])
    assert stuck_run(ok, 10)["stuck"] is False
    plateau = _history([2.0, 1.0, 0.5, 0.5, 0.5, 0.5], [0.3, 0.8, 0.95, 0.95, 0.95, 0.95])  # converged, not stuck
    assert stuck_run(plateau, 10)["stuck"] is False
    assert stuck_run(stuck, None)["stuck"] is None and stuck_run(stuck[:2], 10)["stuck"] is None


def test_loss_log_flags_a_stuck_run_from_the_cli(tmp_path):
    log = tmp_path / "r.log.jsonl"
    rows = _history([1.1, 1.0986, 1.0987, 1.0986, 1.0986], [0.4, 0.33, 0.34, 0.33, 0.33])
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = invoke("kernels", "--loss-log", log, "-o", tmp_path / "k")   # no class count: cannot tell
    assert r.exit_code == 0 and json.loads((tmp_path / "k" / "loss_profile.json").read_text())["stuck"] is None
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "r.safetensors", Classifier("lenet", 3, (1, 8, 8), ENC1))  # the run's checkpoint
    r = invoke("kernels", "--loss-log", log, "-o", tmp_path / "k2")
    assert r.exit_code == 0, r.output
    assert "stuck run: loss flat" in r.stderr
    assert json.loads((tmp_path / "k2" / "loss_profile.json").read_text())["stuck"] is True
    assert read_loss_log(log) == rows
    log.write_text('{"epoch": 1, "loss": 1.0}\nnot json\n')
    _one_line_error(invoke("kernels", "--loss-log", log, "-o", tmp_path / "k3"), "line 2 is not JSON")


@pytest.mark.parametrize("args,needles", [
    ([], ["nothing to draw"]),
    (["--index", "0"], ["need the checkpoint"]),
    (["CKPT", "--layer", "relu1"], ["layer 'relu1' (ReLU) is not a convolution"]),
    (["CKPT", "--layer", "nope"], ["layer 'nope' not found"]),
    (["CKPT", "--kernels", "3:9"], ["--kernels", "has 6 kernels", "of 0..5"]),
    (["CKPT", "--index", "0", "--kernel", "6"], ["--kernel 6 out of range", "0..5"]),
    (["CKPT", "--snapshots", "CKPT"], ["--snapshots", "not an NPZ"]),
    (["CKPT", "--loss-log", "missing.jsonl"], ["--loss-log: file not found"]),
    (["CKPT", "--scale", "log"], ["'log' is not one of"]),
])
def test_kernels_errors_are_one_clear_line(digits_ckpt, tmp_path, args, needles):
    args = [digits_ckpt if a == "CKPT" else a for a in args]
    _one_line_error(invoke("kernels", *args, "-o", tmp_path / "k"), *needles)
    assert not (tmp_path / "k").exists()


def test_mp4_has_one_frame_per_snapshot_when_an_encoder_is_installed(digits_ckpt, tmp_path):
    import subprocess

    from interpcli.kernel_viz import ffmpeg_exe

    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("no video encoder (imageio-ffmpeg or ffmpeg on PATH)")
    run = digits_ckpt.with_name("lenet.kernels.npz")
    r = invoke("kernels", "--snapshots", run, "-q", "-o", tmp_path / "k")
    assert r.exit_code == 0, r.output
    probe = subprocess.run([exe, "-i", str(tmp_path / "k" / "snapshots.mp4"), "-map", "0:v", "-f", "null", "-"],
                           capture_output=True, text=True)
    frames = [l for l in probe.stderr.replace("\r", "\n").splitlines() if l.startswith("frame=")]
    assert int(frames[-1].split("=")[1].split()[0]) == len(load_snapshots(run))
