"""Files from elsewhere cannot run code: checkpoints, NPZ files and weights load without unpickling
objects; checkpoint metadata is strict JSON of bounded size; paths recorded in metadata are read as
data by the same pickle-free readers, never executed.  Each refusal is one `Error:` line, exit 2."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from interpcli.artifacts import load_tensors, read_metadata, save_checkpoint
from interpcli.cli import app
from interpcli.errors import ArtifactError
from interpcli.metadata import META_MAX_BYTES, loads_strict
from interpcli.models import Classifier

from .conftest import ROOT, one_line_error


class Payload:
    """Unpickling it creates the folder ``marker``: proof that the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


_one_error = one_line_error


@pytest.fixture
def ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    model = Classifier("lenet", 10, (1, 8, 8), {"kind": "identity"})
    return save_checkpoint(tmp_path / "m.safetensors", model, dataset={"name": "digits"})


def _raw_checkpoint(path: Path, ckpt: Path, raw: str) -> Path:
    """``ckpt``'s tensors under an ``interp`` metadata value written as is."""
    tensors, _ = load_tensors(ckpt)
    path.write_bytes(st_save(tensors, metadata={"interp": raw, "format": "pt"}))
    return path


# ---------------------------------------------------------------------------------------------- pickles

def test_no_load_path_can_unpickle():
    """The audit as a test: every torch.load reads weights only, every np.load refuses pickles."""
    calls = []
    for p in [*(ROOT / "interpcli").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        text = p.read_text()
        calls += [(p.name, m.group(0)) for m in re.finditer(r"(torch\.load|np\.load|numpy\.load)\([^)]*\)", text)]
        assert "pickle.load" not in text and "pickle.Unpickler" not in text, p
    assert calls, "the audit found no load call at all"
    bad = [c for c in calls if ("torch.load" in c[1] and "weights_only=True" not in c[1])
           or ("np.load" in c[1] and "allow_pickle=False" not in c[1])]
    assert bad == []


@pytest.mark.parametrize("command", ["explain", "occlude", "train", "import"])
def test_a_pickled_object_in_an_npz_or_pth_is_never_unpickled(ckpt, tmp_path, command):
    marker = tmp_path / "ran"
    np.savez(tmp_path / "evil.npz", images=np.array([Payload(marker)], dtype=object))
    torch.save({"fc.weight": torch.zeros(2, 2), "x": Payload(marker)}, tmp_path / "evil.pt")
    args, needle = {
        "explain": (["explain", ckpt, "--npz", tmp_path / "evil.npz", "-m", "grad", "-o", tmp_path / "o"],
                    "evil.npz' is not an NPZ written by numpy without objects"),
        "occlude": (["occlude", ckpt, "--masks", "file", "--mask-file", tmp_path / "evil.npz", "-o", tmp_path / "o"],
                    "evil.npz' is not an NPZ written by numpy without objects"),
        "train": (["train", "-a", "lenet", "-d", tmp_path / "evil.npz", "-e", "1", "-q", "-o",
                   tmp_path / "t.safetensors"], "evil.npz' is not an NPZ written by numpy without objects"),
        "import": (["import", "resnet18", tmp_path / "evil.pt", "-o", tmp_path / "t.safetensors"],
                   "evil.pt' holds pickled Python objects"),
    }[command]
    _one_error(_run(*args), needle)
    assert not marker.exists()


def test_a_pickle_given_as_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pt")
    for cmd in (["info"], ["eval"], ["explain", "-m", "grad", "-o", tmp_path / "o"]):
        _one_error(_run(cmd[0], tmp_path / "evil.pt", *cmd[1:]), "evil.pt' is not a valid safetensors file")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- metadata

def test_metadata_is_strict_json(ckpt, tmp_path):
    meta = read_metadata(ckpt)
    text = json.dumps(meta)
    nan = _raw_checkpoint(tmp_path / "nan.safetensors", ckpt, text[:-1] + ', "metrics": {"loss": NaN}}')
    dup = _raw_checkpoint(tmp_path / "dup.safetensors", ckpt, text[:-1] + ', "arch": "resnet20"}')
    inf = _raw_checkpoint(tmp_path / "inf.safetensors", ckpt, text[:-1] + ', "x": -Infinity}')
    for path, needle in ((nan, "non-standard JSON constant NaN"), (dup, "duplicate key 'arch'"),
                         (inf, "non-standard JSON constant -Infinity")):
        for cmd in ("info", "eval"):
            _one_error(_run(cmd, path), f"{path.name}' has corrupt interp metadata ({needle})")
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        loads_strict('{"a": 1, "b": {"a": 2}, "a": 3}')


def test_oversized_metadata_and_headers_are_refused(ckpt, tmp_path):
    meta = read_metadata(ckpt)
    big = _raw_checkpoint(tmp_path / "big.safetensors", ckpt, json.dumps({**meta, "pad": "x" * META_MAX_BYTES}))
    for cmd in ("info", "eval"):
        _one_error(_run(cmd, big), "big.safetensors' has 4.0 MiB of interp metadata, over the 4 MiB limit")
    huge = tmp_path / "huge.safetensors"  # announces a 200 MB header (a sparse file: nothing is written)
    with open(huge, "wb") as f:
        f.write((200_000_000).to_bytes(8, "little"))
        f.truncate(8 + 200_000_000)
    _one_error(_run("info", huge), "announces a 200 MB header, over safetensors' limit of 100 MB")


def test_non_finite_numbers_are_written_as_null(tmp_path):
    model = Classifier("lenet", 10, (1, 8, 8), {"kind": "identity"})
    path = save_checkpoint(tmp_path / "m.safetensors", model, metrics={"loss": float("nan"), "x": float("inf"),
                                                                         "note": "NaN stays a string"})
    assert read_metadata(path)["metrics"] == {"loss": None, "x": None, "note": "NaN stays a string"}
    with pytest.raises(ArtifactError, match="over the 4 MiB interp reads back"):
        save_checkpoint(tmp_path / "big.safetensors", model, pad="x" * META_MAX_BYTES)
    assert not (tmp_path / "big.safetensors").exists()


# ---------------------------------------------------------------------------------------------- paths

def _evil_cifar(folder: Path, marker: Path) -> None:
    """torchvision's CIFAR-10 layout with pickles that would run code."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (d / name).write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}))


def test_paths_in_metadata_are_read_as_data_never_run(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_DATA_DIR", str(tmp_path / "no-data-here"))
    marker = tmp_path / "ran"
    _evil_cifar(tmp_path / "data", marker)
    np.savez(tmp_path / "evil.npz", x_train=np.array([Payload(marker)], dtype=object))
    tensors, meta = load_tensors(ckpt)
    # paths recorded in a checkpoint are never opened: the error names them as a hint
    rows = (("cifar10", str(tmp_path / "data"), f"trained with --data-dir {tmp_path / 'data'}"),
            (str(tmp_path / "evil.npz"), None, f"pass --dataset {tmp_path / 'evil.npz'}"))
    for name, data_dir, needle in rows:
        meta = {**meta, "dataset": {"name": name}, "train_config": {"dataset": name, "data_dir": data_dir}}
        path = tmp_path / "pointing.safetensors"
        path.write_bytes(st_save(tensors, metadata={"interp": json.dumps(meta), "format": "pt"}))
        _one_error(_run("eval", path), needle, "never opened")
        assert not marker.exists()
    # given by the user, they are read as data: torchvision checks the files' MD5 first, NPZ without pickle
    for args, needle in ((["--dataset", "cifar10", "--data-dir", tmp_path / "data"], "cifar10: no data in"),
                         (["--dataset", tmp_path / "evil.npz"], "is not an NPZ written by numpy without objects")):
        _one_error(_run("eval", path, *args), needle)
        assert not marker.exists()
