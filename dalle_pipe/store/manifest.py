"""``manifest.json`` and its previous copy."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dalle_pipe.errors import DallePipeError

from ._fs import MANIFEST_NAME, PREV_MANIFEST_NAME, atomic_write_bytes, atomic_write_chunks, fsync_dir, state_dir


class ManifestCorruptError(DallePipeError):
    """``manifest.json`` exists but is not a JSON object with an ``entries`` list (exit 2).

    Raised by :func:`load_manifest`; ``path`` is the bad file. The runner may stop, or warn and
    carry on from the previous manifest and the journal: :func:`write_manifest` never lets a
    corrupt manifest overwrite ``manifest.prev.json`` (it is kept as ``manifest.corrupt.json``).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: not a valid dalle-pipe manifest: {reason}",
            hint=f"fix or remove it; the previous one is {state_dir(path.parent) / PREV_MANIFEST_NAME}",
        )
        self.path = path


def _parse_manifest(path: Path, raw: bytes | None = None) -> dict[str, Any]:
    if raw is None:
        raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ManifestCorruptError(path, str(e)) from None
    except RecursionError:
        raise ManifestCorruptError(path, "it is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestCorruptError(path, "the top level is not an object")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ManifestCorruptError(path, "it has no 'entries' list")
    if set(map(type, entries)) - {dict}:  # one C-level pass: 10 ms for 300,000 entries
        i = next(i for i, e in enumerate(entries) if type(e) is not dict)
        raise ManifestCorruptError(path, f"entries[{i}] is not an object")
    return doc


def load_manifest(output_dir: Path) -> dict[str, Any] | None:
    """``output_dir/manifest.json``, or None when there is none.

    Raises :class:`ManifestCorruptError` (a ``DallePipeError``) when it exists but is not valid.
    """
    path = Path(output_dir) / MANIFEST_NAME
    try:
        return _parse_manifest(path)
    except FileNotFoundError:
        return None


def load_previous_manifest(output_dir: Path) -> dict[str, Any] | None:
    """``.dalle-pipe/manifest.prev.json``, or None when absent or unreadable (it is only a backup)."""
    try:
        return _parse_manifest(state_dir(Path(output_dir)) / PREV_MANIFEST_NAME)
    except (OSError, ManifestCorruptError):
        return None


def write_manifest(output_dir: Path, manifest: dict[str, Any], *, previous_ok: bool = False) -> None:
    """Copy the current ``manifest.json`` to ``.dalle-pipe/manifest.prev.json``, then write the
    new one atomically. A current manifest that is corrupt goes to
    ``.dalle-pipe/manifest.corrupt.json`` instead, so the good previous copy is kept."""
    output_dir = Path(output_dir)
    path = output_dir / MANIFEST_NAME
    if previous_ok and _link_previous(output_dir, path):
        atomic_write_chunks(path, manifest_chunks(manifest))
        return
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None:
        backup = PREV_MANIFEST_NAME
        if not previous_ok:  # the caller may already have parsed it (a large manifest parses slowly)
            try:
                _parse_manifest(path, old)
            except ManifestCorruptError:
                backup = "manifest.corrupt.json"
        atomic_write_bytes(state_dir(output_dir) / backup, old)
    atomic_write_chunks(path, manifest_chunks(manifest))


def _link_previous(output_dir: Path, path: Path) -> bool:
    """Keep the current manifest as manifest.prev.json by a hard link (no 30 MB copy): the new
    manifest is then written beside it and renamed over the name, so the linked file is untouched."""
    prev = state_dir(output_dir) / PREV_MANIFEST_NAME
    tmp = prev.with_name(f".{prev.name}.link")
    try:
        prev.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, prev)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    fsync_dir(prev.parent)
    return True


def dumps_manifest(manifest: dict[str, Any]) -> str:
    """Top-level keys indented; each entry on one compact line (see :func:`manifest_chunks`)."""
    return "".join(manifest_chunks(manifest))


def manifest_chunks(manifest: dict[str, Any]) -> Iterator[str]:
    """The manifest's text in pieces: top-level keys indented, each entry on one compact line.

    Readable in a diff (one line per image) and fast: json's C encoder only runs without indent,
    and 30,000 indented entries take seconds to format. Written piece by piece, a 25 MB manifest is
    never held as one string.
    """
    yield "{\n"
    items = list(manifest.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        head = f"  {json.dumps(key)}: "
        if key == "entries" and isinstance(value, list) and value:
            yield f"{head}[\n"
            last = len(value) - 1
            for n, e in enumerate(value):
                yield "    " + json.dumps(e, ensure_ascii=False) + (",\n" if n < last else "\n")
            yield f"  ]{comma}\n"
        else:
            yield f"{head}{json.dumps(value, ensure_ascii=False)}{comma}\n"
    yield "}\n"
def manifest_path(output_dir: Path) -> Path:
    return Path(output_dir) / MANIFEST_NAME


__all__ = [
    "ManifestCorruptError",
    "load_manifest",
    "load_previous_manifest",
    "manifest_path",
    "write_manifest",
]
