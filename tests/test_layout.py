"""The package's layout rules, and the building blocks every command shares.

- layering: no import cycle, no private name imported across modules, no module over 400
  lines, no function-local import of the package's own modules;
- each arch's declared feature and classifier layers agree with what the network computes;
- ``masked_scores`` (the one perturbation loop) equals a direct loop over the formula;
- ``Attributions`` read back exactly what was written, and check their parent checkpoint.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from interpcli import Attributions, InputSpec, explain_checkpoint
from interpcli.errors import ArtifactError, ConfigError
from interpcli.models import Classifier, get_model_info, list_models, resolve_layer
from interpcli.models.features import FeatureExtractor, capture_output, reduce_features
from interpcli.perturb import MaskSet, masked_scores, sliding_boxes, target_score

from .conftest import ROOT

PKG = ROOT / "interpcli"
MAX_LINES = 400
# Heavy or optional libraries may be imported where they are used; the package's own modules never.
LAZY_OK = {"matplotlib", "matplotlib.pyplot", "sklearn.datasets", "sklearn.model_selection", "skimage.segmentation",
           "torchvision.datasets", "torchvision.models", "timm"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def _edges_and_problems():
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private, local = [], []
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        top = {id(n) for n in ast.walk(tree)} - in_function
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(m, p, node)
                if not base.startswith("interpcli"):
                    if id(node) not in top and base not in LAZY_OK and not base.startswith("__future__"):
                        local.append(f"{m}: from {base} import ...")
                    continue
                if id(node) not in top:
                    local.append(f"{m}: from {base} import ...")
                for a in node.names:
                    full = f"{base}.{a.name}"
                    target = full if full in mods else base
                    if target in mods and target not in (m, "interpcli"):
                        edges[m].add(target)
                    if a.name.startswith("_") and not a.name.startswith("__") and full not in mods:
                        private.append(f"{m} imports {base}.{a.name}")
            elif isinstance(node, ast.Import) and id(node) not in top:
                local += [f"{m}: import {a.name}" for a in node.names if a.name not in LAZY_OK]
    return mods, edges, private, local


def test_no_import_cycle():
    mods, edges, _, _ = _edges_and_problems()
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for t in edges[n]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[n] = 2

    for m in mods:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_no_private_names_across_modules_and_no_local_imports():
    _, _, private, local = _edges_and_problems()
    assert not private, private
    assert not local, local


def test_no_module_is_too_long():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, long


def test_each_command_is_one_ops_module_and_one_cli_module():
    ops = {p.stem for p in (PKG / "ops").glob("*.py") if not p.stem.startswith("_")}
    cli = {p.stem for p in (PKG / "cli").glob("*.py") if not p.stem.startswith("_")}
    assert ops == cli, (ops ^ cli)


# ---------------------------------------------------------------------------------------------- features

def _small(arch: str) -> Classifier:
    info = get_model_info(arch)
    c, h, w = info.default_input
    size = {"smp-directional": 32, "smp-gumbel": 30, "pulse-cnn-paper": 50}.get(arch, 16)
    kw = {"width": 8} if "width" in info.kwargs() and isinstance(info.kwargs()["width"], int) else {}
    if arch.startswith("smp") or arch.startswith("positive"):
        kw = {"width": 30}
    if arch.startswith("pulse"):
        kw = {"hidden": [8]} if arch == "pulse-cnn-paper" else {"hidden": [8], "kernels": 2, "conv2_channels": 2}
    enc = {"kind": info.encoding} if info.encoding != "normalize" else {"kind": "normalize", "mean": [0.5] * c,
                                                                         "std": [0.25] * c}
    torch.manual_seed(0)
    return Classifier(arch, 3, (c, size, size), enc, arch_kwargs=kw).eval()


@pytest.mark.parametrize("arch", list_models())
def test_feature_vector_is_what_the_classifier_layer_receives(arch):
    model = _small(arch)
    x = torch.rand(2, *model.input_shape, generator=torch.Generator().manual_seed(1))
    head = resolve_layer(model.net, model.classifier_layer)
    seen = {}
    handle = head.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("in", inputs[0].detach()))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    expected = reduce_features(seen["in"], model.feature_pool)
    with torch.no_grad():
        got = FeatureExtractor(model)(x)
        if model.feature_layer is not None:
            with capture_output(resolve_layer(model.net, model.feature_layer)) as store:
                model(x)
            assert torch.allclose(reduce_features(store["out"], model.feature_pool), expected, atol=1e-6)
    assert torch.allclose(got, expected, atol=1e-6) and got.shape[0] == 2
    assert logits.shape == (2, 3)


def test_a_module_without_a_declared_classifier_layer_needs_a_layer():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    with pytest.raises(ConfigError, match="classifier layer"):
        FeatureExtractor(net)
    assert FeatureExtractor(net, "1")(torch.rand(3, 3, 2, 2)).shape == (3, 2)


# ---------------------------------------------------------------------------------------------- masked_scores

def test_masked_scores_equal_a_direct_loop_for_any_batching():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(3, 3, 8, 8)
    fill = torch.rand(3, 3, 8, 8)
    boxes = MaskSet.from_boxes((8, 8), sliding_boxes(8, 8, 3, 2))
    dense = torch.rand(5, 1, 8, 8)
    sets = [boxes, MaskSet.from_dense(dense), MaskSet.from_segments(torch.arange(64).view(8, 8) % 4,
                                                                    torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0.5]]))]
    target = torch.tensor([0, 2, 3])
    with torch.no_grad():
        ref = [torch.stack([model(x[i : i + 1] * (1 - m) + fill[i : i + 1] * m)[0, target[i]] for m in s.all()])
               for i, s in enumerate(sets)]
    for bs in (1, 4, 1000):
        got = masked_scores(model, x, sets, fill, target_score(target), batch_size=bs)
        assert [len(g) for g in got] == [len(boxes), 5, 2]
        for g, r in zip(got, ref):
            assert torch.allclose(g, r, atol=1e-6)
    sel = masked_scores(model, x, sets, fill, target_score(target), select=[torch.tensor([2, 0]), torch.tensor([4]),
                                                                             torch.tensor([], dtype=torch.long)])
    assert torch.allclose(sel[0][[0, 2]], ref[0][[0, 2]], atol=1e-6) and float(sel[0][1]) == 0
    assert torch.allclose(sel[1][4], ref[1][4], atol=1e-6) and bool((sel[2] == 0).all())


# ---------------------------------------------------------------------------------------------- attributions

def test_attributions_read_back_exactly_and_check_their_checkpoint(digits_ckpt, tmp_path):
    res, files = explain_checkpoint(digits_ckpt, tmp_path / "e", ["grad", "occlusion"],
                                    inputs=InputSpec(indices="0:3"), target="all", params={"occlusion": {"window": 4}})
    back = Attributions.load(tmp_path / "e", checkpoint=digits_ckpt)
    assert back.methods == ["grad", "occlusion"] and len(back) == 30 == len(res)
    for m in back.methods:
        assert torch.equal(back.maps[m], res.maps[m])
    for name in ("images", "targets", "labels", "logits"):
        assert torch.equal(getattr(back, name), getattr(res, name).to(getattr(back, name).dtype))
    assert back.sources == res.sources and back.classes == res.classes and back.signed == res.signed
    assert back.params["occlusion"]["window"] == 4 and back.checkpoint["arch"] == "lenet"
    assert np.array_equal(back.predictions.numpy(), res.logits.argmax(1).numpy())
    other = tmp_path / "other.safetensors"
    shutil.copy(digits_ckpt, other)
    with open(other, "ab") as f:  # same weights, different bytes: another file
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="another checkpoint"):
        Attributions.load(files[0], checkpoint=other)
    with pytest.raises(ArtifactError, match="not an attributions file"):
        np.savez(tmp_path / "x.npz", images=np.zeros((1, 1, 2, 2)))
        Attributions.load(tmp_path / "x.npz")


def test_ruff_is_clean():
    """The linter configured in pyproject.toml (line length 120) finds nothing."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def test_bench_scripts_import_only_what_exists():
    """bench/ is not imported by the tests: check that every name it takes from interpcli exists."""
    import importlib

    missing = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("interpcli"):
                mod = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if not hasattr(mod, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, missing
