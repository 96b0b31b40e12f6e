"""What every benchmark script shares: the median wall time of a call after a warm-up."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def timed_pair(fa, fb, repeats: int) -> tuple[list[float], list[float]]:
    """Times of ``fa`` and ``fb`` run alternately (after one warm-up each), so that load from
    other processes hits both alike."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, ts in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return ta, tb
