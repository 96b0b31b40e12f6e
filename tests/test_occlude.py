"""`interp occlude` and ROSA / OSA-DAS / GDS: localisation, agreement with Captum, invariances, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from interpcli.artifacts import load_npz
from interpcli.augment import apply_views, draw_views, parse_preset
from interpcli.cli import app
from interpcli.errors import ConfigError
from interpcli.gds import dataset_gds, image_gdss, load_extra_views
from interpcli.methods import attribute, get_method
from interpcli.models import Classifier
from interpcli.models.features import FeatureExtractor
from interpcli.occlusion import OccludeConfig, occlude

PATCH = (slice(8, 16), slice(12, 20))  # symmetric about the vertical axis: flips keep it in place


class PatchRepr(nn.Module):
    """Representation = tanh of a projection of the pixels in PATCH; nothing else matters."""

    num_classes = 3
    classifier_layer = "fc"  # its input is the representation

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 8 * 8, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.proj(x[:, :, PATCH[0], PATCH[1]].flatten(1))))


def _resnet():
    torch.manual_seed(0)
    return Classifier("resnet20", 10, (3, 16, 16), {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3}).eval()


def _in_patch(amap: torch.Tensor) -> bool:
    r, c = divmod(int(amap.argmax()), amap.shape[-1])
    return 8 <= r < 16 and 12 <= c < 20


@pytest.mark.parametrize("score,extra", [("class", {}), ("repr", {}), ("subspace", {"views": 6, "k": 2}),
                                         ("gds", {"views": 6, "k": 2}),
                                         ("gds", {"views": 6, "k": 2, "gds_mode": "subspace"})])
def test_maximum_lies_in_the_only_patch_that_matters(score, extra):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = occlude(PatchRepr(), x, OccludeConfig(window=6, stride=3, score=score, fill=0.5, **extra), target=0)
    assert res.maps.shape == (2, 1, 32, 32)
    for amap in res.maps[:, 0]:
        assert _in_patch(amap.abs()), divmod(int(amap.abs().argmax()), 32)
    if score in ("repr", "gds") and extra.get("gds_mode") != "subspace":  # no augmentation: exactly 0 far away
        assert float(res.maps[:, 0, 24:, :].abs().max()) < 1e-6 * float(res.maps.abs().max())


@pytest.mark.parametrize("window,stride,fill", [(4, 2, 0.0), (5, 3, 0.25)])
def test_class_score_equals_captum_occlusion(window, stride, fill):
    from captum.attr import Occlusion

    model, x, t = _resnet(), torch.rand(3, 3, 16, 16), torch.tensor([1, 2, 3])
    ours = occlude(model, x, OccludeConfig(window=window, stride=stride, fill=fill), target=t).maps
    ref = Occlusion(model).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                     baselines=fill, target=t)
    assert torch.allclose(ours, ref[:, :1], atol=1e-5)


def test_map_is_invariant_to_the_order_of_masks(tmp_path):
    x = torch.rand(1, 3, 16, 16)
    labels = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)  # 16 square regions
    masks = (labels[None] == torch.arange(16)[:, None, None]).numpy().astype(np.uint8)
    np.savez(tmp_path / "a.npz", masks=masks)
    np.savez(tmp_path / "b.npz", masks=masks[torch.randperm(16, generator=torch.Generator().manual_seed(0)).numpy()])
    np.savez(tmp_path / "c.npz", labels=labels.numpy() * 7 + 3)  # the same regions as a label map
    maps = [occlude(_resnet(), x, OccludeConfig(masks="file", mask_file=str(tmp_path / f), score="repr")).maps
            for f in ("a.npz", "b.npz", "c.npz")]
    assert torch.allclose(maps[0], maps[1], atol=1e-6) and torch.allclose(maps[0], maps[2], atol=1e-6)


def test_file_masks_equal_sliding_windows_on_a_grid(tmp_path):
    from PIL import Image

    x = torch.rand(2, 3, 16, 16)
    labels = (torch.arange(16)[:, None] // 4 * 4 + torch.arange(16)[None] // 4).numpy().astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "grid.png")
    a = occlude(_resnet(), x, OccludeConfig(masks="file", mask_file=str(tmp_path / "grid.png")), target=1).maps
    b = occlude(_resnet(), x, OccludeConfig(window=4, stride=4), target=1).maps
    assert torch.allclose(a, b, atol=1e-5)


def test_same_seed_same_map_and_seed_matters():
    x = torch.rand(1, 3, 16, 16)
    cfg = dict(score="subspace", views=5, k=2, augment="strong", window=4, stride=4)
    a = occlude(_resnet(), x, OccludeConfig(seed=3, **cfg)).maps
    assert torch.equal(a, occlude(_resnet(), x, OccludeConfig(seed=3, **cfg)).maps)
    assert not torch.equal(a, occlude(_resnet(), x, OccludeConfig(seed=4, **cfg)).maps)
    b = occlude(_resnet(), x, OccludeConfig(seed=3, batch_size=7, **cfg)).maps  # chunking does not matter
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("masks,extra", [("rise", {"n_masks": 40, "s": 4}), ("superpixels", {"n_segments": 9})])
def test_rise_and_superpixel_masks(masks, extra):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = occlude(PatchRepr(), x, OccludeConfig(masks=masks, score="repr", **extra))
    assert res.maps.shape == (2, 1, 32, 32) and bool(torch.isfinite(res.maps).all())
    assert float(res.maps.mean()) > 0


def test_grad_pruning_scores_the_top_fraction():
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    full = occlude(PatchRepr(), x, OccludeConfig(window=6, stride=3, score="repr"))
    pruned = occlude(PatchRepr(), x, OccludeConfig(window=6, stride=3, score="repr", grad_prune=0.2))
    ev = pruned.evaluated[0]
    assert int(ev.sum()) == 20 == len(ev) // 5  # exactly the 20 windows that overlap the patch
    assert torch.allclose(pruned.mask_scores[0][ev], full.mask_scores[0][ev], atol=1e-6)
    assert _in_patch(pruned.maps[0, 0])
    # the gradient of the representation vanishes outside the patch, so pruned masks all overlap it
    assert bool((full.mask_scores[0][ev] > 0).all())
    zero = occlude(PatchRepr(), x, OccludeConfig(window=6, stride=3, score="repr", grad_prune=0.2,
                                                 grad_prune_rest="zero"))
    assert bool((zero.mask_scores[0][~ev] == 0).all())


def test_feature_extractor_takes_the_classifier_input():
    model = _resnet()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = model.net.forward_features(model.encoder(x)).mean((2, 3))
        assert torch.allclose(FeatureExtractor(model)(x), ref, atol=1e-6)
        assert FeatureExtractor(model, "layer2").module is model.net.layer2
        assert FeatureExtractor(model, "layer2")(x).shape == (2, 32 * 8 * 8)
        assert torch.allclose(FeatureExtractor(model, "probs")(x).sum(1), torch.ones(2))
    with pytest.raises(ConfigError, match="not found"):
        FeatureExtractor(model, "layer9")


def test_registered_methods_use_the_engine():
    model, x = _resnet(), torch.rand(2, 3, 16, 16)
    info = get_method("rosa")
    assert not info.class_specific and not info.signed
    a = attribute(model, x, 0, "rosa", window=4, stride=4)
    b = occlude(model, x, OccludeConfig(window=4, stride=4, score="repr")).maps
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)  # attribute() may fold BatchNorm (float rounding)
    g = attribute(model, x, 5, "gds", window=4, stride=4, views=4, k=2)
    assert g.shape == (2, 1, 16, 16) and float(g.min()) >= 0
    o = attribute(model, x, 5, "osa-das", window=4, stride=4, views=4, k=2)
    ref = occlude(model, x, OccludeConfig(window=4, stride=4, score="subspace", views=4, k=2)).maps
    assert torch.allclose(o, ref, rtol=1e-3, atol=1e-5)


def test_augmentations_apply_the_same_draws_to_every_image():
    x = torch.rand(3, 3, 16, 16)
    views = draw_views("strong", 5, torch.Generator().manual_seed(0), include_identity=True)
    y = apply_views(views, x)
    assert y.shape == (5, 3, 3, 16, 16) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y[0], x, atol=1e-5)  # view 0 is the image itself
    for i in range(3):  # view a of image i does not depend on the other images of the batch
        assert torch.allclose(apply_views(views, x[i : i + 1])[:, 0], y[:, i], atol=1e-5)
    assert parse_preset("strong:scale=0.5,jitter=0.2")[1]["scale"] == 0.5
    with pytest.raises(ConfigError):
        parse_preset("medium")
    with pytest.raises(ConfigError):
        parse_preset("weak:scale=0.5")


def test_dataset_gds_is_cached_in_the_user_cache_folder(digits_ckpt, tmp_path, monkeypatch):
    import shutil

    from interpcli import load_model

    runs, cache = tmp_path / "runs", tmp_path / "cache"
    runs.mkdir()
    monkeypatch.setenv("INTERP_CACHE_DIR", str(cache))
    ckpt = runs / "m.safetensors"
    shutil.copy(digits_ckpt, ckpt)
    model = load_model(ckpt)
    kw = dict(k=3, dim=6, per_class=20, checkpoint=ckpt)
    d1 = dataset_gds(model, **kw)
    cached = list(cache.glob("gds-*.safetensors"))
    assert len(cached) == 1 and d1.shape[1] == 6
    assert [p.name for p in runs.iterdir()] == ["m.safetensors"]  # never beside the checkpoint
    assert torch.allclose(d1.T @ d1, torch.eye(6), atol=1e-5)
    assert torch.equal(dataset_gds(model, **kw), d1)
    dataset_gds(model, **{**kw, "k": 2})
    assert len(list(cache.glob("gds-*.safetensors"))) == 2  # another key, another file
    cached[0].write_bytes(b"corrupt")  # a damaged entry is computed again and rewritten
    assert torch.equal(dataset_gds(model, **kw), d1) and cached[0].stat().st_size > 100


def test_occlude_cli_writes_maps(digits_ckpt, tmp_path):
    out = tmp_path / "occ"
    r = CliRunner().invoke(app, ["occlude", str(digits_ckpt), "--indices", "0:3", "--score", "gds", "--window", "2",
                                 "--stride", "1", "--views", "4", "--k", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    arrays, meta = load_npz(out / "attributions.npz")
    assert arrays["attr_gds"].shape == (3, 1, 8, 8) and arrays["mask_scores"].shape == (3, 49)
    assert meta["params"]["gds"]["score"] == "gds" and len(meta["params"]["gds"]["gds_dims"]) == 3
    assert len(list(out.glob("*_gds.png"))) == 3
    r = CliRunner().invoke(app, ["occlude", str(digits_ckpt), "--indices", "0:2", "--target", "all", "--window",
                                 "4", "--stride", "2", "-o", str(tmp_path / "cls"), "--no-png"])
    assert r.exit_code == 0, r.output
    arrays, _ = load_npz(tmp_path / "cls" / "attributions.npz")
    assert arrays["attr_occlusion"].shape == (20, 1, 8, 8)


@pytest.mark.parametrize("args,needle", [
    (["--score", "subspace", "--views", "3", "--k", "4"], "larger than the number of views"),
    (["--score", "repr", "--layer", "nope"], "not found"),
    (["--masks", "file", "--mask-file", "MISSING"], "mask file not found"),
    (["--masks", "file", "--mask-file", "WRONG"], "but the images are"),
    (["--masks", "file", "--mask-file", "EMPTY"], "no regions"),
    (["--masks", "blobs"], "'blobs' is not one of"),
    (["--fill", "purple"], "--fill must be"),
    (["--target", "11"], "out of range"),
])
def test_occlude_cli_bad_input(digits_ckpt, tmp_path, args, needle):
    np.savez(tmp_path / "wrong.npz", labels=np.zeros((5, 5), dtype=np.int64))
    np.savez(tmp_path / "empty.npz", labels=-np.ones((8, 8), dtype=np.int64))
    args = [a.replace("MISSING", str(tmp_path / "none.npz")).replace("WRONG", str(tmp_path / "wrong.npz"))
            .replace("EMPTY", str(tmp_path / "empty.npz")) for a in args]
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["occlude", str(digits_ckpt), "--indices", "0:2", "-o", str(out), *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_explain_cli_runs_gds_on_an_image_file(digits_ckpt, tmp_path):
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "d.png")
    out = tmp_path / "e"
    r = CliRunner().invoke(app, ["explain", str(digits_ckpt), str(tmp_path / "d.png"), "--method", "gds", "-m", "rosa",
                                 "-p", "window=2", "-p", "stride=2", "-p", "gds.views=4", "-p", "gds.k=2",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    arrays, meta = load_npz(out / "attributions.npz")
    assert arrays["attr_gds"].shape == arrays["attr_rosa"].shape == (1, 1, 8, 8)
    assert meta["params"]["gds"]["views"] == 4 and (out / "grid.png").exists()


def test_extra_views_add_a_gds_set(tmp_path):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    phi = FeatureExtractor(PatchRepr())
    kw = dict(views=6, k=2, dim=1.0 - 1e-9)
    with torch.no_grad():
        _, four = image_gdss(phi, x, **kw)[0]
        _, five = image_gdss(phi, x, extra=torch.rand(5, 3, 32, 32), **kw)[0]
    assert len(four) == 4 and len(five) == 5 and five[-1].shape == (16, 2)
    np.savez(tmp_path / "v.npz", views=(np.random.default_rng(0).random((2, 5, 3, 32, 32)) * 255).astype(np.uint8))
    v = load_extra_views(tmp_path / "v.npz", 2, (3, 32, 32))
    assert v.shape == (2, 5, 3, 32, 32) and float(v.max()) <= 1
    with pytest.raises(ConfigError, match="views are"):
        load_extra_views(tmp_path / "v.npz", 3, (3, 32, 32))
    res = occlude(PatchRepr(), x.repeat(2, 1, 1, 1), OccludeConfig(score="gds", views=6, k=2, window=8, stride=8),
                  extra_views=v)
    assert len(res.gds_dim) == 2 and res.maps.shape == (2, 1, 32, 32)


def test_gds_of_a_batch_equals_one_image_at_a_time():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    phi = FeatureExtractor(PatchRepr())
    kw = dict(views=5, k=2, dim=3, batch_size=7)
    with torch.no_grad():
        batch = image_gdss(phi, x, **kw)
        for i in range(3):
            d, bases = image_gdss(phi, x[i : i + 1], **kw)[0]
            assert torch.allclose(batch[i][0] @ batch[i][0].T, d @ d.T, atol=1e-5)
            assert len(bases) == len(batch[i][1]) == 4


def test_progress_reports_images_done_of_total():
    calls = []
    occlude(_resnet(), torch.rand(3, 3, 16, 16), OccludeConfig(window=4, stride=4, batch_size=10), target=1,
            progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (3, 3) and all(n == 3 for _, n in calls)
    assert [i for i, _ in calls] == sorted(i for i, _ in calls)
