"""interpcli.data: registered datasets, NPZ and image-folder loaders, augmentation, DeviceLoader, splits."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from interpcli.data import (
    Dataset,
    DeviceLoader,
    augment_batch,
    get_dataset_info,
    list_datasets,
    load_dataset,
    make_pulses,
    train_val_split,
)
from interpcli.data.loader import epoch_generator
from interpcli.errors import ConfigError, DatasetError, InterpError, UnknownName

from .conftest import shared_npz

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _shared(name: str) -> Path:
    return shared_npz(name).parent


# ----------------------------------------------------------------------------------------
#   pulses
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pulses():
    return load_dataset("pulses", seed=0)


def test_pulses_shapes_and_binary_values(pulses):
    assert pulses.x_train.shape == (3000, 1, 100, 100) and pulses.x_test.shape == (600, 1, 100, 100)
    assert pulses.x_train.dtype == torch.uint8 and pulses.y_train.dtype == torch.int64
    for x in (pulses.x_train, pulses.x_test):
        assert set(torch.unique(x).tolist()) == {0, 255}
    assert pulses.classes == ["square", "gaussian", "sine"]
    assert pulses.input_shape == (1, 100, 100) and pulses.num_classes == 3
    small = load_dataset("pulses", n_train=10, n_test=5, size=32)
    assert small.x_train.shape == (10, 1, 32, 32) and small.x_test.shape == (5, 1, 32, 32)


def test_pulses_deterministic_per_seed(pulses):
    again = load_dataset("pulses", seed=0)
    assert torch.equal(again.x_train, pulses.x_train) and torch.equal(again.y_train, pulses.y_train)
    assert torch.equal(again.x_test, pulses.x_test) and torch.equal(again.y_test, pulses.y_test)
    other = load_dataset("pulses", seed=1, n_train=3000, n_test=600)
    assert not torch.equal(other.x_train, pulses.x_train)
    assert not torch.equal(other.y_train, pulses.y_train)
    x1, y1 = make_pulses(50, seed=7)
    x2, y2 = make_pulses(50, seed=7)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_pulses_classes_present_and_balanced(pulses):
    for y, n in ((pulses.y_train, 3000), (pulses.y_test, 600)):
        counts = torch.bincount(y, minlength=3)
        assert len(counts) == 3
        assert (counts > 0.8 * n / 3).all() and (counts < 1.2 * n / 3).all(), counts


def test_pulses_trace_is_connected(pulses):
    for x in (pulses.x_train, pulses.x_test):
        lit = x[:, 0].numpy() > 0  # (n, rows, cols)
        # Every column has a lit pixel ...
        assert lit.any(axis=1).all()
        # ... its lit pixels form one vertical run ...
        starts = lit[:, 0, :].astype(int) + (np.diff(lit.astype(np.int8), axis=1) == 1).sum(axis=1)
        assert (starts == 1).all()
        # ... and neighbouring columns share a row, so the trace is one connected line.
        assert (lit[:, :, 1:] & lit[:, :, :-1]).any(axis=1).all()


def _trace_levels(lit: np.ndarray) -> list[int]:
    """The trace height at each column, read back from a drawn image (rows, cols).

    Column j is lit from the level at j to the level at j-1, so one end of its run is
    the previous column's level and the other end is its own.
    """
    runs = [np.flatnonzero(lit[:, j]) for j in range(lit.shape[1])]
    assert len(runs[0]) == 1
    levels = [int(runs[0][0])]
    for r in runs[1:]:
        lo, hi = int(r[0]), int(r[-1])
        assert levels[-1] in (lo, hi), "each column starts where the previous one ended"
        levels.append(hi if lo == levels[-1] else lo)
    return levels


def test_pulses_square_is_two_level(pulses):
    """The square pulse is drawn at two heights only; Gaussians and sinusoids take many."""
    lit = pulses.x_train[:, 0].numpy() > 0
    y = pulses.y_train.numpy()
    for i in range(0, 3000, 7):
        n_levels = len(set(_trace_levels(lit[i])))
        if y[i] == 0:
            assert n_levels == 2, i  # baseline and top (the pulse is at least 12 px wide)
        else:
            assert n_levels >= 5, (i, y[i])


def test_pulses_train_and_test_differ(pulses):
    assert not torch.equal(pulses.x_train[:600], pulses.x_test)
    train_set = {bytes(a) for a in pulses.x_train.numpy().reshape(3000, -1)}
    dup = sum(bytes(a) in train_set for a in pulses.x_test.numpy().reshape(600, -1))
    assert dup < 6, f"{dup} test images are copies of training images"


def test_pulses_bad_options():
    with pytest.raises(DatasetError):
        load_dataset("pulses", n_train=0)
    with pytest.raises(ConfigError):
        load_dataset("pulses", no_such_option=3)


# ----------------------------------------------------------------------------------------
#   digits
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_split_sizes_and_range(digits):
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert digits.x_train.dtype == torch.uint8
    both = torch.cat([digits.x_train, digits.x_test])
    assert int(both.min()) == 0 and int(both.max()) == 255
    assert digits.classes == [str(i) for i in range(10)]


def test_digits_split_is_stratified(digits):
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target, minlength=10)
    test = np.bincount(digits.y_test.numpy(), minlength=10)
    train = np.bincount(digits.y_train.numpy(), minlength=10)
    assert np.array_equal(train + test, full)
    assert np.all(np.abs(test - 0.2 * full) <= 1), (test, full)


def test_digits_are_the_sklearn_images(digits):
    from sklearn.datasets import load_digits

    d = load_digits()
    expected = sorted(bytes(r) for r in np.round(d.images * (255 / 16)).astype(np.uint8).reshape(1797, -1))
    got = sorted(bytes(r) for r in torch.cat([digits.x_train, digits.x_test]).numpy().reshape(1797, -1))
    assert got == expected


def test_digits_same_every_call(digits):
    again = load_dataset("digits")
    for a, b in ((again.x_train, digits.x_train), (again.y_train, digits.y_train),
                 (again.x_test, digits.x_test), (again.y_test, digits.y_test)):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------
#   NPZ files
# ----------------------------------------------------------------------------------------

def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_npz_layouts(tmp_path, layout):
    shape = {"NHWC": (8, 9, 3), "NCHW": (3, 8, 9), "NHW": (8, 9)}[layout]
    xtr, xte = _images(12, shape, 0), _images(5, shape, 1)
    ytr, yte = np.arange(12) % 3, np.array([2, 1, 0, 0, 1])
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(["cat", "dog", "emu"]))

    def nchw(a):
        return a.transpose(0, 3, 1, 2) if layout == "NHWC" else a[:, None] if layout == "NHW" else a

    c = 3 if layout != "NHW" else 1
    for ds in (load_dataset(str(path)), load_dataset("npz", data_dir=path)):
        assert ds.x_train.shape == (12, c, 8, 9) and ds.x_test.shape == (5, c, 8, 9)
        assert np.array_equal(ds.x_train.numpy(), nchw(xtr)) and np.array_equal(ds.x_test.numpy(), nchw(xte))
        assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == ytr.tolist()
        assert ds.y_test.tolist() == yte.tolist()
        assert ds.classes == ["cat", "dog", "emu"]
        assert ds.name == "mine"
    assert get_dataset_info(str(path)).name == "npz"


def test_npz_without_classes_names_them_by_index(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=_images(6, (4, 4), 0), y_train=np.array([0, 1, 2, 3, 0, 1], dtype=np.int32),
             x_test=_images(2, (4, 4), 1), y_test=np.array([3, 2]))
    ds = load_dataset(str(path))
    assert ds.classes == ["0", "1", "2", "3"]
    assert ds.y_train.dtype == torch.int64


def _bad_npz_cases():
    good = dict(x_train=_images(6, (4, 4, 3), 0), y_train=np.array([0, 1, 0, 1, 0, 1]),
                x_test=_images(2, (4, 4, 3), 1), y_test=np.array([0, 1]), classes=np.array(["a", "b"]))
    return {
        "float images": (dict(good, x_train=good["x_train"].astype(np.float32)), "uint8"),
        "missing y_test": ({k: v for k, v in good.items() if k != "y_test"}, "y_test"),
        "mismatched lengths": (dict(good, y_train=good["y_train"][:5]), "6 train images but 5 labels"),
        "label too large": (dict(good, y_test=np.array([0, 2])), "labels outside"),
        "negative label": (dict(good, y_train=np.array([0, 1, 0, -1, 0, 1])), "labels outside"),
        "float labels": (dict(good, y_train=good["y_train"].astype(np.float32)), "integer"),
        "2-D labels": (dict(good, y_train=good["y_train"][:, None]), "1-D"),
        "5-D images": (dict(good, x_train=good["x_train"][:, None]), "dimensions"),
        "train/test shapes differ": (dict(good, x_test=_images(2, (5, 5, 3), 1)), "differ in shape"),
    }


@pytest.mark.parametrize("case", list(_bad_npz_cases()))
def test_bad_npz_raises_dataset_error(tmp_path, case):
    arrays, match = _bad_npz_cases()[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=match) as ei:
        load_dataset(str(path))
    assert isinstance(ei.value, InterpError) and ei.value.exit_code == 2


def test_unreadable_npz_files(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, dtype=np.int64))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    not_npz = "not an NPZ written by numpy without objects"
    for path, match in ((pickled, not_npz), (garbage, not_npz), (tmp_path / "missing.npz", "not found")):
        with pytest.raises(DatasetError, match=match) as ei:
            load_dataset(str(path))
        assert ei.value.exit_code == 2
    with pytest.raises(DatasetError, match="is a folder"):
        load_dataset("npz", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------
#   Image folders
# ----------------------------------------------------------------------------------------

def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _make_folder(root: Path, classes: list[str], n: int, size=(12, 12), seed=0) -> dict[bytes, str]:
    """n distinct RGB PNGs per class; returns {image bytes (CHW): class name}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for c in classes:
        for i in range(n):
            arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            _png(root / c / f"{i:03d}.png", arr)
            truth[arr.transpose(2, 0, 1).tobytes()] = c
    return truth


