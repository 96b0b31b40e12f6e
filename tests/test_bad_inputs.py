"""What a new user hit: every bad input is one `Error: ...` line on stderr and exit code 2, never a
traceback, never a written (or half-written) file; existing outputs are only replaced with --force,
as a whole; artifacts honour the umask; the dataset GDS cache lives in the user cache folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from interpcli.cli import app

from .conftest import ROOT

EXPL = ["-m", "grad", "-q"]
OCCL = ["--window", "4", "--stride", "4", "-q"]


def _npz_dataset(path: Path, shape: tuple[int, ...], y_train: list[int], classes: list[str] | None = None) -> None:
    rng = np.random.default_rng(0)
    n = len(y_train)
    extra = {"classes": np.array(classes)} if classes else {}
    np.savez(path, x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=np.array(y_train),
             x_test=rng.integers(0, 256, (4, *shape), dtype=np.uint8), y_test=np.array([0, 1, 2, 0]), **extra)


@pytest.fixture
def world(tmp_path, digits_ckpt) -> dict[str, str]:
    """The files the rows refer to, as {name} placeholders."""
    (tmp_path / "afile").write_text("a regular file\n")
    _npz_dataset(tmp_path / "mnist.npz", (28, 28), [i % 10 for i in range(20)])
    _npz_dataset(tmp_path / "cifar10.npz", (32, 32, 3), [i % 10 for i in range(20)])
    _npz_dataset(tmp_path / "stray.npz", (8, 8), [0, 1, 2, 0, 1, 2, 57, 0])
    _npz_dataset(tmp_path / "negative.npz", (8, 8), [0, 1, 2, -1, 0, 1, 2, 0])
    _npz_dataset(tmp_path / "named.npz", (8, 8), [0, 1, 2, 0, 5, 1, 2, 0], classes=["a", "b", "c"])
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(1).bytes(4000))
    x = np.random.default_rng(2).random((4, 1, 8, 8)).astype(np.float32)
    x[1, 0, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", images=x)
    x[1, 0, 3, 3], x[2, 0, 0, 0] = 0.5, np.inf
    np.savez(tmp_path / "inf.npz", images=x)
    from PIL import Image

    Image.fromarray((x[0, 0] * 255).astype(np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "garbage.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "existing.safetensors").write_bytes(b"an old checkpoint")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "grid.png").write_bytes(b"an old grid")
    return {"ckpt": str(digits_ckpt), "tmp": str(tmp_path)}


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _one_line_error(r, *needles: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and r.stdout == "", r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


TRAIN = ["train", "-a", "lenet", "-e", "1", "-q"]

ROWS = [
    # ---- tracebacks that became one line
    ("explain-unwritable", ["explain", "{ckpt}", *EXPL, "-o", "/proc/interp-out"], {}, ["'/proc' is not writable"]),
    ("occlude-unwritable", ["occlude", "{ckpt}", *OCCL, "-o", "/proc/interp-out"], {}, ["'/proc' is not writable"]),
    ("explain-unwritable-sys", ["explain", "{ckpt}", *EXPL, "-o", "/sys/interp-out"], {}, ["is not writable"]),
    ("explain-parent-missing", ["explain", "{ckpt}", *EXPL, "-o", "/proc/x/out"], {}, ["'/proc/x' does not exist"]),
    ("occlude-parent-is-file", ["occlude", "{ckpt}", *OCCL, "-o", "{tmp}/afile/out"], {},
     ["afile' is a file, not a folder"]),
    ("explain-out-is-file", ["explain", "{ckpt}", *EXPL, "-o", "{tmp}/afile"], {}, ["afile' is a file, not a folder"]),
    ("threads-abc", ["eval", "{ckpt}"], {"INTERP_THREADS": "abc"}, ["INTERP_THREADS", "'abc'"]),
    ("threads-zero", ["eval", "{ckpt}"], {"INTERP_THREADS": "0"}, ["INTERP_THREADS", "'0'"]),
    ("threads-negative", ["explain", "{ckpt}", *EXPL, "-o", "{tmp}/o"], {"INTERP_THREADS": "-2"}, ["'-2'"]),
    ("train-unwritable", [*TRAIN, "-d", "digits", "-o", "/proc/interp.safetensors"], {},
     ["'/proc' is not writable"]),
    ("train-folder-is-file", [*TRAIN, "-d", "digits", "-o", "{tmp}/afile/x.safetensors"], {},
     ["afile' is a file, not a folder"]),
    # ---- silent wrong results, now refused
    ("cifar10-from-mnist-file", [*TRAIN, "-d", "cifar10", "--data-dir", "{tmp}/mnist.npz", "-o", "{tmp}/x.safetensors"],
     {}, ["mnist.npz' holds 1x28x28 images of 10 classes", "cifar10 has 3x32x32 images"]),
    ("mnist-from-cifar-file", [*TRAIN, "-d", "mnist", "--data-dir", "{tmp}/cifar10.npz", "-o", "{tmp}/x.safetensors"],
     {}, ["holds 3x32x32 images", "mnist has 1x28x28 images"]),
    ("stray-label", [*TRAIN, "-d", "{tmp}/stray.npz", "-o", "{tmp}/x.safetensors"], {},
     ["y_train[6] is 57", "no image has label 3, 4, 5, ..."]),
    ("negative-label", [*TRAIN, "-d", "{tmp}/negative.npz", "-o", "{tmp}/x.safetensors"], {}, ["y_train[3] is -1"]),
    ("label-beyond-classes", [*TRAIN, "-d", "{tmp}/named.npz", "-o", "{tmp}/x.safetensors"], {},
     ["y_train[4] is 5", "outside 0..2"]),
    ("explain-nan-image", ["explain", "{ckpt}", "--npz", "{tmp}/nan.npz", *EXPL, "-o", "{tmp}/o"], {},
     ["image 1 (", "nan.npz:1) has NaN or Inf"]),
    ("occlude-inf-image", ["occlude", "{ckpt}", "--npz", "{tmp}/inf.npz", *OCCL, "-o", "{tmp}/o"], {},
     ["image 2 (", "inf.npz:2) has NaN or Inf"]),
    ("explain-indices-with-files", ["explain", "{ckpt}", "{tmp}/img.png", "--indices", "0:2", *EXPL, "-o", "{tmp}/o"],
     {}, ["--indices", "image files"]),
    ("occlude-indices-with-files", ["occlude", "{ckpt}", "{tmp}/img.png", "--indices", "0", *OCCL, "-o", "{tmp}/o"],
     {}, ["--indices", "image files"]),
    ("explain-random-npz", ["explain", "{ckpt}", "--npz", "{tmp}/random.npz", *EXPL, "-o", "{tmp}/o"], {},
     ["random.npz' is not an NPZ written by numpy without objects"]),
    ("occlude-random-mask-file", ["occlude", "{ckpt}", "--masks", "file", "--mask-file", "{tmp}/random.npz", "-q",
                                  "-o", "{tmp}/o"], {}, ["random.npz' is not an NPZ written by numpy without objects"]),
    ("train-random-npz", [*TRAIN, "-d", "{tmp}/random.npz", "-o", "{tmp}/x.safetensors"], {},
     ["random.npz' is not an NPZ written by numpy without objects"]),
    # ---- existing outputs: refused before any work (the dataset / checkpoint given is never read)
    ("train-existing", [*TRAIN, "-d", "{tmp}/random.npz", "-o", "{tmp}/existing.safetensors"], {},
     ["existing.safetensors' exists; pass --force"]),
    ("train-resume-existing", [*TRAIN, "-d", "digits", "--resume", "-o", "{tmp}/existing.safetensors"], {},
     ["--resume", "existing.safetensors' exists", "--force"]),
    ("explain-existing", ["explain", "{tmp}/garbage.safetensors", *EXPL, "-o", "{tmp}/existing"], {},
     ["existing' exists and is not empty; pass --force"]),
    ("occlude-existing", ["occlude", "{tmp}/garbage.safetensors", *OCCL, "-o", "{tmp}/existing"], {},
     ["existing' exists and is not empty; pass --force"]),
]


@pytest.mark.parametrize("args,env,needles", [pytest.param(a, e, n, id=i) for i, a, e, n in ROWS])
def test_bad_input_is_one_line_and_exit_code_2(world, tmp_path, args, env, needles):
    before = _tree(tmp_path)
    r = CliRunner().invoke(app, [a.format(**world) for a in args], env=env)
    _one_line_error(r, *(n.format(**world) for n in needles))
    assert _tree(tmp_path) == before, "nothing may be written, not even a temporary file"


def test_a_real_process_prints_one_line(digits_ckpt):
    env = dict(os.environ, PYTHONPATH=str(ROOT), INTERP_THREADS="abc")
    r = subprocess.run([sys.executable, "-m", "interpcli", "eval", str(digits_ckpt)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["Error: INTERP_THREADS must be a positive number of CPU threads; got 'abc'"]


def test_npz_indices_pick_images_and_skip_a_bad_one(world, tmp_path):
    r = CliRunner().invoke(app, ["explain", world["ckpt"], "--npz", f"{tmp_path}/nan.npz", "--indices", "0,2", *EXPL,
                                 "--json", "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 2


# ---------------------------------------------------------------------------------------------- --force

def test_force_replaces_an_output_folder_as_a_whole(digits_ckpt, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["explain", str(digits_ckpt), "--indices", "0:2", "-m", "grad", "-m", "ixg", "-q",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "grid.png").exists()
    r = CliRunner().invoke(app, ["occlude", str(digits_ckpt), "--indices", "0:3", *OCCL, "--force", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["0000_occlusion.png", "0001_occlusion.png", "0002_occlusion.png",
                                                     "attributions.npz"]  # no stale grid.png or grad maps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary or old folder left
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing stale: no --force needed
    r = CliRunner().invoke(app, ["explain", str(digits_ckpt), "--indices", "0", *EXPL, "-o", str(tmp_path / "empty")])
    assert r.exit_code == 0 and (tmp_path / "empty" / "attributions.npz").exists(), r.output


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_honour_the_umask(digits_ckpt, tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        r = CliRunner().invoke(app, ["explain", str(digits_ckpt), "--indices", "0", *EXPL, "-o", str(tmp_path / "o")])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o").stat().st_mode & 0o777 == dir_mode
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()} == {file_mode}


def test_train_force_and_a_failed_final_write_keeps_the_state(tmp_path, monkeypatch):
    from interpcli.ops import train as train_op

    out = tmp_path / "m.safetensors"
    out.write_bytes(b"an old checkpoint")
    real = train_op.artifacts.save_checkpoint

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_op.artifacts, "save_checkpoint", disk_full)
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(app, [*TRAIN, "-d", "digits", "--force", "-o", str(out)])
        state = tmp_path / "m.state.safetensors"
        _one_line_error(r, "cannot write the checkpoint", "No space left on device", str(state), "--resume")
        assert state.is_file() and state.stat().st_mode & 0o777 == 0o644
        assert out.read_bytes() == b"an old checkpoint"
        monkeypatch.setattr(train_op.artifacts, "save_checkpoint", real)
        r = CliRunner().invoke(app, [*TRAIN, "-d", "digits", "--resume", "--force", "-o", str(out)])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert not state.exists() and out.stat().st_mode & 0o777 == 0o644
    from interpcli import read_metadata

    assert read_metadata(out)["metrics"]["epochs"] == 1


# ---------------------------------------------------------------------------------------------- GDS cache

def test_dataset_gds_cache_lives_in_the_user_cache_folder(digits_ckpt, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    ckpt = runs / "m.safetensors"
    shutil.copy(digits_ckpt, ckpt)
    runs.chmod(0o555)  # a read-only checkpoint folder (root writes there anyway: nothing may be written)
    args = ["occlude", str(ckpt), "--indices", "0", "--score", "gds", "--gds-from", "dataset", "--k", "3",
            "--gds-dim", "6", "--gds-per-class", "20", *OCCL]
    try:
        monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
        r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "a")])
        assert r.exit_code == 0, r.output
        assert [p.name for p in runs.iterdir()] == ["m.safetensors"]
        assert len(list((tmp_path / "cache").glob("gds-*.safetensors"))) == 1
        monkeypatch.setenv("INTERP_CACHE_DIR", "/proc/interp-cache")
        with pytest.warns(UserWarning, match="'/proc/interp-cache' is not writable.*without caching"):
            r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "b")])
        assert r.exit_code == 0, r.output
    finally:
        runs.chmod(0o755)


def test_cache_dir_order(monkeypatch, tmp_path):
    from interpcli.gds import cache_dir

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("INTERP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "interp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "interp"
