"""DeepLIFT multiplier rules for the one-batch pass of :mod:`.propagation`.

The pass sends the images x and their references r through the network as one batch
[x; r] of 2n rows.  Every nonlinear unit y = f(z_1, ..., z_k) is replaced by an autograd
function whose forward computes the unit's true output on both halves and whose backward
multiplies the incoming gradient by *multipliers* m_j (Shrikumar et al. 2017) instead of the
Jacobian.  Each rule keeps summation-to-delta for the unit's own pair of input and
reference, sum_j m_j · Δz_j = Δy; linear operations keep it trivially, so by the chain rule
for multipliers the attributions (x - r) · m of the whole network sum to f(x) - f(r)
(completeness).  The reference half receives no gradient (nothing downstream asks for it).

- :func:`rescale` (one input, elementwise): m = Δy / Δz, the local gradient where
  |Δz| < 1e-10 (as Captum).  Exact for any elementwise function.
- :func:`max_pool` / :func:`max_reduce` (max pooling, global max pooling, ``amax``; ``amin``
  as -max(-z)): for each pooling window let i be the arg-max of the input and j that of the
  reference.  Then Δy = x_i - r_j lies between Δz_j and Δz_i (because x_i >= x_j and
  r_j >= r_i), so Δy = λ Δz_i + (1 - λ) Δz_j with λ = (x_i - x_j) / ((x_i - x_j) + (r_j - r_i))
  in [0, 1] (1/2 when both margins are 0, where Δz_i = Δz_j = Δy).  The multipliers are λ at
  i and 1 - λ at j: exact, non-negative and summing to 1 like the gradient of a max (which
  is this rule with λ = 1), and equal to it when input and reference peak at the same place.
- :func:`product` (a · b, both inputs data): m_a = (b_x + b_r) / 2, m_b = (a_x + a_r) / 2,
  the average gradient along the straight path (a degree-1 polynomial, so exact).
- :func:`quotient` (a / b, both data): m_a = (1/b_x + 1/b_r) / 2, m_b = -(a_x + a_r) / (2 b_x b_r)
  (the product rule composed with the rescale rule of 1/b; exact).
- :func:`path_average` (any other unit, e.g. softmax, a norm, a module the tracer keeps
  whole): m_j = ∫_0^1 ∂f/∂z_j(r + α(x - r)) dα, the unit's Integrated Gradients, by
  Gauss-Legendre quadrature with ``steps`` nodes: exact for polynomials of degree below
  2·steps, otherwise up to the quadrature error (analytic units converge exponentially).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["RuleError", "rescale", "max_pool", "max_reduce", "product", "quotient", "path_average"]


class RuleError(Exception):
    """A unit outside what the rules handle at run time (the caller falls back to Captum)."""


def _check(z, n: int) -> torch.Tensor:
    if not torch.is_tensor(z) or z.dim() == 0 or z.shape[0] != 2 * n or not z.is_floating_point():
        raise RuleError("a nonlinear unit's input is not a float batch of images and references")
    return z


def _to_input(gx: torch.Tensor) -> torch.Tensor:
    """The gradient of the whole [x; r] batch from that of the x half."""
    return torch.cat([gx, torch.zeros_like(gx)])


class _Rescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, fn, n):
        y = fn(z)
        if not torch.is_tensor(y) or y.shape != z.shape:
            raise RuleError("an elementwise unit changed the shape of its input")
        dz, dy = z[:n] - z[n:], y[:n] - y[n:]
        small = dz.abs() < 1e-10
        m = dy.div_(torch.where(small, torch.ones_like(dz), dz))
        if bool(small.any()):  # the local gradient where the two sides (almost) coincide
            with torch.enable_grad():
                zz = z[:n].detach().requires_grad_(True)
                (local,) = torch.autograd.grad(fn(zz).sum(), zz, allow_unused=True)
            m = torch.where(small, torch.zeros_like(m) if local is None else local, m)
        ctx.save_for_backward(m)
        ctx.n = n
        return y if y is not z else y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return (g.unflatten(0, (2, ctx.n)) * m).flatten(0, 1), None, None


def rescale(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, n: int) -> torch.Tensor:
    """``fn(z)`` for an elementwise ``fn``, with the rescale rule's multipliers Δy/Δz."""
    return _Rescale.apply(_check(z, n), fn, n)


class _MaxRule(torch.autograd.Function):
    """zf (2n, ..., L) and idx (2n, ..., M): each output is the maximum zf[..., idx]."""

    @staticmethod
    def forward(ctx, zf, idx, n):
        x, r, ix, ir = zf[:n], zf[n:], idx[:n], idx[n:]
        num = x.gather(-1, ix) - x.gather(-1, ir)  # >= 0: x_i is the input's maximum
        den = num + r.gather(-1, ir) - r.gather(-1, ix)  # >= num: r_j is the reference's maximum
        pos = den > 0
        lam = torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.full_like(den, 0.5))
        ctx.save_for_backward(ix, ir, lam)
        ctx.size = x.shape
        return zf.gather(-1, idx)

    @staticmethod
    def backward(ctx, g):
        ix, ir, lam = ctx.saved_tensors
        gx = g[: len(ix)]
        out = torch.zeros(ctx.size, dtype=g.dtype, device=g.device)
        out.scatter_add_(-1, ix, gx * lam).scatter_add_(-1, ir, gx * (1 - lam))
        return _to_input(out), None, None