def test_folder_loader_split_and_labels(tmp_path):
    root = tmp_path / "imgs"
    truth = _make_folder(root, ["zebra", "ant", "moose"], 20)
    ds = load_dataset("folder", data_dir=root)
    assert ds.classes == ["ant", "moose", "zebra"]
    assert ds.x_train.shape == (48, 3, 12, 12) and ds.x_test.shape == (12, 3, 12, 12)
    assert ds.x_train.dtype == torch.uint8
    assert torch.bincount(ds.y_test, minlength=3).tolist() == [4, 4, 4]  # stratified 20 %
    assert torch.bincount(ds.y_train, minlength=3).tolist() == [16, 16, 16]
    seen = []
    for x, y in (ds.split("train"), ds.split("test")):
        for img, label in zip(x.numpy(), y.tolist()):
            key = img.tobytes()
            assert truth[key] == ds.classes[label], "image carries the label of its folder"
            seen.append(key)
    assert sorted(seen) == sorted(truth), "train and test are disjoint and cover every image"
    # The same folder by path, and the split is the same every time.
    again = load_dataset(str(root) + "/")
    assert torch.equal(again.x_test, ds.x_test) and torch.equal(again.y_train, ds.y_train)


def test_folder_train_test_layout(tmp_path):
    root = tmp_path / "split"
    tr = _make_folder(root / "train", ["b", "a"], 6, seed=0)
    te = _make_folder(root / "test", ["b", "a"], 3, seed=1)
    ds = load_dataset("folder", data_dir=root)
    assert ds.classes == ["a", "b"]
    assert len(ds.y_train) == 12 and len(ds.y_test) == 6
    for x, y, truth in ((ds.x_train, ds.y_train, tr), (ds.x_test, ds.y_test, te)):
        got = {img.tobytes(): ds.classes[l] for img, l in zip(x.numpy(), y.tolist())}
        assert got == truth


