"""Make-friendly re-runs (issue 17, item 3): a command whose output is complete and was made by the
same request from the same inputs does nothing (`up to date: OUT (use --force to redo)`, exit 0,
no file touched); a changed argument, a touched or edited input, an edited or missing output file
is refused as before (exit 2, "pass --force"), with the reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interpcli import explain_checkpoint, freshness, read_metadata
from interpcli.cli import app
from interpcli.inputs import InputSpec


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _run(*args, code: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    return r


def _up_to_date(root: Path, out: Path, *args) -> None:
    before = _tree(root)
    r = _run(*args)
    assert r.stdout == "" and r.stderr.splitlines() == [f"up to date: {out} (use --force to redo)"], r.output
    assert _tree(root) == before, "an up-to-date run touches nothing"


def _refused(*args, why: str) -> str:
    r = _run(*args, code=2)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "pass --force" in lines[0] and f"not up to date: {why}" in lines[0], lines
    return lines[0]


def _touch(path: Path) -> None:
    before = path.stat().st_mtime_ns
    os.utime(path)  # now, as `touch` does
    assert path.stat().st_mtime_ns != before


@pytest.fixture
def ckpt(digits_ckpt, tmp_path) -> Path:
    """A copy of the session checkpoint: these tests touch it."""
    (tmp_path / "runs").mkdir()
    return Path(shutil.copy(digits_ckpt, tmp_path / "runs" / "m.safetensors"))


def test_explain_twice_is_a_no_op_until_an_argument_or_the_checkpoint_changes(ckpt, tmp_path):
    out = tmp_path / "e"
    args = ["explain", ckpt, "--indices", "0:2", "-m", "grad", "-m", "ixg", "-q", "-o", out]
    _run(*args)
    manifest = json.loads((out / freshness.MANIFEST).read_text())
    assert manifest["request"]["args"]["indices"] == "0:2" and "force" not in manifest["request"]["args"]
    assert str(ckpt) in manifest["inputs"] and set(manifest["files"]) >= {"attributions.npz", "grid.png"}
    _up_to_date(tmp_path, out, *args)
    _up_to_date(tmp_path, out, *args[:-3], "--json", "-o", out)  # --json, -q: how it reports, not what it writes
    _refused(*args[:3], "0:3", *args[4:], why="made with other arguments: --indices")
    _touch(ckpt)
    _refused(*args, why=f"its input '{ckpt}' changed")
    _run(*args, "--force")
    _up_to_date(tmp_path, out, *args)
    (out / "grid.png").unlink()
    _refused(*args, why="'grid.png' is missing from it")


def test_occlude_twice_is_a_no_op(ckpt, tmp_path):
    out = tmp_path / "o"
    args = ["occlude", ckpt, "--indices", "0:2", "--window", "4", "--stride", "4", "-q", "-o", out]
    _run(*args)
    _up_to_date(tmp_path, out, *args)
    _refused(*args[:5], "2", *args[6:], why="made with other arguments: --window")
    (out / "0000_occlusion.png").write_bytes(b"edited")
    _refused(*args, why="'0000_occlusion.png' changed since it was written")
    _run(*args, "--force")
    _up_to_date(tmp_path, out, *args)
    _touch(ckpt)
    _refused(*args, why=f"its input '{ckpt}' changed")


def test_train_twice_is_a_no_op_until_the_dataset_changes(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 2,
             x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_test=np.arange(10) % 2)
    out = tmp_path / "m.safetensors"
    args = ["train", "-a", "lenet", "-d", data, "-e", "1", "-q", "-o", out]
    _run(*args)
    assert read_metadata(out)["request"]["inputs"][str(data)][0] == "file"
    _up_to_date(tmp_path, out, *args)
    _up_to_date(tmp_path, out, *args, "--resume")  # a Makefile rule with --resume: done is done
    _refused(*args[:6], "2", *args[7:], why="made with other arguments: --epochs")
    _touch(data)
    _refused(*args, why=f"its input '{data}' changed")


def test_consistency_follows_the_attributions_it_scores(ckpt, tmp_path):
    expl, scores = tmp_path / "e", tmp_path / "s"
    explain = ["explain", ckpt, "--indices", "0:2", "-m", "grad", "-q", "-o", expl]
    _run(*explain)
    args = ["consistency", ckpt, expl, "--metric", "deletion", "--n-boot", "10", "--no-png", "-q", "-o", scores]
    _run(*args)
    _up_to_date(tmp_path, scores, *args)
    _run(*explain[:3], "0:3", *explain[4:], "--force")  # the attributions are recomputed
    _refused(*args, why=f"its input '{expl / 'attributions.npz'}' changed")


def test_plot_log_png_carries_its_record(digits_ckpt, tmp_path):
    log = Path(shutil.copy(digits_ckpt.with_name("lenet.log.jsonl"), tmp_path / "r.log.jsonl"))
    out = tmp_path / "curves.png"
    _run("plot-log", log, "-q", "-o", out)
    assert json.loads(freshness.png_text(out.read_bytes())[freshness.PNG_KEY])["inputs"][str(log)][0] == "file"
    _up_to_date(tmp_path, out, "plot-log", log, "-q", "-o", out)
    _touch(log)
    _refused("plot-log", log, "-q", "-o", out, why=f"its input '{log}' changed")


def test_outputs_written_from_python_carry_no_record_and_stay_refused(ckpt, tmp_path):
    out = tmp_path / "e"
    explain_checkpoint(ckpt, out, ["grad"], inputs=InputSpec(indices="0:2"))
    assert not (out / freshness.MANIFEST).exists()
    r = _run("explain", ckpt, "--indices", "0:2", "-m", "grad", "-q", "-o", out, code=2)
    assert r.stderr.splitlines() == [f"Error: output folder '{out}' exists and is not empty; pass --force to replace "
                                     "it (or choose another --out)"]


def test_the_package_reads_files_through_python_open_only():
    """Inputs are recorded by an audit hook on Python's open(): a reader in C or Rust that opens files
    itself (safetensors' safe_open / load_file, torchvision.io) would be an input nobody sees."""
    root = Path(freshness.__file__).parent
    bad = [f"{p.relative_to(root)}: {word}" for p in root.rglob("*.py") for word in
           ("safe_open(", "safetensors.torch import load_file", "torchvision.io")
           if word in p.read_text()]
    assert bad == []
