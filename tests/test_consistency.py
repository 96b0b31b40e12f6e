"""`interp consistency` end to end: files, tables and summaries from the CLI and from Python, the
same numbers on a rerun, and every bad input as one `Error:` line with exit code 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interpcli import TrainConfig, train
from interpcli.attributions import Attributions
from interpcli.cli import app
from interpcli.metrics.fidelity import FidelityConfig
from interpcli.ops.consistency import ConsistencyConfig, SanityConfig, consistency_checkpoint

from .test_bad_inputs import _one_line_error, _tree


@pytest.fixture(scope="module")
def explained(digits_ckpt, tmp_path_factory):
    """Two explain runs of the same 12 digits (grad + intgrad, gradcam) and one of other digits."""
    root = tmp_path_factory.mktemp("expl")
    for name, idx, methods in (("a", "0:12", ["grad", "intgrad"]), ("b", "0:12", ["gradcam"]),
                               ("other", "12:24", ["ixg"])):
        args = ["explain", str(digits_ckpt), "--indices", idx, "-q", "--no-png", "-o", str(root / name)]
        for m in methods:
            args += ["-m", m]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
    return root


def _run(*args):
    return CliRunner().invoke(app, ["consistency", *map(str, args)])


def test_cli_writes_tables_summary_and_figures(digits_ckpt, explained, tmp_path):
    out = tmp_path / "s"
    r = _run(digits_ckpt, explained / "a", explained / "b" / "attributions.npz", "--fractions", "10", "--step", "8",
             "-o", out)
    assert r.exit_code == 0, r.output
    names = sorted(Path(p).name for p in r.stdout.split())
    assert names == ["curves.npz", "deletion_insertion.png", "scores.csv", "scores.png", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"]["sha256"] and summary["fidelity"]["methods"] == ["grad", "intgrad", "gradcam"]
    for metric in ("consistency", "min-size", "deletion", "insertion"):
        part = summary["summary"][metric]
        assert set(part["summary"]) == {"grad", "intgrad", "gradcam"}
        s = part["summary"]["grad"]
        assert s["n"] == 12 and s["ci_low"] <= s["mean"] <= s["ci_high"]
        assert len(part["tests"]) == 3 and {"p_t_holm", "p_wilcoxon_holm", "cohen_dz"} <= set(part["tests"][0])
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 12 * 3 * 4
    grad_del = [float(x["value"]) for x in rows if x["method"] == "grad" and x["metric"] == "deletion"]
    assert np.isclose(np.mean(grad_del), summary["summary"]["deletion"]["summary"]["grad"]["mean"])
    with np.load(out / "curves.npz") as z:
        assert z["deletion_grad"].shape == (12, 64 // 8 + 1) and z["distance_grad"].shape == (12, 10)
    # the same command again gives the same numbers
    r = _run(digits_ckpt, explained / "a", explained / "b", "--fractions", "10", "--step", "8", "-o", out,
             "--force", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"] == summary["summary"]


def test_python_api_pointing_and_sanity(digits_ckpt, explained):
    cfg = ConsistencyConfig(fidelity=FidelityConfig(metrics=("deletion",), step=16), sanity=SanityConfig(),
                            n_boot=200)
    report, files = consistency_checkpoint(digits_ckpt, [explained / "a"], None, cfg, device="cpu")
    assert files == [] and report.fidelity.scores["deletion"]["grad"].shape == (12,)
    assert report.sanity.methods == ["grad", "intgrad"]
    assert set(report.summary) == {"deletion", "sanity-corr"}
    corr = report.sanity.spearman_abs["grad"]
    assert np.allclose(corr[0], 1) and np.nanmean(corr[-1]) < 0.6  # a faithful gradient decorrelates


def test_pointing_game_from_the_cli(tmp_path):
    ckpt = tmp_path / "fcn.safetensors"  # a fully convolutional digits model takes 3x3 mosaics as they are
    train(TrainConfig(arch="resnet20", dataset="digits", epochs=3, lr=0.1, arch_kwargs={"width": 4}), out=ckpt,
          device="cpu")
    r = _run(ckpt, "--pointing-game", "--methods", "grad,gradcam", "--n", "4", "-o",
             tmp_path / "pg", "-q")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "pg" / "summary.json").read_text())
    assert summary["pointing"]["grid"] == 3 and summary["pointing"]["baseline"] == pytest.approx(1 / 9)
    rows = list(csv.DictReader((tmp_path / "pg" / "pointing.csv").open()))
    assert summary["pointing"]["n_mosaics"] == 4 and len(rows) == 2 * 4 * 9
    assert all(0 <= float(x["value"]) <= 1 for x in rows)


def _tamper(src: Path, dst: Path, **change) -> Path:
    a = Attributions.load(src)
    for k, v in change.items():
        setattr(a, k, v)
    a.save(dst, png=False)
    return dst


@pytest.fixture(scope="module")
def bad(digits_ckpt, explained, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    other = root / "other.safetensors"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=1, limit_train=100, seed=3), out=other, device="cpu")
    a = Attributions.load(explained / "a")
    _tamper(explained / "a", root / "shape", maps={"grad": a.maps["grad"][:, :, :4, :], "intgrad": a.maps["intgrad"]})
    _tamper(explained / "a", root / "nan", maps={"grad": a.maps["grad"] * float("nan")})
    _tamper(explained / "b", root / "targets", targets=(a.targets + 1) % 10)
    np.savez(root / "plain.npz", images=np.zeros((2, 1, 8, 8), np.float32))
    return {"ckpt": str(digits_ckpt), "other": str(other), "e": str(explained), "b": str(root)}


BAD = [
    ("nothing", ["{ckpt}"], ["nothing to score"]),
    ("other-checkpoint", ["{other}", "{e}/a"], ["computed from another checkpoint"]),
    ("other-images", ["{ckpt}", "{e}/a", "{e}/other"], ["holds other images"]),
    ("other-targets", ["{ckpt}", "{e}/b", "{b}/targets"], ["explains other targets"]),
    ("twice", ["{ckpt}", "{e}/a", "{e}/a/attributions.npz"], ["method 'grad' is in more than one file"]),
    ("shape", ["{ckpt}", "{b}/shape"], ["the 'grad' maps have shape (12, 1, 4, 8)"]),
    ("nan-maps", ["{ckpt}", "{b}/nan"], ["NaN"]),
    ("not-attributions", ["{ckpt}", "{b}/plain.npz"], ["not an attributions file"]),
    ("missing", ["{ckpt}", "{b}/nope"], ["nope"]),
    ("metric", ["{ckpt}", "{e}/a", "--metric", "deletion,auc"], ["unknown metric auc"]),
    ("fractions", ["{ckpt}", "{e}/a", "--fractions", "0,0.5"], ["fractions must lie in (0, 1]"]),
    ("step", ["{ckpt}", "{e}/a", "--step", "0"], ["step must be at least 1"]),
    ("baseline", ["{ckpt}", "{e}/a", "--baseline", "grey"], ["--baseline must be"]),
    ("pg-methods", ["{ckpt}", "--pointing-game"], ["--pointing-game needs --methods"]),
    ("pg-unknown", ["{ckpt}", "--pointing-game", "--methods", "grad,nope"], ["nope"]),
    ("pg-grid", ["{ckpt}", "--pointing-game", "--methods", "grad", "--grid", "1", "--rescale"], ["grid"]),
    ("pg-lenet", ["{ckpt}", "--pointing-game", "--methods", "grad"], ["--rescale"]),
    ("param", ["{ckpt}", "{e}/a", "-p", "grad.x=1"], ["--param needs --methods"]),
    ("existing", ["{ckpt}", "{e}/a", "-o", "{e}"], ["exists and is not empty; pass --force"]),
]


@pytest.mark.parametrize("args,needles", [pytest.param(a, n, id=i) for i, a, n in BAD])
def test_bad_input_is_one_line_and_exit_code_2(bad, tmp_path, args, needles):
    before = _tree(tmp_path)
    argv = [a.format(**bad) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out")]
    r = CliRunner().invoke(app, ["consistency", *argv, "-q"])
    _one_line_error(r, *needles)
    assert _tree(tmp_path) == before

