"""Modified-backpropagation methods.

- ``deeplift``: DeepLIFT (Shrikumar, Greenside, Kundaje, ICML 2017,
  https://arxiv.org/abs/1704.02685): attributions sum to f(x) - f(baseline) (completeness).
  Our own pass: a ``torch.fx`` trace of the model (once per model) gives every operation a
  rule (:mod:`.deeplift_rules`): linear operations stay as they are, elementwise activations
  take the rescale rule, max pooling and ``amax``/``amin`` the two-arg-max rule, products and
  quotients of two data tensors exact average-gradient rules, and every other unit (softmax,
  norms, modules the tracer keeps whole) the path-averaged gradient (Gauss-Legendre,
  ``steps`` nodes).  The images and their baselines go forward as one batch through an
  ``fx.Interpreter`` and, in the one backward pass, each unit's gradient is its multipliers.
  On the CIFAR ResNets it equals Captum's ``DeepLift`` to float rounding (tested).  A model
  fx cannot trace, or with a unit no rule fits (batch statistics, in-place operations on
  data, a max over the batch), uses Captum's ``DeepLift``, which is not complete in general.
- ``guided-backprop``: guided backpropagation (Springenberg et al., ICLR 2015 workshop,
  https://arxiv.org/abs/1412.6806).  It hooks the model's ReLU *modules*, so each must be
  its own module used once and not in place — true of the baseline architectures.
"""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import DeepLift, GuidedBackprop
from torch.fx.node import map_aggregate

from ..models.bcos_layers import composed_ops
from ..perturb import BASELINES, make_baseline
from . import deeplift_rules as rules
from ._common import batched
from ._registry import register_method
from .params import SEED, integer, one_of


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.ReLU6,
                nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.SELU, nn.CELU, nn.PReLU, nn.Softsign,
                nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold)
_LINEAR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout,
                   nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Flatten,
                   nn.Unflatten, nn.ZeroPad2d, nn.ConvTranspose2d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_BATCH_DEPENDENT = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)  # in training mode

# Operations (functions, or method names) linear in their data arguments.  "any": every
# tensor argument may be data (sums, concatenations); "first": only the first one.
_LINEAR_ANY = {operator.add, operator.sub, operator.neg, operator.pos, torch.add, torch.sub, torch.neg, torch.cat,
               torch.stack, "add", "sub", "neg", "__radd__", "__rsub__", "__neg__"}
_LINEAR_FIRST = {operator.getitem, torch.flatten, torch.reshape, torch.sum, torch.mean, torch.squeeze,
                 torch.unsqueeze, torch.permute, torch.transpose, torch.movedim, torch.narrow, torch.chunk,
                 torch.split, torch.flip, torch.roll, F.conv1d, F.conv2d, F.conv_transpose2d, F.linear, F.avg_pool1d,
                 F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.pad, F.interpolate,
                 "flatten", "unflatten", "view", "reshape", "mean", "sum", "contiguous", "permute", "transpose",
                 "squeeze", "unsqueeze", "movedim", "narrow", "select", "chunk", "split", "expand", "repeat", "flip",
                 "roll", "clone", "float", "double", "to", "__getitem__"}
_MUL = {operator.mul, torch.mul, "mul", "__mul__", "__rmul__"}
_DIV = {operator.truediv, torch.div, torch.true_divide, "div", "truediv", "__truediv__"}
_ELEMENTWISE = {torch.relu, F.relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.gelu, F.silu, F.elu, F.selu,
                F.celu, F.leaky_relu, F.softplus, F.mish, F.hardtanh, F.relu6, F.hardswish, F.hardsigmoid,
                F.logsigmoid, F.softsign, torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.abs, operator.abs,
                torch.square, torch.log1p, torch.expm1, torch.reciprocal, torch.clamp, torch.clip, torch.sin,
                torch.cos, torch.erf, torch.pow, operator.pow, torch.sign,
                "relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "abs", "square", "log1p", "expm1",
                "reciprocal", "clamp", "clip", "clamp_min", "clamp_max", "pow", "sin", "cos", "erf", "sign",
                "__abs__", "__pow__", "__rpow__", "__rtruediv__"}
_MAX = {torch.amax: 1.0, torch.amin: -1.0, "amax": 1.0, "amin": -1.0}
_MAX_POOL_FNS = {F.max_pool1d: 6, F.max_pool2d: 6, F.adaptive_max_pool1d: 2, F.adaptive_max_pool2d: 2}  # arguments
# before return_indices
_IDENTITY = {torch.detach, "detach"}  # DeepLIFT explains the function: a detached factor is still a factor
_META = {"size", "dim", "numel", getattr, torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
         "new_zeros", "new_ones", "new_empty", "new_full"}  # results that depend on shapes only


