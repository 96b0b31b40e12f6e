"""Data-parallel training under ``torchrun``: process group setup, teardown, reductions
(:mod:`interpcli.dist`, shared with the explanation commands)."""

from __future__ import annotations

from ..dist import all_reduce, barrier, setup, teardown

__all__ = ["setup", "teardown", "all_reduce", "barrier"]
