"""The page's content: each manifest entry with its change since the last run and its thumbnail.

Thumbnails live in ``output_dir/.thumbs/``, named by the image's sha256, so an unchanged image
is never thumbnailed twice.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import store
from ..store._fs import rel_parts

THUMB_MAX = 256
CHANGES = ("new", "changed", "unchanged", "failed")
STATUSES = ("generated", "up_to_date", "modified", "failed", "skipped")
_THUMB_NAME = re.compile(r"^[0-9a-f]{64}\.(webp|jpg)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Shot:
    """One manifest entry as the page shows it."""

    entry: Mapping[str, Any]
    change: str  # new | changed | unchanged | failed
    thumb: str | None  # relative to output_dir
    present: bool  # the image file exists


def thumb_ext() -> str:
    """WebP (keeps transparency) when Pillow can write it, else JPEG."""
    from PIL import features

    return "webp" if features.check("webp") else "jpg"


def content_sha(entry: Mapping[str, Any]) -> str | None:
    """The sha256 of what the file holds now: a hand-edited (modified) entry keeps its original
    ``sha256`` and records the file's in ``current_sha256``."""
    sha = entry.get("current_sha256") or entry.get("sha256")
    return sha if isinstance(sha, str) else None


def classify(entries: Sequence[Mapping[str, Any]],
             previous: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Each entry against the previous manifest: new, changed (sha256 differs), unchanged or failed."""
    before = {store.entry_key(e): e for e in previous or ()}
    out = []
    for e in entries:
        old = before.get(store.entry_key(e))
        if e.get("status") == "failed":
            out.append("failed")
        elif old is None:
            out.append("new")
        elif content_sha(old) != content_sha(e):
            out.append("changed")
        else:
            out.append("unchanged")
    return out


def removed(entries: Sequence[Mapping[str, Any]],
            previous: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """Previous entries that the current manifest no longer has."""
    now = {store.entry_key(e) for e in entries}
    return [e for e in previous or () if store.entry_key(e) not in now]


def _source(output_dir: Path, entry: Mapping[str, Any]) -> Path | None:
    """Where an entry's image is: a lexical join (relative, no `..`); symlinks are resolved only
    before a file is read (`_readable`), since resolving 30,000 paths costs seconds."""
    rel = entry.get("path")
    if not isinstance(rel, str):
        return None
    parts = rel_parts(rel)
    return output_dir.joinpath(*parts) if parts else None


def _readable(output_dir: Path, src: Path) -> bool:
    """A file to read for a thumbnail: inside output_dir once symlinks are followed."""
    try:
        store.safe_join(output_dir, src.relative_to(output_dir).as_posix())
    except ValueError:
        return False
    return src.is_file()


def _make_thumb(src: Path, dst: Path, ext: str) -> bool:
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            im.draft("RGB", (THUMB_MAX, THUMB_MAX))
            small = ImageOps.exif_transpose(im)
            alpha = small.mode in ("RGBA", "LA", "PA") or "transparency" in small.info
            small = small.convert("RGBA" if alpha else "RGB")
            small.thumbnail((THUMB_MAX, THUMB_MAX))
            buf = io.BytesIO()
            if ext == "webp":
                small.save(buf, "WEBP", quality=80, method=2)
            else:
                if alpha:
                    flat = Image.new("RGB", small.size, (255, 255, 255))
                    flat.paste(small, mask=small.getchannel("A"))
                    small = flat
                small.save(buf, "JPEG", quality=82, optimize=True)
    except Exception:  # a preview is best effort: Pillow raises many types for bad data
        return False
    store.atomic_write_bytes(dst, buf.getvalue())
    return True


def make_thumbnails(output_dir: Path, entries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """sha256 -> thumbnail path (relative to output_dir); made only when missing, stale ones removed."""
    output_dir = Path(output_dir)
    folder = output_dir / store.THUMBS_DIRNAME
    ext = thumb_ext()
    wanted: dict[str, Path] = {}
    for e in entries:
        sha = content_sha(e)
        if sha is not None and _SHA.match(sha) and sha not in wanted:
            src = _source(output_dir, e)
            if src is not None:
                wanted[sha] = src
    done: dict[str, str] = {}
    todo: list[tuple[str, Path]] = []
    for sha, src in wanted.items():
        if (folder / f"{sha}.{ext}").is_file():
            done[sha] = f"{store.THUMBS_DIRNAME}/{sha}.{ext}"
        elif _readable(output_dir, src):
            todo.append((sha, src))
    if todo:
        workers = max(1, min(8, os.cpu_count() or 1, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumb") as pool:
            made = pool.map(lambda t: _make_thumb(t[1], folder / f"{t[0]}.{ext}", ext), todo)
            for (sha, _), ok in zip(todo, made, strict=True):
                if ok:
                    done[sha] = f"{store.THUMBS_DIRNAME}/{sha}.{ext}"
    if folder.is_dir():
        keep = {f"{sha}.{ext}" for sha in done}
        for child in folder.iterdir():
            stray = _THUMB_NAME.match(child.name) and child.name not in keep
            if stray or child.name.endswith(".dp-tmp"):
                with contextlib.suppress(OSError):
                    child.unlink()
    return done


def build_shots(output_dir: Path, manifest: Mapping[str, Any],
                previous: Mapping[str, Any] | None) -> tuple[list[Shot], list[Mapping[str, Any]]]:
    """The page's content: every entry with its change and thumbnail, and what was removed."""
    entries = [e for e in manifest.get("entries", []) if isinstance(e, Mapping)]
    prev = [e for e in (previous or {}).get("entries", []) if isinstance(e, Mapping)] if previous else None
    thumbs = make_thumbnails(output_dir, entries)
    shots = []
    for e, change in zip(entries, classify(entries, prev), strict=True):
        sha = content_sha(e)
        src = _source(output_dir, e) if sha else None
        present = src is not None and src.is_file()
        shots.append(Shot(e, change, thumbs.get(sha) if sha and present else None, present))
    return shots, removed(entries, prev)
