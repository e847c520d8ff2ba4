"""What one run shares while it runs: its immutable context, and the ledger of spend and the stop reason."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..prices import PriceTable
from ..throttle import Clock


@dataclass(frozen=True)
class RunContext:
    """What a run was asked to do, fixed before it starts: the mode, the selection, the prices, the
    clock and the provider's identity (name and endpoint host)."""

    prices: PriceTable
    provider_name: str
    mode: str = "run"  # run | check | dry
    force: bool = False
    selected_steps: frozenset[str] | None = None  # --only
    reuse_only: bool = False  # run mode's fast pass: place reused files, make nothing
    endpoint_host: str | None = None  # host[:port] this run sends to (None: offline)
    clock: Clock | None = None
    max_retries: int = 6
    timeout_s: float = 300.0


class Ledger:
    """Spend against --max-cost, and the first reason the run stopped sending. Thread-safe; shared
    by every worker (and every view of the run state) of one recipe's run."""

    def __init__(self, max_cost: float | None = None, on_stop: Callable[[], None] | None = None) -> None:
        self.max_cost = max_cost
        self.on_stop = on_stop  # e.g. the limiter's stop: no worker waits for a slot after this
        self.spent = 0.0
        self.stop_reason: str | None = None
        self.disk_error: str | None = None  # what the disk refused, once it did
        self._lock = threading.Lock()

    def charge(self, cost: float) -> None:
        with self._lock:
            self.spent += cost

    def over_budget(self) -> bool:
        """Actual spend reached --max-cost: no new request."""
        return self.max_cost is not None and self.spent >= self.max_cost

    def stop(self, reason: str) -> None:
        """Stop sending (the first reason is kept); in-flight requests still land."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        if self.on_stop is not None:
            self.on_stop()

    def disk_failed(self, message: str) -> None:
        """The disk refused a write: send nothing more; answers in flight go to the store or the rescue folder."""
        with self._lock:
            if self.disk_error is None:
                self.disk_error = message
        self.stop(f"stopped sending: {message}")
