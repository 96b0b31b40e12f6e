"""Pictures people can read: titles with the true label and the prediction (misclassified rows in
red), panels of at least 128 px, the B-cos rendering upscaled by exact nearest neighbour, the
notice when an image file is resized, and overlays at an image file's own size."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from interpcli import Attributions, viz
from interpcli.cli import app
from interpcli.inputs import load_images

CLASSES = [str(i) for i in range(10)]
RED = np.array([0xD6, 0x27, 0x28])  # matplotlib's tab:red, the colour of a wrong row


def _png(data: bytes | str) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.asarray(im.convert("RGB"))


def _bbox(pic: np.ndarray, colour) -> tuple[int, int]:
    """(height, width) of the box around the pixels of exactly ``colour``."""
    ys, xs = np.nonzero((pic == np.asarray(colour, dtype=pic.dtype)).all(-1))
    return (int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)) if len(ys) else (0, 0)


def _has_red(pic: np.ndarray) -> bool:
    return bool((np.abs(pic.astype(int) - RED).sum(-1) < 30).sum() > 50)


# ----------------------------------------------------------------------------------------
#   Titles
# ----------------------------------------------------------------------------------------

def test_row_title_names_label_prediction_and_target():
    text, wrong = viz.row_title("cifar10:test:3", "dog", "dog", "cat", method="grad")
    assert wrong and text.splitlines()[0] == "cifar10:test:3  (grad)"
    assert "label cat" in text and "pred dog" in text and "target dog" in text and "✗ wrong" in text
    text, wrong = viz.row_title("cifar10:test:4", "cat", "cat", "cat")
    assert not wrong and "✗" not in text and "label cat" in text
    text, wrong = viz.row_title("cat.png", "airplane", "dog", None)  # unknown label: never "wrong"
    assert not wrong and "label ?" in text and "pred dog" in text and "target airplane" in text
    text, _ = viz.row_title("", "1", "2", "3", sep="\n")
    assert text.splitlines() == ["label 3", "pred 2  ✗ wrong", "target 1"]


def test_wrong_rows_are_drawn_in_red():
    img, attr = np.full((1, 8, 8), 0.5), np.random.default_rng(0).normal(size=(1, 8, 8))
    title, wrong = viz.row_title("digits:test:0", "7", "7", "1", method="grad")
    assert _has_red(_png(viz.overlay_png(img, attr, True, title, wrong)))
    title, wrong = viz.row_title("digits:test:0", "1", "1", "1", method="grad")
    assert not _has_red(_png(viz.overlay_png(img, np.abs(attr), False, title, wrong)))
    grid = viz.grid_png(np.stack([img, img]), [np.abs(np.stack([attr, attr]))], ["x"], [False], ["a", "b"],
                        [False, True])
    assert _has_red(_png(grid))


# ----------------------------------------------------------------------------------------
#   Sizes
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 32])
def test_overlay_and_grid_panels_are_at_least_128_px(size):
    green = np.zeros((3, size, size))
    green[1] = 1
    attr = np.random.default_rng(0).random((1, size, size))
    pic = _png(viz.overlay_png(green, attr, False, "a title\nsecond line"))
    assert viz.PANEL_PX - 4 <= min(_bbox(pic, (0, 255, 0))) <= viz.PANEL_PX  # less the frame lines
    assert viz.PANEL_PX >= 128
    blue = np.zeros((3, size, size))
    blue[2] = 1
    grid = _png(viz.grid_png(np.stack([green, blue]), [np.stack([attr, attr])] * 2, ["a", "b"], [False, True],
                             ["r0", "r1"]))
    assert min(_bbox(grid, (0, 255, 0))) >= 128 and min(_bbox(grid, (0, 0, 255))) >= 128
    assert grid.shape[0] >= 2 * 128 and grid.shape[1] >= 3 * 128


def test_upscale_is_exact_nearest_neighbour_by_an_integer_factor():
    rgba = (np.random.default_rng(0).random((8, 12, 4)) * 255).astype(np.uint8)
    up = viz.upscale(rgba)
    k = 16  # ceil(128 / 8)
    assert up.shape == (8 * k, 12 * k, 4) and up.dtype == np.uint8
    blocks = up.reshape(8, k, 12, k, 4)
    assert (blocks == rgba[:, None, :, None, :]).all()  # each source pixel is a k x k block
    assert viz.upscale(np.zeros((32, 32))).shape == (128, 128)
    assert viz.upscale(np.zeros((30, 40, 3))).shape == (150, 200, 3)  # k = 5
    big = np.zeros((224, 224, 3))
    assert viz.upscale(big) is big


# ----------------------------------------------------------------------------------------
#   Image files: the resize notice and the overlay at the file's own size
# ----------------------------------------------------------------------------------------

class _Model:
    input_shape = (1, 8, 8)


def _grey(path, w, h, seed=0):
    Image.fromarray((np.random.default_rng(seed).random((h, w)) * 255).astype(np.uint8)).save(path)
    return path


def test_resize_notice_for_a_file_of_another_size_only(tmp_path):
    odd, right = _grey(tmp_path / "odd.png", 20, 12), _grey(tmp_path / "right.png", 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_images([odd], _Model())
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and str(odd) in msgs[0] and "20x12" in msgs[0] and "8x8" in msgs[0]
    assert "aspect ratio not kept" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        load_images([right], _Model())


def _result(images, sources, labels, rng):
    n = len(images)
    logits = torch.zeros(n, 10)
    logits[torch.arange(n), torch.tensor([3, 5, 7][:n])] = 1
    return Attributions(images, logits.argmax(1), torch.tensor(labels), logits, sources,
                        {"grad": torch.randn(n, 1, 8, 8), "gradcam": torch.rand(n, 1, 8, 8)},
                        {"grad": {}, "gradcam": {}}, {"grad": True, "gradcam": False}, CLASSES,
                        extras={"bcos_rgba": rng.random((n, 8, 8, 4)).astype(np.float32)})


def test_write_pngs_sizes_original_overlays_and_bcos(tmp_path):
    rng = np.random.default_rng(1)
    odd = _grey(tmp_path / "odd.png", 20, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = load_images([odd], _Model()).images
    images = torch.cat([x, torch.rand(2, 1, 8, 8)])
    res = _result(images, [str(odd), "digits:test:1", "digits:test:2"], [-1, 3, 7], rng)
    files = res.save(tmp_path / "o")
    names = sorted(f.name for f in files)
    assert [n for n in names if "original" in n] == ["0000_grad_original.png", "0000_gradcam_original.png"]
    assert {"0001_grad.png", "0002_gradcam.png", "0002_bcos_rgb.png", "grid.png"} <= set(names)
    for f in files:
        if f.suffix != ".png":
            continue
        with Image.open(f) as im:
            w, h = im.size
        if f.name.endswith("_original.png"):
            assert (w, h) == (20 * 11, 12 * 11)  # the file's 20x12, upscaled x11 to >= 128
        elif f.name.endswith("_bcos_rgb.png"):
            assert (w, h) == (128, 128)
        else:
            assert min(w, h) >= 128 and w >= 2 * 128
    rgba = (res.extras["bcos_rgba"][2] * 255).round().astype(np.uint8)
    with Image.open(tmp_path / "o" / "0002_bcos_rgb.png") as im:
        assert im.mode == "RGBA" and (np.asarray(im) == np.repeat(np.repeat(rgba, 16, 0), 16, 1)).all()
    # a file changed since it was explained gets no overlay at its own size (it would be wrong)
    _grey(odd, 20, 12, seed=5)
    names = [f.name for f in res.save(tmp_path / "o2")]
    assert not [n for n in names if "original" in n]


def test_explain_cli_says_when_it_resizes_and_writes_the_original_size(digits_ckpt, tmp_path):
    odd = _grey(tmp_path / "wide.png", 24, 16)
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match="wide.png' is 24x16 px; resized to the model's 8x8 input"):
        r = CliRunner().invoke(app, ["explain", str(digits_ckpt), str(odd), "-m", "grad", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    with Image.open(out / "0000_grad_original.png") as im:
        assert im.size == (24 * 8, 16 * 8)
