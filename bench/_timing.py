"""What every benchmark script shares: its JSON report writer, and the median time of a call
after a warm-up, by the wall clock or (``use_clock("process")``) by the process's CPU time, the
robust measure on a shared machine when torch runs one thread (``--threads 1``): other
processes' load does not count."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

_CLOCK = time.perf_counter


def use_clock(name: str) -> None:
    """``"wall"`` (default) or ``"process"`` (CPU time of this process, all its threads)."""
    global _CLOCK
    _CLOCK = {"wall": time.perf_counter, "process": time.process_time}[name]


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = _CLOCK()
        fn()
        ts.append(_CLOCK() - t0)
    return statistics.median(ts)


def timed_pair(fa, fb, repeats: int) -> tuple[list[float], list[float]]:
    """Times of ``fa`` and ``fb`` run alternately (after one warm-up each), so that load from
    other processes hits both alike."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, ts in ((fa, ta), (fb, tb)):
            t0 = _CLOCK()
            fn()
            ts.append(_CLOCK() - t0)
    return ta, tb


def write_report(path: Path, report: dict) -> None:
    """``report`` as indented JSON at ``path`` (folders made), and one line saying where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
