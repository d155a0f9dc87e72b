"""Ctrl-C and SIGTERM held off while a rollback runs: a half-undone change is worse than a late exit."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from ops import console


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C (and SIGTERM) during a rollback: say so and finish the rollback first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hold(signum, _frame):
        console.note("rolling back: the interrupt waits until the rollback has finished")

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
