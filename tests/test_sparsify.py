"""`interp sparsify` end to end: the sparse checkpoint (loadable everywhere, predictions = features
x saved layer, `interp eval` = the path's accuracy), the feature cache, --resume, the feature
pictures (LIME on a feature's activation) and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from interpcli import sparsify_checkpoint
from interpcli.artifacts import load_model, read_metadata, save_checkpoint, sha256_file
from interpcli.cli import app
from interpcli.data import checkpoint_dataset
from interpcli.models import Classifier
from interpcli.models.features import FeatureExtractor
from interpcli.ops.sparsify import SparsifyConfig, state_folder
from interpcli.sparse import features as features_mod
from interpcli.sparse.features import feature_cache_key
from interpcli.sparse.path import PathConfig
from interpcli.sparse.select import SelectionError
from interpcli.sparse.viz import feature_lime

from .test_bad_inputs import _one_line_error, _tree

K = 12


def _cfg(**kw) -> SparsifyConfig:
    path = PathConfig(k=kw.pop("k", K))
    return SparsifyConfig(path=path, **kw)


def _features_npz(path, n=300, d=12, c=3, seed=0, val=True):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)) * g.uniform(0.5, 3, size=d) + g.normal(size=d)
    w = g.normal(size=(c, d)) * (g.uniform(size=(c, d)) < 0.4)
    y = np.argmax(x @ w.T + g.gumbel(size=(n, c)), 1)
    split = np.array(["train"] * (n // 2) + (["val"] if val else ["train"]) * (n // 4)
                     + ["test"] * (n - n // 2 - n // 4))
    np.savez(path, features=x.astype(np.float32), labels=y, split=split, classes=np.array(["a", "b", "c"]))
    return path


@pytest.fixture(scope="module")
def run(digits_ckpt, tmp_path_factory):
    """One sparsified copy of the digits LeNet (the feature cache goes beside the copy)."""
    root = tmp_path_factory.mktemp("sparsify")
    ckpt = root / "lenet.safetensors"
    shutil.copy(digits_ckpt, ckpt)
    res, files = sparsify_checkpoint(ckpt, root / "out", _cfg(), device="cpu")
    return ckpt, res, files


def test_outputs_and_metadata(run):
    ckpt, res, files = run
    names = sorted(f.name for f in files)
    assert names == ["features.json", "path.json", "path.png", "sparse.safetensors"]
    path = json.loads((files[0].parent / "path.json").read_text())
    assert len(path["points"]) == K and path["selection"]["index"] == res.chosen
    assert path["validation"]["source"] == "checkpoint" and path["n"] == {"train": 1293, "val": 144, "test": 360}
    first, chosen = path["points"][0], path["points"][res.chosen]
    assert first["nnz"] == 0 and chosen["nnz"] == sum(chosen["nnz_per_class"]) > 0
    assert chosen["val_acc"] >= max(p["val_acc"] for p in path["points"]) - 0.05
    assert all(p["converged"] for p in path["points"])
    meta = read_metadata(files[0].parent / "sparse.safetensors")
    sp = meta["sparsify"]
    assert sp["parent"]["sha256"] == sha256_file(ckpt) and sp["lambda_index"] == res.chosen
    assert sp["selection"] == "absolute:5" and sp["nnz"] == chosen["nnz"] and meta["dataset"]["name"] == "digits"
    assert meta["metrics"]["test_acc"] == chosen["test_acc"]
    feats = json.loads((files[0].parent / "features.json").read_text())
    assert sum(len(c["features"]) for c in feats["classes"]) == chosen["nnz"]
    assert not state_folder(files[0].parent).exists()


def test_sparse_checkpoint_predicts_features_times_saved_layer(run):
    _, res, files = run
    sparse = load_model(files[0].parent / "sparse.safetensors")
    ds, _ = checkpoint_dataset(sparse.meta)
    x = ds.x_test[:64].float() / 255
    with torch.no_grad():
        logits, feats = sparse(x).double(), FeatureExtractor(sparse)(x).double()
    fc = sparse.layer(sparse.classifier_layer)
    W, b = fc.weight.detach().double(), fc.bias.detach().double()
    assert int((W != 0).sum()) == res.points[res.chosen]["nnz"]
    assert torch.allclose(logits, feats @ W.T + b, atol=1e-5)
    z = (feats - res.mean) / res.std  # the layer on standardised features, folded
    assert torch.allclose(logits, z @ res.W.T + res.b, atol=1e-4)


def test_interp_eval_gives_the_path_s_accuracy(run):
    _, res, files = run
    r = CliRunner().invoke(app, ["eval", str(files[0].parent / "sparse.safetensors"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(res.points[res.chosen]["test_acc"], abs=1e-9)
    r = CliRunner().invoke(app, ["info", str(files[0].parent / "sparse.safetensors")])
    assert r.exit_code == 0 and "sparsify" in r.output


def test_features_are_cached_beside_the_checkpoint(run, tmp_path, monkeypatch):
    ckpt, res, _ = run
    cached = list(ckpt.parent.glob("lenet.features-*.safetensors"))
    assert len(cached) == 1

    def boom(*a, **k):
        raise AssertionError("extracted again")

    monkeypatch.setattr(features_mod, "extract_features", boom)
    again, _ = sparsify_checkpoint(ckpt, tmp_path / "again", _cfg(), device="cpu")
    assert again.chosen == res.chosen and torch.equal(again.W, res.W)


def test_cache_falls_back_to_the_user_cache_folder(digits_ckpt, tmp_path, monkeypatch):
    ckpt = tmp_path / "m" / "lenet.safetensors"
    ckpt.parent.mkdir()
    shutil.copy(digits_ckpt, ckpt)
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model(ckpt)
    ds, _ = checkpoint_dataset(model.meta)
    blocked = ckpt.parent / f"lenet.features-{feature_cache_key(sha256_file(ckpt), model, ds)}.safetensors"
    blocked.mkdir()  # the file cannot be written there (even by root)
    fs, _ = features_mod.checkpoint_features(model, ckpt)
    assert fs.source["cache"] == str(tmp_path / "cache" / blocked.name)


def test_resume_after_an_interruption_gives_the_same_path(tmp_path):
    feats = _features_npz(tmp_path / "f.npz")
    full, _ = sparsify_checkpoint(None, tmp_path / "full", _cfg(), features=feats, device="cpu")

    def stop(done, total, label):
        if label.startswith("λ") and done == 4:  # after λ index 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sparsify_checkpoint(None, tmp_path / "out", _cfg(), features=feats, device="cpu", progress=stop)
    state = state_folder(tmp_path / "out")
    assert json.loads((state / "state.json").read_text())["done"] == 4 and not (tmp_path / "out").exists()
    res, files = sparsify_checkpoint(None, tmp_path / "out", _cfg(), features=feats, device="cpu", resume=True)
    assert res.path.resumed_from == 4 and not state.exists()
    strip = lambda p: {k: v for k, v in p.items() if k != "seconds"}
    assert [strip(p) for p in res.points] == [strip(p) for p in full.points]
    assert torch.equal(res.W, full.W) and res.chosen == full.chosen
    assert sorted(f.name for f in files) == ["features.json", "path.json", "path.png"]  # no checkpoint from a file


def test_features_file_from_the_command_line(tmp_path):
    feats = _features_npz(tmp_path / "f.npz", val=False)
    r = CliRunner().invoke(app, ["sparsify", "--features", str(feats), "-k", "10", "--group", "-o",
                                 str(tmp_path / "out"), "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["selection"]["rule"] == "absolute:5" and len(out["files"]) == 3
    path = json.loads((tmp_path / "out" / "path.json").read_text())
    assert path["validation"]["source"] == "held-out" and path["n"]["val"] == 23 and path["dense"] is None
    kept = [sorted(f["feature"] for f in c["features"]) for c in
            json.loads((tmp_path / "out" / "features.json").read_text())["classes"]]
    assert kept[0] and kept == [kept[0]] * 3  # the group lasso: every class keeps the same features


def test_a_failed_selection_keeps_the_path_for_resume(tmp_path):
    feats = _features_npz(tmp_path / "f.npz")
    args = ["sparsify", "--features", str(feats), "-k", "8", "-o", str(tmp_path / "out")]
    r = CliRunner().invoke(app, [*args, "--select", "features-per-class:0.01"])
    _one_line_error(r, "at most 0.01 features per class", "sparsest non-empty one is λ index", "--resume")
    assert not (tmp_path / "out").exists() and state_folder(tmp_path / "out").is_dir()
    r = CliRunner().invoke(app, [*args, "--resume", "-q", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "path.json").read_text())["resumed_from"] == 8
    with pytest.raises(SelectionError):
        sparsify_checkpoint(None, tmp_path / "o2", _cfg(k=4, select="features-per-class:0.01"), features=feats)


@pytest.mark.parametrize("args, needles", [
    (["--alpha", "0"], ["alpha must be in (0, 1]"]),
    (["--alpha", "1.5"], ["alpha must be in (0, 1]"]),
    (["--epsilon", "1"], ["epsilon", "(0, 1)"]),
    (["--epsilon", "0"], ["epsilon", "(0, 1)"]),
    (["--select", "best"], ["--select must be RULE:VALUE"]),
    (["--select", "lambda-index:100"], ["outside the path of 100 points"]),
    (["--val-split", "1"], ["--val-split must be in (0, 1)"]),
    (["--lime", "bogus=1", "--visualize", "1"], ["unknown LIME parameter"]),
])
def test_bad_options(tmp_path, args, needles):
    feats = _features_npz(tmp_path / "f.npz")
    before = _tree(tmp_path)
    r = CliRunner().invoke(app, ["sparsify", "--features", str(feats), "-o", str(tmp_path / "out"), *args])
    _one_line_error(r, *needles)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("arch, shape, needle", [
    ("bcos-lenet", (1, 28, 28), "is a BcosLinear, not a Linear layer"),
    ("airbench94", (3, 32, 32), "has no bias"),
])
def test_models_without_a_pooled_linear_decision_layer_are_refused(tmp_path, arch, shape, needle):
    enc = {"kind": "bcos6"} if arch.startswith("bcos") else {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}
    ckpt = save_checkpoint(tmp_path / "m.safetensors", Classifier(arch, 10, shape, enc))
    before = _tree(tmp_path)
    r = CliRunner().invoke(app, ["sparsify", str(ckpt), "-o", str(tmp_path / "out")])
    _one_line_error(r, needle, "--features")
    assert _tree(tmp_path) == before


def test_other_bad_input(tmp_path, run):
    feats = _features_npz(tmp_path / "f.npz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    for args, needles in ((["--features", str(feats), "-o", str(tmp_path / "out")], ["not empty", "--force"]),
                          ([str(run[0]), "--features", str(feats)], ["not both"]),
                          (["--features", str(feats), "--visualize", "2", "-o", str(tmp_path / "o")],
                           ["--visualize needs a checkpoint"]),
                          (["-o", str(tmp_path / "o")], ["give a checkpoint or --features"])):
        _one_line_error(CliRunner().invoke(app, ["sparsify", *args]), *needles)
    np.savez(tmp_path / "bad.npz", features=np.zeros((4, 2)), labels=np.zeros(4, int))
    _one_line_error(CliRunner().invoke(app, ["sparsify", "--features", str(tmp_path / "bad.npz"), "-o",
                                             str(tmp_path / "o")]), "lacks split")


# ---------------------------------------------------------------------------------------------- pictures

class _TwoFeatures(nn.Module):
    """Feature 0: the max of the top-left quadrant; feature 1: of the bottom-right one."""

    classifier_layer = "fc"

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        f = torch.stack([x[:, 0, :4, :4].amax((1, 2)), x[:, 0, 4:, 4:].amax((1, 2))], 1)
        return self.fc(f)


def test_lime_explains_the_feature_s_activation():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for j, cell in ((0, 0), (1, 3)):  # a 2x2 grid: cell 0 top-left, 3 bottom-right
        maps = feature_lime(_TwoFeatures(), x, j, n_samples=64, n_segments=4, segmentation="grid")
        coef = maps[:, 0, ::4, ::4].reshape(3, 4)  # one value per cell
        assert (coef.argmax(1) == cell).all()
        others = coef[:, [c for c in range(4) if c != cell]].abs().amax(1)
        assert (others < 0.1 * coef[:, cell]).all(), coef


def test_visualize_writes_a_montage_per_kept_feature(run, tmp_path):
    ckpt = run[0]
    cfg = _cfg(select="lambda-index:3", visualize=2,
               lime={"n_samples": 16, "segmentation": "grid", "n_segments": 4})
    res, files = sparsify_checkpoint(ckpt, tmp_path / "out", cfg, device="cpu")
    kept = sorted({j for c in res.kept() for j, _ in c})
    pngs = sorted(f.name for f in files if f.parent.name == "features")
    assert pngs == [f"feature-{j:04d}.png" for j in kept] and kept
    feats = json.loads((tmp_path / "out" / "features.json").read_text())
    assert {f["montage"] for c in feats["classes"] for f in c["features"]} == {f"features/{p}" for p in pngs}
