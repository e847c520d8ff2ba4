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
from typing import Any

from . import __version__, store
from .catalog import Unit
from .errors import EXIT_INTERRUPTED, CostLimitError, UsageError
from .execute import Outcome, RunState, process
from .plan import Plan, Task
from .prices import PriceTable, estimate_request
from .providers.base import ImageRequest, ImageResponse, Provider
from .recipe import Recipe, display_path, suggest
from .throttle import Limiter, Limits, SystemClock

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


@dataclass
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


def _limits(recipe: Recipe, opts: RunOptions) -> Limits:
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
    if (provider or plan.recipe.provider.name) == "offline":
        return 0.0
    total = 0.0
    for i in units if units is not None else range(len(plan.units)):
        for task in plan.tasks_of(i):
            if not task.is_api or not task.enabled:
                continue
            cost = estimate_request(prices, task.model or "", task.kind, task.params, batch=batch)
            if cost is None:
                return None
            total += cost
    return round(total, 6)


# --------------------------------------------------------------------------- shards
#
# Shards of one output_dir run side by side (parallel CI jobs): each holds the folder's lock
# shared and its own lock exclusively, keeps its own journal and writes its own manifest
# (manifest.shard-I-of-N.json); a whole run holds the folder's lock exclusively. Reuse, --check
# and the report read every manifest*.json in the folder.

SHARD_MANIFEST_GLOB = "manifest.shard-*-of-*.json"


def shard_suffix(shard: tuple[int, int]) -> str:
    return f"shard-{shard[0]}-of-{shard[1]}"


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``manifest.json``, or a shard's ``manifest.shard-I-of-N.json``."""
    return store.MANIFEST_NAME if shard is None else f"manifest.{shard_suffix(shard)}.json"


def manifest_files(out_dir: Path) -> list[Path]:
    """Every manifest in ``out_dir``: ``manifest.json`` first, then the shards' in name order."""
    main = out_dir / store.MANIFEST_NAME
    shards = sorted(p for p in out_dir.glob(SHARD_MANIFEST_GLOB) if p.is_file())
    return [*([main] if main.is_file() else []), *shards]


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
    from .store.manifest import _parse_manifest

    return _parse_manifest(path)


def _other_manifests(out_dir: Path, own: str) -> list[dict[str, Any]]:
    """The other manifests of the folder (other shards, or the whole run's), oldest first; corrupt ones
    are skipped: they only feed reuse."""
    docs = []
    for path in manifest_files(out_dir):
        if path.name == own:
            continue
        try:
            doc = _read_manifest(path)
        except store.ManifestCorruptError:
            continue
        if doc is not None:
            docs.append(doc)
    return sorted(docs, key=lambda d: str(d.get("finished_at") or ""))


def merged_manifest(out_dir: Path) -> dict[str, Any] | None:
    """One manifest of every manifest in ``out_dir`` (the whole run's and the shards'): entries by
    (step, key, index), the most recently finished manifest winning; None when there is none."""
    paths = manifest_files(out_dir)
    if not paths:
        return None
    docs = [d for d in (_read_manifest(p) for p in paths) if d is not None]
    if len(docs) == 1:
        return docs[0]
    docs.sort(key=lambda d: str(d.get("finished_at") or ""))
    merged: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for doc in docs:
        for e in doc.get("entries", []):
            if isinstance(e, dict):
                merged[(e.get("step"), e.get("key"), e.get("index"))] = e
    entries = list(merged.values())
    head = dict(docs[-1])
    head["started_at"] = min((str(d.get("started_at") or "") for d in docs), default=None)
    head["counts"] = {s: sum(1 for e in entries if e.get("status") == s) for s in STATUSES}
    head["entries"] = entries
    return head


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

    def close(self) -> None:
        self.inner.close()


def shard_provider(factory: Callable[[], Provider] | None,
                   shard: tuple[int, int] | None) -> Callable[[], Provider] | None:
    if factory is None or shard is None or shard[1] == 1:
        return factory
    n = shard[1]
    return lambda: _ShardShare(factory(), n)


