"""Output conventions: stdout carries data (paths, JSON, names), stderr carries people's messages.

Nothing is wrapped or cut when a stream is a pipe or a file (logs, ``make``, ``nohup``, cluster
jobs): the consoles then have no width limit.  Progress on stderr is a live rich bar on a
terminal and a plain line every ~10 s elsewhere (:class:`Ticker`, :class:`JobProgress`);
``$INTERP_PROGRESS`` turns it off (``0``) or sets the seconds between plain lines
(:func:`progress_interval`), without touching tables and logs (``--quiet`` silences those too).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import ConfigError
from ..metadata import dumps

WIDE = 10_000  # the width of a console writing to a pipe or a file: in effect none (tables take what they need)
PLAIN_INTERVAL = 10.0  # seconds between two plain progress lines


class _Console(Console):
    """A rich console that never wraps or cuts at 80 columns when its stream is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        return super().size if self.is_terminal else ConsoleDimensions(WIDE, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = _Console(soft_wrap=True, highlight=False)
err = _Console(stderr=True, highlight=False)


def progress_interval() -> float | None:
    """``$INTERP_PROGRESS``: None when progress is off (``0``, ``off``, ``no``, ``false``), else
    the seconds between two plain progress lines (unset or empty: 10; ``on``, ``yes``, ``true``:
    10; a positive number: that).  Tables, summaries and per-epoch lines are not progress: they
    stay (``--quiet`` silences them too).  Anything else is a ConfigError."""
    raw = os.environ.get("INTERP_PROGRESS", "").strip().lower()
    if raw in ("", "on", "yes", "true"):
        return PLAIN_INTERVAL
    if raw in ("off", "no", "false"):
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"INTERP_PROGRESS must be 0 (no progress) or the seconds between progress lines; "
                          f"got '{os.environ['INTERP_PROGRESS']}'")
    return seconds or None


def duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Ticker:
    """Says when the next plain progress line is due: at most one every ``interval`` seconds."""

    def __init__(self, interval: float = PLAIN_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True


class JobProgress:
    """Progress of a long job on stderr, ``update(done, total, label)`` as it advances: a rich bar
    with the time remaining on a terminal, a plain line every ``interval`` seconds in logs
    (``what: label done/total unit  rate  ETA``; default :func:`progress_interval`, ~10 s),
    nothing when ``quiet`` or ``$INTERP_PROGRESS`` is 0.  A context manager."""

    def __init__(self, what: str, unit: str = "", quiet: bool = False, live: bool | None = None,
                 interval: float | None = None):
        if interval is None:
            interval = progress_interval()
            quiet = quiet or interval is None
        self.what, self.unit, self.quiet = what, unit, quiet
        self.live = err.is_terminal if live is None else live
        self.ticker = Ticker(interval or 0.0)
        self.bar: Progress | None = None
        self.t0 = time.monotonic()

    def __enter__(self) -> JobProgress:
        if not self.quiet and self.live:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=err, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=None)
        self.t0 = time.monotonic()
        return self

    def update(self, done: int, total: int, label: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, description=f"{self.what} {label}".strip())
        elif not self.quiet and self.ticker.due():
            elapsed = time.monotonic() - self.t0
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = (total - done) / rate if rate > 0 else None
            unit = f" {self.unit}" if self.unit else ""
            err.print(f"{self.what}: {label + '  ' if label else ''}{done}/{total}{unit}  {rate:.3g}{unit or ' items'}/s"
                      f"  ETA {duration(eta)}", markup=False)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_json(obj: Any) -> None:
    """Machine-readable output: plain JSON on stdout (no rich markup)."""
    sys.stdout.write(dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def print_paths(paths: list[Any]) -> None:
    """One written file per line on stdout, for shell pipelines."""
    for p in paths:
        sys.stdout.write(f"{p}\n")
    sys.stdout.flush()


def print_table(rows: Sequence[dict[str, str]], title: str = "") -> None:
    """A table of string records on stderr (columns from the first record; nothing truncated).

    The summary tables of the commands that write files go here, since their stdout lists the
    files; ``INTERP_PROGRESS=0 interp CMD ... 2> table.txt`` keeps just the table (and any
    warning)."""
    if not rows:
        return
    table = Table(title=title or None)
    for col in rows[0]:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r.values())
    err.print(table)


def print_listing(rows: list[dict[str, Any]], columns: Sequence[tuple[str, Callable[[dict], str]]],
                  json_out: bool = False) -> None:
    """A registry listing: JSON with ``--json``; a table (nothing truncated) on a terminal; one
    name per line when stdout is a pipe or a file (``interp models | grep bcos``)."""
    if json_out:
        print_json(rows)
    elif not sys.stdout.isatty():
        print_paths([r["name"] for r in rows])
    else:
        table = Table()
        for title, _ in columns:
            table.add_column(title, overflow="fold", no_wrap=title in ("name", "method"))
        for r in rows:
            table.add_row(*[fn(r) for _, fn in columns])
        out.print(table)
