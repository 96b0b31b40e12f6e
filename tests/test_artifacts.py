"""interpcli.artifacts: checkpoints (safetensors + JSON metadata), atomic writes, NPZ, PNG."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import interpcli
from interpcli import artifacts
from interpcli.artifacts import (
    CHECKPOINT_FORMAT_VERSION,
    atomic_write,
    check_output_path,
    load_checkpoint,
    load_model,
    load_npz,
    read_metadata,
    save_checkpoint,
    save_npz,
    save_png,
    save_tensors,
)
from interpcli.errors import ArtifactError, ConfigError, InterpError
from interpcli.models import Classifier, get_model_info, list_models

REPO = Path(__file__).resolve().parents[1]
META_KEYS = ("format_version", "arch", "arch_kwargs", "num_classes", "classes", "input_shape", "encoding",
             "interp_version", "created")


def _lenet(**kw) -> Classifier:
    torch.manual_seed(0)
    return Classifier("lenet", 10, (1, 8, 8), {"kind": "normalize", "mean": [0.3], "std": [0.4]}, **kw)


def _randomize_buffers(net: torch.nn.Module, seed: int = 1) -> None:
    """Give BatchNorm statistics non-default values so a round trip that drops them would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), f"{k} differs after the round trip"


def _leftover_tmp(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


def _raises_artifact(fn, *args, match: str) -> ArtifactError:
    with pytest.raises(ArtifactError, match=match) as ei:
        fn(*args)
    assert ei.value.exit_code == 2
    assert isinstance(ei.value, InterpError)
    return ei.value


# ----------------------------------------------------------------------------------------
#   Checkpoint round trip
# ----------------------------------------------------------------------------------------

def test_checkpoint_round_trip_is_exact(tmp_path):
    model = _lenet().eval()
    path = tmp_path / "m.safetensors"
    extra_metrics = {"test_acc": 0.875, "loss": [1.5, 0.25], "per_class": {"0": 1.0, "9": 0.5}}
    train_config = {"epochs": 3, "lr": 0.1, "schedule": None, "nested": {"a": [1, 2, {"b": True}]}}
    before = time.time()
    ret = save_checkpoint(path, model, metrics=extra_metrics, train_config=train_config, dataset="digits")
    assert Path(ret) == path and path.is_file()
    assert _leftover_tmp(tmp_path) == []

    loaded = load_model(path)
    assert isinstance(loaded, Classifier)
    assert not loaded.training, "load_model returns an eval-mode model by default"
    _assert_same_state(model.net.state_dict(), loaded.net.state_dict())

    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))

    meta = loaded.meta
    for key in META_KEYS:
        assert key in meta, key
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert meta["arch"] == "lenet"
    assert meta["num_classes"] == 10
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["input_shape"] == [1, 8, 8]
    assert meta["arch_kwargs"] == {}
    assert meta["encoding"]["kind"] == "normalize"
    assert meta["encoding"]["mean"] == pytest.approx([0.3]) and meta["encoding"]["std"] == pytest.approx([0.4])
    assert meta["interp_version"] == interpcli.__version__
    created = dt.datetime.fromisoformat(meta["created"])
    assert created.tzinfo is not None
    assert abs(created.timestamp() - before) < 120
    # Extra metadata comes back exactly (JSON types).
    assert meta["metrics"] == extra_metrics
    assert meta["train_config"] == train_config
    assert meta["dataset"] == "digits"

    # The rebuilt model has the same encoding and shape facts.
    assert loaded.arch == "lenet" and loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
    assert torch.equal(loaded.encoder.mean, model.encoder.mean) and torch.equal(loaded.encoder.std, model.encoder.std)

    # read_metadata reads only the header and agrees with the full load.
    assert read_metadata(path) == meta
    state, meta2 = load_checkpoint(path)
    assert meta2 == meta
    _assert_same_state(model.net.state_dict(), state)


