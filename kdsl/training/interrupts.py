"""Ctrl-C held back over a run's commit: the checkpoint's rename and the run's record of what it
saved (which an interrupted run reports) happen together, or not at all."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block with SIGINT held, then deliver it (KeyboardInterrupt) once the block is done.

    Without it, a Ctrl-C that came after the checkpoint's rename and before the run recorded the
    epoch as saved made `kdsl train` say "nothing is saved" of a run whose first epoch was on disk.
    The block runs as it is where Python's own handler is not the one installed (a program that
    handles SIGINT itself) or off the main thread (which alone receives signals)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt
