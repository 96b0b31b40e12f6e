"""The eval-mode fast path every attribution method goes through.

:func:`fast_model` returns an eval-mode *copy* of a model (the user's model is never
modified) in which

- every ``nn.BatchNorm2d`` whose input is the output of an ``nn.Conv2d`` (and of nothing
  else) is folded into that convolution, w' = w·γ/σ, b' = (b - μ)·γ/σ + β, with PyTorch's
  :func:`torch.nn.utils.fusion.fuse_conv_bn_weights`, and replaced by ``nn.Identity``.  The
  pairs are found by a ``torch.fx`` trace of the network (the data flow, not attribute
  names: airbench's conv -> pool -> BN is not a pair); a network that does not trace only has
  consecutive (conv, BN) children of plain ``nn.Sequential`` containers folded.  Every module
  keeps its name, so ``model.layer("layer3")``, Grad-CAM layers and the ReLU modules hooked
  by DeepLIFT and guided backprop are found as before;
- weights are in ``channels_last`` memory format, and so are the images entering the model
  (every family: B-cos layers are written for either layout and gain from it too);
- optionally (``compile=True``) the copy is compiled with ``torch.compile`` (in place, so
  module names are kept).

Convolutions with a custom forward or a parametrization (positive convolutions, B-cos
layers) and norms other than the standard BatchNorm (B-cos uncentred norms) are left as
they are, so B-cos networks only change memory format.  The input normalisation is not
folded into the first convolution: with zero padding that is not exact.

The copy is made once per model and options and cached (weakly, keyed by the model); it is
rebuilt when any parameter or buffer of the model changes (its storage or version counter),
e.g. after ``load_state_dict``, an optimiser step or model randomisation.
"""

from __future__ import annotations

import copy
import weakref
from collections import Counter
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .errors import ConfigError
from .models import resolve_layer

__all__ = ["fast_model", "fast_model_for_layer", "fold_conv_bn", "conv_bn_pairs", "folded_into", "clear_cache"]

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, nn.Module]]] = weakref.WeakKeyDictionary()


def _is_conv(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward
            and type(m)._conv_forward is nn.Conv2d._conv_forward and not parametrize.is_parametrized(m)
            and m.weight.is_floating_point())


def _is_bn(m: nn.Module) -> bool:
    return (isinstance(m, nn.BatchNorm2d) and type(m).forward is nn.BatchNorm2d.forward
            and m.running_mean is not None and m.running_var is not None)


def _use_counts(net: nn.Module) -> Counter:
    """How many names each module object has (a shared module must not be folded)."""
    return Counter(id(m) for _, m in net.named_modules(remove_duplicate=False))


def _traced_pairs(net: nn.Module) -> list[tuple[str, str]]:
    class _Tracer(fx.Tracer):  # subclasses of Conv2d / BatchNorm2d (airbench's) stay single calls
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, qualname)

    nodes = list(_Tracer().trace(net).nodes)
    calls = Counter(n.target for n in nodes if n.op == "call_module")
    # Parameters or buffers read directly in a forward (get_attr) must keep their module.
    attrs = [str(n.target) for n in nodes if n.op == "get_attr"]
    shared = _use_counts(net)
    pairs = []
    for n in nodes:
        if n.op != "call_module" or len(n.args) != 1 or n.kwargs:
            continue
        p = n.args[0]
        if not isinstance(p, fx.Node) or p.op != "call_module" or len(p.users) != 1:
            continue
        conv, bn = net.get_submodule(p.target), net.get_submodule(n.target)
        if not (_is_conv(conv) and _is_bn(bn)) or conv.out_channels != bn.num_features:
            continue
        if calls[p.target] != 1 or calls[n.target] != 1 or shared[id(conv)] != 1 or shared[id(bn)] != 1:
            continue
        if any(a.startswith((f"{p.target}.", f"{n.target}.")) for a in attrs):
            continue
        pairs.append((str(p.target), str(n.target)))
    return pairs


