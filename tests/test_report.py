"""`interp report` (a self-contained HTML gallery, checked in a real headless browser when one is
installed) and `interp plot-log` (training curves)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from interpcli import InputSpec, artifacts, explain_checkpoint
from interpcli.cli import app
from interpcli.errors import ConfigError
from interpcli.kernels import KernelsConfig
from interpcli.metrics.fidelity import FidelityConfig
from interpcli.models import Classifier
from interpcli.noisegrad import NoiseGradConfig
from interpcli.ops.compare import CompareConfig, compare_runs
from interpcli.ops.consistency import ConsistencyConfig, consistency_checkpoint
from interpcli.ops.kernels import kernels_checkpoint
from interpcli.ops.noise_grad import noise_grad_checkpoint
from interpcli.ops.plot_log import plot_logs
from interpcli.ops.report import build_report, find_sections

ODD = 'odd <i>name & "q"'  # a folder name that must be escaped in the page and encoded in URLs
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _log(path: Path, epochs: int, scale: float = 1.0) -> Path:
    with open(path, "w") as f:
        for e in range(1, epochs + 1):
            f.write(json.dumps({"epoch": e, "step": 10 * e, "loss": scale * 2 / e, "train_acc": 0.15 * e,
                                "test_acc": 0.14 * e, "val_acc": 0.13 * e}) + "\n")
    return path


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A checkpoint with its log, and the output folders of explain, consistency, kernels,
    noise-grad and compare on it, a sparsify-like folder and a folder with an odd name."""
    root = tmp_path_factory.mktemp("outputs")
    runs, out = root / "runs", root / "out"
    runs.mkdir()
    out.mkdir()
    torch.manual_seed(0)
    model = Classifier("lenet", 10, (1, 8, 8), {"kind": "normalize", "mean": [0.3], "std": [0.4]})
    ckpt = artifacts.save_checkpoint(runs / "lenet.safetensors", model, metrics={"test_acc": 0.7, "epochs": 5},
                                     train_config={"arch": "lenet", "seed": 0}, dataset={"name": "digits"},
                                     argv=["interp", "train", "--arch", "lenet", "--epochs", "5"])
    _log(runs / "lenet.log.jsonl", 5)
    _log(runs / "other.log.jsonl", 4, 1.5)
    images = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    artifacts.save_npz(root / "images.npz", None, images=images, labels=np.array([1, 2, 3]))
    explain_checkpoint(ckpt, out / "explain", ["grad", "intgrad"], inputs=InputSpec(npz=root / "images.npz"))
    consistency_checkpoint(ckpt, [out / "explain"], out / "scores", ConsistencyConfig(
        fidelity=FidelityConfig(metrics=("deletion", "insertion")), n_boot=100))
    w = next(v for v in model.net.state_dict().values() if v.dim() == 4).numpy()
    artifacts.save_npz(runs / "lenet.kernels.npz", {"layer": "conv1", "arch": "lenet", "every": 5},
                       kernels=np.stack([w, 2 * w, 3 * w]), steps=np.array([0, 5, 10]), epochs=np.array([0, 0, 1]))
    kernels_checkpoint(ckpt, out / "kernels", KernelsConfig(), snapshots=runs / "lenet.kernels.npz",
                       loss_log=runs / "lenet.log.jsonl")
    noise_grad_checkpoint(ckpt, out / "noise", NoiseGradConfig(samples=2))
    metrics = []
    for i, acc in enumerate([0.7, 0.72, 0.69, 0.6, 0.64, 0.61]):
        metrics.append(root / "m" / f"{'ab'[i // 3]}{i}.json")
        metrics[-1].parent.mkdir(exist_ok=True)
        metrics[-1].write_text(json.dumps({"arch": "ab"[i // 3], "seed": i % 3, "accuracy": acc}))
    compare_runs(metrics, out / "compare", CompareConfig(n_boot=100))
    sparse = out / "sparse"  # the documented files of `interp sparsify`
    sparse.mkdir()
    (sparse / "path.json").write_text(json.dumps({
        "kind": "sparsify-path", "checkpoint": {"path": str(ckpt), "sha256": artifacts.sha256_file(ckpt)},
        "lambdas": [1.0, 0.5], "selection": {"rule": "absolute:5", "index": 1, "lambda": 0.5, "nnz": 3,
                                             "features_per_class": 1.5, "val_acc": 0.6, "test_acc": 0.58},
        "dense": {"val_acc": 0.7, "test_acc": 0.69}}))
    (sparse / "features.json").write_text(json.dumps({"kind": "sparsify-features", "classes": [
        {"class": "0", "features": [{"feature": 3, "weight": 0.5, "montage": "features/feature-0003.png"}]}]}))
    _png(sparse / "path.png", 1)
    _png(sparse / "features" / "feature-0003.png", 2)
    _png(out / ODD / "a b#1.png", 3)
    return {"root": root, "ckpt": ckpt, "runs": runs, "out": out}


def test_sections_by_kind_with_provenance(outputs, tmp_path):
    found = [(k, p.name) for k, p, _ in find_sections([outputs["out"], outputs["runs"]])]
    assert found == [("compare", "compare"), ("attributions", "explain"), ("kernels", "kernels"),
                     ("noise-grad", "noise"), ("pictures", ODD), ("consistency", "scores"), ("sparsify", "sparse"),
                     ("runs", "runs")]
    summary, files = build_report([outputs["out"], outputs["runs"]], tmp_path / "rep", max_rows=2)
    assert files == [tmp_path / "rep" / "index.html"] and len(summary["sections"]) == 8
    text = files[0].read_text()
    sha = artifacts.sha256_file(outputs["ckpt"])
    assert text.count(sha) >= 5 and "interp train --arch lenet --epochs 5" in text  # checkpoint and its command
    assert "showing the first 2 of 3 rows" in text and "0000_grad.png" in text and "0002_grad.png" not in text
    assert "odd &lt;i&gt;name &amp; &quot;q&quot;" in text and "<i>name" not in text
    assert "Welch" in text and "Hedges" in text and "deletion" in text and "regularisation path" in text
    assert "training_curves.png" in text and "snapshots.gif" in text and "feature-0003.png" in text
    # every picture and link is a relative path to a file inside the report; nothing from the network
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
    assert refs and not [r for r in refs if "://" in r or r.startswith("/")]
    missing = [r for r in refs if not (tmp_path / "rep" / unquote(r.replace("&amp;", "&"))).is_file()]
    assert missing == []
    assert (tmp_path / "rep" / "assets").is_dir() and not list(tmp_path.glob(".rep.*"))


def test_cli_report_force_and_errors(outputs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r"
    r = runner.invoke(app, ["report", str(outputs["out"] / "compare"), "-o", str(out), "--title", "T <1>"])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{out / 'index.html'}\n" and "compare:" in r.stderr
    assert "<title>T &lt;1&gt;</title>" in (out / "index.html").read_text()
    r = runner.invoke(app, ["report", str(outputs["runs"] / "lenet.log.jsonl"), "-o", str(out)])
    assert r.exit_code == 2 and "exists and is not empty; pass --force" in r.stderr
    r = runner.invoke(app, ["report", str(outputs["runs"] / "lenet.log.jsonl"), "-o", str(out), "--force", "--json"])
    assert r.exit_code == 0, r.output
    assert [s["kind"] for s in json.loads(r.stdout)["sections"]] == ["runs"]
    assert not (out / "assets" / "01-compare").exists()  # replaced as a whole
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, needle in ((["report", str(empty), "-o", str(tmp_path / "x")], "nothing to report in"),
                         (["report", str(tmp_path / "nope"), "-o", str(tmp_path / "x")], "not found"),
                         (["report", str(empty), "-o", str(tmp_path / "no" / "x")], "does not exist")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_plot_log_one_and_several_runs(outputs, tmp_path):
    runs = outputs["runs"]
    summary, files = plot_logs([runs / "lenet.safetensors"], tmp_path / "one.png")  # the log beside it
    assert files == [tmp_path / "one.png"] and summary["runs"][0]["epochs"] == 5
    assert summary["runs"][0]["best_test_acc"] == pytest.approx(0.7) and summary["runs"][0]["stuck"] is False
    r = CliRunner().invoke(app, ["plot-log", str(runs / "lenet.log.jsonl"), str(runs / "other.log.jsonl"),
                                 "-o", str(tmp_path / "two.png"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [x["label"] for x in doc["runs"]] == ["lenet", "other"] and doc["files"] == [str(tmp_path / "two.png")]
    for name in ("one.png", "two.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 400 and im.size[1] > 400
    with pytest.raises(ConfigError, match="log: file not found"):
        plot_logs([tmp_path / "none.log.jsonl"], None)
    with pytest.raises(ConfigError, match="must name a .png file"):
        plot_logs([runs / "lenet.log.jsonl"], tmp_path / "x.jpg")
    r = CliRunner().invoke(app, ["plot-log", str(runs / "lenet.log.jsonl"), "-o", str(tmp_path / "one.png")])
    assert r.exit_code == 2 and "pass --force" in r.stderr


# ---------------------------------------------------------------------------------------------- browser

def _browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def _chrome(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--allow-file-access-from-files", "--no-first-run", *args],
                          capture_output=True, text=True, timeout=90)


def _body(dom: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", dom)
    assert tag, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag.group(1)))


def test_report_in_a_headless_browser(outputs, tmp_path):
    """Every image loads, the page is not blank at 1280 and 390 px, nothing overflows at 390 px."""
    exe = _browser()
    if exe is None:
        pytest.skip("no chromium / google-chrome to render the report (apt-get install chromium)")
    _, files = build_report([outputs["out"], outputs["runs"]], tmp_path / "rep", max_rows=2)
    index = files[0].resolve()
    n_img = index.read_text().count("<img ")
    body = _body(_chrome(exe, "--window-size=1280,2000", "--dump-dom", index.as_uri()).stdout)
    assert body.get("check") == "done", body
    assert body["images"] == str(n_img) and body["broken-images"] == "0" and body["overflow"] == "no"
    # at 390 px (a phone): the page inside a 390 px frame, read back through the frame
    probe = tmp_path / "rep" / "probe.html"
    probe.write_text('<!DOCTYPE html><html><body style="margin:0"><iframe id="f" src="index.html" '
                     'style="width:390px;height:2000px;border:0"></iframe><script>'
                     'document.getElementById("f").addEventListener("load", function () {'
                     'var d = this.contentDocument, b = document.body.dataset;'
                     'b.width = this.contentWindow.innerWidth; Object.assign(b, d.body.dataset); });'
                     "</script></body></html>")
    narrow = _body(_chrome(exe, "--window-size=1280,2000", "--dump-dom", probe.resolve().as_uri()).stdout)
    assert narrow.get("width") == "390" and narrow.get("check") == "done", narrow
    assert narrow["broken-images"] == "0" and narrow["overflow"] == "no"
    for width in (1280, 390):
        shot = tmp_path / f"shot{width}.png"
        _chrome(exe, f"--window-size={width},2000", f"--screenshot={shot}", index.as_uri())
        with Image.open(shot) as im:
            pixels = np.asarray(im.convert("L"))
        assert pixels.shape[1] == width and pixels.std() > 5 and len(np.unique(pixels)) > 20
    # the self-check does see a broken image
    (tmp_path / "rep" / "assets" / "01-compare" / "violin.png").unlink()
    broken = _body(_chrome(exe, "--window-size=1280,2000", "--dump-dom", index.as_uri()).stdout)
    assert broken["broken-images"] == "1"
