"""Declarations of method parameters: type, range, choices; checking and coercion.

Every method declares each of its parameters next to its default, in its registration::

    @register_method("intgrad", ..., defaults={"steps": 64, "rule": "gausslegendre", "seed": 0},
                     params={"steps": integer(min=1), "rule": one_of("riemann", "gausslegendre"), "seed": SEED})

:func:`~interpcli.methods.attribute` checks and coerces every value before calling the method
(the CLI's ``--param`` values arrive JSON-parsed, or as strings): ``"4"`` for an integer is 4,
``"true"`` for a boolean True, ``"null"`` / ``"none"`` None where None is allowed; anything
else out of type or range is a :class:`~interpcli.errors.ConfigError` such as
``method 'intgrad': steps must be an integer >= 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from typing import Any

from ..errors import ConfigError

__all__ = ["Param", "integer", "number", "boolean", "one_of", "text", "SEED", "check_params"]

_TRUE, _FALSE, _NONE = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null")


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter's declaration (build it with :func:`integer`, :func:`number`,
    :func:`boolean`, :func:`one_of` or :func:`text`).

    Attributes:
        type: ``int``, ``float``, ``bool``, ``choice`` or ``str``.
        min, max: bounds of a number (None: unbounded); ``min_open`` / ``max_open`` exclude them.
        choices: the words of a ``choice``; for the other types, words accepted besides a value
            (``fill=mean``, ``incremental=auto``, ``angles=all``).
        nullable: None is allowed (``null`` / ``none`` on the command line).
        whole_from: a ``float`` from this value on must be a whole number (``gds_dim``: a
            fraction below 1, else a number of directions).
        doc: what the value means, when the type does not say it (listings).
    """

    type: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    whole_from: float | None = None
    doc: str = ""

    def describe(self) -> str:
        """What a valid value is, as a phrase: ``an integer >= 1``, ``a number in (0, 1] or null``."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.type == "bool":
            return ", ".join([*self.choices, "true"]) + " or false"
        base = {"int": "an integer", "float": "a number", "str": "a string"}[self.type]
        if self.type in ("int", "float"):
            base += self._range()
        if self.whole_from is not None:
            base += f" (whole from {self.whole_from:g} on)"
        parts = [base, *self.choices, *(["null"] if self.nullable else [])]
        return base if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]

    def _range(self) -> str:
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return f" in {'(' if self.min_open else '['}{lo:g}, {hi:g}{')' if self.max_open else ']'}"
        if lo is not None:
            return f" {'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f" {'<' if self.max_open else '<='} {hi:g}"
        return ""

    def coerce(self, value: Any) -> Any:
        """The value in its declared type; ``ValueError`` when it is not valid."""
        if value is None or (self.nullable and isinstance(value, str) and value.strip().lower() in _NONE):
            if self.nullable:
                return None
            raise ValueError
        if isinstance(value, str) and value in self.choices:
            return value
        if self.type == "choice":
            raise ValueError
        if self.type == "str":
            return _string(value)
        if self.type == "bool":
            return _boolean(value)
        v = _integer(value) if self.type == "int" else _real(value)
        if not self._in_range(v):
            raise ValueError
        if self.whole_from is not None and v >= self.whole_from:
            if v != int(v):
                raise ValueError
            return int(v)
        return v

    def _in_range(self, v: float) -> bool:
        above = self.min is None or (v > self.min if self.min_open else v >= self.min)
        below = self.max is None or (v < self.max if self.max_open else v <= self.max)
        return above and below

    def as_dict(self) -> dict[str, Any]:
        """The declaration as JSON (``interp methods --json``): type, and what is set of the rest."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "type" and v is not None and v is not False and v != () and v != "":
                out[f.name] = list(v) if isinstance(v, tuple) else v
        out["accepts"] = self.describe()
        return out


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # `-p layer=0`, JSON-parsed
        return str(value)
    raise ValueError


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise ValueError


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = value.strip()
        try:
            return int(value)
        except ValueError:
            value = float(value)  # "4.0"; "abc" raises
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    try:
        return operator.index(value)  # int, numpy integers, integer 0-d tensors
    except TypeError:
        raise ValueError from None


def _real(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    try:
        v = float(value)  # numbers, numeric strings, numpy scalars, 0-d tensors
    except (TypeError, ValueError, RuntimeError, OverflowError):  # OverflowError: an int of 400 digits
        raise ValueError from None
    if not math.isfinite(v):
        raise ValueError
    return v


def integer(min: int | None = None, max: int | None = None, *, words: tuple[str, ...] = (),
            nullable: bool = False, doc: str = "") -> Param:
    """An integer in [min, max], or one of ``words``."""
    return Param("int", min=min, max=max, choices=tuple(words), nullable=nullable, doc=doc)


def number(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           words: tuple[str, ...] = (), nullable: bool = False, whole_from: float | None = None,
           doc: str = "") -> Param:
    """A finite number (a float) within the bounds given (>= ``ge`` or > ``gt``, <= ``le`` or
    < ``lt``), or one of ``words``."""
    return Param("float", min=gt if gt is not None else ge, max=lt if lt is not None else le,
                 min_open=gt is not None, max_open=lt is not None, choices=tuple(words), nullable=nullable,
                 whole_from=whole_from, doc=doc)


def boolean(*, words: tuple[str, ...] = (), doc: str = "") -> Param:
    """True or False (also ``"true"`` / ``"false"``, ``yes`` / ``no``, 1 / 0), or one of ``words``."""
    return Param("bool", choices=tuple(words), doc=doc)


def one_of(*choices: str, doc: str = "") -> Param:
    """One of the words ``choices``."""
    return Param("choice", choices=tuple(choices), doc=doc)


def text(*, nullable: bool = False, doc: str = "") -> Param:
    """Any string (checked where it is used, e.g. a layer name), or None if ``nullable``."""
    return Param("str", nullable=nullable, doc=doc)


SEED = integer(doc="random seed (as --seed)")


def check_params(method: str, declared: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked against the method's declarations and coerced to their types;
    an unknown name or a bad value is a :class:`~interpcli.errors.ConfigError`."""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise ConfigError(f"method '{method}' has no parameter {', '.join(unknown)}; its parameters: {valid}")
    out = {}
    for name, value in params.items():
        try:
            out[name] = declared[name].coerce(value)
        except ValueError:
            raise ConfigError(f"method '{method}': {name} must be {declared[name].describe()}, got {value!r}") \
                from None
    return out