def test_folder_grayscale(tmp_path):
    root = tmp_path / "gray"
    rng = np.random.default_rng(0)
    for c in ("x", "y"):
        for i in range(5):
            _png(root / c / f"{i}.png", rng.integers(0, 256, (7, 9), dtype=np.uint8))
    ds = load_dataset("folder", data_dir=root)
    assert ds.x_train.shape[1:] == (1, 7, 9)


def test_folder_mixed_sizes_need_image_size(tmp_path):
    root = tmp_path / "mixed"
    _make_folder(root, ["a", "b"], 10, size=(12, 12))
    _png(root / "a" / "odd.png", np.zeros((16, 10, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match="--image-size") as ei:
        load_dataset("folder", data_dir=root)
    assert "12x12" in str(ei.value) and ei.value.exit_code == 2
    ds = load_dataset("folder", data_dir=root, image_size=10)
    assert ds.x_train.shape[1:] == (3, 10, 10) and ds.x_test.shape[1:] == (3, 10, 10)
    assert len(ds.y_train) + len(ds.y_test) == 21


def test_folder_image_size_resizes(tmp_path):
    from PIL import Image

    root = tmp_path / "resize"
    rng = np.random.default_rng(0)
    arrs = {}
    for c in ("a", "b"):
        for i in range(5):
            arr = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            _png(root / c / f"{i}.png", arr)
            small = np.asarray(Image.fromarray(arr).resize((6, 6), Image.BILINEAR))
            arrs[small.transpose(2, 0, 1).tobytes()] = c
    ds = load_dataset("folder", data_dir=root, image_size=6)
    assert ds.x_train.shape[1:] == (3, 6, 6)
    for x, y in (ds.split("train"), ds.split("test")):
        for img, l in zip(x.numpy(), y.tolist()):
            assert arrs[img.tobytes()] == ds.classes[l]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_folder_unreadable_image(tmp_path, damage):
    root = tmp_path / "broken"
    _make_folder(root, ["a", "b"], 10)
    bad = root / "b" / "005.png"
    bad.write_bytes(b"definitely not a PNG" if damage == "garbage" else bad.read_bytes()[:100])
    with pytest.raises(DatasetError, match="cannot read image .*005.png") as ei:
        load_dataset("folder", data_dir=root)
    assert ei.value.exit_code == 2


def test_folder_too_few_images_for_a_split(tmp_path):
    root = tmp_path / "tiny"
    _make_folder(root, ["a"], 1)
    _make_folder(root, ["b"], 5, seed=1)
    with pytest.raises(DatasetError, match="stratified") as ei:
        load_dataset("folder", data_dir=root)
    assert ei.value.exit_code == 2


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset("folder", data_dir=tmp_path / "missing")
    _make_folder(tmp_path / "one", ["only"], 5)
    with pytest.raises(DatasetError, match="at least two class"):
        load_dataset("folder", data_dir=tmp_path / "one")


# ----------------------------------------------------------------------------------------
#   Torchvision datasets: no downloads, clear errors
# ----------------------------------------------------------------------------------------

@pytest.fixture()
def no_network(monkeypatch):
    """Record (and block) any attempt to open a connection or download."""
    attempts = []

    def blocked(*a, **k):
        attempts.append(a)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(urllib.request, "urlopen", blocked)
    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_url", blocked)
    monkeypatch.setattr(tvu, "download_and_extract_archive", blocked)
    return attempts


@pytest.mark.parametrize("name,npz", [("cifar10", "cifar10.npz"), ("mnist", "mnist.npz"),
                                      ("fashion-mnist", "fashion-mnist.npz")])
@pytest.mark.parametrize("where", ["empty", "missing"])
def test_missing_torchvision_data_is_a_clear_error(tmp_path, no_network, name, npz, where):
    data_dir = tmp_path / "empty" if where == "empty" else tmp_path / "does" / "not" / "exist"
    if where == "empty":
        data_dir.mkdir()
    with pytest.raises(DatasetError) as ei:
        load_dataset(name, data_dir=data_dir)
    msg = str(ei.value)
    assert npz in msg and "downloads are disabled" in msg.lower() and str(data_dir) in msg
    assert ei.value.exit_code == 2
    assert no_network == []
    assert not data_dir.exists() or list(data_dir.iterdir()) == [], "nothing may be written into the data dir"


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownName) as ei:
        load_dataset("imagenet-42")
    msg = str(ei.value)
    assert "imagenet-42" in msg
    for name in list_datasets():
        assert name in msg
    assert ei.value.exit_code == 2


def test_shared_cifar10():
    ds = load_dataset("cifar10", _shared("cifar10"))
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.classes == CIFAR10_CLASSES and ds.name == "cifar10"
    assert torch.bincount(ds.y_train).tolist() == [5000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    # NHWC -> NCHW was a transpose, not a reshape: the per-channel means are the known RGB means.
    mean = ds.x_train[:5000].double().mean(dim=(0, 2, 3))
    assert mean[0] > mean[2] + 5 and mean[1] > mean[2] + 5


def test_shared_mnist():
    ds = load_dataset("mnist", _shared("mnist"))
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


# ----------------------------------------------------------------------------------------
#   Dataset.subset_classes
# ----------------------------------------------------------------------------------------

def _toy_dataset() -> Dataset:
    y_tr = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 2])
    y_te = torch.tensor([3, 2, 1, 0, 2])
    # Each image holds its own index, so we can tell which examples were kept.
    x_tr = torch.arange(len(y_tr), dtype=torch.uint8).view(-1, 1, 1, 1)
    x_te = torch.arange(100, 100 + len(y_te), dtype=torch.uint8).view(-1, 1, 1, 1)
    return Dataset("toy", x_tr, y_tr, x_te, y_te, ["a", "b", "c", "d"], "test")


