"""The multinomial elastic net and its regularisation path, in PyTorch (CPU or GPU).

    lams = lambda_grid(lambda_max(X, y, C, alpha=0.99), k=100, eps=1e-3)
    for sol in elastic_net_path(X, y, C, lams, alpha=0.99):
        sol.W, sol.b, sol.objective, sol.kkt     # (C, d), (C,), the objective, the KKT residual

The objective (glm_saga, Wong, Santurkar & Madry, ICML 2021, https://arxiv.org/abs/2105.04857),
on standardised features X (N, d), labels y, weights W (C, d) and an unregularised bias b::

    F(W, b) = (1/N) Σ_n CE(W x_n + b, y_n) + λ [ α ||W||_1 + (1 - α)/2 ||W||_F² ]

(``group=True``: the group lasso, Σ_j ||W[:, j]||_2 — one group per feature across classes —
instead of ||W||_1).  It is scikit-learn's ``LogisticRegression(l1_ratio=α, C=1/(λN))`` divided
by N.

Solver: full-batch accelerated proximal gradient (FISTA, Beck & Teboulle 2009) with
backtracking (the step may also grow again, never beyond the global bound 1/L,
L = ||[X, 1]||² / (2N)), function-value restart (O'Donoghue & Candès 2015), and along the path
warm starts plus the sequential strong rule (Tibshirani et al. 2012): at λ_k only the features
that are non-zero or whose gradient at the previous solution is at least α(2λ_k - λ_{k-1}) enter
the solve; the KKT conditions of the others are checked on the full gradient afterwards and
violators are added (so the answer is that of the full problem).  Stopping: glm_saga's
look-behind rule per iteration — the best objective improved by less than ``tol`` (relative)
over the last ``lookbehind`` iterations — or a zero proximal-gradient step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence

import torch

from ..errors import ConfigError

__all__ = ["Solution", "SolverConfig", "cross_entropy", "penalty", "objective", "prox", "lambda_max", "lambda_grid",
           "lipschitz_bound", "gradient", "kkt_residual", "solve", "elastic_net_path", "check_alpha", "check_epsilon"]


@dataclasses.dataclass
class SolverConfig:
    """Stopping and speed settings of :func:`solve` (the objective's settings are arguments)."""

    tol: float = 1e-6          # relative objective improvement over `lookbehind` iterations that counts as none
    lookbehind: int = 10       # iterations without that improvement before stopping (glm_saga: epochs, 3)
    max_iter: int = 20000      # iterations per λ
    screen: bool = True        # the strong rule along a path (the answer is the same; only faster)
    single_thread_below: int = 1 << 22  # N·d·C under which a CPU solve runs on one thread (see _threads)


@dataclasses.dataclass
class Solution:
    """One point of the path: weights (C, d) and bias (C,) in the standardised space, on the
    device of X, and how the solver got there."""

    lam: float
    W: torch.Tensor
    b: torch.Tensor
    objective: float
    kkt: float
    iterations: int
    converged: bool
    seconds: float
    step: float  # the last accepted 1/step constant (L), handed to the next λ
    grad: torch.Tensor | None = None  # the full data-term gradient at (W, b): the next strong rule


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
        raise ConfigError(f"alpha must be in (0, 1] (1: the lasso; glm_saga's default 0.99), got {alpha!r}")
    return float(alpha)


def check_epsilon(eps: float) -> float:
    if not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise ConfigError(f"epsilon (the smallest λ as a fraction of λ_max) must be in (0, 1), got {eps!r}")
    return float(eps)


# ---------------------------------------------------------------------------------------------- objective

def cross_entropy(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits Z (N, C) and labels y (N,), accumulated in float64."""
    per = torch.logsumexp(Z, 1) - Z.gather(1, y[:, None])[:, 0]
    return per.double().mean()


def penalty(W: torch.Tensor, lam: float, alpha: float, group: bool = False) -> torch.Tensor:
    """λ [α ||W||_1 + (1-α)/2 ||W||²] (group: Σ_j ||W[:, j]||_2 for ||W||_1), float64."""
    W = W.double()
    l1 = W.norm(dim=0).sum() if group else W.abs().sum()
    return lam * (alpha * l1 + 0.5 * (1 - alpha) * (W * W).sum())


def objective(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lam: float, alpha: float,
              group: bool = False) -> float:
    """The elastic-net objective F(W, b) above."""
    return float(cross_entropy(torch.addmm(b, X, W.T), y) + penalty(W, lam, alpha, group))


def prox(V: torch.Tensor, step: float, lam: float, alpha: float, group: bool = False) -> torch.Tensor:
    """The proximal operator of step·penalty: soft thresholding at step·λ·α (group: of each
    feature's column norm), then shrinkage by 1 / (1 + step·λ·(1-α)) (glm_saga's prox)."""
    t = step * lam * alpha
    if group:
        norm = V.norm(dim=0, keepdim=True)
        out = V * (1 - t / norm.clamp_min(1e-30)).clamp_min(0)
    else:
        out = torch.sign(V) * (V.abs() - t).clamp_min(0)
    return out / (1 + step * lam * (1 - alpha))


def _one_hot(y: torch.Tensor, c: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, c).to(dtype)


def gradient(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the mean cross-entropy: (∂W (C, d), ∂b (C,))."""
    return _gradient_t(X.T.contiguous(), y, W, b)


# The solver keeps features as Xt (d, N) and logits as (C, N): a softmax / logsumexp over the
# C rows of N columns is ~10x faster on the CPU than over C entries of N rows.

def _logits_t(W: torch.Tensor, b: torch.Tensor, Xt: torch.Tensor) -> torch.Tensor:
    return torch.addmm(b[:, None], W, Xt)


def _ce_t(Z: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy, logsumexp per column) of logits Z (C, N)."""
    lse = torch.logsumexp(Z, 0)
    return float((lse - Z.gather(0, y[None])[0]).double().mean()), lse


def _gradient_t(Xt: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    Z = _logits_t(W, b, Xt)
    P = (Z - torch.logsumexp(Z, 0)).exp()
    P[y, torch.arange(len(y), device=y.device)] -= 1
    P /= len(y)
    return P @ Xt.T, P.sum(1)


def lambda_max(X: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, group: bool = False) -> float:
    """The smallest λ whose solution is W = 0: max_jc |Σ_n x_nj (y_nc - ȳ_c)| / (N α) (group:
    the norm over c), glm_saga's ``maximum_reg`` / α: at W = 0 the optimal bias gives softmax(b)
    = ȳ (the class frequencies), where the gradient is -Xᵀ(Y - Ȳ)/N; W = 0 stays optimal while
    every entry (group: column) of it is within λα.  A relative margin of 1e-6 absorbs rounding
    (the solver's gradient is computed in X's precision)."""
    Y = _one_hot(y, num_classes, X.dtype)
    G = X.T @ (Y - Y.mean(0))  # (d, C)
    top = G.norm(dim=1).max() if group else G.abs().max()
    return float(top) / len(X) / check_alpha(alpha) * (1 + 1e-6)


def lambda_grid(lam_max: float, k: int = 100, eps: float = 1e-3) -> list[float]:
    """K values log-spaced from ``lam_max`` down to eps·lam_max (glm_saga's grid, without its
    extra λ = 0)."""
    if k < 1:
        raise ConfigError(f"the path needs at least one λ, got k={k}")
    check_epsilon(eps)
    if k == 1:
        return [float(lam_max)]
    return [float(lam_max) * eps ** (i / (k - 1)) for i in range(k)]


def lipschitz_bound(X: torch.Tensor, iters: int = 30) -> float:
    """L = σ_max([X, 1])² / (2N) (power iteration, 2 % margin): the cross-entropy's Hessian in
    the logits is at most 1/2, so its gradient in (W, b) is L-Lipschitz."""
    n = len(X)
    v = torch.ones(X.shape[1] + 1, dtype=X.dtype, device=X.device)
    v /= v.norm()
    s = torch.zeros((), dtype=X.dtype)
    for _ in range(iters):
        u = X @ v[:-1] + v[-1]
        w = torch.cat([X.T @ u, u.sum()[None]])
        s = w.norm()
        v = w / s.clamp_min(1e-30)
    return 1.02 * float(s) / (2 * n) + 1e-12


def kkt_residual(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lam: float, alpha: float,
                 group: bool = False, grad: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """The largest entry of the minimum-norm subgradient of F at (W, b): 0 at the optimum.

    Bias: |∂b|.  A non-zero weight: |g + λα sign(w) + λ(1-α) w|; a zero one: max(0, |g| - λα)
    (group: the same with a column's norm)."""
    gW, gb = grad if grad is not None else gradient(X, y, W, b)
    smooth = gW + lam * (1 - alpha) * W
    if group:
        norm = W.norm(dim=0)
        nz = norm > 0
        on = (smooth[:, nz] + lam * alpha * W[:, nz] / norm[nz]).norm(dim=0)
        off = (gW[:, ~nz].norm(dim=0) - lam * alpha).clamp_min(0)
    else:
        nz = W != 0
        on = (smooth + lam * alpha * torch.sign(W))[nz].abs()
        off = (gW[~nz].abs() - lam * alpha).clamp_min(0)
    parts = [gb.abs().max(), *(t.max() for t in (on, off) if t.numel())]
    return float(torch.stack([p.to(torch.float64) for p in parts]).max())


# ---------------------------------------------------------------------------------------------- solver

def solve(X: torch.Tensor, y: torch.Tensor, lam: float, alpha: float, W: torch.Tensor, b: torch.Tensor, *,
          group: bool = False, cfg: SolverConfig | None = None, L: float | None = None,
          L_max: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float, int, bool]:
    """Minimise F from (W, b) (all features of X): FISTA with backtracking and restart.

    Returns (W, b, L, iterations, converged); ``L`` is the last accepted curvature estimate
    (pass it to the next call to start from there)."""
    L_max = L_max if L_max is not None else lipschitz_bound(X)
    return _fista(X.T.contiguous(), y, lam, alpha, W, b, group, cfg or SolverConfig(), L, L_max)


def _fista(Xt: torch.Tensor, y: torch.Tensor, lam: float, alpha: float, W: torch.Tensor, b: torch.Tensor,
           group: bool, cfg: SolverConfig, L: float | None, L_max: float) -> tuple[torch.Tensor, torch.Tensor, float,
                                                                                      int, bool]:
    L = min(L or L_max, L_max)
    n = Xt.shape[1]
    cols = torch.arange(n, device=y.device)
    slack = 1e-6 if Xt.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-13
    Zx = _logits_t(W, b, Xt)
    Fx = _ce_t(Zx, y)[0] + float(penalty(W, lam, alpha, group))
    Wy, by, Zy = W, b, Zx
    theta = 1.0
    best = [Fx]
    for it in range(1, cfg.max_iter + 1):
        fy, lse = _ce_t(Zy, y)
        R = (Zy - lse).exp()
        R[y, cols] -= 1
        R /= n
        gW, gb = R @ Xt.T, R.sum(1)
        L = max(0.8 * L, 1e-12 * L_max)  # let the step grow again where the curvature is lower
        while True:
            W1 = prox(Wy - gW / L, 1 / L, lam, alpha, group)
            b1 = by - gb / L
            Z1 = _logits_t(W1, b1, Xt)
            f1 = _ce_t(Z1, y)[0]
            dW, db = W1 - Wy, b1 - by
            lin = torch.stack([(gW * dW).sum() + (gb * db).sum(), (dW * dW).sum() + (db * db).sum()]).tolist()
            if f1 <= fy + lin[0] + 0.5 * L * lin[1] + slack * abs(fy) or L >= L_max:
                break
            L = min(2 * L, L_max)
        F1 = f1 + float(penalty(W1, lam, alpha, group))
        if F1 > Fx:  # restart the momentum
            theta, Wy, by, Zy = 1.0, W1, b1, Z1
        else:
            theta1 = (1 + math.sqrt(1 + 4 * theta * theta)) / 2
            beta = (theta - 1) / theta1
            Wy, by, Zy = W1 + beta * (W1 - W), b1 + beta * (b1 - b), Z1 + beta * (Z1 - Zx)
            theta = theta1
        W, b, Zx, Fx = W1, b1, Z1, F1
        best.append(min(best[-1], F1))
        if lin[1] == 0.0:  # a zero proximal-gradient step: a fixed point
            return W, b, L, it, True
        if len(best) > cfg.lookbehind and best[-1 - cfg.lookbehind] - best[-1] <= cfg.tol * abs(best[-1]):
            return W, b, L, it, True
    return W, b, L, cfg.max_iter, False


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside (None: unchanged).  A small problem's ops
    take microseconds, where waking and joining threads costs more than the work; on a busy
    machine (shared cores) it costs milliseconds per op."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _strong_set(grad: torch.Tensor | None, W: torch.Tensor, lam: float, lam_prev: float | None, alpha: float,
                group: bool) -> torch.Tensor:
    """Features kept by the sequential strong rule (and every non-zero one): (d,) bool."""
    keep = (W != 0).any(0)
    if grad is None or lam_prev is None:
        return torch.ones_like(keep)
    score = grad.norm(dim=0) if group else grad.abs().amax(0)
    return keep | (score >= alpha * (2 * lam - lam_prev))


def _violators(grad: torch.Tensor, active: torch.Tensor, lam: float, alpha: float, group: bool) -> torch.Tensor:
    score = grad.norm(dim=0) if group else grad.abs().amax(0)
    margin = 1e-5 if grad.dtype == torch.float32 else 1e-10
    return ~active & (score > lam * alpha * (1 + margin))


def elastic_net_path(X: torch.Tensor, y: torch.Tensor, num_classes: int, lams: Sequence[float], alpha: float, *,
                     group: bool = False, cfg: SolverConfig | None = None, W0: torch.Tensor | None = None,
                     b0: torch.Tensor | None = None, L0: float | None = None, lam_prev: float | None = None,
                     grad0: torch.Tensor | None = None) -> Iterator[Solution]:
    """Solve at each λ of ``lams`` in turn, each warm-started from the one before, yielding a
    :class:`Solution` per λ.

    Start (default): W = 0 and the bias of the class log-frequencies, the exact solution at
    λ_max.  A path resumed after λ_{i-1} passes that point's ``W0``, ``b0``, ``L0`` (its
    ``step``), ``lam_prev`` and ``grad0`` (its ``grad``), and continues exactly as an
    uninterrupted run would."""
    cfg = cfg or SolverConfig()
    check_alpha(alpha)
    n, d = X.shape
    if len(y) != n:
        raise ConfigError(f"{n} feature rows but {len(y)} labels")
    dev, dt = X.device, X.dtype
    if W0 is None:
        freq = torch.bincount(y, minlength=num_classes).to(dt) / n
        W0 = torch.zeros(num_classes, d, dtype=dt, device=dev)
        b0 = freq.clamp_min(1e-12).log()
        b0 = b0 - b0.mean()
    W, b = W0.to(dev, dt), b0.to(dev, dt)
    Xt = X.T.contiguous()
    L_max = lipschitz_bound(X)
    L = L0 or L_max
    grad = grad0.to(dev, dt) if grad0 is not None else None
    threads = 1 if dev.type == "cpu" and n * d * num_classes < cfg.single_thread_below else None
    for lam in lams:
        with _threads(threads):
            sol = _path_point(Xt, y, lam, lam_prev, alpha, W, b, L, L_max, grad, group, cfg)
        yield sol
        W, b, L, grad, lam_prev = sol.W, sol.b, sol.step, sol.grad, lam


def _path_point(Xt: torch.Tensor, y: torch.Tensor, lam: float, lam_prev: float | None, alpha: float,
                W: torch.Tensor, b: torch.Tensor, L: float, L_max: float, grad: torch.Tensor | None, group: bool,
                cfg: SolverConfig) -> Solution:
    """The solution at ``lam`` warm-started from (W, b), with the strong rule and KKT repair."""
    t0 = time.perf_counter()
    d, dev = Xt.shape[0], Xt.device
    active = _strong_set(grad, W, lam, lam_prev, alpha, group) if cfg.screen else \
        torch.ones(d, dtype=torch.bool, device=dev)
    iters, converged = 0, True
    while True:
        idx = active.nonzero()[:, 0]
        Xa = Xt if len(idx) == d else Xt[idx]
        Wa, b, L, k, ok = _fista(Xa, y, lam, alpha, W[:, idx], b, group, cfg, L, L_max)
        iters, converged = iters + k, converged and ok
        W = torch.zeros_like(W)
        W[:, idx] = Wa
        gW, gb = _gradient_t(Xt, y, W, b)
        bad = _violators(gW, active, lam, alpha, group)
        if not bad.any():
            break
        active = active | bad
    X = Xt.T
    kkt = kkt_residual(X, y, W, b, lam, alpha, group, grad=(gW, gb))
    F = _ce_t(_logits_t(W, b, Xt), y)[0] + float(penalty(W, lam, alpha, group))
    return Solution(lam, W, b, F, kkt, iters, converged, time.perf_counter() - t0, L, gW)
