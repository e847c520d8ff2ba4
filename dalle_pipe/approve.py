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

APPROVABLE = ("generated", "up_to_date", "modified")


@dataclass(frozen=True)
class Approval:
    """One entry an approve (or --revoke) touched."""

    recipe: str
    task: str  # step@key
    path: str
    changed: bool  # False: it already was in the wanted state


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


def approve_dirs(dirs: Sequence[tuple[str, Path]], selectors: Sequence[str], *,
                 revoke: bool = False) -> list[Approval]:
    """Approve (or revoke) the entries the selectors pick in each (recipe name, output_dir).

    All or nothing: every selector must pick at least one image, else UsageError (exit 2) with a
    did-you-mean and nothing is written. Each manifest is rewritten atomically under its run lock;
    ``manifest.prev.json`` is left alone, so the review page still compares with the last run.
    """
    if not selectors:
        raise UsageError("name at least one KEY or KEY/STEP to approve",
                         "e.g. dalle-pipe approve mug-01/hero")
    with ExitStack() as stack:
        docs: list[tuple[str, Path, dict[str, Any]]] = []
        for name, out_dir in dirs:
            if not (out_dir / store.MANIFEST_NAME).is_file():
                continue
            stack.enter_context(store.RunLock(out_dir))
            doc = store.load_manifest(out_dir)
            if doc is not None:
                docs.append((name, out_dir, doc))
        entries = [e for _, _, doc in docs for e in doc["entries"] if isinstance(e, dict)]
        for sel in selectors:
            picked = [e for e in entries if matches(sel, str(e.get("key") or ""), str(e.get("step")))]
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
        done: list[Approval] = []
        for name, out_dir, doc in docs:
            touched = False
            for e in doc["entries"]:
                if not isinstance(e, dict) or not any(
                        matches(sel, str(e.get("key") or ""), str(e.get("step"))) for sel in selectors):
                    continue
                if not revoke and not (e.get("status") in APPROVABLE and e.get("sha256")):
                    continue
                changed = bool(e.get("approved")) == revoke or (not revoke and "current_sha256" in e)
                if changed:
                    e["approved"] = not revoke
                    if revoke:
                        e.pop("stale", None)
                    elif "current_sha256" in e:  # approving a hand-edited file adopts it as the image
                        e["sha256"] = e.pop("current_sha256")
                    touched = True
                done.append(Approval(name, _task(e), str(e.get("path")), changed))
            if touched:
                store.atomic_write_json(out_dir / store.MANIFEST_NAME, doc)
                if os.environ.get("DALLE_PIPE_NO_REPORT") != "1":
                    from .report import write_report

                    write_report(out_dir)
    return done


def approve(targets: list[Path], overrides: Overrides, selectors: Sequence[str], *,
            revoke: bool = False) -> list[Approval]:
    """Approve the selected images of the targets' recipes (none means ./pipeline.yaml)."""
    from .app import load

    loaded = load(targets, overrides)
    dirs = [(p.recipe.name, p.recipe.output_dir) for p in loaded.plans]
    return approve_dirs(dirs, selectors, revoke=revoke)
