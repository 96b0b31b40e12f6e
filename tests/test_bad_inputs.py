"""What a new user hit, and bad input across every command (issue 17, item 4): every bad input is
one `Error: ...` line on stderr (with a close-match hint for a misspelt name) and exit code 2, never a
traceback, never a written (or half-written) file, a full disk included; existing outputs are only
replaced with --force, as a whole; artifacts honour the umask; the dataset GDS cache lives in the
user cache folder."""

from __future__ import annotations

import errno
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

from .conftest import ROOT, one_line_error

EXPL = ["-m", "grad", "-q"]
OCCL = ["--window", "4", "--stride", "4", "-q"]


def _npz_dataset(path: Path, shape: tuple[int, ...], y_train: list[int], classes: list[str] | None = None) -> None:
    rng = np.random.default_rng(0)
    n = len(y_train)
    extra = {"classes": np.array(classes)} if classes else {}
    np.savez(path, x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=np.array(y_train),
             x_test=rng.integers(0, 256, (4, *shape), dtype=np.uint8), y_test=np.array([0, 1, 2, 0]), **extra)


@pytest.fixture
def world(tmp_path, digits_ckpt, made) -> dict[str, str]:
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
    (tmp_path / "notimage.png").write_text("a text file named like a picture\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.log.jsonl").write_text("not a training log\n")
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "rgb.npz", images=rng.random((2, 3, 8, 8)).astype(np.float32))  # the model takes 1x8x8
    f = rng.random((60, 16)).astype(np.float32)
    f[3, 2] = np.inf
    np.savez(tmp_path / "inf-features.npz", features=f, labels=np.arange(60) % 3,
             split=np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10))
    return {"ckpt": str(digits_ckpt), "tmp": str(tmp_path), "made": str(made)}


def _with_meta(src: Path, dst: Path, **changes) -> None:
    """A copy of checkpoint ``src`` whose interp metadata has ``changes`` (same weights)."""
    data = src.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["interp"] = json.dumps({**json.loads(header["__metadata__"]["interp"]), **changes})
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


@pytest.fixture(scope="module")
def made(tmp_path_factory, digits_ckpt) -> Path:
    """Files the rows read and that take a model to make (never written to by the rows)."""
    from interpcli import artifacts, explain_checkpoint
    from interpcli.inputs import InputSpec

    d = tmp_path_factory.mktemp("made")
    data = digits_ckpt.read_bytes()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    _with_meta(digits_ckpt, d / "future.safetensors", format_version=99)
    _with_meta(digits_ckpt, d / "other.safetensors", note="another checkpoint: another sha256")
    explain_checkpoint(digits_ckpt, d / "expl", ["grad"], inputs=InputSpec(indices="0:2"), png=False)
    arrays, meta = artifacts.load_npz(d / "expl" / "attributions.npz")
    arrays["attr_grad"][0, 0, 0, 0] = np.nan
    artifacts.save_npz(d / "nan-maps.npz", meta, **{**arrays, "attributions": arrays["attr_grad"]})
    return d


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


