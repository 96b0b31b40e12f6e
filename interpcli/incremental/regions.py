"""Node values of the incremental pass and the box arithmetic on them.

A node's value during the occluded pass is :class:`Static` (independent of the input),
:class:`Region` (the cached clean output with a changed box per occluded image) or
:class:`Full` (the whole tensor for every occluded image); :func:`extract` cuts boxes out of
a region, :func:`to_full` pastes a region's boxes into copies of its clean tensor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["Region", "Full", "Static", "conv_out_range", "uniform", "extract", "to_full"]


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


def uniform(lo: list[int], hi: list[int], size: int) -> tuple[list[int], int]:
    """A box size n shared by the batch and starts so that [y, y + n) ⊇ [lo, hi) inside [0, size)."""
    n = min(size, max(1, max(b - a for a, b in zip(lo, hi))))
    return [min(max(a, 0), size - n) for a in lo], n


# ----------------------------------------------------------------------------------------------
# node values


@dataclasses.dataclass
class Region:
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
class Full:
    value: Any  # a tensor (B, ...) or anything computed from full values


@dataclasses.dataclass
class Static:
    value: Any


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


def extract(reg: Region, y: list[int], x: list[int], h: int, w: int, pad: tuple[int, int] = (0, 0),
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


def to_full(reg: Region) -> torch.Tensor:
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
