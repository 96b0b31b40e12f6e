"""The traced plan of a model and the incremental occlusion scores (see the package docstring)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .ops import (
    CAT,
    POINTWISE_FUNCS,
    POINTWISE_METHODS,
    POINTWISE_MODULES,
    conv_macs,
    is_inplace,
    pair,
    spatially_constant,
)
from .regions import Full, Region, Static, conv_out_range, extract, to_full, uniform

__all__ = ["IncrementalPlan", "IncrementalUnsupported", "get_plan", "incremental_occlusion_scores", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.6  # fraction of a layer's area beyond which it is recomputed in full
_DEFAULT_BATCH = 64  # occluded images per pass


class IncrementalUnsupported(RuntimeError):
    """The model cannot be traced (or has no input to occlude): use the ordinary path."""


class _Stats:
    def __init__(self):
        self.macs_incremental = 0.0  # conv multiply-adds actually computed
        self.macs_full = 0.0  # conv multiply-adds of the ordinary forward passes
        self.full_switches = 0  # region nodes that went full because of the threshold

    def as_dict(self) -> dict[str, float]:
        return {"macs_incremental": self.macs_incremental, "macs_full": self.macs_full,
                "flop_ratio": self.macs_full / self.macs_incremental if self.macs_incremental else float("nan"),
                "threshold_switches": self.full_switches}


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
        if is_inplace(node, mod) and (self._region_kind(node) != "pointwise" or
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
                pad = pair(m.padding)
                return "pool" if not m.ceil_mode and (m.count_include_pad or pad == (0, 0)) else None
            if t in POINTWISE_MODULES:
                if t in (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d) and m.training:
                    return None
                if t is nn.BatchNorm2d and (m.running_mean is None):
                    return None
                return "pointwise"
            return None
        if node.op == "call_function":
            if node.target in POINTWISE_FUNCS:
                return "pointwise"
            if node.target in CAT:
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                return "cat" if dim == 1 else None
            return None
        if node.op == "call_method" and node.target in POINTWISE_METHODS:
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

    def run(self, base: dict[fx.Node, Any], x_box: Region, threshold: float = DEFAULT_THRESHOLD,
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
                env[n] = Static(base[n])
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
        if isinstance(v, Region):
            return to_full(v)
        return v.value

    def _full(self, n: fx.Node, env: dict, base_out: Any = None) -> Full:
        args = fx.node.map_arg(n.args, lambda a: self._as_full(env[a]))
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self._as_full(env[a]))
        out = self._call(n, args, kwargs)
        if n.op == "call_module" and isinstance(self._module(n), nn.Conv2d) and torch.is_tensor(out):
            m = self._module(n)
            self.stats.macs_incremental += conv_macs(m, out)
        return Full(out)

    def _eval(self, n: fx.Node, env: dict, base_out: Any, threshold: float, cache: dict) -> Any:
        if n.op == "call_module" and isinstance(self._module(n), nn.Conv2d) and torch.is_tensor(base_out):
            self.stats.macs_full += conv_macs(self._module(n), base_out) * _batch_of(n, env)
        inputs = [env[a] for a in n.all_input_nodes]
        if any(isinstance(v, Full) for v in inputs) or not torch.is_tensor(base_out) or base_out.dim() != 4:
            return self._full(n, env)
        kind = self._region_kind(n)
        regions = [v for v in inputs if isinstance(v, Region)]
        if kind is None or not regions:
            return self._full(n, env)
        if kind in ("conv", "pool"):
            return self._window_op(n, env, regions[0], base_out, threshold, cache)
        # pointwise / cat: every region on the output's grid, every static operand constant over pixels
        hw = tuple(base_out.shape[-2:])
        if any(tuple(r.base.shape[-2:]) != hw or r.base.shape[0] != 1 for r in regions):
            return self._full(n, env)
        statics = [v.value for v in inputs if isinstance(v, Static)]
        if kind == "pointwise" and not all(spatially_constant(s) for s in statics):
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
            y, h = uniform(y0, y1, hw[0])
            x, w = uniform(x0, x1, hw[1])
            if h * w > threshold * hw[0] * hw[1]:
                self.stats.full_switches += 1
                return self._full(n, env)

        def sub(a: fx.Node) -> Any:
            v = env[a]
            if isinstance(v, Region):
                same = v.y == y and v.x == x and (v.h, v.w) == (h, w)
                return v.data if same else extract(v, y, x, h, w, cache=cache)
            return v.value

        out = self._call(n, fx.node.map_arg(n.args, sub), fx.node.map_arg(n.kwargs, sub))
        if not torch.is_tensor(out) or out.dim() != 4 or tuple(out.shape[-2:]) != (h, w) or \
                out.shape[1] != base_out.shape[1]:
            return self._full(n, env)
        return Region(out, y, x, base_out)

    def _window_op(self, n: fx.Node, env: dict, reg: Region, base_out: torch.Tensor, threshold: float,
                   cache: dict) -> Any:
        m = self._module(n)
        if len(n.all_input_nodes) != 1 or n.kwargs or len(n.args) != 1:
            return self._full(n, env)
        k, s, d = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size), \
            pair(getattr(m, "dilation", 1))
        p = pair(m.padding)
        hout, wout = base_out.shape[-2:]
        ylo, yhi = zip(*(conv_out_range(v, v + reg.h, k[0], s[0], p[0], d[0], hout) for v in reg.y))
        xlo, xhi = zip(*(conv_out_range(v, v + reg.w, k[1], s[1], p[1], d[1], wout) for v in reg.x))
        oy, nh = uniform(ylo, yhi, hout)
        ox, nw = uniform(xlo, xhi, wout)
        if nh * nw > threshold * hout * wout:
            self.stats.full_switches += 1
            return self._full(n, env)
        lh, lw = (nh - 1) * s[0] + (k[0] - 1) * d[0] + 1, (nw - 1) * s[1] + (k[1] - 1) * d[1] + 1
        padval = float("-inf") if isinstance(m, nn.MaxPool2d) else 0.0
        win = extract(reg, [v * s[0] - p[0] for v in oy], [v * s[1] - p[1] for v in ox], lh, lw, p, padval, cache)
        if isinstance(m, nn.Conv2d):
            out = F.conv2d(win, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
            self.stats.macs_incremental += conv_macs(m, out)
        elif isinstance(m, nn.MaxPool2d):
            out = F.max_pool2d(win, m.kernel_size, m.stride, 0, m.dilation)
        else:
            out = F.avg_pool2d(win, m.kernel_size, m.stride, 0, False, m.count_include_pad, m.divisor_override)
        return Region(out, oy, ox, base_out)


def _batch_of(n: fx.Node, env: dict) -> int:
    for a in n.all_input_nodes:
        v = env[a]
        if isinstance(v, Region):
            return len(v.data)
        if isinstance(v, Full) and torch.is_tensor(v.value):
            return len(v.value)
    return 1


_PLANS: weakref.WeakKeyDictionary[nn.Module, IncrementalPlan] = weakref.WeakKeyDictionary()


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
            clean = Region(x[:, :, :0, :0].expand(len(py), -1, -1, -1), y0, x0, x)
            xb = extract(clean, y0, x0, window, window, cache=cache)
            sy = torch.tensor(py, device=x.device) - torch.tensor(y0, device=x.device)  # patch start in the box
            sx = torch.tensor(px, device=x.device) - torch.tensor(x0, device=x.device)
            inside_r, inside_c = ar >= sy[:, None], ar >= sx[:, None]
            m = (inside_r[:, :, None] & inside_c[:, None, :]).to(x.dtype)[:, None]  # (B, 1, win, win)
            data = xb * (1 - m) + fill * m
            logits = plan.run(base, Region(data, y0, x0, x), threshold, cache)
            if not torch.is_tensor(logits):
                raise IncrementalUnsupported("the model's output is not one tensor")
            out[j : j + len(py)] = logits.float()[:, int(target)]
    return out[torch.argsort(torch.tensor(order, device=x.device))]