_one_line_error = one_line_error


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
    # ---- issue 17: bad input across every command
    # corrupt, truncated, newer-format checkpoints
    ("eval-truncated-checkpoint", ["eval", "{made}/truncated.safetensors"], {}, ["corrupt or truncated"]),
    ("info-truncated-checkpoint", ["info", "{made}/truncated.safetensors"], {}, ["is truncated", "header promises"]),
    ("info-corrupt-checkpoint", ["info", "{tmp}/garbage.safetensors"], {}, ["not a valid safetensors file"]),
    ("kernels-truncated-checkpoint", ["kernels", "{made}/truncated.safetensors", "-q", "-o", "{tmp}/o"], {},
     ["corrupt or truncated"]),
    ("noise-grad-corrupt-checkpoint", ["noise-grad", "{tmp}/garbage.safetensors", "-q", "-o", "{tmp}/o"], {},
     ["not a valid safetensors file"]),
    ("compare-corrupt-checkpoint", ["compare", "{tmp}/garbage.safetensors", "{ckpt}", "-q"], {},
     ["garbage.safetensors' is not a valid safetensors file"]),
    ("explain-newer-format", ["explain", "{made}/future.safetensors", *EXPL, "-o", "{tmp}/o"], {},
     ["format version 99, newer than this interp supports (1); upgrade interp"]),
    ("consistency-newer-format", ["consistency", "{made}/future.safetensors", "{made}/expl", "-q", "-o", "{tmp}/o"],
     {}, ["format version 99"]),
    ("sparsify-newer-format", ["sparsify", "{made}/future.safetensors", "-q", "-o", "{tmp}/o"], {},
     ["format version 99"]),
    # a file that is not an image, an empty folder, the wrong channel count
    ("explain-not-an-image", ["explain", "{ckpt}", "{tmp}/notimage.png", *EXPL, "-o", "{tmp}/o"], {},
     ["cannot read image", "notimage.png"]),
    ("occlude-not-an-image", ["occlude", "{ckpt}", "{tmp}/notimage.png", *OCCL, "-o", "{tmp}/o"], {},
     ["cannot read image"]),
    ("noise-grad-not-an-image", ["noise-grad", "{ckpt}", "{tmp}/notimage.png", "-q", "-o", "{tmp}/o"], {},
     ["cannot read image"]),
    ("kernels-not-an-image", ["kernels", "{ckpt}", "--image", "{tmp}/notimage.png", "-q", "-o", "{tmp}/o"], {},
     ["cannot read image"]),
    ("train-empty-folder", [*TRAIN, "-d", "{tmp}/empty", "-o", "{tmp}/x.safetensors"], {},
     ["needs at least two class subfolders"]),
    ("report-empty-folder", ["report", "{tmp}/empty", "-q", "-o", "{tmp}/o"], {}, ["nothing to report"]),
    ("compare-empty-folder", ["compare", "{tmp}/empty", "-q"], {}, ["holds no checkpoint"]),
    ("consistency-empty-folder", ["consistency", "{ckpt}", "{tmp}/empty", "-q", "-o", "{tmp}/o"], {},
     ["not found", "attributions.npz"]),
    ("explain-wrong-channels", ["explain", "{ckpt}", "--npz", "{tmp}/rgb.npz", *EXPL, "-o", "{tmp}/o"], {},
     ["images are (2, 3, 8, 8), the model expects (N, 1, 8, 8)"]),
    ("occlude-wrong-channels", ["occlude", "{ckpt}", "--npz", "{tmp}/rgb.npz", *OCCL, "-o", "{tmp}/o"], {},
     ["the model expects (N, 1, 8, 8)"]),
    ("noise-grad-wrong-channels", ["noise-grad", "{ckpt}", "--npz", "{tmp}/rgb.npz", "-q", "-o", "{tmp}/o"], {},
     ["the model expects (N, 1, 8, 8)"]),
    # NaN / Inf in an NPZ, attributions of another checkpoint
    ("consistency-nan-maps", ["consistency", "{ckpt}", "{made}/nan-maps.npz", "-q", "-o", "{tmp}/o"], {},
     ["'grad' maps hold NaN or infinite values"]),
    ("sparsify-inf-features", ["sparsify", "--features", "{tmp}/inf-features.npz", "-q", "-o", "{tmp}/o"], {},
     ["`features` must be finite numbers"]),
    ("consistency-other-checkpoint", ["consistency", "{made}/other.safetensors", "{made}/expl", "-q", "-o", "{tmp}/o"],
     {}, ["was computed from another checkpoint", "sha256"]),
    # out-of-range targets, labels, indices
    ("explain-target-out-of-range", ["explain", "{ckpt}", "--target", "12", *EXPL, "-o", "{tmp}/o"], {},
     ["target class 12 out of range 0..9"]),
    ("explain-target-unknown-name", ["explain", "{ckpt}", "--target", "dog", *EXPL, "-o", "{tmp}/o"], {},
     ["a class name", "got 'dog'"]),
    ("occlude-target-out-of-range", ["occlude", "{ckpt}", "--target", "99", *OCCL, "-o", "{tmp}/o"], {},
     ["target class 99 out of range"]),
    ("explain-indices-out-of-range", ["explain", "{ckpt}", "--indices", "0:99999", *EXPL, "-o", "{tmp}/o"], {},
     ["--indices '0:99999' selects [360, 361, 362] of 0..359"]),
    ("noise-grad-classes-out-of-range", ["noise-grad", "{ckpt}", "--classes", "0:20", "-q", "-o", "{tmp}/o"], {},
     ["--classes '0:20'", "of 0..9"]),
    ("noise-grad-units-out-of-range", ["noise-grad", "{ckpt}", "--layer", "conv1", "--units", "5000", "-q", "-o",
                                       "{tmp}/o"], {}, ["has 6 units", "of 0..5"]),
    ("kernels-kernel-out-of-range", ["kernels", "{ckpt}", "--index", "0", "--kernel", "999", "-q", "-o", "{tmp}/o"],
     {}, ["--kernel 999 out of range"]),
    ("kernels-index-out-of-range", ["kernels", "{ckpt}", "--index", "99999", "-q", "-o", "{tmp}/o"], {},
     ["'99999' selects [99999] of 0..359"]),
    # unknown names, with the close match
    ("train-unknown-arch", ["train", "-a", "lenett", "-d", "digits", "-q", "-o", "{tmp}/x.safetensors"], {},
     ["'lenett' is not one of", "did you mean 'lenet'?"]),
    ("train-unknown-dataset", [*TRAIN, "-d", "digitz", "-o", "{tmp}/x.safetensors"], {},
     ["unknown dataset 'digitz'; did you mean 'digits'?"]),
    ("eval-unknown-split", ["eval", "{ckpt}", "--split", "vall"], {}, ["unknown split 'vall'"]),
    ("explain-unknown-method", ["explain", "{ckpt}", "-m", "gradd", "-q", "-o", "{tmp}/o"], {},
     ["'gradd' is not one of", "did you mean 'grad'?"]),
    ("explain-unknown-param", ["explain", "{ckpt}", "-m", "intgrad", "-p", "stepz=3", "-q", "-o", "{tmp}/o"], {},
     ["no selected method has a parameter 'stepz'"]),
    ("noise-grad-unknown-layer", ["noise-grad", "{ckpt}", "--layer", "conv9", "-q", "-o", "{tmp}/o"], {},
     ["layer 'conv9' not found; did you mean 'conv2'?"]),
    ("occlude-unknown-layer", ["occlude", "{ckpt}", "--score", "repr", "--layer", "fc3", *OCCL, "-o", "{tmp}/o"], {},
     ["layer 'fc3' not found; did you mean"]),
    ("kernels-unknown-layer", ["kernels", "{ckpt}", "--layer", "nope", "-q", "-o", "{tmp}/o"], {},
     ["layer 'nope' not found"]),
    ("consistency-unknown-metric", ["consistency", "{ckpt}", "{made}/expl", "--metric", "deletin", "-q", "-o",
                                    "{tmp}/o"], {}, ["unknown metric deletin; did you mean 'deletion'?"]),
    ("compare-unknown-metric", ["compare", "{ckpt}", "{made}/other.safetensors", "--metric", "nope", "-q"], {},
     ["has no metric 'nope'"]),
    ("sparsify-unknown-rule", ["sparsify", "{ckpt}", "--select", "absolut:5", "-q", "-o", "{tmp}/o"], {},
     ["--select must be RULE:VALUE"]),
    # zero or negative counts
    ("train-zero-epochs", ["train", "-a", "lenet", "-e", "0", "-q", "-d", "digits", "-o", "{tmp}/x.safetensors"], {},
     ["--epochs must be positive, got 0"]),
    ("train-negative-batch", [*TRAIN, "-b", "-1", "-d", "digits", "-o", "{tmp}/x.safetensors"], {},
     ["--batch-size must be positive, got -1"]),
    ("explain-zero-batch", ["explain", "{ckpt}", "-b", "0", *EXPL, "-o", "{tmp}/o"], {}, ["'--batch-size'"]),
    ("explain-zero-steps", ["explain", "{ckpt}", "-m", "intgrad", "-p", "intgrad.steps=0", "-q", "-o", "{tmp}/o"], {},
     ["steps must be an integer >= 1, got 0"]),
    ("noise-grad-zero-samples", ["noise-grad", "{ckpt}", "--samples", "0", "-q", "-o", "{tmp}/o"], {},
     ["--samples 0 and no images"]),
    ("occlude-zero-window", ["occlude", "{ckpt}", "--window", "0", "-q", "-o", "{tmp}/o"], {}, ["window must be in"]),
    ("occlude-negative-stride", ["occlude", "{ckpt}", "--stride", "-2", "-q", "-o", "{tmp}/o"], {},
     ["stride positive"]),
    ("occlude-zero-masks", ["occlude", "{ckpt}", "--masks", "rise", "--n-masks", "0", "-q", "-o", "{tmp}/o"], {},
     ["n_masks > 0"]),
    ("consistency-zero-step", ["consistency", "{ckpt}", "{made}/expl", "--step", "0", "-q", "-o", "{tmp}/o"], {},
     ["step must be at least 1"]),
    ("consistency-negative-boot", ["consistency", "{ckpt}", "{made}/expl", "--n-boot", "-1", "-q", "-o", "{tmp}/o"],
     {}, ["--n-boot must be at least 1"]),
    ("sparsify-zero-lambdas", ["sparsify", "{ckpt}", "--lambdas", "0", "-q", "-o", "{tmp}/o"], {},
     ["at least 2 λ values"]),
    ("compare-zero-boot", ["compare", "{ckpt}", "{made}/other.safetensors", "--n-boot", "0", "-q"], {},
     ["--n-boot must be at least 1"]),
    ("report-zero-rows", ["report", "{made}/expl", "--max-rows", "0", "-q", "-o", "{tmp}/o"], {}, ["'--max-rows'"]),
    # outputs that cannot be written
    ("consistency-unwritable", ["consistency", "{ckpt}", "{made}/expl", "-q", "-o", "/proc/interp-out"], {},
     ["'/proc' is not writable"]),
    ("noise-grad-under-a-file", ["noise-grad", "{ckpt}", "-q", "-o", "{tmp}/afile/o"], {}, ["afile' is a file"]),
    ("kernels-unwritable", ["kernels", "{ckpt}", "-q", "-o", "/proc/interp-out"], {}, ["'/proc' is not writable"]),
    ("sparsify-under-a-file", ["sparsify", "{ckpt}", "-q", "-o", "{tmp}/afile/o"], {}, ["afile' is a file"]),
    ("compare-unwritable", ["compare", "{ckpt}", "{made}/other.safetensors", "-q", "-o", "/proc/interp-out"], {},
     ["'/proc' is not writable"]),
    ("report-unwritable", ["report", "{made}/expl", "-q", "-o", "/proc/interp-out"], {}, ["'/proc' is not writable"]),
    ("plot-log-under-a-file", ["plot-log", "{ckpt}", "-q", "-o", "{tmp}/afile/curves.png"], {}, ["afile' is a file"]),
    # other files that are not what they should be
    ("plot-log-not-a-log", ["plot-log", "{tmp}/bad.log.jsonl", "-q", "-o", "{tmp}/c.png"], {}, ["line 1 is not JSON"]),
    ("plot-log-not-png", ["plot-log", "{ckpt}", "-q", "-o", "{tmp}/c.jpg"], {}, ["must name a .png file"]),
    ("compare-missing-run", ["compare", "{tmp}/nothere.safetensors", "-q"], {}, ["run not found"]),
    ("report-missing-path", ["report", "{tmp}/nothere", "-q", "-o", "{tmp}/o"], {}, ["not found"]),
]