class _Interrupt:
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
def _signals(handler: _Interrupt) -> Iterator[None]:
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
             on_wait: Callable[[str, float], None] | None = None) -> RecipeResult:
    """Run (or check / dry-run) one recipe's plan."""
    recipe = plan.recipe
    out_dir = recipe.output_dir
    result = RecipeResult(recipe, out_dir)
    units = select_units(plan, opts)
    limits = _limits(recipe, opts)
    if provider_name == "offline":  # a local renderer has no account to protect
        limits = Limits(None, None, max(limits.concurrency, os.cpu_count() or 1), 0, limits.timeout_s)
    writing = opts.mode == "run"
    if writing and opts.max_cost is not None:  # the gate reads only: nothing is written when it refuses
        dry_opts = RunOptions(**{**opts.__dict__, "mode": "dry"})
        peek = _load_state(plan, dry_opts, prices, provider_name, None, limits, None)
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
        state = _load_state(plan, opts, prices, provider_name, shard_provider(provider_factory, opts.shard),
                            limits, on_wait)
        result.estimate_usd = estimate(plan, prices, units, provider=provider_name)
        started_at = store.utc_now_iso()
        reports: dict[int, list[TaskReport]] = {}
        interrupt = _Interrupt(lambda: state.stop("interrupted"))
        with _signals(interrupt):
            pending = _fast_pass(plan, units, state, reports, progress)
            if pending:
                _parallel(plan, pending, state, reports, progress, limits.concurrency, opts.fail_fast)
        result.reports = [r for i in units for r in reports.get(i, [])]
        result.interrupted = interrupt.fired
        result.stop_reason = state.stop_reason
        result.spent_usd = round(state.spent, 6)
        if state.limiter is not None:
            st = state.limiter.stats
            result.waits = {"rate_limited": float(st.rate_limited), "waits_s": float(st.waits_s)}
        if writing:
            _write_manifest(plan, result, state, units, started_at, provider_name, shard=opts.shard)
    finally:
        for lock in reversed(locks):
            lock.release()
        if state_provider := getattr(locals().get("state"), "_provider", None):
            state_provider.close()
    return result


def _load_state(plan: Plan, opts: RunOptions, prices: PriceTable, provider_name: str,
                provider_factory: Callable[[], Provider] | None, limits: Limits,
                on_wait: Callable[[str, float], None] | None) -> RunState:
    out_dir = plan.recipe.output_dir
    own = manifest_name(opts.shard)
    manifest_stat = _stat_key(out_dir / own)
    manifest = _read_manifest(out_dir / own)
    prev = list((manifest or {}).get("entries", []))
    others = [e for d in _other_manifests(out_dir, own) for e in d.get("entries", []) if isinstance(e, dict)]
    orphans = _load_orphans(out_dir)
    journal_state = None
    journal = None
    own_journal = journal_for(out_dir, opts.shard)
    if opts.mode == "run":
        journal = own_journal
        journal_state = journal.read()
    elif own_journal.path.exists():
        journal_state = own_journal.read()
    landed = journal_state.done_entries if journal_state else []
    others += _other_journal_entries(out_dir, own_journal.path)
    files = store.FileIndex(out_dir)
    reuse = store.ReuseIndex([*orphans, *others, *prev, *landed], files, out_dir)
    by_path = {str(e["path"]).lower(): e for e in [*others, *prev, *landed] if isinstance(e.get("path"), str)}
    pending = {p.fingerprint for p in journal_state.pending} if journal_state else set()
    clock = SystemClock()
    stated = plan.recipe.throttle_stated or provider_name == "offline"
    limiter = Limiter(limits, clock, stated=stated) if opts.mode == "run" else None
    return RunState(
        output_dir=out_dir, project_root=plan.recipe.root.resolve(), provider_name=provider_name, files=files,
        reuse=reuse, prev_by_path=by_path, prev_manifest=manifest, prev_manifest_stat=manifest_stat,
        pending_fps=pending, prices=prices, mode=opts.mode, force=opts.force,
        selected_steps=frozenset(opts.only) if opts.only else None, provider_factory=provider_factory,
        limiter=limiter, journal=journal, clock=clock, max_retries=limits.max_retries,
        timeout_s=limits.timeout_s, max_cost=opts.max_cost, on_wait=on_wait,
    )


def _todo_estimate(plan: Plan, units: list[int], state: RunState) -> float:
    """What the tasks that would actually be sent cost (reused ones are free)."""
    dry = RunState(**{**state.__dict__, "mode": "dry", "lock": threading.Lock()})
    total = 0.0
    for i in units:
        done: dict[str, Outcome] = {}
        for task in plan.tasks_of(i):
            out = process(dry, task, done)
            done[task.step.id] = out
            if out.status == "pending" and task.is_api:
                cost = estimate_request(state.prices, task.model or "", task.kind, task.params)
                total += cost or 0.0
    return total


