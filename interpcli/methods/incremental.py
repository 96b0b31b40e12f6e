"""Incremental inference for occlusion (Krypton: Nakandala, Kumar, Papakonstantinou, SIGMOD 2019,
https://arxiv.org/abs/1803.04113).

An occluding patch changes only a small part of the early feature maps.  The model is run once
on the unoccluded image and every node's output is cached; for each occluded image only the
*changed region* of each layer is recomputed, from the cached input of that layer with the
changed sub-region pasted in, and the result is pasted into (a copy of) the cached output.

The model (the :class:`~interpcli.models.Classifier`, encoder included) is traced with
``torch.fx``; the graph is walked in topological order.  Each node's value during the occluded
pass is one of

- *static*: independent of the input (parameters, buffers, constants): the cached value;
- *region*: the cached clean output plus, per occluded image b, a changed box of uniform size
  (h, w) at (y_b, x_b) holding the new values (B, C, h, w);
- *full*: the whole tensor for every occluded image (B, ...), computed the ordinary way.

Region rules: elementwise ops (encoder normalisation, BatchNorm in eval mode, activations,
Identity, Dropout in eval mode, residual ``+``) keep the box, taking the union of the boxes of
their inputs; ``Conv2d`` (any kernel, stride, padding, dilation, groups; zero padding),
``MaxPool2d`` and ``AvgPool2d`` (``ceil_mode=False``) map the box through their receptive field
and are evaluated on the input sub-window that produces the changed outputs, with the layer's
padding taken from the padded cached input; ``torch.cat`` along channels takes the union.
Anything else (global pooling, flatten, linear layers, unsupported ops) is evaluated in full on
the materialised tensors, and so is every node after it: correct for any traceable model, only
slower.  When a changed box would cover more than ``threshold`` of a layer's area (Krypton's
switch), that layer and the ones after it are recomputed in full.

The boxes are supersets of the outputs that can change, so every value outside them equals the
cached clean value exactly and the scores equal the ordinary batched forward passes up to
floating-point reassociation in the convolutions.
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from typing import Any, Iterable, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["IncrementalPlan", "IncrementalUnsupported", "get_plan", "incremental_occlusion_scores", "conv_out_range",
           "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.6  # fraction of a layer's area beyond which it is recomputed in full
_DEFAULT_BATCH = 64  # occluded images per pass

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d,
    nn.PReLU,
)
_POINTWISE_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pos, operator.iadd,
    operator.imul, operator.isub, operator.itruediv,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    torch.abs, torch.exp, torch.square, torch.sqrt,
    F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardswish, F.hardtanh, F.mish, F.softplus, F.sigmoid,
    F.tanh,
}
_POINTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "abs", "exp",
    "square", "sqrt", "contiguous", "float", "add_", "mul_", "relu_", "clamp_", "clamp_min_",
}
_CAT = {torch.cat, torch.concat}


class IncrementalUnsupported(RuntimeError):
    """The model cannot be traced (or has no input to occlude): use the ordinary path."""


# ----------------------------------------------------------------------------------------------
# receptive-field arithmetic


def conv_out_range(lo, hi, k: int, s: int, p: int, d: int, size_out: int):
    """Output positions [o_lo, o_hi) of a conv/pool (kernel k, stride s, padding p, dilation d)
    that read any input position in [lo, hi).  With dilation this is the tight
    bounding range (the kernel's holes may skip some of it)."""
    span = (k - 1) * d
    o_lo = max(0, -((span - lo - p) // s))
    o_hi = min(size_out, (hi - 1 + p) // s + 1)
    return o_lo, o_hi


def _uniform(lo: list[int], hi: list[int], size: int) -> tuple[list[int], int]:
    """A box size n shared by the batch and starts so that [y, y + n) ⊇ [lo, hi) inside [0, size)."""
    n = min(size, max(1, max(b - a for a, b in zip(lo, hi))))
    return [min(max(a, 0), size - n) for a in lo], n


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ----------------------------------------------------------------------------------------------
# node values


@dataclasses.dataclass
class _Region:
    """Clean value ``base`` (1, C, H, W) with ``data`` (B, C, h, w) replacing boxes at (y_b, x_b)."""

    data: torch.Tensor
    y: list[int]
    x: list[int]
    base: torch.Tensor

    @property
    def h(self) -> int:
        return self.data.shape[-2]

    @property
    def w(self) -> int:
        return self.data.shape[-1]


@dataclasses.dataclass
class _Full:
    value: Any  # a tensor (B, ...) or anything computed from full values


@dataclasses.dataclass
class _Static:
    value: Any


class _Stats:
    def __init__(self):
        self.macs_incremental = 0.0  # conv multiply-adds actually computed
        self.macs_full = 0.0  # conv multiply-adds of the ordinary forward passes
        self.full_switches = 0  # region nodes that went full because of the threshold

    def as_dict(self) -> dict[str, float]:
        return {"macs_incremental": self.macs_incremental, "macs_full": self.macs_full,
                "flop_ratio": self.macs_full / self.macs_incremental if self.macs_incremental else float("nan"),
                "threshold_switches": self.full_switches}


def _base_hwc(base: torch.Tensor, pad: tuple[int, int], padval: float, cache: dict | None) -> torch.Tensor:
    """The clean tensor (1, C, H, W) padded by ``pad`` with ``padval``, as (Hp, Wp, C) (cached per image)."""
    key = (id(base), pad, padval)
    out = cache.get(key) if cache is not None else None
    if out is None:
        c, h, w = base.shape[1:]
        src = base[0].permute(1, 2, 0)
        if pad == (0, 0):
            out = src.contiguous()
        else:
            out = torch.full((h + 2 * pad[0], w + 2 * pad[1], c), padval, dtype=base.dtype, device=base.device)
            out[pad[0] : pad[0] + h, pad[1] : pad[1] + w] = src
        if cache is not None:
            cache[key] = out
            cache[("keep",) + key] = base  # keeps id(base) from being reused while cached
    return out


def _extract(reg: _Region, y: list[int], x: list[int], h: int, w: int, pad: tuple[int, int] = (0, 0),
             padval: float = 0.0, cache: dict | None = None) -> torch.Tensor:
    """Boxes (B, C, h, w) at (y_b, x_b) of the occluded tensors (coordinates may reach ``pad`` into the
    border, which holds ``padval``).  Returned channels-last (a view of a (B, h, w, C) tensor)."""
    base_hwc = _base_hwc(reg.base, pad, padval, cache)
    pt, pl = pad
    dev = base_hwc.device
    # all the windows of the clean tensor as a view (Hp-h+1, Wp-w+1, h, w, C); one gather of B of them
    windows = base_hwc.unfold(0, h, 1).unfold(1, w, 1).permute(0, 1, 3, 4, 2)
    out = windows[torch.tensor(y, device=dev) + pt, torch.tensor(x, device=dev) + pl]  # (B, h, w, C)
    rh, rw = reg.h, reg.w
    if rh and rw:
        new = reg.data.permute(0, 2, 3, 1)
        dy = [ry - yb for ry, yb in zip(reg.y, y)]
        dx = [rx - xb for rx, xb in zip(reg.x, x)]
        if len(set(dy)) == 1 and len(set(dx)) == 1 and 0 <= dy[0] and dy[0] + rh <= h and 0 <= dx[0] and \
                dx[0] + rw <= w:  # the same offset for the whole batch, inside the box: one strided copy
            out[:, dy[0] : dy[0] + rh, dx[0] : dx[0] + rw] = new
        else:
            for b in range(len(y)):
                r0, r1 = max(dy[b], 0), min(dy[b] + rh, h)
                c0, c1 = max(dx[b], 0), min(dx[b] + rw, w)
                if r0 < r1 and c0 < c1:
                    out[b, r0:r1, c0:c1] = new[b, r0 - dy[b] : r1 - dy[b], c0 - dx[b] : c1 - dx[b]]
    return out.permute(0, 3, 1, 2)


def _to_full(reg: _Region) -> torch.Tensor:
    """The whole occluded tensors (B, C, H, W)."""
    n = len(reg.data)
    full = reg.base.expand(n, *reg.base.shape[1:]).contiguous()
    h, w = reg.h, reg.w
    if h and w:
        dev = full.device
        rows = torch.tensor(reg.y, device=dev)[:, None] + torch.arange(h, device=dev)
        cols = torch.tensor(reg.x, device=dev)[:, None] + torch.arange(w, device=dev)
        b = torch.arange(n, device=dev)[:, None, None]
        full.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]] = reg.data.permute(0, 2, 3, 1).to(full.dtype)
    return full


def _spatially_constant(v: Any) -> bool:
    """A static operand that broadcasts the same way at every pixel."""
    if not torch.is_tensor(v):
        return isinstance(v, (int, float, bool)) or v is None
    return v.dim() == 0 or (v.shape[-1] == 1 and (v.dim() < 2 or v.shape[-2] == 1))


def _inplace(node: fx.Node, mod: nn.Module | None) -> bool:
    if mod is not None:
        return bool(getattr(mod, "inplace", False))
    if node.op == "call_method" and str(node.target).endswith("_"):
        return True
    return node.target in (operator.iadd, operator.imul, operator.isub, operator.itruediv) or \
        bool(node.kwargs.get("inplace", False))


class IncrementalPlan:
    """The fx graph of a model and the rules to run occluded copies of one image incrementally."""

    def __init__(self, model: nn.Module):
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 - any tracing failure means: not this path
            raise IncrementalUnsupported(f"model cannot be traced with torch.fx: {type(e).__name__}: {e}") from e
        self.model_ref = weakref.ref(model)
        self.nodes = list(self.gm.graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise IncrementalUnsupported("incremental occlusion needs a model with one input")
        self.input = placeholders[0]
        dynamic = {self.input}
        for n in self.nodes:
            if n.op in ("call_module", "call_function", "call_method", "output") and \
                    any(a in dynamic for a in n.all_input_nodes):
                dynamic.add(n)
        self.dynamic = dynamic
        self.stats = _Stats()

    # -- helpers --------------------------------------------------------------------------------

    def _module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def _fetch(self, target: str) -> Any:
        obj: Any = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def _call(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        mod = self._module(node) if node.op == "call_module" else None
        if _inplace(node, mod) and (self._region_kind(node) != "pointwise" or
                                    any(len(a.users) > 1 for a in node.all_input_nodes)):
            # keep cached values that are read again intact (a pointwise in-place op on a value
            # nothing else reads needs no copy: its input is never materialised afterwards)
            args = tuple(a.clone() if torch.is_tensor(a) else a for a in args)
        if node.op == "call_module":
            return mod(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        raise IncrementalUnsupported(f"unexpected node {node.op}")

    def _region_kind(self, node: fx.Node) -> str | None:
        """How ``node`` can handle region inputs: 'conv', 'pool', 'pointwise', 'cat' or None (full)."""
        if node.op == "call_module":
            m = self._module(node)
            t = type(m)
            if t is nn.Conv2d:
                ok = m.padding_mode == "zeros" and not isinstance(m.padding, str)
                return "conv" if ok else None
            if t is nn.MaxPool2d:
                return "pool" if not m.ceil_mode and not m.return_indices else None
            if t is nn.AvgPool2d:
                pad = _pair(m.padding)
                return "pool" if not m.ceil_mode and (m.count_include_pad or pad == (0, 0)) else None
            if t in _POINTWISE_MODULES:
                if t in (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d) and m.training:
                    return None
                if t is nn.BatchNorm2d and (m.running_mean is None):
                    return None
                return "pointwise"
            return None
        if node.op == "call_function":
            if node.target in _POINTWISE_FUNCS:
                return "pointwise"
            if node.target in _CAT:
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                return "cat" if dim == 1 else None
            return None
        if node.op == "call_method" and node.target in _POINTWISE_METHODS:
            return "pointwise"
        return None

    def incremental_layers(self) -> list[str]:
        """Conv/pool nodes that run on regions (ignoring the area threshold): empty = no gain."""
        region = {self.input}
        names = []
        for n in self.nodes:
            if n not in self.dynamic or n is self.input or n.op == "output":
                continue
            kind = self._region_kind(n)
            if kind is not None and all(a in region or a not in self.dynamic for a in n.all_input_nodes):
                region.add(n)
                if kind in ("conv", "pool"):
                    names.append(n.name)
        return names

    # -- passes ---------------------------------------------------------------------------------

    def base_values(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        """Every node's output on the clean image x (1, C, H, W)."""
        vals: dict[fx.Node, Any] = {}
        for n in self.nodes:
            if n.op == "placeholder":
                vals[n] = x
            elif n.op == "get_attr":
                vals[n] = self._fetch(n.target)
            elif n.op == "output":
                vals[n] = fx.node.map_arg(n.args[0], lambda a: vals[a])
            else:
                args = fx.node.map_arg(n.args, lambda a: vals[a])
                kwargs = fx.node.map_arg(n.kwargs, lambda a: vals[a])
                vals[n] = self._call(n, args, kwargs)
        return vals

    def run(self, base: dict[fx.Node, Any], x_box: _Region, threshold: float = DEFAULT_THRESHOLD,
            cache: dict | None = None) -> Any:
        """The model's output for the occluded images whose input differs from ``base`` by ``x_box``
        (``cache``: padded clean tensors, shared by the batches of one image)."""
        env: dict[fx.Node, Any] = {}
        cache = {} if cache is None else cache
        users_left = {n: len(n.users) for n in self.nodes}
        for n in self.nodes:
            if n.op == "placeholder":
                env[n] = x_box
            elif n not in self.dynamic:
                env[n] = _Static(base[n])
            elif n.op == "output":
                out = fx.node.map_arg(n.args[0], lambda a: self._as_full(env[a]))
                return out
            else:
                env[n] = self._eval(n, env, base[n], threshold, cache)
            for a in n.all_input_nodes:  # free what nothing needs any more
                users_left[a] -= 1
                if users_left[a] == 0 and a in self.dynamic:
                    env.pop(a, None)
        raise IncrementalUnsupported("graph without output")

    @staticmethod
    def _as_full(v: Any) -> Any:
        if isinstance(v, _Region):
            return _to_full(v)
        return v.value

    def _full(self, n: fx.Node, env: dict, base_out: Any = None) -> _Full:
        args = fx.node.map_arg(n.args, lambda a: self._as_full(env[a]))
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self._as_full(env[a]))
        out = self._call(n, args, kwargs)
        if n.op == "call_module" and isinstance(self._module(n), nn.Conv2d) and torch.is_tensor(out):
            m = self._module(n)
            self.stats.macs_incremental += _conv_macs(m, out)
        return _Full(out)

    def _eval(self, n: fx.Node, env: dict, base_out: Any, threshold: float, cache: dict) -> Any:
        if n.op == "call_module" and isinstance(self._module(n), nn.Conv2d) and torch.is_tensor(base_out):
            self.stats.macs_full += _conv_macs(self._module(n), base_out) * _batch_of(n, env)
        inputs = [env[a] for a in n.all_input_nodes]
        if any(isinstance(v, _Full) for v in inputs) or not torch.is_tensor(base_out) or base_out.dim() != 4:
            return self._full(n, env)
        kind = self._region_kind(n)
        regions = [v for v in inputs if isinstance(v, _Region)]
        if kind is None or not regions:
            return self._full(n, env)
        if kind in ("conv", "pool"):
            return self._window_op(n, env, regions[0], base_out, threshold, cache)
        # pointwise / cat: every region on the output's grid, every static operand constant over pixels
        hw = tuple(base_out.shape[-2:])
        if any(tuple(r.base.shape[-2:]) != hw or r.base.shape[0] != 1 for r in regions):
            return self._full(n, env)
        statics = [v.value for v in inputs if isinstance(v, _Static)]
        if kind == "pointwise" and not all(_spatially_constant(s) for s in statics):
            return self._full(n, env)
        if kind == "cat" and statics:
            return self._full(n, env)
        if all(r.y == regions[0].y and r.x == regions[0].x and (r.h, r.w) == (regions[0].h, regions[0].w)
               for r in regions):
            y, x, h, w = regions[0].y, regions[0].x, regions[0].h, regions[0].w
        else:
            y0 = [min(v) for v in zip(*(r.y for r in regions))]
            x0 = [min(v) for v in zip(*(r.x for r in regions))]
            y1 = [max(v) for v in zip(*([yy + r.h for yy in r.y] for r in regions))]
            x1 = [max(v) for v in zip(*([xx + r.w for xx in r.x] for r in regions))]
            y, h = _uniform(y0, y1, hw[0])
            x, w = _uniform(x0, x1, hw[1])
            if h * w > threshold * hw[0] * hw[1]:
                self.stats.full_switches += 1
                return self._full(n, env)

        def sub(a: fx.Node) -> Any:
            v = env[a]
            if isinstance(v, _Region):
                same = v.y == y and v.x == x and (v.h, v.w) == (h, w)
                return v.data if same else _extract(v, y, x, h, w, cache=cache)
            return v.value

        out = self._call(n, fx.node.map_arg(n.args, sub), fx.node.map_arg(n.kwargs, sub))
        if not torch.is_tensor(out) or out.dim() != 4 or tuple(out.shape[-2:]) != (h, w) or \
                out.shape[1] != base_out.shape[1]:
            return self._full(n, env)
        return _Region(out, y, x, base_out)

    def _window_op(self, n: fx.Node, env: dict, reg: _Region, base_out: torch.Tensor, threshold: float,
                   cache: dict) -> Any:
        m = self._module(n)
        if len(n.all_input_nodes) != 1 or n.kwargs or len(n.args) != 1:
            return self._full(n, env)
        k, s, d = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), \
            _pair(getattr(m, "dilation", 1))
        p = _pair(m.padding)
        hout, wout = base_out.shape[-2:]
        ylo, yhi = zip(*(conv_out_range(v, v + reg.h, k[0], s[0], p[0], d[0], hout) for v in reg.y))
        xlo, xhi = zip(*(conv_out_range(v, v + reg.w, k[1], s[1], p[1], d[1], wout) for v in reg.x))
        oy, nh = _uniform(ylo, yhi, hout)
        ox, nw = _uniform(xlo, xhi, wout)
        if nh * nw > threshold * hout * wout:
            self.stats.full_switches += 1
            return self._full(n, env)
        lh, lw = (nh - 1) * s[0] + (k[0] - 1) * d[0] + 1, (nw - 1) * s[1] + (k[1] - 1) * d[1] + 1
        padval = float("-inf") if isinstance(m, nn.MaxPool2d) else 0.0
        win = _extract(reg, [v * s[0] - p[0] for v in oy], [v * s[1] - p[1] for v in ox], lh, lw, p, padval, cache)
        if isinstance(m, nn.Conv2d):
            out = F.conv2d(win, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
            self.stats.macs_incremental += _conv_macs(m, out)
        elif isinstance(m, nn.MaxPool2d):
            out = F.max_pool2d(win, m.kernel_size, m.stride, 0, m.dilation)
        else:
            out = F.avg_pool2d(win, m.kernel_size, m.stride, 0, False, m.count_include_pad, m.divisor_override)
        return _Region(out, oy, ox, base_out)


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> float:
    k = m.kernel_size[0] * m.kernel_size[1]
    return float(out.numel()) * (m.in_channels // m.groups) * k


def _batch_of(n: fx.Node, env: dict) -> int:
    for a in n.all_input_nodes:
        v = env[a]
        if isinstance(v, _Region):
            return len(v.data)
        if isinstance(v, _Full) and torch.is_tensor(v.value):
            return len(v.value)
    return 1


_PLANS: "weakref.WeakKeyDictionary[nn.Module, IncrementalPlan]" = weakref.WeakKeyDictionary()


def get_plan(model: nn.Module) -> IncrementalPlan:
    """The (cached) traced plan of ``model``; :class:`IncrementalUnsupported` if it cannot be traced."""
    plan = _PLANS.get(model)
    if plan is None:
        plan = IncrementalPlan(model)
        _PLANS[model] = plan
    return plan


def incremental_occlusion_scores(model: nn.Module, x: torch.Tensor, positions: Sequence[tuple[int, int]] |
                                 Iterable[tuple[int, int]], window: int, fill: torch.Tensor | float, target: int,
                                 batch_size: int | None = None, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """f_target of the image x (1, C, H, W) with a ``window`` x ``window`` patch at each (y, x) of
    ``positions`` (cut by the border) replaced by ``fill`` (a number or a tensor broadcasting to
    (1, C, 1, 1)) -> (K,) float32, as the ordinary forward passes of
    ``x * (1 - m) + fill * m`` would give, computed incrementally.

    Raises :class:`IncrementalUnsupported` where the model cannot be traced; the ordinary path
    (``perturbation._scores``) is then the fallback.
    """
    plan = get_plan(model)
    if x.dim() != 4 or len(x) != 1:
        raise ValueError("incremental_occlusion_scores takes one image (1, C, H, W)")
    h, w = x.shape[-2:]
    window = int(window)
    if not 0 < window <= min(h, w):
        raise ValueError(f"window must be in 1..{min(h, w)}")
    pos = [(int(p[0]), int(p[1])) for p in positions]
    bs = int(batch_size or _DEFAULT_BATCH)
    # Interior windows first, border ones last: the changed boxes of a batch then sit at the same offsets
    # in every layer (one strided copy instead of one per window) and have the same size.
    order = sorted(range(len(pos)), key=lambda i: -min(pos[i][0], pos[i][1], h - window - pos[i][0],
                                                        w - window - pos[i][1]))
    pos = [pos[i] for i in order]
    out = torch.empty(len(pos), device=x.device)
    with torch.inference_mode():
        base = plan.base_values(x)
        cache: dict = {}
        ar = torch.arange(window, device=x.device)
        for j in range(0, len(pos), bs):
            py, px = [p[0] for p in pos[j : j + bs]], [p[1] for p in pos[j : j + bs]]
            y0, x0 = [min(v, h - window) for v in py], [min(v, w - window) for v in px]
            # the input box: the image there, with the (possibly border-cut) patch filled
            clean = _Region(x[:, :, :0, :0].expand(len(py), -1, -1, -1), y0, x0, x)
            xb = _extract(clean, y0, x0, window, window, cache=cache)
            sy = torch.tensor(py, device=x.device) - torch.tensor(y0, device=x.device)  # patch start in the box
            sx = torch.tensor(px, device=x.device) - torch.tensor(x0, device=x.device)
            inside_r, inside_c = ar >= sy[:, None], ar >= sx[:, None]
            m = (inside_r[:, :, None] & inside_c[:, None, :]).to(x.dtype)[:, None]  # (B, 1, win, win)
            data = xb * (1 - m) + fill * m
            logits = plan.run(base, _Region(data, y0, x0, x), threshold, cache)
            if not torch.is_tensor(logits):
                raise IncrementalUnsupported("the model's output is not one tensor")
            out[j : j + len(py)] = logits.float()[:, int(target)]
    return out[torch.argsort(torch.tensor(order, device=x.device))]
