"""Typed errors.  The library raises these; the CLI turns them into one line on stderr.

Every subclass of :class:`InterpError` is a problem with the user's input (a name, a
number, a path, a file) and maps to exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'lenet'?"`` when ``name`` is close to one of ``valid`` (a typo), else ``""``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class InterpError(Exception):
    """Base class of every error caused by bad input; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class UnknownName(InterpError):
    """A name that is not in a registry (architecture, dataset, method)."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        super().__init__(f"unknown {kind} '{name}'{did_you_mean(name, valid) or ';'} valid {kind}s: "
                         f"{', '.join(sorted(valid))}")
        self.name = name
        self.valid = valid


class ArtifactError(InterpError):
    """A checkpoint or artifact that is missing, corrupt, truncated or of an unknown format."""


class DatasetError(InterpError):
    """A dataset whose files are missing or malformed."""


class ConfigError(InterpError):
    """An impossible option value (non-positive epochs, a fold out of range, ...)."""
