"""`dalle-pipe approve`: mark images approved in manifest.json, so no run regenerates them.

A selector is ``KEY`` (every step of that unit; a row key also selects all its matrix
combinations), ``KEY/STEP`` (one step of it), or ``STEP`` for a recipe without keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import store
from .errors import UsageError
from .recipe import Overrides, suggest

APPROVABLE = ("generated", "up_to_date", "modified", "failed_checks")


@dataclass(frozen=True)
class Approval:
    """One entry an approve (or --revoke) touched."""

    recipe: str
    task: str  # step@key
    path: str
    changed: bool  # False: it already was in the wanted state
    offline: bool = False  # the image is an offline placeholder: `run --check` against a real provider fails on it


def matches(selector: str, key: str, step: str) -> bool:
    """Whether ``selector`` (KEY, KEY/STEP, or STEP when keys are empty) picks the task step@key."""
    if key == selector or key.startswith(selector + "/"):
        return True
    if key == "" and selector == step:
        return True
    head, sep, tail = selector.rpartition("/")
    return bool(sep) and tail == step and (key == head or key.startswith(head + "/"))


def _candidates(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    names: set[str] = set()
    for e in entries:
        key, step = str(e.get("key") or ""), str(e.get("step"))
        if key:
            names.update((key, key.split("/")[0], f"{key}/{step}"))
        else:
            names.add(step)
    return sorted(names)


def _task(e: Mapping[str, Any]) -> str:
    return f"{e.get('step')}@{e.get('key')}" if e.get("key") else str(e.get("step"))


def _pick(entry: Mapping[str, Any], selectors: Sequence[str]) -> bool:
    return any(matches(sel, str(entry.get("key") or ""), str(entry.get("step"))) for sel in selectors)


def _set(entry: dict[str, Any], revoke: bool) -> bool:
    """Approve (or revoke) one entry in place; whether it changed."""
    if revoke:
        if not entry.get("approved"):
            return False
        entry["approved"] = False
        entry.pop("stale", None)
        return True
    changed = not entry.get("approved") or "current_sha256" in entry
    entry["approved"] = True
    if "current_sha256" in entry:  # approving a hand-edited file adopts it as the image
        entry["sha256"] = entry.pop("current_sha256")
    return changed


def approve_dirs(dirs: Sequence[tuple[str, Path]], selectors: Sequence[str], *,
                 revoke: bool = False) -> list[Approval]:
    """Approve (or revoke) the entries the selectors pick in each (recipe name, output_dir).

    All or nothing: every selector must pick at least one image, else UsageError (exit 2) with a
    did-you-mean and nothing is written. Every manifest of the folder (the whole run's and the
    shards') is updated, each atomically, under the folder's run lock; ``manifest.prev.json`` is
    left alone, so the review page still compares with the last run.
    """
    from .store import manifest_files, read_manifest_file
    from .store.manifest import dumps_manifest

    if not selectors:
        raise UsageError("name at least one KEY or KEY/STEP to approve",
                         "e.g. dalle-pipe approve mug-01/hero")
    with ExitStack() as stack:
        docs: list[tuple[str, Path, Path, dict[str, Any]]] = []
        for name, out_dir in dirs:
            if not manifest_files(out_dir):
                continue
            stack.enter_context(store.RunLock(out_dir))
            docs.extend((name, out_dir, path, read_manifest_file(path)) for path in manifest_files(out_dir))
        entries = [e for *_, doc in docs for e in doc["entries"] if isinstance(e, dict)]
        for sel in selectors:
            picked = [e for e in entries if _pick(e, [sel])]
            if not picked:
                hint = suggest(sel, _candidates(entries))
                if not entries:
                    hint = "no manifest.json yet: run the recipe first"
                raise UsageError(f"{sel}: no image matches",
                                 hint or "name a KEY or KEY/STEP from manifest.json")
            if not revoke and not any(e.get("status") in APPROVABLE and e.get("sha256") for e in picked):
                states = ", ".join(sorted({str(e.get("status")) for e in picked}))
                raise UsageError(f"{sel}: nothing to approve (no image: {states})",
                                 "run the recipe until it makes the image, then approve it")
        done: dict[tuple[str, Any, Any, Any], Approval] = {}
        touched_dirs: list[Path] = []
        for name, out_dir, path, doc in docs:
            touched = False
            for e in doc["entries"]:
                if not isinstance(e, dict) or not _pick(e, selectors):
                    continue
                if not revoke and not (e.get("status") in APPROVABLE and e.get("sha256")):
                    continue
                changed = _set(e, revoke)
                touched = touched or changed
                ident = (name, e.get("step"), e.get("key"), e.get("index"))
                old = done.get(ident)
                done[ident] = Approval(name, _task(e), str(e.get("path")), changed or bool(old and old.changed),
                                       offline=e.get("provider") == "offline")
            if touched:
                store.atomic_write_bytes(path, dumps_manifest(doc).encode("utf-8"))
                if out_dir not in touched_dirs:
                    touched_dirs.append(out_dir)
        if os.environ.get("DALLE_PIPE_NO_REPORT") != "1":
            from .report import write_report

            for out_dir in touched_dirs:
                write_report(out_dir)
    return list(done.values())


def approve(targets: list[Path], overrides: Overrides, selectors: Sequence[str], *,
            revoke: bool = False) -> list[Approval]:
    """Approve the selected images of the targets' recipes (none means ./pipeline.yaml)."""
    from .app import load

    loaded = load(targets, overrides)
    dirs = [(p.recipe.name, p.recipe.output_dir) for p in loaded.plans]
    return approve_dirs(dirs, selectors, revoke=revoke)
