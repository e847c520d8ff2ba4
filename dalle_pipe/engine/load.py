"""What a run knows before it decides: the manifests, the journals, the file index, the paid-bytes store."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import store
from ..plan import Plan
from ..prices import PriceTable
from ..providers.base import Provider
from ..recipe import Recipe
from ..throttle import Clock, Limiter, Limits, SystemClock
from .context import Ledger, RunContext
from .hosts import endpoint_host, is_loopback, reusable_from
from .migrate import upgrade
from .results import RunOptions
from .shards import journal_for
from .state import RunState


def stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest by path (its own name), or None when absent; a corrupt one raises."""
    if not path.is_file():
        return None
    return store.read_manifest_file(path)


def _other_manifests(out_dir: Path, own: str) -> list[dict[str, Any]]:
    """The other manifests of the folder (other shards, or the whole run's), oldest first; corrupt or
    unreadable ones are skipped: they only feed reuse."""
    return store.read_manifests(p for p in store.manifest_files(out_dir) if p.name != own)


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


def load_state(plan: Plan, opts: RunOptions, prices: PriceTable, provider_name: str,
                provider_factory: Callable[[], Provider] | None, limits: Limits,
                on_wait: Callable[[str, float], None] | None, clock: Clock | None = None) -> RunState:
    out_dir = plan.recipe.output_dir
    own = store.manifest_name(opts.shard)
    manifest_stat = stat_key(out_dir / own)
    manifest = read_manifest(out_dir / own)
    prev = upgrade(list((manifest or {}).get("entries", [])), (manifest or {}).get("format"))
    others = [e for d in _other_manifests(out_dir, own) for e in upgrade(d.get("entries", []), d.get("format"))
              if isinstance(e, dict)]
    orphans = upgrade(store.read_orphans(out_dir), None)
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