def test_subset_classes_relabels_in_given_order():
    ds = _toy_dataset()
    sub = ds.subset_classes(["c", "a"])
    assert sub.classes == ["c", "a"]
    assert sub.x_train.flatten().tolist() == [0, 2, 4, 6, 8]
    assert sub.y_train.tolist() == [1, 0, 1, 0, 0]
    assert sub.x_test.flatten().tolist() == [101, 103, 104]
    assert sub.y_test.tolist() == [0, 1, 0]
    assert sub.info["class_subset"] == ["c", "a"] and sub.info["class_subset_index"] == [2, 0]
    # The original is untouched.
    assert ds.classes == ["a", "b", "c", "d"] and len(ds.y_train) == 9


def test_subset_classes_by_index():
    ds = _toy_dataset()
    by_name = ds.subset_classes(["d", "b"])
    for keep in (["3", "1"], [3, 1]):
        sub = ds.subset_classes(keep)
        assert sub.classes == ["d", "b"]
        assert torch.equal(sub.x_train, by_name.x_train) and torch.equal(sub.y_train, by_name.y_train)
        assert torch.equal(sub.y_test, by_name.y_test)


@pytest.mark.parametrize("keep", [["a", "zebra"], ["a", "7"], ["a", "a"], ["b"], ["-1", "a"]])
def test_subset_classes_bad_names(keep):
    with pytest.raises(ConfigError) as ei:
        _toy_dataset().subset_classes(keep)
    assert ei.value.exit_code == 2


