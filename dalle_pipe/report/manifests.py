"""The manifests the page is built from, read through the store (never through the engine)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import store
from .build import entry_key


def _merge(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Manifests of one folder as one: entries by (step, key, index), the last finished winning."""
    if len(docs) <= 1:
        return docs[0] if docs else None
    docs = sorted(docs, key=lambda d: str(d.get("finished_at") or ""))
    merged: dict[tuple[str, str, int], Any] = {}
    for doc in docs:
        for e in doc["entries"]:
            if isinstance(e, Mapping):
                merged[entry_key(e)] = e
    return {**docs[-1], "entries": list(merged.values())}


def _read_all(paths: Iterable[Path], *, strict: bool) -> list[dict[str, Any]]:
    docs = []
    for path in paths:
        try:
            docs.append(store.read_manifest_file(path))
        except FileNotFoundError:
            continue
        except (OSError, store.ManifestCorruptError):
            if strict and path.name == store.MANIFEST_NAME:
                raise
    return docs


def load_manifests(output_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(current, previous): manifest.json and the shards' manifests merged, and their previous copies."""
    current = _merge(_read_all(store.manifest_files(output_dir), strict=True))
    state = store.state_dir(output_dir)
    prev_paths = [state / store.PREV_MANIFEST_NAME,
                  *sorted(state.glob(store.SHARD_MANIFEST_GLOB.replace(".json", ".prev.json")))]
    return current, _merge(_read_all(prev_paths, strict=False))