def test_read_metadata_reads_only_the_header(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _lenet())
    n_header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    size = path.stat().st_size
    assert size > 4 * n_header  # the tensors dominate the file

    read = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def spy_open(p, mode="r", *a, **k):
        f = real_open(p, mode, *a, **k)
        return Spy(f) if Path(p) == path and "b" in mode else f

    monkeypatch.setattr("builtins.open", spy_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read_metadata must not read the whole file"))
    meta = read_metadata(path)
    assert meta["arch"] == "lenet"
    assert sum(read) == n_header


def test_classes_and_arch_kwargs_round_trip(tmp_path):
    names = [f"class-{i}" for i in range(4)]
    torch.manual_seed(0)
    model = Classifier("lenet", 4, (3, 12, 12), {"kind": "identity"}, classes=names,
                       arch_kwargs={"width": 4, "hidden": 32}).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model)
    loaded = load_model(path)
    assert loaded.classes == names and loaded.meta["classes"] == names
    assert loaded.arch_kwargs == {"width": 4, "hidden": 32}
    assert loaded.net.conv1.weight.shape[0] == 4
    _assert_same_state(model.net.state_dict(), loaded.net.state_dict())
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_metadata_accepts_numpy_and_path_values(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _lenet(), metrics={"acc": np.float32(0.5), "n": np.int64(3), "shape": (1, 2)},
                    data_dir=tmp_path, curve=np.array([1.0, 2.0]))
    meta = read_metadata(path)
    assert meta["metrics"] == {"acc": 0.5, "n": 3, "shape": [1, 2]}
    assert meta["data_dir"] == str(tmp_path)
    assert meta["curve"] == [1.0, 2.0]


def test_checkpoint_is_a_plain_safetensors_file(tmp_path):
    from safetensors import safe_open

    model = _lenet()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, metrics={"acc": 1.0})
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["interp"])
        assert sorted(f.keys()) == sorted(model.net.state_dict())
        assert torch.equal(f.get_tensor("conv1.weight"), model.net.conv1.weight.detach())
    assert meta == read_metadata(path)