# ----------------------------------------------------------------------------------------
#   augment_batch
# ----------------------------------------------------------------------------------------

def _batch(n=12, c=2, h=7, w=9, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_flip_only_mirrors_or_keeps():
    x = _batch(n=16)
    out = augment_batch(x, flip=True, translate=0, gen=torch.Generator().manual_seed(0))
    assert out.dtype == x.dtype and out.shape == x.shape
    flipped = 0
    for i in range(len(x)):
        same, mirrored = torch.equal(out[i], x[i]), torch.equal(out[i], x[i].flip(-1))
        assert same or mirrored
        flipped += mirrored
    assert 0 < flipped < len(x), "some images are flipped and some are not"


def _crop_offsets(out_i: torch.Tensor, padded_i: torch.Tensor, r: int, h: int, w: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(2 * r + 1) for dx in range(2 * r + 1)
            if torch.equal(out_i, padded_i[:, dy:dy + h, dx:dx + w])]


@pytest.mark.parametrize("pad,mode", [("zero", "constant"), ("reflect", "reflect")])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_translate_is_a_crop_of_the_padded_image(dtype, pad, mode):
    r = 2
    x = _batch(n=10).to(dtype)
    n, c, h, w = x.shape
    out = augment_batch(x, flip=False, translate=r, gen=torch.Generator().manual_seed(1), pad=pad)
    assert out.dtype == dtype and out.shape == x.shape
    padded = F.pad(x.float(), (r, r, r, r), mode=mode).to(dtype)
    offsets = []
    for i in range(n):
        found = _crop_offsets(out[i], padded[i], r, h, w)
        assert found, f"image {i} is not a crop of its padded original"
        offsets.append(found[0])
    assert len(set(offsets)) > 1, "offsets are random, not all the same"
    assert any(o != (r, r) for o in offsets)


def test_translate_on_tiny_images_replicates_when_reflecting():
    r = 3
    x = _batch(n=6, h=3, w=3)
    out = augment_batch(x, flip=False, translate=r, gen=torch.Generator().manual_seed(0), pad="reflect")
    padded = F.pad(x.float(), (r, r, r, r), mode="replicate").to(torch.uint8)
    for i in range(len(x)):
        assert _crop_offsets(out[i], padded[i], r, 3, 3)


def test_flip_and_translate_together():
    r = 1
    x = _batch(n=12)
    n, c, h, w = x.shape
    out = augment_batch(x, flip=True, translate=r, gen=torch.Generator().manual_seed(2))
    pad = F.pad(x.float(), (r, r, r, r)).to(torch.uint8)  # zero padding, the default
    pad_flipped = F.pad(x.flip(-1).float(), (r, r, r, r)).to(torch.uint8)
    for i in range(n):
        assert _crop_offsets(out[i], pad[i], r, h, w) or _crop_offsets(out[i], pad_flipped[i], r, h, w)


def test_augment_same_seed_same_output():
    x = _batch(n=32)
    a = augment_batch(x, True, 2, torch.Generator().manual_seed(5))
    b = augment_batch(x, True, 2, torch.Generator().manual_seed(5))
    c = augment_batch(x, True, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Nothing to do: the batch comes back unchanged.
    assert torch.equal(augment_batch(x, False, 0, torch.Generator().manual_seed(5)), x)


# ----------------------------------------------------------------------------------------
#   DeviceLoader
# ----------------------------------------------------------------------------------------

N = 50


def _indexed(n=N):
    """Images whose pixels all equal their index, and labels = index."""
    x = torch.arange(n, dtype=torch.uint8).view(-1, 1, 1, 1).expand(n, 1, 3, 3).contiguous()
    return x, torch.arange(n)


def _order(loader) -> list[int]:
    return [i for _, yb in loader for i in yb.tolist()]


def test_loader_epoch_covers_every_index_once():
    x, y = _indexed()
    loader = DeviceLoader(x, y, 8, shuffle=True, seed=3)
    assert len(loader) == 7
    batches = list(loader)
    assert [len(yb) for _, yb in batches] == [8] * 6 + [2]
    order = [i for _, yb in batches for i in yb.tolist()]
    assert sorted(order) == list(range(N))
    assert order != list(range(N)), "shuffled"
    for xb, yb in batches:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (1, 3, 3)
        assert float(xb.min()) >= 0 and float(xb.max()) <= 1
        assert torch.equal((xb[:, 0, 0, 0] * 255).round().long(), yb), "images stay with their labels"


def test_loader_without_shuffle_is_in_order():
    x, y = _indexed()
    assert _order(DeviceLoader(x, y, 16)) == list(range(N))
    xb, _ = next(iter(DeviceLoader(x, y, 16)))
    assert torch.allclose(xb[:, 0, 0, 0], torch.arange(16) / 255)


def test_loader_order_depends_on_seed_and_epoch_only():
    x, y = _indexed()
    a = DeviceLoader(x, y, 8, shuffle=True, seed=3)
    e0 = _order(a)
    assert _order(a) == e0, "re-iterating the same epoch gives the same order"
    a.set_epoch(1)
    e1 = _order(a)
    assert e1 != e0 and sorted(e1) == list(range(N))
    b = DeviceLoader(x, y, 8, shuffle=True, seed=3)
    b.set_epoch(1)
    assert _order(b) == e1, "a fresh loader at the same (seed, epoch) repeats it (resume)"
    c = DeviceLoader(x, y, 8, shuffle=True, seed=4)
    c.set_epoch(1)
    assert _order(c) != e1
    g1, g2 = epoch_generator(3, 1), epoch_generator(3, 1)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_loader_augmentation_is_reproducible():
    x = _batch(n=40, c=1, h=6, w=6)
    y = torch.arange(40)
    a = DeviceLoader(x, y, 16, shuffle=True, flip=True, translate=1, seed=0)
    b = DeviceLoader(x, y, 16, shuffle=True, flip=True, translate=1, seed=0)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Each augmented image is still a crop of its own (possibly flipped) original.
    for xb, yb in a:
        for img, i in zip(xb, yb.tolist()):
            img = (img * 255).round().to(torch.uint8)
            src = x[i:i + 1]
            pad = F.pad(src.float(), (1, 1, 1, 1)).to(torch.uint8)[0]  # zero padding, the default
            padf = F.pad(src.flip(-1).float(), (1, 1, 1, 1)).to(torch.uint8)[0]
            assert _crop_offsets(img, pad, 1, 6, 6) or _crop_offsets(img, padf, 1, 6, 6)


def test_loader_ranks_split_each_global_batch():
    x, y = _indexed()
    full = DeviceLoader(x, y, 10, shuffle=True, seed=1, drop_last=True)
    r0 = DeviceLoader(x, y, 10, shuffle=True, seed=1, drop_last=True, rank=0, world=2)
    r1 = DeviceLoader(x, y, 10, shuffle=True, seed=1, drop_last=True, rank=1, world=2)
    for ep in (0, 1):
        for ld in (full, r0, r1):
            ld.set_epoch(ep)
        batches = list(zip(full, r0, r1))
        assert len(batches) == len(full) == 5
        for (_, yg), (_, y0), (_, y1) in batches:
            s0, s1 = set(y0.tolist()), set(y1.tolist())
            assert len(y0) == len(y1) == 5
            assert not s0 & s1
            assert s0 | s1 == set(yg.tolist())


def test_loader_drop_last():
    x, y = _indexed()
    loader = DeviceLoader(x, y, 8, shuffle=True, drop_last=True)
    batches = [yb for _, yb in loader]
    assert len(loader) == len(batches) == 6
    assert all(len(b) == 8 for b in batches)
    seen = torch.cat(batches).tolist()
    assert len(set(seen)) == 48
    assert len(DeviceLoader(x, y, 10, drop_last=True)) == 5  # exact multiple: nothing dropped
    with pytest.raises(ConfigError):
        DeviceLoader(x, y, 0)


def test_loader_channels_last_and_dtype():
    x = _batch(n=8, c=3, h=4, w=4)
    xb, _ = next(iter(DeviceLoader(x, torch.arange(8), 8, channels_last=True, dtype=torch.float64)))
    assert xb.dtype == torch.float64
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xb, x.double() / 255)


# ----------------------------------------------------------------------------------------
#   train_val_split
# ----------------------------------------------------------------------------------------

def _labels() -> torch.Tensor:
    counts = [20, 30, 40, 50, 60]
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


def test_val_split_stratified_and_disjoint():
    y = _labels()
    tr, va = train_val_split(y, val_split=0.2, seed=0)
    assert len(va) == 40 and len(tr) == 160
    assert not set(tr) & set(va)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(200))
    counts = np.bincount(y.numpy(), minlength=5)
    va_counts = np.bincount(y.numpy()[va], minlength=5)
    assert np.all(np.abs(va_counts - 0.2 * counts) <= 1), va_counts
    tr2, va2 = train_val_split(y, val_split=0.2, seed=0)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    _, va3 = train_val_split(y, val_split=0.2, seed=1)
    assert not np.array_equal(va, va3)


