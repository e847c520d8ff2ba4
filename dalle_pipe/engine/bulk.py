"""Bulk phases: planning or deciding a whole catalog without the cyclic garbage collector.

A 100,000-unit plan is millions of small containers that live until the command ends, and the
planner and the decision make (almost) no reference cycles. The collector would still walk every
one of those containers twice as it ages them (a quarter of a `plan`'s time); inside `bulk()` it
does not run, and at the end what was made is moved out of its view (`gc.freeze`). Garbage is
still freed at once by reference counting; only a cycle made inside stays until the process ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """No cycle collection inside; what exists at the end is frozen. Nested: the outermost one acts."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