def max_pool(pool_with_indices: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], z: torch.Tensor,
             n: int) -> torch.Tensor:
    """Max pooling of z (2n, C, *spatial) with the two-arg-max rule; ``pool_with_indices``
    returns the pooled values and PyTorch's indices into the flattened spatial dimensions."""
    _check(z, n)
    with torch.no_grad():
        _, idx = pool_with_indices(z.detach())
    return _MaxRule.apply(z.flatten(2), idx.flatten(2), n).view(idx.shape)


def max_reduce(z: torch.Tensor, dim: int | Sequence[int] | None, keepdim: bool, n: int,
               sign: float = 1.0) -> torch.Tensor:
    """``z.amax(dim, keepdim)`` (``sign=-1``: ``amin``) with the two-arg-max rule."""
    _check(z, n)
    dims = sorted({d % z.dim() for d in ([dim] if isinstance(dim, int) else (dim or range(z.dim())))})
    if 0 in dims:
        raise RuleError("a max over the batch dimension")
    k = len(dims)
    zf = z.movedim(dims, list(range(z.dim() - k, z.dim()))).flatten(-k) * sign
    idx = zf.detach().argmax(-1, keepdim=True)
    y = _MaxRule.apply(zf, idx, n).squeeze(-1) * sign
    for d in dims if keepdim else ():
        y = y.unsqueeze(d)
    return y


class _Product(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, n, quotient):
        ctx.save_for_backward(a, b)
        ctx.n, ctx.quotient = n, quotient
        return a / b if quotient else a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        n = ctx.n
        if ctx.quotient:
            ma, mb = (1 / b[:n] + 1 / b[n:]) / 2, -(a[:n] + a[n:]) / (2 * b[:n] * b[n:])
        else:
            ma, mb = (b[:n] + b[n:]) / 2, (a[:n] + a[n:]) / 2
        gx = g[:n]
        return (_to_input((gx * ma).sum_to_size(a[:n].shape)), _to_input((gx * mb).sum_to_size(b[:n].shape)),
                None, None)


def product(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """a * b of two data tensors, with the exact average-gradient multipliers."""
    return _Product.apply(_check(a, n), _check(b, n), n, False)


def quotient(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """a / b of two data tensors, with exact multipliers."""
    return _Product.apply(_check(a, n), _check(b, n), n, True)


def gauss_legendre(steps: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the ``steps``-point Gauss-Legendre rule on [0, 1]."""
    a, w = np.polynomial.legendre.leggauss(int(steps))
    return (torch.tensor((a + 1) / 2, dtype=like.dtype, device=like.device),
            torch.tensor(w / 2, dtype=like.dtype, device=like.device))


class _PathAverage(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, n, steps, *zs):
        y = fn(*zs)
        if not torch.is_tensor(y) or not y.is_floating_point() or y.dim() == 0 or y.shape[0] != 2 * n:
            raise RuleError("a unit without a rule does not return a batch of images and references")
        ctx.fn, ctx.n, ctx.steps = fn, n, steps
        ctx.save_for_backward(*zs)
        return y

    @staticmethod
    def backward(ctx, g):
        zs, n = ctx.saved_tensors, ctx.n
        alpha, weight = gauss_legendre(ctx.steps, g)
        s = len(alpha)

        def col(t: torch.Tensor, d: int) -> torch.Tensor:
            return t.view(s, *[1] * d)

        with torch.enable_grad():
            pts = [(z[n:] + col(alpha, z.dim()) * (z[:n] - z[n:])).flatten(0, 1).detach().requires_grad_(True)
                   for z in zs]
            y = ctx.fn(*pts)
            gy = (col(weight, g.dim()) * g[:n]).flatten(0, 1)
            grads = torch.autograd.grad(y, pts, gy, allow_unused=True)
        out = [_to_input(torch.zeros_like(z[:n]) if gr is None else gr.unflatten(0, (s, n)).sum(0))
               for z, gr in zip(zs, grads)]
        return (None, None, None, *out)


def path_average(fn: Callable[..., torch.Tensor], zs: Sequence[torch.Tensor], n: int, steps: int) -> torch.Tensor:
    """``fn(*zs)`` with the path-averaged gradient of ``fn`` from the reference to the input
    (Gauss-Legendre, ``steps`` nodes) as multipliers."""
    return _PathAverage.apply(fn, n, int(steps), *[_check(z, n) for z in zs])
