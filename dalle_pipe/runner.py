"""Execute plans: select -> lock -> load state -> resolve/make units concurrently -> manifest.

Units run concurrently on worker threads; each unit's steps run in order. One
limiter paces every paid request. Ctrl-C and SIGTERM stop new work, let
in-flight requests land, write the manifest and exit 130.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, cast

from . import __version__, store
from .catalog import Unit
from .checks.run import checked
from .engine.bulk import bulk
from .engine.context import Ledger, RunContext
from .engine.estimate import sum_costs, task_cost, unknown_price_message
from .engine.hosts import endpoint_host, is_loopback, reusable_from
from .engine.migrate import MANIFEST_FORMAT, upgrade
from .errors import EXIT_INTERRUPTED, CostLimitError, DiskSpaceError, UsageError
from .execute import Outcome, RunState
from .plan import Plan, Task
from .prices import PriceTable
from .providers.base import ImageRequest, ImageResponse, Judge, JudgeRequest, Provider, Verdict
from .recipe import Recipe, display_path, suggest
from .store.manifest import Entry
from .throttle import Clock, Limiter, Limits, SystemClock

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

    def count(self, status: str) -> int:
        return sum(1 for r in self.reports if r.outcome.in_scope and r.outcome.status == status)

    @property
    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in STATUSES}


def select_units(plan: Plan, opts: RunOptions) -> list[int]:
    """Indices of the units this run covers (--items, --shard, --limit)."""
    chosen = list(range(len(plan.units)))
    if opts.items:
        wanted = set(opts.items)
        chosen = [i for i in chosen if _matches(plan.units[i], wanted)]
    if opts.shard:
        k, n = opts.shard
        chosen = [i for i in chosen if _shard_of(plan.units[i].key, n) == k - 1]
    if opts.limit is not None:
        chosen = chosen[: opts.limit]
    return chosen


def _matches(unit: Unit, wanted: set[str]) -> bool:
    return unit.key in wanted or any(unit.key.startswith(w + "/") for w in wanted)


def _shard_of(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def check_selection(plans: list[Plan], opts: RunOptions) -> None:
    """--only names steps that exist; --items names keys that exist: else a usage error."""
    steps = sorted({s.id for p in plans for s in p.recipe.steps})
    for sid in opts.only:
        if sid not in steps:
            raise UsageError(f"--only {sid}: no step {sid!r}", suggest(sid, steps) or f"steps: {', '.join(steps)}")
    if opts.items:
        keys = {u.key for p in plans for u in p.units}
        heads = {k.split("/")[0] for k in keys}
        for item in opts.items:
            if item not in keys and item not in heads and not any(k.startswith(item + "/") for k in keys):
                raise UsageError(f"--items {item}: no unit with that key",
                                 suggest(item, sorted(heads | keys)) or None)


def limits_for(recipe: Recipe, opts: RunOptions) -> Limits:
    t = dict(recipe.throttle)
    share = opts.shard[1] if opts.shard else 1  # each of n shards takes 1/n of the account's rates
    rpm, ipm = t.get("requests_per_minute"), t.get("images_per_minute")
    lim = Limits(requests_per_minute=rpm / share if rpm else rpm, images_per_minute=ipm / share if ipm else ipm,
                 concurrency=int(t.get("concurrency", 4)), max_retries=int(t.get("max_retries", 6)),
                 timeout_s=float(t.get("timeout_s", 300)))
    if opts.concurrency:
        lim = Limits(lim.requests_per_minute, lim.images_per_minute, min(lim.concurrency, opts.concurrency)
                     if "concurrency" in t else opts.concurrency, lim.max_retries, lim.timeout_s)
    # ports: the cap on a server-requested wait (throttle.max_wait_s), carried over the rebuild above.
    lim = dataclasses.replace(lim, max_wait_s=float(t.get("max_wait_s", lim.max_wait_s)))
    return lim


def estimate(plan: Plan, prices: PriceTable, units: list[int] | None = None, *, batch: bool = False,
             provider: str | None = None) -> float | None:
    """The list-price cost of every paid request in the plan (None when some price is unknown)."""
    name = provider or plan.recipe.provider.name
    costs = [task_cost(prices, task, name, batch=batch)
             for i in (units if units is not None else range(len(plan.units)))
             for task in plan.tasks_of(i) if task.is_api and task.enabled]
    return sum_costs(costs)


# --------------------------------------------------------------------------- shards
#
# Shards of one output_dir run side by side (parallel CI jobs): each holds the folder's lock
# shared and its own lock exclusively, keeps its own journal and writes its own manifest
# (manifest.shard-I-of-N.json); a whole run holds the folder's lock exclusively. Reuse, --check
# and the report read every manifest*.json in the folder.

def shard_suffix(shard: tuple[int, int]) -> str:
    return f"shard-{shard[0]}-of-{shard[1]}"


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``manifest.json``, or a shard's ``manifest.shard-I-of-N.json``."""
    return store.MANIFEST_NAME if shard is None else f"manifest.{shard_suffix(shard)}.json"


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest by path (its own name), or None when absent; a corrupt one raises."""
    if not path.is_file():
        return None
    return store.read_manifest_file(path)


def _other_manifests(out_dir: Path, own: str) -> list[dict[str, Any]]:
    """The other manifests of the folder (other shards, or the whole run's), oldest first; corrupt ones
    are skipped: they only feed reuse."""
    docs = []
    for path in store.manifest_files(out_dir):
        if path.name == own:
            continue
        try:
            doc = _read_manifest(path)
        except store.ManifestCorruptError:
            continue
        if doc is not None:
            docs.append(doc)
    return sorted(docs, key=lambda d: str(d.get("finished_at") or ""))


def run_locks(out_dir: Path, shard: tuple[int, int] | None) -> list[store.RunLock]:
    """The locks a writing run takes: the folder's (shared by shards), then the shard's own."""
    if shard is None:
        return [store.RunLock(out_dir)]
    return [store.RunLock(out_dir, shared=True), store.RunLock(out_dir, f"lock.{shard_suffix(shard)}")]


def journal_for(out_dir: Path, shard: tuple[int, int] | None) -> store.Journal:
    journal = store.Journal(out_dir)
    if shard is not None:
        journal.path = journal.path.with_name(f"journal.{shard_suffix(shard)}.jsonl")
    return journal


def _other_journal_entries(out_dir: Path, own: Path) -> list[dict[str, Any]]:
    """Done entries of the other journals (a shard that crashed before writing its manifest)."""
    found: list[dict[str, Any]] = []
    state = out_dir / store.STATE_DIRNAME
    if not state.is_dir():
        return found
    for path in sorted(state.glob("journal*.jsonl")):
        if path.name != own.name:
            other = store.Journal(out_dir)
            other.path = path
            found.extend(other.read().done_entries)
    return found


class _ShardShare:
    """A provider whose learned rate limits are a shard's share: x-ratelimit-limit-* divided by n,
    so n shards that learn the account's limit from the headers pace at 1/n of it each."""

    def __init__(self, inner: Provider, n: int) -> None:
        self.inner = inner
        self.n = n
        self.name = inner.name

    def _scale(self, headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        for k, v in headers.items():
            if k.lower().startswith("x-ratelimit-limit-"):
                try:
                    out[k] = f"{float(v) / self.n:g}"
                except ValueError:
                    continue
        return out

    def send(self, request: ImageRequest) -> ImageResponse:
        from .providers.base import ProviderError

        try:
            resp = self.inner.send(request)
        except ProviderError as exc:
            exc.headers = self._scale(exc.headers)
            raise
        return replace(resp, rate_headers=self._scale(resp.rate_headers))

    def judge(self, request: JudgeRequest) -> Verdict:
        return cast(Judge, self.inner).judge(request)

    def close(self) -> None:
        self.inner.close()


def shard_provider(factory: Callable[[], Provider] | None,
                   shard: tuple[int, int] | None) -> Callable[[], Provider] | None:
    if factory is None or shard is None or shard[1] == 1:
        return factory
    n = shard[1]
    return lambda: _ShardShare(factory(), n)


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


def run_plan(plan: Plan, opts: RunOptions, prices: PriceTable, provider_name: str,
             provider_factory: Callable[[], Provider] | None,
             progress: Callable[[TaskReport], None] | None = None,
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
        peek = load_state(plan, dry_opts, prices, provider_name, None, limits, None)
        todo = _todo_estimate(plan, units, peek)
        if todo > opts.max_cost:
            raise CostLimitError(f"estimated cost ${todo:.2f} exceeds --max-cost ${opts.max_cost:.2f}",
                                 "raise --max-cost, or run fewer units with --limit or --items")
    locks = run_locks(out_dir, opts.shard) if writing else []
    if locks:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for lock in locks:
            lock.acquire()
        state = load_state(plan, opts, prices, provider_name, shard_provider(provider_factory, opts.shard),
                           limits, on_wait, clock)
        result.estimate_usd = estimate(plan, prices, units, provider=provider_name)
        started_at = store.utc_now_iso()
        reports: dict[int, list[TaskReport]] = {}
        interrupt = Interrupt(lambda: state.ledger.stop("interrupted"))
        with trap_signals(interrupt):
            with bulk():  # every unit decided (all of them but in a direct run): see engine/bulk.py
                pending = _fast_pass(plan, units, state, reports, progress)
            if pending and opts.space_check and provider_name != "offline":
                short = store.check_free_space(out_dir, _disk_needs(pending, limits.concurrency))
                if short is not None:
                    raise DiskSpaceError(short, "free some space, or run with --no-space-check")
            if pending:
                _parallel(plan, pending, state, reports, progress, limits.concurrency, opts.fail_fast)
        result.reports = [r for i in units for r in reports.get(i, [])]
        result.interrupted = interrupt.fired
        result.stop_reason = state.ledger.stop_reason
        result.endpoint_host = state.endpoint_host
        result.spent_usd = round(state.ledger.spent, 6)
        if state.limiter is not None:
            st = state.limiter.stats
            result.waits = {"rate_limited": float(st.rate_limited), "waits_s": float(st.waits_s)}
        if writing:
            try:
                write_run_manifest(plan, result, state, units, started_at, provider_name, shard=opts.shard)
            except OSError as exc:
                if not store.is_disk_error(exc):
                    raise
                problem = store.DiskError.from_exception(exc, what="the manifest")
                result.stop_reason = (f"{result.stop_reason}; " if result.stop_reason else "") + (
                    f"{problem.message()}: the journal keeps what was made, and a rerun with space "
                    f"writes the manifest without paying")
    finally:
        for lock in reversed(locks):
            lock.release()
        if state_provider := getattr(locals().get("state"), "_provider", None):
            state_provider.close()
    return result


def load_state(plan: Plan, opts: RunOptions, prices: PriceTable, provider_name: str,
                provider_factory: Callable[[], Provider] | None, limits: Limits,
                on_wait: Callable[[str, float], None] | None, clock: Clock | None = None) -> RunState:
    out_dir = plan.recipe.output_dir
    own = manifest_name(opts.shard)
    manifest_stat = _stat_key(out_dir / own)
    manifest = _read_manifest(out_dir / own)
    prev = upgrade(list((manifest or {}).get("entries", [])), (manifest or {}).get("format"))
    others = [e for d in _other_manifests(out_dir, own) for e in upgrade(d.get("entries", []), d.get("format"))
              if isinstance(e, dict)]
    orphans = upgrade(_load_orphans(out_dir), None)
    journal_state = None
    journal = None
    own_journal = journal_for(out_dir, opts.shard)
    if opts.mode == "run":
        journal = own_journal
        journal_state = journal.read()
    elif own_journal.path.exists():
        journal_state = own_journal.read()
    landed = upgrade(journal_state.done_entries, None) if journal_state else []
    others += _other_journal_entries(out_dir, own_journal.path)
    files = store.FileIndex(out_dir)
    host = None if provider_name == "offline" else endpoint_host(_endpoint_url(plan.recipe, provider_name))
    sources = [*orphans, *others, *prev, *landed]
    if host is not None and not is_loopback(host):  # a local stand-in's images never satisfy a real endpoint
        sources = [e for e in sources if reusable_from(e.get("endpoint_host"), host)]
    reuse = store.ReuseIndex(sources, files, out_dir)
    by_path = {str(e["path"]).lower(): e for e in [*others, *prev, *landed] if isinstance(e.get("path"), str)}
    pending = {p.fingerprint for p in journal_state.pending} if journal_state else set()
    objects = store.ObjectStore(out_dir)
    if opts.mode == "run" and opts.shard is None:  # alone under the lock (shards share the store and may be
        objects.remove_temp_files()                  # writing): a crash's half-written objects go
    saved = {(r.fingerprint, r.index): r for r in objects.pending()}  # oldest wins: pending() is sorted
    clock = clock or SystemClock()
    stated = plan.recipe.throttle_stated or provider_name == "offline"
    limiter = Limiter(limits, clock, stated=stated) if opts.mode == "run" else None
    ctx = RunContext(prices=prices, provider_name=provider_name, mode=opts.mode, force=opts.force,
                     selected_steps=frozenset(opts.only) if opts.only else None, endpoint_host=host, clock=clock,
                     max_retries=limits.max_retries, timeout_s=limits.timeout_s)
    return RunState(
        ctx=ctx, output_dir=out_dir, project_root=plan.recipe.root.resolve(), files=files,
        reuse=reuse, prev_by_path=by_path, prev_manifest=manifest, prev_manifest_stat=manifest_stat,
        pending_fps=pending, provider_factory=provider_factory, limiter=limiter, journal=journal,
        on_wait=on_wait, objects=objects, saved=saved,
        ledger=Ledger(opts.max_cost, limiter.stop if limiter is not None else None), empty_dir=not out_dir.is_dir(),
    )


def _endpoint_url(recipe: Recipe, provider_name: str) -> str | None:
    """The URL requests go to (azure: its endpoint; else --base-url / OPENAI_BASE_URL / the default)."""
    if provider_name == "azure":
        return recipe.base_url or os.environ.get("AZURE_OPENAI_ENDPOINT")
    return recipe.base_url


def _todo_estimate(plan: Plan, units: list[int], state: RunState) -> float:
    """What the tasks a run would send cost, from the same decisions and estimate `plan` shows;
    a price that is not known stops the gate."""
    dry = state.view(mode="dry")
    costs: list[float] = []
    for i in units:
        done: dict[str, Outcome] = {}
        for task in plan.tasks_of(i):
            out = checked(dry, task, done)
            done[task.step.id] = out
            if out.status == "pending" and out.in_scope:
                if out.cost is None:
                    raise CostLimitError(unknown_price_message(task),
                                         "add its price with --prices FILE, or run without --max-cost")
                costs.append(out.cost)
    return round(sum(costs), 6)


def _fast_pass(plan: Plan, units: list[int], state: RunState, reports: dict[int, list[TaskReport]],
               progress: Callable[[TaskReport], None] | None) -> dict[int, list[TaskReport]]:
    """Resolve every unit that needs no work on this thread (the no-op rerun path). Return the rest:
    for each unit with work, its tasks decided so far (up to its first task to make) and the
    decisions of the tasks to make, from which the run's disk needs are known."""
    if state.mode != "run":
        for i in units:
            reports[i] = _run_unit(plan, i, state, progress)
        return {}
    fast = state.view(reuse_only=True)
    rest: dict[int, list[TaskReport]] = {}
    for i in units:
        trial = _run_unit(plan, i, fast, None)
        first = next((n for n, r in enumerate(trial) if r.outcome.status == "pending"), None)
        if first is None:
            reports[i] = trial
            if progress:
                for r in trial:
                    progress(r)
        else:
            rest[i] = trial
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


def _run_unit(plan: Plan, index: int, state: RunState, progress: Callable[[TaskReport], None] | None,
              decided: list[TaskReport] | None = None) -> list[TaskReport]:
    """Decide and make one unit's tasks in step order; `decided` holds the fast pass's reports, of
    which those before the first task to make are kept (the rest are decided again, now that their
    inputs land)."""
    done: dict[str, Outcome] = {}
    out: list[TaskReport] = []
    for r in decided or []:
        if r.outcome.status == "pending":
            break
        done[r.task.step.id] = r.outcome
        out.append(r)
        if progress:
            progress(r)
    for task in plan.tasks_of(index)[len(out):]:
        outcome = checked(state, task, done)
        done[task.step.id] = outcome
        report = TaskReport(task, outcome)
        out.append(report)
        if progress:
            progress(report)
    return out


def _parallel(plan: Plan, units: dict[int, list[TaskReport]], state: RunState,
              reports: dict[int, list[TaskReport]], progress: Callable[[TaskReport], None] | None,
              concurrency: int, fail_fast: bool) -> None:
    lock = threading.Lock()

    def report(r: TaskReport) -> None:
        with lock:
            if progress:
                progress(r)
            if fail_fast and r.outcome.status == "failed":
                state.ledger.stop("stopped at the first failure (--fail-fast)")

    # two units per request slot keep the next one ready; with one slot, units go strictly in order
    workers = max(1, min(concurrency * 2 if concurrency > 1 else 1, len(units), 64))
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit") as pool:
        futures = {pool.submit(_run_unit, plan, i, state, report, decided): i for i, decided in units.items()}
        remaining = set(futures)
        while remaining:
            finished, remaining = cf.wait(remaining, timeout=0.2)
            for fut in finished:
                reports[futures[fut]] = fut.result()


def _load_orphans(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / store.STATE_DIRNAME / "orphans.json"
    if not path.exists():
        return []
    try:
        import json

        data = json.loads(path.read_text("utf-8"))
        return [e for e in data if isinstance(e, dict)]
    except (OSError, ValueError):
        return []


def write_run_manifest(plan: Plan, result: RecipeResult, state: RunState, units: list[int], started_at: str,
                    provider_name: str, *, shard: tuple[int, int] | None = None) -> None:
    recipe = plan.recipe
    out_dir = recipe.output_dir
    own = manifest_name(shard)
    manifest = state.prev_manifest  # read at the start; read again only if it was written since
    if state.prev_manifest_stat != _stat_key(out_dir / own):
        manifest = _read_manifest(out_dir / own)
    prev = upgrade(list((manifest or {}).get("entries", [])), (manifest or {}).get("format"))
    covered = {(r.task.step.id, r.task.unit.key) for r in result.reports if r.outcome.in_scope}
    all_tasks = {(t.step.id, t.unit.key) for t in plan.tasks}
    kept: list[dict[str, Any]] = []
    orphans: list[dict[str, Any]] = []
    for e in prev:
        k = (e.get("step"), e.get("key"))
        if k in covered:
            continue
        (kept if k in all_tasks else orphans).append(e)
    entries = list(kept)
    for r in result.reports:
        if r.outcome.in_scope:
            entries.extend(_entries(r))
    if kept:  # the reports are in plan order already (units in order, steps in order, images by index)
        order: dict[tuple[Any, Any], int] = {(t.step.id, t.unit.key): n for n, t in enumerate(plan.tasks)}
        entries.sort(key=lambda e: (order.get((e.get("step"), e.get("key")), 1 << 30), e.get("index", 0)))
    counts = {s: sum(1 for e in entries if e.get("status") == s) for s in (*STATUSES, "failed_checks")}
    if not counts["failed_checks"]:  # only recipes with checks that failed say so
        del counts["failed_checks"]
    doc = {
        "tool": "dalle-pipe", "version": __version__, "format": MANIFEST_FORMAT,
        "recipe": {"path": display_path(recipe.source.path), "name": recipe.name, "sha256": recipe.sha256},
        "provider": provider_name, "started_at": started_at, "finished_at": store.utc_now_iso(),
        "counts": counts, "entries": entries,
    }
    same = (manifest is not None and not orphans and manifest.get("format") == MANIFEST_FORMAT
            and manifest.get("entries") == entries
            and manifest.get("recipe") == doc["recipe"] and manifest.get("provider") == provider_name)
    if same:
        pass  # nothing changed: the manifest stays byte-identical, so committed outputs do not churn
    elif shard is None:
        store.write_manifest(out_dir, doc, previous_ok=manifest is not None)
    else:
        from .store.manifest import dumps_manifest

        if manifest is not None:  # a shard's previous manifest, like manifest.prev.json
            store.atomic_write_json(out_dir / store.STATE_DIRNAME / own.replace(".json", ".prev.json"), manifest)
        store.atomic_write_bytes(out_dir / own, dumps_manifest(doc).encode("utf-8"))
    if orphans:
        old = _load_orphans(out_dir)
        store.atomic_write_json(out_dir / store.STATE_DIRNAME / "orphans.json", [*old, *orphans][-50_000:])
    state.files.save()
    if state.journal is not None:
        state.journal.reset()
        state.journal.close()
    # the page is the command layer's: it is told what to show (a no-op rerun keeps the last page)
    result.page_due = not (same and (out_dir / store.REPORT_NAME).exists())
    if result.page_due and shard is None and len(store.manifest_files(out_dir)) == 1:
        result.manifest, result.previous = doc, manifest


_ENTRY_KEYS = frozenset({
    "step", "key", "index", "path", "sha256", "width", "height", "format", "bytes", "provider", "model", "endpoint",
    "params", "prompt", "revised_prompt", "inputs", "fingerprint", "request_id", "usage", "cost_usd", "attempts",
    "possible_duplicate_charge", "approved", "created_at", "duration_s", "status", "error",
})


def _entries(r: TaskReport) -> list[dict[str, Any]]:
    t, o = r.task, r.outcome
    out = []
    used: set[int] = set()
    for i, rel in enumerate(t.outputs):
        base = o.entries[i] if i < len(o.entries) else {}
        if o.status == "up_to_date" and id(base) not in used and base.keys() >= _ENTRY_KEYS and not o.stale:
            used.add(id(base))  # the no-op rerun's path: a complete reused entry (already a copy)
            base["status"] = "up_to_date"
            out.append(base)
            continue
        defaults = Entry(t.step.id, t.unit.key, i, rel, model=t.model, params=t.params, prompt=o.prompt).to_json()
        del defaults["status"], defaults["error"]  # set below, from the outcome
        if base and id(base) not in used and len(base) >= len(defaults):
            entry = base  # a complete entry (generated or reused) is used as it is: no copy per image
            for k, v in defaults.items():
                entry.setdefault(k, v)
        else:
            entry = {**defaults, **base}
        used.add(id(base))
        entry["status"] = o.status
        entry["step"], entry["key"], entry["index"] = t.step.id, t.unit.key, i
        if o.status in ("failed", "skipped") and not base.get("sha256"):
            entry["path"] = rel
            entry["error"] = base.get("error") or {"type": o.status, "status": None, "code": None,
                                                   "message": o.reason}
        elif o.status != "failed":
            entry.setdefault("error", None)
            if o.status == "skipped":
                entry["error"] = {"type": "skipped", "status": None, "code": None, "message": o.reason}
        if o.stale:
            entry["stale"] = True
        out.append(entry)
    return out
