"""The manifests the page is built from, read and merged by the store (never through the engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import store


def load_manifests(output_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(current, previous): manifest.json and the shards' manifests merged, and their previous copies."""
    current = store.merge_manifests(store.read_manifests(store.manifest_files(output_dir), strict=True))
    return current, store.merge_manifests(store.read_manifests(store.previous_manifest_files(output_dir)))