def _plain(m: nn.Module, classes: tuple[type, ...]) -> bool:
    """An instance of one of ``classes`` that keeps its class's forward (so computes what it says)."""
    return isinstance(m, classes) and any(type(m).forward is c.forward for c in classes if isinstance(m, c))


def _with_indices(pool: nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    c = copy.copy(pool)
    c.return_indices = True
    return c.forward  # no hooks


def _has_data(arg: Any, data: set[fx.Node]) -> bool:
    found: list[bool] = []
    fx.node.map_arg(arg, lambda a: found.append(a in data))
    return any(found)


def _rule_of(node: fx.Node, mods: dict[str, nn.Module], data: set[fx.Node]) -> tuple | str | None:
    """``"linear"``, ``"meta"`` (a result that depends on shapes only), a rule tuple, or None (no rule)."""
    if node.op == "call_module":
        m = mods[str(node.target)]
        if _plain(m, _LINEAR_MODULES):
            return None if m.training and isinstance(m, _BATCH_DEPENDENT) else "linear"
        if _plain(m, _ACTIVATIONS):
            return ("rescale",)
        if _plain(m, _MAX_POOLS) and not m.return_indices:
            return ("max_pool", _with_indices(m))
        return None if m.training else ("path",)
    key = node.target  # a function, or a method name
    flags = [_has_data(a, data) for a in node.args] + [False, False]
    first_only = flags[0] and not any(flags[1:]) and not _has_data(node.kwargs, data)
    if key in _META:
        return "meta"
    if key in _IDENTITY:
        return ("identity",)
    if key in _LINEAR_ANY or key in _LINEAR_FIRST and first_only:
        return "linear"
    if key in _MUL:
        return ("product",) if flags[0] and flags[1] else "linear"
    if key in _DIV and node.kwargs.get("rounding_mode") is None:
        return ("quotient",) if flags[0] and flags[1] else ("linear" if flags[0] else ("rescale",))
    if key in _MAX and first_only:
        return ("max_reduce", _MAX[key])
    if key in _MAX_POOL_FNS and first_only and len(node.args) <= _MAX_POOL_FNS[key] \
            and not node.kwargs.get("return_indices"):
        return ("max_pool_fn",)
    if key in _ELEMENTWISE and sum(flags) + _has_data(node.kwargs, data) == 1:
        return ("rescale",)
    if (isinstance(key, str) and key.endswith("_") and not key.endswith("__")) or node.kwargs.get("inplace"):
        return None  # in place on data
    return None if key in _DIV else ("path",)


class _Tracer(fx.Tracer):
    """Standard linear, activation and max-pooling modules stay single calls, and so do the
    modules in ``leaves`` (those fx cannot trace through)."""

    def __init__(self, leaves: frozenset[int] = frozenset()):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (id(m) in self.leaves or _plain(m, _ACTIVATIONS + _LINEAR_MODULES + _MAX_POOLS)
                or super().is_leaf_module(m, qualname))


def _trace(model: nn.Module) -> fx.Graph:
    """The fx graph of ``model``; modules fx cannot trace through (Python control flow on
    tensors...) are found bottom-up and kept whole.  B-cos layers are traced as their composed
    ops (not the fused MaxOut + scale node), so that every op gets its exact rule."""
    with composed_ops():
        return _trace_all(model)


def _trace_all(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - find the modules to keep whole
        pass
    leaves: set[int] = set()
    for m in reversed(list(model.modules())):  # children before their parents
        if m is model or _Tracer(frozenset(leaves)).is_leaf_module(m, ""):
            continue
        try:
            _Tracer(frozenset(leaves)).trace(m)
        except Exception:  # noqa: BLE001
            leaves.add(id(m))
    return _Tracer(frozenset(leaves)).trace(model)


def _check_rescale(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, tuple]] | None:
    """The graph and the rule of each of its nonlinear nodes, or None when a node has no rule."""
    try:
        graph = _trace(model)
    except Exception:  # noqa: BLE001 - anything fx cannot trace goes to Captum
        return None
    mods = dict(model.named_modules())
    data: set[fx.Node] = set()
    plan: dict[fx.Node, tuple] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            data.add(node)
        elif node.op in ("call_module", "call_function", "call_method") and _has_data((node.args, node.kwargs), data):
            rule = _rule_of(node, mods, data)
            if rule is None:
                return None
            if rule != "meta":
                data.add(node)
            if isinstance(rule, tuple):
                plan[node] = (rule, [a for a in node.all_input_nodes if a in data])
    return graph, plan


_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Any]] = weakref.WeakKeyDictionary()


