"""Modified-backpropagation methods.

- ``deeplift``: DeepLIFT with the rescale rule (Shrikumar, Greenside, Kundaje, ICML 2017,
  https://arxiv.org/abs/1704.02685): attributions sum to f(x) - f(baseline) (completeness).
  Our own pass for networks whose only nonlinearities are elementwise activation modules
  (checked on a ``torch.fx`` trace; the CIFAR ResNets, B-cos-free baselines): the images and
  their baselines go forward as one batch and, in the one backward pass, every activation's
  gradient is replaced by its multiplier Δy/Δz (the local gradient where |Δz| < 1e-10, as
  Captum).  Anything else (max-pooling, softmax, custom modules) uses Captum's ``DeepLift``,
  which our pass equals to float rounding (tested).
- ``guided-backprop``: guided backpropagation (Springenberg et al., ICLR 2015 workshop,
  https://arxiv.org/abs/1412.6806).

Both hook the model's nonlinearity *modules*, so each ReLU/MaxPool must be its own module
used once and not in place — true of the baseline architectures.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import weakref
from collections.abc import Iterator

import torch
import torch.fx as fx
import torch.nn as nn
from captum.attr import DeepLift, GuidedBackprop

from ..perturb import make_baseline
from ._common import batched
from ._registry import register_method


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
_LINEAR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout,
                   nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Flatten)
_LINEAR_FUNCTIONS = {operator.add, operator.sub, operator.neg, operator.getitem, torch.cat, torch.flatten,
                     torch.add, torch.sub}
_SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul}  # linear when one side is a constant
_LINEAR_METHODS = {"flatten", "view", "reshape", "mean", "sum", "contiguous", "size", "permute", "transpose",
                   "squeeze", "unsqueeze", "add", "sub", "__radd__", "__rsub__"}


_SUPPORTED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _rescale_supported(model: nn.Module) -> bool:
    """True when every nonlinearity of ``model`` is an elementwise activation module (fx trace;
    cached per model object)."""
    if model not in _SUPPORTED:
        _SUPPORTED[model] = _check_rescale(model)
    return _SUPPORTED[model]


def _check_rescale(model: nn.Module) -> bool:
    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, _ACTIVATIONS + _LINEAR_MODULES) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - anything fx cannot trace goes to Captum
        return False
    mods = dict(model.named_modules())
    const = {"get_attr"}
    for n in graph.nodes:
        if n.op == "call_module":
            m = mods.get(str(n.target))
            if not isinstance(m, _ACTIVATIONS + _LINEAR_MODULES):
                return False
            if isinstance(m, (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)) and m.training:
                return False  # batch statistics / random masks are not an affine map
        elif n.op == "call_function":
            if n.target in _SCALING_FUNCTIONS:
                tensors = [a for a in n.args if isinstance(a, fx.Node) and a.op not in const]
                if len(tensors) > 1:
                    return False
            elif n.target not in _LINEAR_FUNCTIONS:
                return False
        elif n.op == "call_method" and n.target not in _LINEAR_METHODS:
            return False
    return True


class _Rescale(torch.autograd.Function):
    """Identity on y = act(z) forward; backward multiplies by the multiplier Δy/Δz of the
    (input half, baseline half) pair, computed once in the forward pass."""

    @staticmethod
    def forward(ctx, z, y, n, act):
        dz, dy = z[:n] - z[n:], y[:n] - y[n:]
        small = dz.abs() < 1e-10
        m = dy.div_(torch.where(small, torch.ones_like(dz), dz))
        if bool(small.any()):  # the local gradient where the two sides (almost) coincide
            with torch.enable_grad():
                zz = z[:n].detach().requires_grad_(True)
                (local,) = torch.autograd.grad(type(act).forward(act, zz).sum(), zz)  # no hooks: no recursion
            m = torch.where(small, local, m)
        ctx.save_for_backward(m)
        ctx.n = n
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return (g.unflatten(0, (2, ctx.n)) * m).flatten(0, 1), None, None, None


@contextlib.contextmanager
def _rescale_rule(model: nn.Module, n: int) -> Iterator[None]:
    def hook(module, inputs, output):
        return _Rescale.apply(inputs[0], output, n, module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _deeplift_rescale(model, x, base, target) -> torch.Tensor:
    n = len(x)
    xx = torch.cat([x, base]).detach().requires_grad_(True)
    with _rescale_rule(model, n), torch.enable_grad():
        out = model(xx)
        (g,) = torch.autograd.grad(out[:n].gather(1, target[:, None]).sum(), xx)
    return (x - base) * g[:n]


_NO_INPLACE: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _without_inplace(model: nn.Module) -> nn.Module:
    """``model``, or a cached copy of it whose in-place activations work out of place: rescale
    and Captum's rules read each activation's input, which an in-place one overwrites."""
    if not any(getattr(m, "inplace", False) for m in model.modules()):
        return model
    copy_ = _NO_INPLACE.get(model)
    if copy_ is None:
        copy_ = copy.deepcopy(model)
        for m in copy_.modules():
            if getattr(m, "inplace", False):
                m.inplace = False
        _NO_INPLACE[model] = copy_
    copy_.load_state_dict(model.state_dict())  # the copy follows later changes of the weights
    return copy_


@register_method("deeplift", description="DeepLIFT (rescale rule) from a black/blurred/uniform baseline",
                 kind="gradient", uses_gradients=True, defaults={"baseline": "black", "seed": 0},
                 paper="https://arxiv.org/abs/1704.02685")
def deeplift(model, x, target, *, batch_size=None, baseline="black", seed=0):
    base = make_baseline(baseline, x, seed)
    bs = batch_size or 64
    model = _without_inplace(model)
    if _rescale_supported(model):
        return torch.cat([_deeplift_rescale(model, x[i : i + bs], base[i : i + bs], target[i : i + bs])
                          for i in range(0, len(x), bs)])
    dl = DeepLift(model, multiply_by_inputs=True)
    return torch.cat([dl.attribute(_leaf(x[i : i + bs]), baselines=base[i : i + bs], target=target[i : i + bs])
                      for i in range(0, len(x), bs)])


@register_method("guided-backprop", description="guided backpropagation (only positive gradients through ReLUs)",
                 kind="gradient", uses_gradients=True, paper="https://arxiv.org/abs/1412.6806")
def guided_backprop(model, x, target, *, batch_size=None):
    gbp = GuidedBackprop(model)
    return batched(lambda xb, tb: gbp.attribute(_leaf(xb), target=tb), x, target, batch_size)
