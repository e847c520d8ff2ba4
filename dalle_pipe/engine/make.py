"""A decision carried out: `settle` does what needs no request (reuse, keep, adopt; a preview of the
rest), `make` sends or renders what is to be made. Both return an `Outcome`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from ..imaging import io as imgio
from ..plan import Task
from ..steps.local import run_local
from .call import make_api
from .decide import decide, twinnable
from .decision import Decision, Kind, Outcome, Resolved
from .place import adopt, common_fields, failed_outcome, place_found, place_saved, write_image
from .state import Claim, RunState

PLACEHOLDER = "approved, but made offline: the approval covered a placeholder"


def settle(state: RunState, task: Task, d: Decision) -> Outcome:
    """What a decision comes to without sending anything: previews (`plan`, `--dry-run`, `--check`,
    the `--max-cost` gate) stop here, and a run's fast pass places what it reuses here."""
    kind, scoped = d.kind, d.in_scope
    if kind is Kind.REUSE:
        entries = [place_found(state, task, i, f) for i, f in enumerate(d.found)]
        return Outcome("up_to_date", entries, d.prompt, entries[0].get("revised_prompt"), in_scope=scoped)
    if kind in (Kind.MAKE, Kind.WAIT, Kind.PLACE_SAVED, Kind.TWIN):
        if kind in (Kind.MAKE, Kind.WAIT) and state.mode != "run" and twinnable(task) and d.fingerprint:
            state.planned.setdefault(d.fingerprint, task.id)  # a preview: a later task with it is a twin
        return Outcome("pending", prompt=d.prompt, in_scope=scoped, reason=d.reason, paths=task.outputs,
                       size=d.size, cost=d.cost, decision=d if state.mode == "run" else None,  # run: carried
                       fingerprint=d.fingerprint)
    if kind is Kind.SKIP:
        return Outcome("skipped", reason=d.reason, in_scope=scoped)
    if kind is Kind.FAIL:
        if d.error_type is not None:
            return failed_outcome(task, d.error_type, d.reason or "", scoped)
        return Outcome("failed", reason=d.reason, in_scope=scoped)
    if kind is Kind.ADOPT:
        return adopt(state, task, d)
    entries = list(d.found)
    if kind is Kind.KEEP_FOREIGN:
        maker = next((e["provider"] for e in entries if e.get("provider") and e.get("provider") != "offline"), None)
        return Outcome("skipped", entries, in_scope=scoped, reason=d.reason,
                       kept=f"made by {maker}; offline never overwrites it")
    if kind is Kind.KEEP_APPROVED and d.placeholder and state.mode == "check":
        return Outcome("pending", paths=task.outputs, in_scope=scoped, reason=PLACEHOLDER)
    stale = any(e.get("stale") for e in entries)
    modified = kind is Kind.KEEP_MODIFIED
    return Outcome(d.status, entries, entries[0].get("prompt"), entries[0].get("revised_prompt"), in_scope=scoped,
                   stale=stale, kept="changed by hand; --force replaces it" if modified
                   else "approved; its recipe or inputs changed since" if stale else None)


def take(state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
    """The direct sink: in a run, make what is to be made now; otherwise settle."""
    if state.mode != "run" or state.reuse_only or d.kind not in (Kind.MAKE, Kind.PLACE_SAVED, Kind.TWIN):
        return settle(state, task, d)
    return make(state, task, d, done)


def make(state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
    """Place saved paid bytes, or make the task: a local step here, an API request through `call`.

    A request is claimed by the task that makes it: another task of this run with the same
    fingerprint (a twin) waits for that claim, then copies its images, or shares its failure."""
    assert d.fingerprint is not None
    if d.kind is not Kind.PLACE_SAVED and not task.is_api:
        if state.ledger.stop_reason is not None:
            return Outcome("skipped", reason=state.ledger.stop_reason)
        return _make_local(state, task, d.resolved(state.output_dir), d.fingerprint, d.prompt, time.monotonic())
    claim = state.claim(d.fingerprint, task.id) if twinnable(task) else None
    if claim is not None and claim.owner != task.id:
        return _twin(state, task, d, claim)
    out: Outcome | None = None
    try:
        out = _make_claimed(state, task, d, done)
        return out
    finally:
        if claim is not None:
            _release(claim, out, task.n)


def _make_claimed(state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
    if d.kind is Kind.PLACE_SAVED:
        placed = place_saved(state, task, d)
        if placed is not None:
            return placed
        d = decide(state, task, done, attempt=d.attempt)  # the bytes were unusable: decided without them
        if d.kind is not Kind.MAKE:
            return take(state, task, d, done)
    if state.ledger.stop_reason is not None:
        return Outcome("skipped", reason=state.ledger.stop_reason)
    assert d.fingerprint is not None and d.endpoint is not None
    return make_api(state, task, d.resolved(state.output_dir), d.fingerprint, d.prompt, d.endpoint, time.monotonic())


def _release(claim: Claim, out: Outcome | None, n: int) -> None:
    """The claimant is done: its images (a snapshot: its own entries change later), or its failure,
    which twins share without sending; twins waiting for it go on."""
    if out is not None and out.status == "generated" and len(out.entries) == n:
        claim.entries = [dict(e) for e in out.entries]
    else:
        claim.failure = out or Outcome("skipped", reason="run stopped")
    claim.done.set()


def _twin(state: RunState, task: Task, d: Decision, claim: Claim) -> Outcome:
    """The same request as another task of this run, which is making it now: wait, then copy its images."""
    claim.done.wait()  # the claimant is inside make() on another worker: it always ends, and sets this
    first = claim.failure
    if first is not None or not claim.entries:
        why = (f"the same request as {claim.owner}, which was not made: "
               f"{first.reason if first is not None and first.reason else 'no image'}")
        if first is None or first.status == "skipped":
            return Outcome("skipped", reason=why, in_scope=d.in_scope)
        return failed_outcome(task, "twin", why, d.in_scope)
    entries = [place_found(state, task, i, e) for i, e in enumerate(claim.entries)]
    return Outcome("up_to_date", entries, d.prompt, entries[0].get("revised_prompt"), in_scope=d.in_scope,
                   reason=f"the same request as {claim.owner}: made once, copied here")


def _make_local(state: RunState, task: Task, inputs: Resolved, fp: str, prompt: str | None,
                started: float) -> Outcome:
    by_role: dict[str, list[Path]] = {}
    for ref, path, _ in inputs:
        by_role.setdefault(ref.role, []).append(path)
    try:
        data = run_local(task.kind, task.params, by_role, task.fmt)
    except (ValueError, OSError, imgio.ImageInputError) as exc:
        return failed_outcome(task, "local", str(getattr(exc, "message", exc)), True)
    entry = write_image(state, task, 0, data)
    entry.update(common_fields(state, task, "local", fp, prompt, inputs, started))
    entry.update({"revised_prompt": None, "request_id": None, "usage": None, "cost_usd": 0.0, "attempts": 1,
                  "possible_duplicate_charge": False})
    return Outcome("generated", [entry], prompt)