def _fast_pass(plan: Plan, units: list[int], state: RunState, reports: dict[int, list[TaskReport]],
               progress: Callable[[TaskReport], None] | None) -> list[int]:
    """Resolve every unit that needs no work on this thread (the no-op rerun path); return the rest."""
    if state.mode != "run":
        for i in units:
            reports[i] = _run_unit(plan, i, state, progress)
        return []
    fast = RunState(**{**state.__dict__, "reuse_only": True, "lock": threading.Lock()})
    rest = []
    for i in units:
        trial = _run_unit(plan, i, fast, None)
        if any(r.outcome.status == "pending" for r in trial):
            rest.append(i)
        else:
            reports[i] = trial
            if progress:
                for r in trial:
                    progress(r)
    return rest


def _run_unit(plan: Plan, index: int, state: RunState,
              progress: Callable[[TaskReport], None] | None) -> list[TaskReport]:
    done: dict[str, Outcome] = {}
    out: list[TaskReport] = []
    for task in plan.tasks_of(index):
        outcome = process(state, task, done)
        done[task.step.id] = outcome
        report = TaskReport(task, outcome)
        out.append(report)
        if progress:
            progress(report)
    return out


def _parallel(plan: Plan, units: list[int], state: RunState, reports: dict[int, list[TaskReport]],
              progress: Callable[[TaskReport], None] | None, concurrency: int, fail_fast: bool) -> None:
    lock = threading.Lock()

    def report(r: TaskReport) -> None:
        with lock:
            if progress:
                progress(r)
            if fail_fast and r.outcome.status == "failed":
                state.stop("stopped at the first failure (--fail-fast)")

    workers = max(1, min(concurrency * 2, len(units), 64))
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit") as pool:
        futures = {pool.submit(_run_unit, plan, i, state, report): i for i in units}
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


def _write_manifest(plan: Plan, result: RecipeResult, state: RunState, units: list[int], started_at: str,
                    provider_name: str, *, shard: tuple[int, int] | None = None) -> None:
    recipe = plan.recipe
    out_dir = recipe.output_dir
    own = manifest_name(shard)
    manifest = state.prev_manifest  # read at the start; read again only if it was written since
    if state.prev_manifest_stat != _stat_key(out_dir / own):
        manifest = _read_manifest(out_dir / own)
    prev = list((manifest or {}).get("entries", []))
    covered = {(r.task.step.id, r.task.unit.key) for r in result.reports if r.outcome.in_scope}
    all_tasks = {(t.step.id, t.unit.key) for t in plan.tasks}
    kept: list[dict[str, Any]] = []
    orphans: list[dict[str, Any]] = []
    for e in prev:
        k = (e.get("step"), e.get("key"))
        if k in covered:
            continue
        (kept if k in all_tasks else orphans).append(e)
    entries = kept
    for r in result.reports:
        if r.outcome.in_scope:
            entries.extend(_entries(r))
    order: dict[tuple[Any, Any], int] = {(t.step.id, t.unit.key): n for n, t in enumerate(plan.tasks)}
    entries.sort(key=lambda e: (order.get((e.get("step"), e.get("key")), 1 << 30), e.get("index", 0)))
    counts = {s: sum(1 for e in entries if e.get("status") == s) for s in STATUSES}
    doc = {
        "tool": "dalle-pipe", "version": __version__,
        "recipe": {"path": display_path(recipe.source.path), "name": recipe.name, "sha256": recipe.sha256},
        "provider": provider_name, "started_at": started_at, "finished_at": store.utc_now_iso(),
        "counts": counts, "entries": entries,
    }
    same = (manifest is not None and not orphans and manifest.get("entries") == entries
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
    if same and (out_dir / store.REPORT_NAME).exists():
        return  # a no-op rerun: the page still shows the last run that changed anything
    if os.environ.get("DALLE_PIPE_NO_REPORT") != "1":
        try:
            from .report import write_report
        except ImportError:
            return
        if shard is None and len(manifest_files(out_dir)) == 1:
            write_report(out_dir, manifest=doc, previous=manifest)
        else:
            write_report(out_dir)


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
        defaults: dict[str, Any] = {
            "step": t.step.id, "key": t.unit.key, "index": i, "path": rel, "sha256": None, "width": None,
            "height": None, "format": None, "bytes": None, "provider": None, "model": t.model,
            "endpoint": None, "params": t.params, "prompt": o.prompt, "revised_prompt": None, "inputs": [],
            "fingerprint": None, "request_id": None, "usage": None, "cost_usd": None, "attempts": 0,
            "possible_duplicate_charge": False, "approved": False, "created_at": None, "duration_s": None,
        }
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
