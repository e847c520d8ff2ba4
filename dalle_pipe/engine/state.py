"""What the tasks of one recipe's run share: the context, the ledger, and what is already known."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import store
from ..prices import PriceTable
from ..providers.base import Provider
from ..store import ObjectRecord, ObjectStore
from ..throttle import Clock, Limiter
from .context import Ledger, RunContext
from .decision import Outcome

PAID_FREE = ("offline", "local")  # providers whose images cost nothing


@dataclass
class Claim:
    """A request one task of this run makes: its twins (the same fingerprint) wait, then copy its images."""

    owner: str  # the task id
    done: threading.Event = field(default_factory=threading.Event)
    entries: list[dict[str, Any]] = field(default_factory=list)  # its images, once made
    failure: Outcome | None = None  # the owner's outcome, when it was not made


@dataclass
class RunState:
    """Everything tasks of one recipe share while it runs: the context (immutable), the ledger, and
    what is known (manifests, journal, file index, paid-bytes store)."""

    ctx: RunContext
    output_dir: Path
    files: store.FileIndex
    reuse: store.ReuseIndex
    prev_by_path: dict[str, dict[str, Any]]
    pending_fps: set[str]
    project_root: Path | None = None
    prev_manifest: dict[str, Any] | None = None  # this run's own manifest as it was at the start
    prev_manifest_stat: tuple[int, int] | None = None
    provider_factory: Callable[[], Provider] | None = None
    limiter: Limiter | None = None
    journal: store.Journal | None = None
    ledger: Ledger = field(default_factory=Ledger)  # spend and the stop reason, shared by every view
    on_wait: Callable[[str, float], None] | None = None
    objects: ObjectStore | None = None  # paid bytes, durable before anything else can fail
    saved: dict[tuple[str, int], ObjectRecord] = field(default_factory=dict)  # (fp, index) -> stored, unplaced
    empty_dir: bool = False  # the output folder did not exist when the run started
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.Lock = field(default_factory=threading.Lock)
    claims: dict[str, Claim] = field(default_factory=dict)  # fingerprint -> the task of this run making it
    planned: dict[str, str] = field(default_factory=dict)  # previews: fingerprint -> the first task to make it
    _provider: Provider | None = None

    def claim(self, fp: str, task_id: str) -> Claim:
        """The claim on this request: this task's (new or its own), or the earlier one of another task."""
        with self.lock:
            found = self.claims.get(fp)
            if found is None:
                found = self.claims[fp] = Claim(task_id)
            return found

    def view(self, **changes: Any) -> RunState:
        """The same run seen in another mode (`mode="dry"`, `reuse_only=True`): one ledger, one store."""
        return replace(self, ctx=replace(self.ctx, **changes))  # the same lock: it guards the shared dicts

    # the context's fields, read where the decision needs them
    @property
    def mode(self) -> str:
        return self.ctx.mode

    @property
    def force(self) -> bool:
        return self.ctx.force

    @property
    def selected_steps(self) -> frozenset[str] | None:
        return self.ctx.selected_steps

    @property
    def reuse_only(self) -> bool:
        return self.ctx.reuse_only

    @property
    def prices(self) -> PriceTable:
        return self.ctx.prices

    @property
    def provider_name(self) -> str:
        return self.ctx.provider_name

    @property
    def endpoint_host(self) -> str | None:
        return self.ctx.endpoint_host

    @property
    def clock(self) -> Clock | None:
        return self.ctx.clock

    @property
    def max_retries(self) -> int:
        return self.ctx.max_retries

    @property
    def timeout_s(self) -> float:
        return self.ctx.timeout_s

    def provider(self) -> Provider:
        with self.lock:
            if self._provider is None:
                assert self.provider_factory is not None
                self._provider = self.provider_factory()
            return self._provider
