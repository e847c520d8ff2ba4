"""What a run prints: a live line on a terminal, one summary line elsewhere, JSON on request."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any, TextIO

from .engine.results import RecipeResult, TaskReport, check_counts


class Progress:
    """Per-step counts, rate, ETA and rate-limit waits on one terminal line (stderr)."""

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.total = total
        # sys.stderr read now, not at import: under GitHub Actions it is the guarded stream (ci_output.guard_output)
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.done = 0
        self.made = 0
        self.by_step: Counter[str] = Counter()
        self.started = time.monotonic()
        self.wait_note = ""
        self.lock = threading.Lock()
        self.last = 0.0

    def task(self, report: TaskReport) -> None:
        with self.lock:
            self.done += 1
            self.by_step[report.task.step.id] += 1
            if report.outcome.status == "generated":
                self.made += 1
            if self.live:  # else only counted: a no-op rerun reports 30,000 tasks here
                self._draw()

    def wait(self, reason: str, seconds: float) -> None:
        with self.lock:
            self.wait_note = f" | {reason.replace('_', ' ')} wait {seconds:.1f}s"
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1 and self.done < self.total:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.made / elapsed * 60
        left = self.total - self.done
        eta = f"{left / (self.done / elapsed):.0f}s" if self.done else "?"
        steps = " ".join(f"{k}:{v}" for k, v in self.by_step.items())
        self.stream.write(f"\r\x1b[K{self.done}/{self.total} tasks  {steps}  {rate:.1f} img/min  "
                          f"ETA {eta}{self.wait_note}")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def summary_line(result: RecipeResult) -> str:
    c = result.counts
    text = (f"{result.recipe.name}: {c['generated']} generated, {c['up_to_date']} up to date, "
            f"{c['failed']} failed, {c['skipped']} skipped, {c['modified']} modified")
    pending = result.count("pending")
    if pending:
        text += f", {pending} to make"
    if result.count("failed_checks"):
        text += f", {result.count('failed_checks')} failed checks"
    checks = check_counts(result)
    if any(checks.values()):
        failed = f"{checks['failed']} failed" + (f" ({checks['warn']} warn)" if checks["warn"] else "")
        text += f"; checks: {checks['passed']} passed, {failed}, {checks['not_judged']} not judged"
    if result.spent_usd:
        text += f", ${result.spent_usd:.2f} spent"
    if result.stop_reason:
        text += f" ({result.stop_reason})"
    return text


def failures(result: RecipeResult) -> list[str]:
    lines = []
    for r in result.reports:
        if r.outcome.status in ("failed", "failed_checks"):
            lines.append(f"  {r.task.id}: {r.outcome.reason}")
    return lines


MAX_LINES_PER_REASON = 5  # more tasks than this with one reason share one line


def not_made(result: RecipeResult) -> list[str]:
    """Why tasks were kept or skipped rather than made: one line per task, or one line per reason when
    more than MAX_LINES_PER_REASON share it. Left out: `when` is false (the recipe says so), tasks
    outside --only, and stale approvals (they have their own warning line)."""
    groups: dict[tuple[str, str], list[TaskReport]] = {}
    for r in result.reports:
        o = r.outcome
        if not o.in_scope or o.stale:
            continue
        if o.kept:
            groups.setdefault(("kept", o.kept), []).append(r)
        elif o.status == "skipped" and o.reason != "`when` is false":
            groups.setdefault(("skipped", o.reason or "skipped"), []).append(r)
    lines = []
    for (verb, why), reports in groups.items():
        if len(reports) <= MAX_LINES_PER_REASON:
            for r in reports:
                paths = f" ({', '.join(r.outcome.outputs)})" if verb == "kept" else ""
                lines.append(f"  {r.task.id}: {verb}: {why}{paths}")
            continue
        named = ", ".join(r.task.id for r in reports[:3])
        lines.append(f"  {verb} {len(reports)} tasks: {why} ({named} and {len(reports) - 3} more)")
    return lines


def as_json(results: list[RecipeResult], exit_code: int) -> dict[str, Any]:
    return {
        "exit_code": exit_code,
        "recipes": [
            {
                "name": r.recipe.name, "output_dir": str(r.output_dir), "counts": r.counts,
                "to_make": r.count("pending"), "spent_usd": r.spent_usd, "estimate_usd": r.estimate_usd,
                "stop_reason": r.stop_reason, "checks": check_counts(r), "failed_checks": r.count("failed_checks"),
                "failed": [{"task": t.task.id, "error": t.outcome.reason} for t in r.reports
                           if t.outcome.status in ("failed", "failed_checks")],
                "to_make_tasks": [t.task.id for t in r.reports if t.outcome.status == "pending"],
                "kept": [{"task": t.task.id, "paths": t.outcome.outputs, "reason": t.outcome.kept}
                         for t in r.reports if t.outcome.in_scope and t.outcome.kept],
            }
            for r in results
        ],
    }
