"""Writing a run's manifest: this run's entries, merged with the entries of tasks it did not cover."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .. import __version__, store
from ..plan import Plan
from ..recipe import display_path
from ..store.manifest import Entry
from .load import read_manifest, stat_key
from .migrate import MANIFEST_FORMAT, upgrade
from .results import STATUSES, RecipeResult, TaskReport
from .state import RunState


def write_run_manifest(plan: Plan, result: RecipeResult, state: RunState, units: list[int], started_at: str,
                    provider_name: str, *, shard: tuple[int, int] | None = None) -> None:
    recipe = plan.recipe
    out_dir = recipe.output_dir
    own = store.manifest_name(shard)
    manifest = state.prev_manifest  # read at the start; read again only if it was written since
    if state.prev_manifest_stat != stat_key(out_dir / own):
        manifest = read_manifest(out_dir / own)
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
            entries.extend(_entries(r, state))
    if kept:  # the reports are in plan order already (units in order, steps in order, images by index)
        order: dict[tuple[Any, Any], int] = {(t.step.id, t.unit.key): n for n, t in enumerate(plan.tasks)}
        entries.sort(key=lambda e: (order.get((e.get("step"), e.get("key")), 1 << 30), e.get("index", 0)))
    seen = Counter(e.get("status") for e in entries)
    counts = {s: seen[s] for s in (*STATUSES, "failed_checks")}
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
    else:
        store.write_manifest(out_dir, doc, previous_ok=manifest is not None, shard=shard, previous=manifest)
    if orphans:
        store.add_orphans(out_dir, orphans)
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


def _entries(r: TaskReport, state: RunState) -> list[dict[str, Any]]:
    t, o = r.task, r.outcome
    if o.status == "pending":  # its retry is in a batch: the try now at its path, as recorded (failed_checks)
        return [e for e in o.entries if e.get("sha256")]
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
            error = base.get("error") or {"type": o.status, "status": None, "code": None, "message": o.reason}
            kept = state.prev_by_path.get(rel.lower())
            if kept is not None and kept.get("sha256") and state.files.sha_rel(rel) == kept.get("sha256"):
                # the image an earlier run made is still at the path: its entry (fingerprint, sha256)
                # stays, so it is reused if the recipe goes back; it carries this run's status and error
                entry = {**kept, "status": o.status, "error": error}
                entry.pop("stale", None)
                entry.pop("current_sha256", None)
            entry["path"] = rel
            entry["error"] = error
        elif o.status != "failed":
            entry.setdefault("error", None)
            if o.status == "skipped":
                entry["error"] = {"type": "skipped", "status": None, "code": None, "message": o.reason}
        if o.stale:
            entry["stale"] = True
        out.append(entry)
    return out