@pytest.mark.parametrize("args,env,needles", [pytest.param(a, e, n, id=i) for i, a, e, n in ROWS])
def test_bad_input_is_one_line_and_exit_code_2(world, tmp_path, args, env, needles):
    before, made = _tree(tmp_path), _tree(Path(world["made"]))
    r = CliRunner().invoke(app, [a.format(**world) for a in args], env=env)
    _one_line_error(r, *(n.format(**world) for n in needles))
    assert _tree(tmp_path) == before, "nothing may be written, not even a temporary file"
    assert _tree(Path(world["made"])) == made


def test_the_table_covers_every_command():
    commands = {next(a for a in args if not a.startswith("-")) for _, args, _, _ in ROWS}
    assert commands >= {"train", "eval", "info", "explain", "occlude", "consistency", "noise-grad", "kernels",
                        "sparsify", "compare", "report", "plot-log"}
    assert len(ROWS) >= 30


FULL = [  # a disk that fills up while the output is written: one line, nothing left behind
    ("explain", ["explain", "{ckpt}", "--indices", "0:2", *EXPL, "-o", "{tmp}/o"], "cannot write output folder"),
    ("occlude", ["occlude", "{ckpt}", "--indices", "0:2", *OCCL, "-o", "{tmp}/o"], "cannot write output folder"),
    ("train", [*TRAIN, "-d", "digits", "-o", "{tmp}/m.safetensors"], "cannot write the training files beside"),
    ("consistency", ["consistency", "{ckpt}", "{made}/expl", "--metric", "deletion", "-q", "-o", "{tmp}/o"],
     "cannot write output folder"),
    ("noise-grad", ["noise-grad", "{ckpt}", "-n", "2", "-q", "-o", "{tmp}/o"], "cannot write output folder"),
    ("kernels", ["kernels", "{ckpt}", "-q", "-o", "{tmp}/o"], "cannot write output folder"),
    ("sparsify", ["sparsify", "{ckpt}", "-k", "3", "--no-cache", "-q", "-o", "{tmp}/o"], "cannot save the path"),
    ("compare", ["compare", "{ckpt}", "{made}/other.safetensors", "-q", "-o", "{tmp}/o"], "cannot write output folder"),
    ("report", ["report", "{made}/expl", "-q", "-o", "{tmp}/o"], "cannot write output folder"),
    ("plot-log", ["plot-log", "{ckpt}", "-q", "-o", "{tmp}/c.png"], "No space left on device: '{tmp}/c.png'"),
]


@pytest.mark.parametrize("args,needle", [pytest.param(a, n, id=i) for i, a, n in FULL])
def test_a_full_disk_is_one_line_and_leaves_nothing(world, tmp_path, monkeypatch, args, needle):
    fsync = os.fsync

    def full(fd: int) -> None:  # the data of a file does not fit (folders' fsyncs pass)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            return fsync(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = _tree(tmp_path)
    monkeypatch.setattr(os, "fsync", full)
    r = CliRunner().invoke(app, [a.format(**world) for a in args])
    monkeypatch.setattr(os, "fsync", fsync)
    _one_line_error(r, needle.format(**world), "No space left on device")
    assert _tree(tmp_path) == before


def test_a_read_only_folder_is_refused(digits_ckpt, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        try:
            (ro / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip("permissions are not enforced here (root): the /proc and under-a-file rows cover it")
        r = CliRunner().invoke(app, ["explain", str(digits_ckpt), *EXPL, "-o", str(ro / "o")])
        _one_line_error(r, "is not writable", "Permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


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
    assert sorted(p.name for p in out.iterdir()) == [".interp-manifest", "0000_occlusion.png", "0001_occlusion.png",
                                                     "0002_occlusion.png", "attributions.npz"]  # no stale grid.png
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
