"""What a run reports: its options, and for each task its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..plan import Task
from ..recipe import Recipe
from .decision import Outcome

STATUSES = ("generated", "up_to_date", "failed", "skipped", "modified")


@dataclass(frozen=True)
class RunOptions:
    mode: str = "run"  # run | check | dry
    force: bool = False
    only: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    limit: int | None = None
    shard: tuple[int, int] | None = None  # (i, n), 1-based i
    concurrency: int | None = None
    fail_fast: bool = False
    max_cost: float | None = None
    space_check: bool = True  # before sending, compare the disk's free space with what the run writes


@dataclass(slots=True)
class TaskReport:
    task: Task
    outcome: Outcome


@dataclass
class RecipeResult:
    recipe: Recipe
    output_dir: Path
    reports: list[TaskReport] = field(default_factory=list)
    stop_reason: str | None = None
    interrupted: bool = False
    estimate_usd: float | None = 0.0
    spent_usd: float = 0.0
    waits: dict[str, float] = field(default_factory=dict)
    endpoint_host: str | None = None  # the host this run sent to (None: offline)
    page_due: bool = False  # the manifest changed (or no page exists): the command layer writes report.html
    manifest: dict[str, Any] | None = None  # the manifest written, and the one before, for the page
    previous: dict[str, Any] | None = None
    unplaced: list[str] = field(default_factory=list)  # paid images saved earlier that no task placed ("task #i")

    def count(self, status: str) -> int:
        return sum(1 for r in self.reports if r.outcome.in_scope and r.outcome.status == status)

    @property
    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in STATUSES}


def check_counts(result: RecipeResult) -> dict[str, int]:
    """The checks of this run's images: passed, failed (of which `warn`), not judged (offline)."""
    counts = {"passed": 0, "failed": 0, "warn": 0, "not_judged": 0}
    for r in result.reports:
        if not r.outcome.in_scope or not r.task.checks:
            continue
        for e in r.outcome.entries:
            for c in e.get("checks") or []:
                passed = c.get("passed") if isinstance(c, dict) else None
                key = "passed" if passed is True else "failed" if passed is False else "not_judged"
                counts[key] += 1
                counts["warn"] += passed is False and c.get("severity") == "warn"
    return counts
