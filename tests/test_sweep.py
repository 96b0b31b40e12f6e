"""Every registered attribution method on every registered architecture, at a small size.

A smoke sweep of the contract in ``interpcli.methods._registry``: the result is a finite
float32 (N, C, H, W) or (N, 1, H, W) map at the input's resolution, and ``attribute`` leaves
no trace on the model (hooks, parameters, buffers, gradients), nor on the cached fast-path
copies it runs on, nor on the input; the model ends in eval mode.  B-cos-only methods on
other architectures are a ConfigError.  Random init, fixed seed, tiny widths and method
budgets: this is about plumbing, not about the quality of the maps.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.modules.module as nn_module

from interpcli.errors import ConfigError
from interpcli.fastpath import fast_model
from interpcli.methods import attribute, get_method, list_methods
from interpcli.models import Classifier, get_model_info, list_models

NUM_CLASSES = 3
TARGETS = torch.tensor([0, 2])  # two images, one target each

# Small widths.  Input sizes: the smallest each arch builds at (probed by hand), but at least
# 16x16 so that a window of 8 with stride 8 leaves a 2x2 grid of positions.
ARCH = {
    "airbench94": ({"widths": [8, 16, 16]}, 24),  # builds from 9x9; at 16x16 layer3 is 1x1 (Grad-CAM refuses it)
    "bcos-lenet": ({"width": 4, "hidden": 16}, 16),
    "bcos-resnet20": ({"width": 4}, 16),
    "bcos-resnet56": ({"width": 4}, 16),
    "bcos-vgg9": ({"width": 0.125}, 16),
    "lenet": ({"width": 4, "hidden": 16}, 16),
    "positive-lenet": ({"width": 12}, 16),
    "positive-vgg": ({"channels": [8, 16], "width": 12}, 16),
    "protopnet": ({"width": 4, "depth": 8, "prototypes_per_class": 2, "prototype_dim": 8}, 16),
    "pulse-cnn": ({"kernels": 4, "conv2_channels": 4, "hidden": [16]}, 16),  # 9 + 5 - 2 + pool 4
    "pulse-cnn-paper": ({"kernels": 2, "hidden": [32, 16]}, 50),  # two 25x25 convs + pool 2
    "resnet20": ({"width": 4}, 16),
    "resnet56": ({"width": 4}, 16),
    "smp-conjdisj": ({"width": 15}, 16),  # width: a multiple of 5 parts x 3 classes; builds from 10x10
    "smp-directional": ({"width": 12}, 32),  # conv10/2 -> pool3 -> conv4: 32x32 at least
    "smp-gumbel": ({"width": 12, "out_width": 12}, 30),  # conv10 -> pool stride 10 -> conv3: 30x30
    "vgg9": ({"width": 0.125}, 16),
}

WINDOW = {"window": 8, "stride": 8}
VIEWS = {**WINDOW, "views": 4, "k": 2}
PARAMS = {
    "smoothgrad": {"n_samples": 2},
    "vargrad": {"n_samples": 2},
    "intgrad": {"steps": 4},
    "rise": {"n_masks": 16},
    "lime": {"n_samples": 16, "n_segments": 4},
    "kernelshap": {"n_samples": 16, "n_segments": 4},
    "occlusion": WINDOW,
    "rosa": WINDOW,
    "osa-das": VIEWS,
    "gds": VIEWS,
}

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
              "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
              "_load_state_dict_post_hooks")
GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                     "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


def _encoding(kind: str, c: int) -> dict:
    if kind == "normalize":
        return {"kind": "normalize", "mean": [0.5] * c, "std": [0.25] * c}
    return {"kind": kind}


def _build(arch: str) -> tuple[Classifier, torch.Tensor]:
    info = get_model_info(arch)
    kwargs, size = ARCH[arch]
    c = info.default_input[0]
    torch.manual_seed(0)
    model = Classifier(arch, NUM_CLASSES, (c, size, size), _encoding(info.encoding, c), arch_kwargs=kwargs)
    x = torch.rand(len(TARGETS), c, size, size)
    return model, x


def _hooks(model: nn.Module) -> dict:
    """Hook ids per module (all hook dicts) and tensor hooks per parameter; equal ids imply equal counts."""
    out = {}
    for name, m in model.named_modules(remove_duplicate=False):
        out[name] = tuple(tuple(getattr(m, d, None) or ()) for d in HOOK_DICTS)
    for name, p in model.named_parameters(remove_duplicate=False):
        out["param:" + name] = tuple(p._backward_hooks or ())
    return out


def _global_hooks() -> tuple:
    return tuple(tuple(getattr(nn_module, d, None) or ()) for d in GLOBAL_HOOK_DICTS)


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers, persistent or not, cloned."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return {n: t.detach().clone() for n, t in named}


def _flags(model: nn.Module) -> dict:
    """Per module: training, and the B-cos explanation flag where there is one."""
    return {n: (m.training, getattr(m, "explain", None)) for n, m in model.named_modules()}


def _assert_same_tensors(before: dict, model: nn.Module, what: str) -> None:
    after = _tensors(model)
    assert after.keys() == before.keys(), f"{what}: parameter/buffer names changed"
    changed = [n for n in before if before[n].dtype != after[n].dtype or before[n].shape != after[n].shape
               or not torch.equal(before[n], after[n])]
    assert not changed, f"{what}: modified in place: {changed}"


CASES = [(m, a) for m in list_methods() for a in list_models()]


def test_every_arch_has_a_size():
    assert set(ARCH) == set(list_models()), "new arch: add its small kwargs and input size to ARCH"
    for name, params in PARAMS.items():
        assert set(params) <= set(get_method(name).defaults), name


# "fast": attribute()'s default, the method runs on a cached eval copy (BatchNorm folded,
# channels_last); "plain": fast=False, the method runs on (and hooks) the model itself.
@pytest.mark.parametrize("path", ["fast", "plain"])
@pytest.mark.parametrize("method,arch", CASES, ids=[f"{m}-{a}" for m, a in CASES])
def test_method_on_arch(method, arch, path):
    fast = path == "fast"
    info = get_method(method)
    model, x = _build(arch)
    assert model.training  # a fresh Classifier is in train mode: attribute() must switch it to eval
    x_ref = x.clone()
    is_bcos = get_model_info(arch).family == "bcos"

    if info.bcos_only and not is_bcos:
        with pytest.raises(ConfigError, match="B-cos"):
            attribute(model, x, TARGETS, method, fast=fast, **PARAMS.get(method, {}))
        assert torch.equal(x, x_ref)
        return

    # The fast-path copies attribute() runs on (with and without BatchNorm folding), built
    # now so that their state can be compared too; attribute() finds them in the cache.
    copies = {opts: fast_model(model, **dict(opts)) for opts in ((("fold_bn", True),), (("fold_bn", False),))
              } if fast else {}
    hooks, tensors, flags = _hooks(model), _tensors(model), _flags(model)
    requires_grad = [p.requires_grad for p in model.parameters()]  # airbench freezes its BN weights
    copy_state = {k: (_hooks(c), _tensors(c), _flags(c)) for k, c in copies.items()}
    global_hooks = _global_hooks()

    out = attribute(model, x, TARGETS, method, fast=fast, **PARAMS.get(method, {}))

    n, c, h, w = x.shape
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == x.device
    assert tuple(out.shape) in {(n, c, h, w), (n, 1, h, w)}, tuple(out.shape)
    assert not out.requires_grad
    assert torch.isfinite(out).all(), f"{(~torch.isfinite(out)).sum().item()} non-finite values"

    assert torch.equal(x, x_ref) and not x.requires_grad and x.grad is None, "the input was modified"
    assert _global_hooks() == global_hooks, "a global module hook was left registered"
    assert _hooks(model) == hooks, "a hook was left on the model"
    _assert_same_tensors(tensors, model, "model")
    assert all(p.grad is None for p in model.parameters()), "gradients left on the model's parameters"
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    # Observed for every pair: the model and all its submodules are in eval mode afterwards,
    # and B-cos explanation flags are back to what they were.
    assert {k: v[0] for k, v in _flags(model).items()} == {k: False for k in flags}, "not in eval mode"
    assert {k: v[1] for k, v in _flags(model).items()} == {k: v[1] for k, v in flags.items()}

    for k, cp in copies.items():
        ch, ct, cf = copy_state[k]
        assert _hooks(cp) == ch, f"a hook was left on the fast-path copy {k}"
        _assert_same_tensors(ct, cp, f"fast-path copy {k}")
        assert _flags(cp) == cf, f"training/explain flags of the fast-path copy {k} changed"
        assert all(p.grad is None for p in cp.parameters()), f"gradients left on the fast-path copy {k}"
        assert fast_model(model, **dict(k)) is cp  # still the cached copy: the one attribute() ran on
