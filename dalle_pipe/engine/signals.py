"""Ctrl-C and SIGTERM: stop sending, let what is in flight land, write the manifest, exit 130."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from ..errors import EXIT_INTERRUPTED


class Interrupt:
    """Turns SIGINT/SIGTERM into a flag the run checks (the second signal aborts at once)."""

    def __init__(self, on_signal: Callable[[], None]) -> None:
        self.fired = False
        self.on_signal = on_signal

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.fired:
            # Abort now, without waiting for in-flight HTTP calls: the journal already holds an intent
            # line for each of them, so a rerun resumes and flags them as possible duplicate charges.
            os.write(2, b"aborted: a rerun resumes from the journal\n")
            os._exit(EXIT_INTERRUPTED)
        self.fired = True
        self.on_signal()


@contextmanager
def trap_signals(handler: Interrupt) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