@pytest.mark.parametrize("arch", list_models())
def test_every_arch_round_trips(tmp_path, arch):
    info = get_model_info(arch)
    c = info.default_input[0]
    enc = ({"kind": "normalize", "mean": [0.25] * c, "std": [0.5] * c} if info.encoding == "normalize"
           else {"kind": info.encoding})
    torch.manual_seed(0)
    model = Classifier(arch, 3, info.default_input, enc)
    _randomize_buffers(model.net)
    model.eval()
    path = tmp_path / f"{arch}.safetensors"
    save_checkpoint(path, model)
    loaded = load_model(path)
    assert loaded.arch == arch and loaded.meta["input_shape"] == list(info.default_input)
    _assert_same_state(model.net.state_dict(), loaded.net.state_dict())
    x = torch.rand(2, *info.default_input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert a.shape == (2, 3)
    assert torch.equal(a, b)


def test_checkpoints_load_without_pickle(tmp_path, monkeypatch):
    model = _lenet().eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model)

    def no_unpickling(*a, **k):
        raise AssertionError("a checkpoint load must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = load_model(path)
    assert read_metadata(path)["arch"] == "lenet"
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# ----------------------------------------------------------------------------------------
#   Atomic writes
# ----------------------------------------------------------------------------------------

def test_atomic_write_replaces_and_cleans_up(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with atomic_write(dest) as f:
        f.write(b"new content")
        assert dest.read_bytes() == b"old", "the destination must not change before the write completes"
    assert dest.read_bytes() == b"new content"
    assert _leftover_tmp(tmp_path) == []
    with atomic_write(tmp_path / "t.txt", "w") as f:
        f.write("text mode")
    assert (tmp_path / "t.txt").read_text() == "text mode"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_atomic_write_leaves_old_file(tmp_path, exc):
    dest = tmp_path / "ckpt.safetensors"
    old = os.urandom(10_000)
    dest.write_bytes(old)
    with pytest.raises(exc):
        with atomic_write(dest) as f:
            f.write(b"partial" * 1000)
            f.flush()
            assert len(_leftover_tmp(tmp_path)) == 1  # the bytes went to a temporary file
            raise exc("interrupted")
    assert dest.read_bytes() == old
    assert _leftover_tmp(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def test_exception_inside_atomic_write_creates_nothing(tmp_path):
    dest = tmp_path / "new.bin"
    with pytest.raises(ValueError):
        with atomic_write(dest) as f:
            f.write(b"x" * 100)
            raise ValueError
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from interpcli.artifacts import atomic_write
    with atomic_write(sys.argv[1]) as f:
        for _ in range(3):
            f.write(b"N" * (1 << 20))
        f.flush()
        print("writing", flush=True)
        for _ in range(400):  # about 20 s more of slow writing: it is killed long before
            f.write(b"M" * (1 << 16))
            f.flush()
            time.sleep(0.05)
    print("done", flush=True)
""")


def test_sigkill_mid_write_leaves_old_file_intact(tmp_path):
    import select

    dest = tmp_path / "model.safetensors"
    old = os.urandom(200_000)
    dest.write_bytes(old)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(dest)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the writer did not start within 60 s"
        line = proc.stdout.readline()
        assert line == b"writing\n", proc.stderr.read().decode()
        time.sleep(0.2)  # let it write some more
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert dest.read_bytes() == old, "a killed writer must leave the previous file byte for byte"
    # The kill really happened mid-write: a partial temporary file is all that is left of it.
    tmps = _leftover_tmp(tmp_path)
    assert len(tmps) == 1 and tmps[0].name.startswith(".model.safetensors.")
    assert 3 << 20 <= tmps[0].stat().st_size < (3 << 20) + 400 * (1 << 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dest.name, tmps[0].name])


# ----------------------------------------------------------------------------------------
#   Error paths
# ----------------------------------------------------------------------------------------

READERS = [read_metadata, load_checkpoint, load_model]


@pytest.fixture()
def ckpt(tmp_path) -> Path:
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, _lenet(), metrics={"acc": 0.5})
    return path


@pytest.mark.parametrize("reader", READERS)
def test_missing_file(tmp_path, reader):
    _raises_artifact(reader, tmp_path / "nope.safetensors", match="not found")


@pytest.mark.parametrize("reader", READERS)
def test_directory_is_not_a_checkpoint(tmp_path, reader):
    _raises_artifact(reader, tmp_path, match="is a directory")


@pytest.mark.parametrize("cut", ["half", "last_bytes", "inside_header", "four_bytes", "empty"])
@pytest.mark.parametrize("reader", READERS)
def test_truncated_checkpoint(ckpt, tmp_path, reader, cut):
    data = ckpt.read_bytes()
    n_header = 8 + int.from_bytes(data[:8], "little")
    keep = {"half": len(data) // 2, "last_bytes": len(data) - 16, "inside_header": n_header // 2,
            "four_bytes": 4, "empty": 0}[cut]
    assert keep < len(data)
    if cut in ("half", "last_bytes"):
        assert keep > n_header  # the header is intact; only tensor bytes are missing
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:keep])
    _raises_artifact(reader, bad, match="truncated|corrupt")


@pytest.mark.parametrize("reader", READERS)
def test_garbage_bytes(tmp_path, reader):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _raises_artifact(reader, bad, match="not a (valid )?safetensors file")


def _raw_safetensors(header: object, payload: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + payload


@pytest.mark.parametrize("raw,match", [
    (b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"\xff" * 16, "unreadable header"),
    (_raw_safetensors([1, 2]), "not a valid safetensors file"),
    (_raw_safetensors({"__metadata__": ["x"]}), "interp metadata"),
    (_raw_safetensors({"__metadata__": {"interp": "{not json"}}), "corrupt interp metadata"),
    (_raw_safetensors({"__metadata__": {"interp": "[1, 2]"}}), "corrupt interp metadata"),
    (_raw_safetensors({"__metadata__": {"interp": json.dumps({"format_version": 1, "arch": "lenet"})},
                       "w": {"dtype": "F32", "shape": [2]}}), "corrupt"),
])
@pytest.mark.parametrize("reader", READERS)
def test_malformed_headers(tmp_path, reader, raw, match):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw)
    _raises_artifact(reader, bad, match=match)


@pytest.mark.parametrize("reader", READERS)
def test_safetensors_without_interp_metadata(tmp_path, reader):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(3, 2)}, str(plain))
    _raises_artifact(reader, plain, match="without interp metadata")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(3, 2)}, str(other), metadata={"format": "pt", "author": "someone"})
    _raises_artifact(reader, other, match="without interp metadata")


@pytest.mark.parametrize("reader", READERS)
def test_newer_format_version_is_refused(ckpt, tmp_path, reader):
    state, meta = load_checkpoint(ckpt)
    meta = dict(meta, format_version=CHECKPOINT_FORMAT_VERSION + 1)
    newer = tmp_path / "newer.safetensors"
    save_tensors(newer, state, meta)
    err = _raises_artifact(reader, newer, match="newer than this interp supports")
    assert f"version {CHECKPOINT_FORMAT_VERSION + 1}" in str(err) and "upgrade" in str(err)


@pytest.mark.parametrize("change,match", [
    ({"format_version": None}, "no format_version"),
    ({"format_version": "1"}, "no format_version"),
    ({"kind": "attribution"}, "not a model checkpoint"),
    ({"arch": None}, "lacks 'arch'"),
    ({"encoding": None}, "lacks 'encoding'"),
])
def test_incomplete_metadata_is_refused(ckpt, tmp_path, change, match):
    state, meta = load_checkpoint(ckpt)
    meta = dict(meta, **change)
    meta = {k: v for k, v in meta.items() if v is not None}
    bad = tmp_path / "bad.safetensors"
    save_tensors(bad, state, meta)
    _raises_artifact(load_model, bad, match=match)
    _raises_artifact(load_checkpoint, bad, match=match)


def test_weights_that_do_not_fit_the_arch(ckpt, tmp_path):
    state, meta = load_checkpoint(ckpt)
    wider = tmp_path / "wider.safetensors"
    save_tensors(wider, state, dict(meta, arch_kwargs={"width": 8}))
    err = _raises_artifact(load_model, wider, match="do not fit arch 'lenet'")
    # The message names the offending tensor (not just torch's title line) and stays on one line.
    assert "size mismatch for conv1.weight" in str(err) and "more)" in str(err)
    assert "\n" not in str(err)

    missing = tmp_path / "missing.safetensors"
    save_tensors(missing, {k: v for k, v in state.items() if k != "fc.bias"}, meta)
    err = _raises_artifact(load_model, missing, match="do not fit arch 'lenet'")
    assert "Missing key" in str(err) and "fc.bias" in str(err)

    extra = tmp_path / "extra.safetensors"
    save_tensors(extra, dict(state, stray=torch.zeros(2)), meta)
    err = _raises_artifact(load_model, extra, match="do not fit arch 'lenet'")
    assert "Unexpected key" in str(err) and "stray" in str(err)

    fewer_classes = tmp_path / "classes.safetensors"
    save_tensors(fewer_classes, state, dict(meta, num_classes=3, classes=["a", "b", "c"]))
    _raises_artifact(load_model, fewer_classes, match="do not fit")


# ----------------------------------------------------------------------------------------
#   check_output_path, NPZ, PNG
# ----------------------------------------------------------------------------------------

def test_check_output_path(tmp_path):
    ok = tmp_path / "out.safetensors"
    assert check_output_path(ok) == ok
    assert not ok.exists(), "validation must not create the file"
    with pytest.raises(ConfigError, match="does not exist") as ei:
        check_output_path(tmp_path / "no" / "such" / "out.safetensors")
    assert ei.value.exit_code == 2
    with pytest.raises(ConfigError, match="is a directory"):
        check_output_path(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        check_output_path(tmp_path / "sub")


def test_npz_round_trip_with_meta(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "attr": rng.standard_normal((4, 3, 5, 5)).astype(np.float32),
        "labels": rng.integers(0, 10, 4),
        "images": rng.integers(0, 256, (4, 3, 5, 5), dtype=np.uint8),
        "double": rng.standard_normal(7),
    }
    tens = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    meta = {"method": "saliency", "checkpoint": "m.safetensors", "n": 4, "nested": {"x": [1.5, None]}}
    path = save_npz(tmp_path / "a.npz", meta=meta, tens=tens, **arrays)
    assert _leftover_tmp(tmp_path) == []
    got, got_meta = load_npz(path)
    assert got_meta == meta
    assert sorted(got) == sorted(list(arrays) + ["tens"])
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
    assert got["tens"].dtype == np.float16 and np.array_equal(got["tens"], tens.numpy())
    # A plain NPZ reader sees the same file (meta is a JSON string).
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["meta"])) == meta

    save_npz(tmp_path / "b.npz", x=np.zeros(3))
    got, got_meta = load_npz(tmp_path / "b.npz")
    assert got_meta == {} and list(got) == ["x"]


def test_load_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.zeros(3), obj=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ArtifactError, match="is not an NPZ written by numpy without objects") as ei:
        load_npz(path)
    assert ei.value.exit_code == 2


def test_load_npz_missing_and_garbage(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ArtifactError, match="is not an NPZ written by numpy without objects"):
        load_npz(bad)


def test_save_png_with_text(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    text = {"method": "integrated-gradients", "checkpoint": "m.safetensors", "target": "3"}
    path = save_png(tmp_path / "a.png", rgb, text=text)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (7, 5)
        assert im.text == text
        assert np.array_equal(np.asarray(im), rgb)

    gray = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    save_png(tmp_path / "g.png", gray)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), gray)
        assert im.text == {}
    assert _leftover_tmp(tmp_path) == []


def test_save_json_round_trip(tmp_path):
    obj = {"a": np.float64(0.5), "b": (1, 2), "p": tmp_path, "t": torch.tensor([1.0, 2.0])}
    path = artifacts.save_json(tmp_path / "r.json", obj)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "p": str(tmp_path), "t": [1.0, 2.0]}


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "f"
    data = os.urandom(3 << 20)
    p.write_bytes(data)
    assert artifacts.sha256_file(p) == hashlib.sha256(data).hexdigest()
