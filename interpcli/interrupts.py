"""Interruption: SIGTERM treated like Ctrl-C, and the few steps a signal must not cut in two.

The ``interp`` entry point calls :func:`handle_signals`: SIGINT raises :class:`KeyboardInterrupt`
as usual and SIGTERM (what ``kill``, ``timeout``, batch schedulers and ``make`` on a second
Ctrl-C send) raises :class:`Terminated`, a ``KeyboardInterrupt`` too, so both take the same
way out: temporary files and folders are removed on the way (``finally`` and ``except
BaseException`` in :mod:`interpcli.artifacts`), and the command exits with ``128 + signal``
(130, 143) and one line.

:func:`deferred` holds both signals while a few system calls run that must all run or none:
renaming an output folder into place (old one away, new one in), creating a temporary file
and taking note of it, removing a temporary folder.  A signal that arrives meanwhile is
delivered as soon as the block ends.  No torch here (``interp info`` stays fast).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Terminated", "handle_signals", "deferred", "last_signal", "exit_code"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"last": 0}  # the last interrupting signal seen by the handlers of handle_signals


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was, like Ctrl-C's ``KeyboardInterrupt``."""


def last_signal() -> int:
    """The number of the last SIGINT / SIGTERM the handlers saw (0: none since :func:`handle_signals`)."""
    return _state["last"]


def exit_code() -> int:
    """The exit code of an interrupted command: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_state["last"] or signal.SIGINT)


def _on_signal(signum: int, frame: Any) -> None:
    _state["last"] = signum
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def handle_signals() -> Callable[[], None]:
    """Make SIGINT and SIGTERM raise (``KeyboardInterrupt``, :class:`Terminated`); returns a
    function that puts the previous handlers back.  Nothing outside the main thread."""
    _state["last"] = 0
    if not _main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _on_signal)

    def restore() -> None:
        for s, h in old.items():
            if h is not None:  # None: a handler installed from C, which cannot be put back
                signal.signal(s, h)

    return restore


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block, then deliver any that came, as the handlers that were
    in place would have (outside the main thread, where Python runs no handler, nothing is held)."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.getsignal(s) for s in SIGNALS}
    old = {s: h for s, h in old.items() if h is not None}
    for s in old:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in dict.fromkeys(pending):
            _deliver(s, old[s])


def _deliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt()
        os.kill(os.getpid(), signum)  # the default action, now that it is back in place
