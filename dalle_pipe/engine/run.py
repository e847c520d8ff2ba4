"""A recipe's run, as one visible sequence: select -> gate -> lock -> load -> decide every unit ->
make what is decided (through a sink) -> write the manifest.

Units run concurrently on worker threads; each unit's steps run in order. One limiter paces every
paid request. Every task is decided once: the no-op path decides and settles every unit on one
thread; a unit with work resumes on a worker from its first task to make, with that task's decision
as it was taken, and the tasks after it are decided when their inputs land. `plan`, `--dry-run`
and `--check` stop after deciding (`preview`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
from collections.abc import Callable, Mapping

from .. import store
from ..errors import CostLimitError, DiskSpaceError
from ..plan import Plan, Task
from ..prices import PriceTable
from ..providers.base import Provider
from ..throttle import Clock, Limits
from .bulk import bulk
from .checked import Take, checked
from .decide import decide
from .decision import Decision, Kind, Outcome
from .estimate import unknown_price_message
from .load import load_state
from .make import settle, take
from .record import write_run_manifest
from .results import RecipeResult, RunOptions, TaskReport
from .shards import run_locks, shard_provider
from .signals import Interrupt, trap_signals
from .state import RunState
from .units import estimate, limits_for, select_units

Progress = Callable[[TaskReport], None]
#: Pending decisions a worker takes as they are (a WAIT is decided again once its inputs land).
_CARRIED = frozenset(Kind) - {Kind.WAIT}


def run_plan(plan: Plan, opts: RunOptions, prices: PriceTable, provider_name: str,
             provider_factory: Callable[[], Provider] | None,
             progress: Progress | None = None,
             on_wait: Callable[[str, float], None] | None = None, *,
             clock: Clock | None = None) -> RecipeResult:
    """Run (or check / dry-run) one recipe's plan; `clock` paces and backs off (the system's by default)."""
    recipe = plan.recipe
    out_dir = recipe.output_dir
    result = RecipeResult(recipe, out_dir)
    units = select_units(plan, opts)
    limits = limits_for(recipe, opts)
    if provider_name == "offline":  # a local renderer has no account to protect
        limits = Limits(None, None, max(limits.concurrency, os.cpu_count() or 1), 0, limits.timeout_s)
    writing = opts.mode == "run"
    if writing and opts.max_cost is not None:  # the gate reads only: nothing is written when it refuses
        dry_opts = RunOptions(**{**opts.__dict__, "mode": "dry"})
        with bulk():
            gate(plan, units, load_state(plan, dry_opts, prices, provider_name, None, limits, None), opts.max_cost)
    locks = run_locks(out_dir, opts.shard) if writing else []
    if locks:
        out_dir.mkdir(parents=True, exist_ok=True)
    state: RunState | None = None
    try:
        for lock in locks:
            lock.acquire()
        with bulk():  # the parsed manifests: no collection right after the parse
            state = load_state(plan, opts, prices, provider_name, shard_provider(provider_factory, opts.shard),
                               limits, on_wait, clock)
        result.estimate_usd = estimate(plan, prices, units, provider=provider_name)
        started_at = store.utc_now_iso()
        reports: dict[int, list[TaskReport]] = {}
        ledger = state.ledger
        interrupt = Interrupt(lambda: ledger.stop("interrupted"))
        with trap_signals(interrupt):
            with bulk():  # every unit decided (all of them but in a direct run): see engine/bulk.py
                pending = _fast_pass(plan, units, state, reports, progress)
            if pending and opts.space_check and provider_name != "offline":
                short = store.check_free_space(out_dir, _disk_needs(pending, limits.concurrency))
                if short is not None:
                    raise DiskSpaceError(short, "free some space, or run with --no-space-check")
            if pending:
                reports.update(drive(plan, pending, state, take, progress, limits.concurrency, opts.fail_fast))
        result.reports = [r for i in units for r in reports.get(i, [])]
        result.interrupted = interrupt.fired
        result.stop_reason = state.ledger.stop_reason
        result.endpoint_host = state.endpoint_host
        result.spent_usd = round(state.ledger.spent, 6)
        if state.limiter is not None:
            st = state.limiter.stats
            result.waits = {"rate_limited": float(st.rate_limited), "waits_s": float(st.waits_s)}
        if writing:
            _leftovers(state, result, sharded=opts.shard is not None)
            _write_manifest(plan, result, state, units, started_at, provider_name, opts.shard)
    finally:
        for lock in reversed(locks):
            lock.release()
        if state is not None and state._provider is not None:
            state._provider.close()
    return result


def _write_manifest(plan: Plan, result: RecipeResult, state: RunState, units: list[int], started_at: str,
                    provider_name: str, shard: tuple[int, int] | None) -> None:
    try:
        write_run_manifest(plan, result, state, units, started_at, provider_name, shard=shard)
    except OSError as exc:
        if not store.is_disk_error(exc):
            raise
        problem = store.DiskError.from_exception(exc, what="the manifest")
        result.stop_reason = (f"{result.stop_reason}; " if result.stop_reason else "") + (
            f"{problem.message()}: the journal keeps what was made, and a rerun with space "
            f"writes the manifest without paying")


def _leftovers(state: RunState, result: RecipeResult, *, sharded: bool) -> None:
    """Paid bytes saved by an earlier run that no task placed: gone when their image is in place
    anyway (the same fingerprint, up to date), else reported (never deleted: they were paid for)."""
    if not state.saved or state.objects is None:
        return
    placed = {e.get("fingerprint") for r in result.reports if r.outcome.status in ("generated", "up_to_date")
              for e in r.outcome.entries}
    mine = {r.task.id for r in result.reports}
    for (fp, index), record in sorted(state.saved.items(), key=lambda kv: (kv[1].task, kv[0][1])):
        if fp in placed:
            with contextlib.suppress(OSError):
                state.objects.discard(record)
        elif not sharded or record.task in mine:  # a shard reports only its own tasks' bytes
            result.unplaced.append(f"{record.task} #{index}")


Price = Callable[[Task, Decision, Outcome, Mapping[str, Outcome]], float | None]


def gate(plan: Plan, units: list[int], state: RunState, max_cost: float, *, price: Price | None = None,
         preview: Take | None = None, verb: str = "run") -> float:
    """--max-cost: the cost of what a run would send, from the same decisions and estimate `plan`
    shows (`price`: a sink's own price, e.g. a batch's); refuses when over, or when a price is not known."""
    costs: list[float] = []
    look = preview or _preview
    for i in units:
        done: dict[str, Outcome] = {}
        for task in plan.tasks_of(i):
            d = decide(state, task, done)
            out = checked(state, task, done, d, look)
            done[task.step.id] = out
            if out.status == "pending" and out.in_scope:
                cost = out.cost if price is None else price(task, d, out, done)
                if cost is None:
                    raise CostLimitError(unknown_price_message(task),
                                         f"add its price with --prices FILE, or {verb} without --max-cost")
                costs.append(cost)
    todo = round(sum(costs), 6)
    if todo > max_cost:
        raise CostLimitError(f"estimated cost ${todo:.2f} exceeds --max-cost ${max_cost:.2f}",
                             f"raise --max-cost, or {verb} fewer units with --limit or --items")
    return todo


def _preview(state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
    return settle(state, task, d)


def _fast_pass(plan: Plan, units: list[int], state: RunState, reports: dict[int, list[TaskReport]],
               progress: Progress | None) -> dict[int, list[TaskReport]]:
    """Decide every unit on this thread, settling what needs no request (the no-op rerun path).
    Return the rest: for each unit with work, its reports up to its first task to make, whose
    decision a worker then takes as it is."""
    if state.mode != "run":
        for i in units:
            reports[i] = run_unit(plan, i, state, take, progress)
        return {}
    fast = state.view(reuse_only=True)
    rest: dict[int, list[TaskReport]] = {}
    for i in units:
        trial = run_unit(plan, i, fast, take, None)
        if any(r.outcome.status == "pending" for r in trial):
            rest[i] = trial
        else:
            reports[i] = trial
            if progress:
                for r in trial:
                    progress(r)
    return rest


def _disk_needs(rest: dict[int, list[TaskReport]], concurrency: int) -> int:
    """An upper bound of what making the pending tasks writes (plus the answers in flight in the store)."""
    shapes: list[tuple[int | None, int | None, str | None]] = []
    for trial in rest.values():
        for r in trial:
            if r.outcome.status == "pending":
                w, h = r.task.size or (None, None)
                shapes.extend([(w, h, r.task.fmt)] * r.task.n)
    if not shapes:
        return 0
    largest = max(store.bytes_for_images([s]) for s in shapes)
    return store.bytes_for_images(shapes) + largest * concurrency


def run_unit(plan: Plan, index: int, state: RunState, sink: Take, progress: Progress | None,
             decided: list[TaskReport] | None = None) -> list[TaskReport]:
    """Decide and carry out one unit's tasks in step order through `sink`. `decided` holds the fast
    pass's reports: those before the first pending one are kept, and that one's decision is taken
    as it is (the tasks after it are decided again, now that their inputs land)."""
    done: dict[str, Outcome] = {}
    out: list[TaskReport] = []
    carried: Decision | None = None
    for r in decided or []:
        if r.outcome.status == "pending":
            d = r.outcome.decision
            carried = d if d is not None and d.kind in _CARRIED else None
            break
        done[r.task.step.id] = r.outcome
        out.append(r)
        if progress:
            progress(r)
    for task in plan.tasks_of(index)[len(out):]:
        d = carried if carried is not None else decide(state, task, done)
        carried = None
        outcome = checked(state, task, done, d, sink)
        done[task.step.id] = outcome
        report = TaskReport(task, outcome)
        out.append(report)
        if progress:
            progress(report)
    return out


def drive(plan: Plan, units: Mapping[int, list[TaskReport] | None], state: RunState, sink: Take,
          progress: Progress | None, concurrency: int, fail_fast: bool) -> dict[int, list[TaskReport]]:
    """Run units on worker threads through `sink` (each from where the fast pass left it, if it did)."""
    lock = threading.Lock()
    reports: dict[int, list[TaskReport]] = {}

    def report(r: TaskReport) -> None:
        with lock:
            if progress:
                progress(r)
            if fail_fast and r.outcome.status == "failed":
                state.ledger.stop("stopped at the first failure (--fail-fast)")

    # two units per request slot keep the next one ready; with one slot, units go strictly in order
    workers = max(1, min(concurrency * 2 if concurrency > 1 else 1, len(units), 64))
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit") as pool:
        futures = {pool.submit(run_unit, plan, i, state, sink, report, decided): i for i, decided in units.items()}
        remaining = set(futures)
        while remaining:
            finished, remaining = cf.wait(remaining, timeout=0.2)
            for fut in finished:
                reports[futures[fut]] = fut.result()
    return reports
