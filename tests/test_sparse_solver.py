"""The elastic-net solver and path of `interp sparsify` (interpcli.sparse.solver) and its
selection rules (interpcli.sparse.select), on small problems.

Reference: scikit-learn's ``LogisticRegression(l1_ratio=α, C=1/(λN), solver="saga")``
minimises N x our objective (multinomial cross-entropy, unpenalised intercept); glm_saga's
proximal operators are transcribed below.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from interpcli.errors import ConfigError
from interpcli.sparse.select import SelectionError, parse_rule, select_point
from interpcli.sparse.solver import (
    SolverConfig,
    elastic_net_path,
    gradient,
    kkt_residual,
    lambda_grid,
    lambda_max,
    objective,
    prox,
)

TIGHT = SolverConfig(tol=1e-13, lookbehind=20, max_iter=100_000)


def _problem(n=200, d=20, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(c, d, generator=g, dtype=torch.float64) * (torch.rand(c, d, generator=g) < 0.3)
    y = torch.multinomial((X @ W.T).softmax(1), 1, generator=g)[:, 0]
    return (X - X.mean(0)) / X.std(0), y


@pytest.mark.parametrize("alpha", [0.8, 1.0])
def test_objective_matches_scikit_learn_saga_and_kkt_holds(alpha):
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = _problem()
    n = len(X)
    lams = lambda_grid(lambda_max(X, y, 3, alpha), 12, 1e-3)
    sols = list(elastic_net_path(X, y, 3, lams, alpha, cfg=TIGHT))
    for s in sols[2::3]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = sklearn.LogisticRegression(C=1 / (s.lam * n), l1_ratio=alpha, solver="saga", tol=1e-10,
                                             max_iter=100_000).fit(X.numpy(), y.numpy())
        Wr, br = torch.tensor(ref.coef_), torch.tensor(ref.intercept_)
        f_ref = objective(X, y, Wr, br, s.lam, alpha)
        assert abs(s.objective - f_ref) <= 1e-4 * abs(f_ref), (s.lam, s.objective, f_ref)
        assert s.objective <= f_ref + 1e-9
        assert s.kkt <= 1e-6 and kkt_residual(X, y, s.W, s.b, s.lam, alpha) == pytest.approx(s.kkt)
        assert torch.equal(s.W != 0, Wr != 0) or (s.W - Wr).abs().max() < 1e-4


@pytest.mark.parametrize("group", [False, True])
def test_lambda_max_is_the_first_all_zero_layer(group):
    X, y = _problem(seed=1)
    lm = lambda_max(X, y, 3, 0.9, group)
    at, below = (next(elastic_net_path(X, y, 3, [lam], 0.9, group=group, cfg=TIGHT)) for lam in (lm, 0.98 * lm))
    assert (at.W == 0).all() and at.kkt < 1e-6
    assert (below.W != 0).any()
    freq = torch.bincount(y, minlength=3).double() / len(y)  # the bias of the all-zero layer: class frequencies
    assert torch.allclose(at.b.softmax(0), freq, atol=1e-8)


@pytest.mark.parametrize("group", [False, True])
def test_warm_started_path_equals_cold_starts_and_screening_changes_nothing(group):
    X, y = _problem(seed=2)
    lams = lambda_grid(lambda_max(X, y, 3, 0.99, group), 8, 1e-2)
    warm = list(elastic_net_path(X, y, 3, lams, 0.99, group=group, cfg=TIGHT))
    unscreened = list(elastic_net_path(X, y, 3, lams, 0.99, group=group,
                                       cfg=SolverConfig(tol=1e-13, lookbehind=20, max_iter=100_000, screen=False)))
    for i, lam in enumerate(lams):
        cold = next(elastic_net_path(X, y, 3, [lam], 0.99, group=group, cfg=TIGHT))
        for other in (cold, unscreened[i]):
            assert other.objective == pytest.approx(warm[i].objective, rel=1e-9)
            assert (other.W - warm[i].W).abs().max() < 1e-4
        assert warm[i].kkt < 1e-6
    if group:  # a feature is used by every class or by none
        used = warm[-1].W != 0
        assert torch.equal(used.any(0), used.all(0))


def test_prox_is_glm_saga_s():
    V = torch.randn(4, 7, dtype=torch.float64)
    t, lam, a = 0.3, 0.5, 0.7
    soft = (V - t * lam * a) * (V > t * lam * a) + (V + t * lam * a) * (V < -t * lam * a)  # glm_saga soft_threshold
    assert torch.allclose(prox(V, t, lam, a), soft / (1 + t * lam * (1 - a)))
    norm = V.norm(p=2, dim=0)
    grp = (V - t * lam * a * V / norm) * (norm > t * lam * a)  # glm_saga group_threshold
    assert torch.allclose(prox(V, t, lam, a, group=True), grp / (1 + t * lam * (1 - a)))


def test_gradient_is_autograd_s():
    X, y = _problem(n=50, d=6, seed=3)
    W = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.cross_entropy(X @ W.T + b, y).backward()
    gW, gb = gradient(X, y, W.detach(), b.detach())
    assert torch.allclose(gW, W.grad) and torch.allclose(gb, b.grad)


def test_lambda_grid_and_bad_alpha_or_epsilon():
    grid = lambda_grid(2.0, 5, 1e-2)
    assert grid[0] == 2.0 and grid[-1] == pytest.approx(0.02) and len(grid) == 5
    for bad in (0.0, -1, 1.5):
        with pytest.raises(ConfigError, match="alpha must be in"):
            lambda_max(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), 2, bad)
    for bad in (0.0, 1.0, 2):
        with pytest.raises(ConfigError, match="epsilon"):
            lambda_grid(1.0, 5, bad)


# ---------------------------------------------------------------------------------------------- selection

def _pt(nnz, val, c=2):
    return {"lambda": 1.0 / (1 + nnz), "nnz": nnz, "features_per_class": nnz / c, "val_acc": val}


PATH = [_pt(0, 0.10), _pt(2, 0.60), _pt(4, 0.80), _pt(6, 0.86), _pt(10, 0.90), _pt(16, 0.91), _pt(30, 0.905)]


@pytest.mark.parametrize("rule, index", [
    ("absolute:5", 3),              # best 0.91: the sparsest >= 0.86
    ("absolute:0", 5),              # the best itself
    ("absolute:20", 2),             # >= 0.71 -> 0.80; never the all-zero layer
    ("absolute:99", 1),
    ("relative:5", 4),              # >= 0.95 x 0.91 = 0.8645: 0.86 is not, 0.90 is
    ("features-per-class:3", 3),    # <= 3 per class: indices 1..3, best val 0.86
    ("features-per-class:8", 5),
    ("lambda-index:0", 0),
    ("lambda-index:-1", 6),
])
def test_selection_rules_pick_the_documented_points(rule, index):
    assert select_point(PATH, rule) == index


def test_selection_ties_go_to_the_sparser_point_and_bad_rules_are_refused():
    path = [_pt(0, 0.1), _pt(4, 0.9), _pt(8, 0.9)]
    assert select_point(path, "absolute:0") == 1
    assert select_point(path, "features-per-class:10") == 1
    for bad, msg in (("sparsest", "RULE:VALUE"), ("bogus:1", "RULE:VALUE"), ("absolute:x", "not a number"),
                     ("absolute:-1", "0 <= F < 100"), ("features-per-class:0", "N > 0"),
                     ("lambda-index:1.5", "integer")):
        with pytest.raises(ConfigError, match=msg):
            parse_rule(bad)
    with pytest.raises(ConfigError, match="outside the path of 3 points"):
        select_point(path, "lambda-index:3")


def test_a_rule_no_point_satisfies_names_the_best_available():
    with pytest.raises(SelectionError, match=r"at most 0.5 features per class.*sparsest non-empty one is λ index 1"):
        select_point(PATH, "features-per-class:0.5")
    with pytest.raises(SelectionError, match="all-zero layer"):
        select_point([_pt(0, 0.1), _pt(0, 0.1)], "absolute:5")