def test_folds_partition_the_indices():
    y = _labels()
    counts = np.bincount(y.numpy(), minlength=5)
    vals = []
    for fold in range(5):
        tr, va = train_val_split(y, folds=5, fold=fold, seed=0)
        assert not set(tr.tolist()) & set(va.tolist())
        assert sorted(np.concatenate([tr, va]).tolist()) == list(range(200))
        assert np.array_equal(np.bincount(y.numpy()[va], minlength=5), counts // 5)
        vals.append(va)
    allv = np.concatenate(vals)
    assert len(allv) == 200 and sorted(allv.tolist()) == list(range(200))


def test_no_validation_by_default():
    y = _labels()
    tr, va = train_val_split(y)
    assert np.array_equal(tr, np.arange(200)) and len(va) == 0


@pytest.mark.parametrize("kwargs", [
    dict(folds=5, fold=5), dict(folds=5, fold=-1), dict(folds=1), dict(folds=-3),
    dict(folds=5, val_split=0.2), dict(val_split=1.5), dict(val_split=-0.2), dict(val_split=1.0),
    dict(folds=25),  # the smallest class has only 20 examples
    dict(val_split=0.01),  # 2 validation examples cannot cover 5 classes
])
def test_invalid_split_options(kwargs):
    with pytest.raises(ConfigError) as ei:
        train_val_split(_labels(), **kwargs)
    assert ei.value.exit_code == 2