def _plan(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, tuple]] | None:
    """:func:`_check_rescale`, cached per model object until its modules or their modes change."""
    stamp = tuple((id(m), m.training, getattr(m, "explain", None)) for m in model.modules())
    hit = _PLANS.get(model)
    if hit is None or hit[0] != stamp:
        hit = _PLANS[model] = (stamp, _check_rescale(model))
    return hit[1]


def _rescale_supported(model: nn.Module) -> bool:
    """True when our pass has a rule for every nonlinear operation of ``model``."""
    return _plan(model) is not None


class _Slot:
    def __init__(self, i: int):
        self.i = i


class _Pass(fx.Interpreter):
    """Runs the graph on [x; r] (2n rows) with every planned node replaced by its rule."""

    def __init__(self, model: nn.Module, graph: fx.Graph, plan: dict[fx.Node, tuple], n: int, steps: int):
        super().__init__(model, graph=graph)
        self.plan, self.n, self.steps = plan, n, steps

    def run_node(self, node: fx.Node) -> Any:
        if node not in self.plan:
            return super().run_node(node)
        rule, inputs = self.plan[node]
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        kind, n = rule[0], self.n
        if kind == "identity":
            return args[0]
        if kind in ("product", "quotient"):
            return getattr(rules, kind)(args[0], args[1], n)
        if kind == "max_pool":
            return rules.max_pool(rule[1], args[0], n)
        if kind == "max_pool_fn":
            return rules.max_pool(lambda z: node.target(z, *args[1:], **{**kwargs, "return_indices": True}), args[0],
                                  n)
        if kind == "max_reduce":
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            return rules.max_reduce(args[0], dim, args[2] if len(args) > 2 else kwargs.get("keepdim", False), n,
                                    rule[1])
        fn, zs = self._unit(node, inputs)
        return rules.rescale(fn, zs[0], n) if kind == "rescale" else rules.path_average(fn, zs, n, self.steps)

    def _unit(self, node: fx.Node, inputs: list[fx.Node]) -> tuple[Any, list[torch.Tensor]]:
        """The node as a function of its data inputs (the other arguments fixed now), and their values."""
        slots = {a: _Slot(i) for i, a in enumerate(inputs)}
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: slots.get(a, self.env.get(a)))
        if node.op == "call_module":
            op = self.fetch_attr(str(node.target))
        elif node.op == "call_method":
            op = lambda obj, *a, **k: getattr(obj, node.target)(*a, **k)  # noqa: E731
        else:
            op = node.target

        def fn(*zs):
            a, k = map_aggregate((args, kwargs), lambda v: zs[v.i] if isinstance(v, _Slot) else v)
            return op(*a, **k)

        return fn, [self.env[a] for a in inputs]


def _deeplift_pass(model, x, base, target, steps) -> torch.Tensor:
    graph, plan = _plan(model)
    n = len(x)
    xx = torch.cat([x, base]).detach().requires_grad_(True)
    with torch.enable_grad():
        out = _Pass(model, graph, plan, n, steps).run(xx)
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


@register_method("deeplift", description="DeepLIFT (rescale and max-pool rules) from a black/blurred/uniform baseline",
                 kind="gradient", uses_gradients=True, complete=True,
                 defaults={"baseline": "black", "seed": 0, "steps": 16},
                 params={"baseline": one_of(*BASELINES), "seed": SEED,
                         "steps": integer(min=1, doc="Gauss-Legendre nodes of the path-averaged rule")},
                 paper="https://arxiv.org/abs/1704.02685")
def deeplift(model, x, target, *, batch_size=None, baseline="black", seed=0, steps=16):
    base = make_baseline(baseline, x, seed)
    bs = batch_size or 64
    model = _without_inplace(model)
    chunks = range(0, len(x), bs)
    if _rescale_supported(model):
        try:
            return torch.cat([_deeplift_pass(model, x[i : i + bs], base[i : i + bs], target[i : i + bs], int(steps))
                              for i in chunks])
        except rules.RuleError:
            pass  # a unit outside the rules (seen at run time): Captum's rules
    dl = DeepLift(model, multiply_by_inputs=True)
    return torch.cat([dl.attribute(_leaf(x[i : i + bs]), baselines=base[i : i + bs], target=target[i : i + bs])
                      for i in chunks])


@register_method("guided-backprop", description="guided backpropagation (only positive gradients through ReLUs)",
                 kind="gradient", uses_gradients=True, paper="https://arxiv.org/abs/1412.6806")
def guided_backprop(model, x, target, *, batch_size=None):
    gbp = GuidedBackprop(model)
    return batched(lambda xb, tb: gbp.attribute(_leaf(xb), target=tb), x, target, batch_size)
