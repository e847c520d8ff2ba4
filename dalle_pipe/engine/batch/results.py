"""What `run --batch` and `batch status|collect` report: per recipe, and as one exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import reduce_exit
from ...providers.batches import BatchInfo
from ..results import RecipeResult, TaskReport, check_counts


@dataclass
class BatchRun:
    """What `run --batch` or `batch collect` did for one recipe."""

    result: RecipeResult
    submitted: list[dict[str, Any]] = field(default_factory=list)  # state docs submitted now
    collected: list[dict[str, Any]] = field(default_factory=list)  # state docs collected now
    running: list[dict[str, Any]] = field(default_factory=list)  # state docs still in flight afterwards
    requests: int = 0  # requests submitted now
    in_batch: int = 0  # tasks already in a batch (not sent again)
    waiting: int = 0  # tasks waiting for a batch's outputs
    landed: int = 0  # images written from batch outputs now
    failed_lines: int = 0  # lines of batches collected now that failed
    errors: list[str] = field(default_factory=list)  # submissions that failed
    notes: list[str] = field(default_factory=list)  # e.g. edits sent directly: the server refused JSON edits
    wrote_manifest: bool = False

    @property
    def name(self) -> str:
        return self.result.recipe.name


def summary(run: BatchRun, collect: bool) -> str:
    c = run.result.counts
    parts = []
    if collect:
        parts.append(f"collected {len(run.collected)} batch(es): {run.landed} image(s) landed, "
                     f"{run.failed_lines} request(s) failed")
    if run.submitted:
        ids = ", ".join(str(d.get("batch_id") or d.get("token")) for d in run.submitted)
        parts.append(f"submitted {run.requests} request(s) in {len(run.submitted)} batch(es) ({ids})")
    counts = (f"{c['generated']} generated, {c['up_to_date']} up to date, {c['failed']} failed, "
              f"{c['skipped']} skipped, {c['modified']} modified")
    if run.result.count("failed_checks"):
        counts += f", {run.result.count('failed_checks')} failed checks"
    parts.append(counts)
    checks = check_counts(run.result)
    if any(checks.values()):
        failed = f"{checks['failed']} failed" + (f" ({checks['warn']} warn)" if checks["warn"] else "")
        parts.append(f"checks: {checks['passed']} passed, {failed}, {checks['not_judged']} not judged")
    if run.in_batch:
        parts.append(f"{run.in_batch} in a batch")
    if run.waiting:
        parts.append(f"{run.waiting} waiting for a batch")
    if run.running:
        parts.append(f"{len(run.running)} batch(es) still running" if collect else
                     f"{len(run.running)} batch(es) to collect (`dalle-pipe batch collect`)")
    if run.result.spent_usd:
        parts.append(f"${run.result.spent_usd:.2f} spent")
    if run.result.stop_reason:
        parts.append(f"({run.result.stop_reason})")
    if collect and not run.wrote_manifest:
        parts.append("nothing new: nothing written")
    retries = [f"  {r.task.id}: {r.outcome.reason}" for r in retrying(run)]
    return "\n".join([f"{run.name}: " + "; ".join(parts), *(f"  note: {n}" for n in run.notes), *retries])


def retrying(run: BatchRun) -> list[TaskReport]:
    """Tasks whose image failed its checks and whose retry is in a batch (pending, in scope)."""
    return [r for r in run.result.reports if r.outcome.status == "pending" and r.outcome.in_scope]


def as_json(runs: list[BatchRun], exit_code: int) -> dict[str, Any]:
    return {"exit_code": exit_code, "recipes": [{
        "name": r.name, "output_dir": str(r.result.output_dir), "counts": r.result.counts,
        "submitted": [_public(d) for d in r.submitted], "collected": [_public(d) for d in r.collected],
        "running": [_public(d) for d in r.running], "requests": r.requests, "in_batch": r.in_batch,
        "waiting": r.waiting, "landed": r.landed, "failed_lines": r.failed_lines, "errors": r.errors,
        "notes": r.notes,
        "spent_usd": r.result.spent_usd, "estimate_usd": r.result.estimate_usd,
        "checks": check_counts(r.result), "failed_checks": r.result.count("failed_checks"),
        "failed": [{"task": t.task.id, "error": t.outcome.reason} for t in r.result.reports
                   if t.outcome.status in ("failed", "failed_checks")],
        "retrying": [{"task": t.task.id, "reason": t.outcome.reason} for t in retrying(r)],
    } for r in runs]}


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {"token": doc.get("token"), "batch_id": doc.get("batch_id"), "status": doc.get("status"),
            "wave": doc.get("wave"), "endpoint": doc.get("endpoint"), "request_counts": doc.get("request_counts"),
            "requests": len(doc.get("requests") or {}), "collected_at": doc.get("collected_at")}


def exit_code(runs: list[BatchRun], *, collect: bool) -> int:
    """0 all done; 1 failures (failed checks too), a submission that failed, or (collect) batches still in
    flight; 130 interrupted."""
    return reduce_exit(
        interrupted=any(r.result.interrupted for r in runs),
        failed=any(r.result.count("failed") or r.result.count("failed_checks") or r.errors
                   or (r.result.stop_reason and r.result.stop_reason != "interrupted") for r in runs),
        work_left=collect and any(r.running for r in runs))


@dataclass
class StatusLine:
    recipe: str
    doc: dict[str, Any]
    info: BatchInfo | None

    @property
    def status(self) -> str:
        if self.doc.get("collected_at"):
            return "collected"
        return self.info.status if self.info is not None else str(self.doc.get("status"))

    def format(self) -> str:
        doc = self.doc
        counts = (self.info.request_counts if self.info is not None else doc.get("request_counts")) or {}
        total = counts.get("total") or len(doc.get("requests") or {})
        text = (f"{self.recipe}: {doc.get('batch_id') or doc.get('token')} (wave {doc.get('wave')}, "
                f"{doc.get('endpoint')}): {self.status}, {counts.get('completed', 0)}/{total} done, "
                f"{counts.get('failed', 0)} failed")
        if doc.get("shard"):
            text += f", shard {doc['shard'][0]}/{doc['shard'][1]}"
        if self.info is not None and self.info.errors:
            text += f" ({'; '.join(self.info.errors[:3])})"
        return text