def _sequential_pairs(net: nn.Module) -> list[tuple[str, str]]:
    shared = _use_counts(net)
    pairs = []
    for name, mod in net.named_modules():
        if type(mod).forward is not nn.Sequential.forward:
            continue
        items = list(mod._modules.items())
        for (ka, a), (kb, b) in zip(items, items[1:]):
            if _is_conv(a) and _is_bn(b) and a.out_channels == b.num_features and shared[id(a)] == 1 \
                    and shared[id(b)] == 1:
                pre = f"{name}." if name else ""
                pairs.append((pre + ka, pre + kb))
    return pairs


def conv_bn_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) pairs of ``net`` where the BN's only input is the conv's only output."""
    try:
        return _traced_pairs(net)
    except Exception:  # not traceable (data-dependent control flow...): only provably sequential pairs
        return _sequential_pairs(net)


@torch.no_grad()
def fold_conv_bn(net: nn.Module) -> list[tuple[str, str]]:
    """Fold every conv -> BN pair of ``net`` in place (eval-mode statistics); returns the pairs folded."""
    pairs = conv_bn_pairs(net)
    for conv_name, bn_name in pairs:
        conv, bn = net.get_submodule(conv_name), net.get_submodule(bn_name)
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                    bn.bias)
        conv.weight, conv.bias = w, b
        conv._fastpath_folded = bn_name  # see folded_into()
        parent_name, _, leaf = bn_name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        parent._modules[leaf] = nn.Identity().eval()
    return pairs


def folded_into(module: nn.Module) -> str | None:
    """The name of the BatchNorm folded into ``module`` (a conv of a fast copy), else None.

    The output of such a conv is the BN's output, not the conv's: methods that hook a layer
    use a copy without folding when the layer is one of these convs.
    """
    return getattr(module, "_fastpath_folded", None)


def _to_channels_last(_module: nn.Module, args: tuple) -> tuple | None:
    if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _stamp(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (or a B-cos
    explanation flag flips)."""
    ts = [*model.parameters(), *model.buffers()]
    flags = tuple(m.explain for m in model.modules() if isinstance(getattr(m, "explain", None), bool))
    return tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in ts) + flags


def _build(model: nn.Module, fold_bn: bool, channels_last: bool, compile: bool) -> nn.Module:
    fast = copy.deepcopy(model).eval()
    if fold_bn:
        fold_conv_bn(getattr(fast, "net", fast))
    # channels_last for every family: oneDNN convolutions are faster in it, and B-cos layers are
    # written for it (intgrad on bcos-resnet56 1.4x, smp-directional occlusion 1.7x, bench/explain.py).
    if channels_last:
        fast.to(memory_format=torch.channels_last)
        fast.register_forward_pre_hook(_to_channels_last)
    if compile:
        fast.compile()  # in place: the module tree and its names stay
    fast._fastpath_options = {"fold_bn": fold_bn, "channels_last": channels_last, "compile": compile}
    return fast


def fast_model(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
               compile: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into the preceding convolutions,
    channels_last weights and inputs, and optionally compiled (see the module docstring).

    Same logits (to float32 rounding) and input gradients as ``model``; module names kept.
    Cached per model and options until the model's parameters or buffers change.
    """
    key: Any = (bool(fold_bn), bool(channels_last), bool(compile))
    stamp = _stamp(model)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    fast = _build(model, *key)
    per_model[key] = (stamp, fast)
    return fast


def clear_cache() -> None:
    _CACHE.clear()


def fast_model_for_layer(model: nn.Module, layer: str | None, *, fast: bool = True, compile: bool = False) -> nn.Module:
    """The fast copy for a method that hooks ``layer`` (a module path of ``model.net``):
    without BatchNorm folding when that layer is a convolution with a BatchNorm folded into
    it (its output would be the BN's).  A layer that does not exist is left for the method
    to report."""
    run = fast_model(model, fold_bn=fast, channels_last=fast, compile=compile)
    if fast and layer:
        try:
            folded = folded_into(resolve_layer(getattr(run, "net", run), layer))
        except ConfigError:
            folded = None
        if folded:
            run = fast_model(model, fold_bn=False, channels_last=True, compile=compile)
    return run
