"""Choosing one decision layer on the regularisation path.

    rule = parse_rule("absolute:5")
    i = select_point(points, rule)      # points: per λ, {"nnz", "features_per_class", "val_acc", ...}

Rules (accuracies are fractions in the records, the margins of ``absolute`` and ``relative``
are in percentage points / percent):

- ``absolute:F`` (default ``absolute:5``, the paper's rule): the sparsest point (fewest non-zero
  weights) whose validation accuracy is at least the best one minus F points;
- ``relative:F``: the sparsest point whose validation accuracy is at least (1 - F/100) x the best;
- ``features-per-class:N``: among the points with at most N non-zero weights per class on
  average, the one with the best validation accuracy (then the sparsest);
- ``lambda-index:I``: the I-th point of the path (0 = λ_max; negative counts from the end).

The all-zero layer (at λ_max) is never chosen by the first three rules.  Ties go to the
sparser point, then to the larger λ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["RULES", "Rule", "SelectionError", "parse_rule", "select_point", "describe_point"]

RULES = ("absolute", "relative", "features-per-class", "lambda-index")


class SelectionError(ConfigError):
    """No point of the path satisfies the selection rule; the message names the best available."""


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str
    value: float

    def __str__(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.kind}:{v}"


def parse_rule(text: str, k: int | None = None) -> Rule:
    """``absolute:5`` -> Rule; bad names or values (and, with the path length ``k``, an index
    outside it) raise :class:`~interpcli.errors.ConfigError`."""
    kind, sep, val = str(text).partition(":")
    kind = kind.strip()
    if kind not in RULES or not sep:
        raise ConfigError(f"--select must be RULE:VALUE with RULE one of {', '.join(RULES)} (e.g. absolute:5), "
                          f"got '{text}'")
    try:
        value = float(val)
    except ValueError:
        raise ConfigError(f"--select {kind}: '{val}' is not a number") from None
    if kind in ("absolute", "relative") and not 0 <= value < 100:
        raise ConfigError(f"--select {kind}:F needs 0 <= F < 100 (a loss in points / percent), got {val}")
    if kind == "features-per-class" and not value > 0:
        raise ConfigError(f"--select features-per-class:N needs N > 0, got {val}")
    if kind == "lambda-index":
        if not value.is_integer():
            raise ConfigError(f"--select lambda-index:I needs an integer, got {val}")
        if k is not None and not -k <= value < k:
            raise ConfigError(f"--select lambda-index:{int(value)} is outside the path of {k} points "
                              f"(0..{k - 1}, or -{k}..-1 from the end)")
    return Rule(kind, value)


def describe_point(points: Sequence[dict[str, Any]], i: int) -> str:
    p = points[i]
    return (f"λ index {i} (λ={p['lambda']:.4g}): {p['features_per_class']:.1f} features per class, "
            f"validation accuracy {100 * p['val_acc']:.2f}%")


def _sparsest(points: Sequence[dict[str, Any]], ok: Sequence[int]) -> int:
    return min(ok, key=lambda i: (points[i]["nnz"], i))


def select_point(points: Sequence[dict[str, Any]], rule: Rule | str) -> int:
    """The index of the point ``rule`` picks (see the module's docstring), or a
    :class:`SelectionError` naming the best available point."""
    rule = parse_rule(rule, len(points)) if isinstance(rule, str) else rule
    if not points:
        raise SelectionError("the path is empty")
    if rule.kind == "lambda-index":
        parse_rule(str(rule), len(points))
        return int(rule.value) % len(points)
    live = [i for i, p in enumerate(points) if p["nnz"] > 0]
    if not live:
        raise SelectionError(f"every point of the path is the all-zero layer; nothing satisfies {rule} "
                             "(lower epsilon or give more λ values)")
    best_acc = max(points[i]["val_acc"] for i in live)
    if rule.kind == "absolute":
        ok = [i for i in live if points[i]["val_acc"] >= best_acc - rule.value / 100 - 1e-12]
    elif rule.kind == "relative":
        ok = [i for i in live if points[i]["val_acc"] >= best_acc * (1 - rule.value / 100) - 1e-12]
    else:
        within = [i for i in live if points[i]["features_per_class"] <= rule.value]
        if not within:
            sparsest = _sparsest(points, live)
            raise SelectionError(f"no point of the path has at most {rule.value:g} features per class (--select "
                                 f"{rule}); the sparsest non-empty one is {describe_point(points, sparsest)}")
        top = max(points[i]["val_acc"] for i in within)
        ok = [i for i in within if points[i]["val_acc"] == top]
    return _sparsest(points, ok)
