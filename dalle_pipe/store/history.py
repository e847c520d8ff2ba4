"""Nothing paid is lost: replaced images go to history; ``clean`` deletes only what this folder records."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ._fs import (
    HISTORY_DIRNAME,
    MANIFEST_NAME,
    REPORT_NAME,
    STATE_DIRNAME,
    THUMBS_DIRNAME,
    TMP_SUFFIX,
    _makedirs,
    fsync_dir,
    history_dir,
    rel_parts,
    sha256_file,
)

#: What ``clean`` counts as an output image (lower-case suffixes).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})


def _rel_inside(output_dir: Path, path: Path) -> str:
    root = os.path.abspath(output_dir)
    p = os.path.abspath(path)
    if not p.startswith(root + os.sep):
        raise ValueError(f"{path} is not inside {output_dir}")
    return p[len(root) + 1 :].replace(os.sep, "/")


def history_stamp(now: datetime | None = None) -> str:
    """A history folder name: the UTC time as ``20261105T142233Z``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def move_to_history(output_dir: Path, path: Path, *, stamp: str | None = None) -> Path:
    """Move the image at ``path`` (inside ``output_dir``) to
    ``.dalle-pipe/history/<stamp>/<its path relative to output_dir>`` and return the new path.

    ``stamp`` defaults to the current UTC second (:func:`history_stamp`); pass the run's own to
    group one run's replacements. An existing history file is never overwritten: the folder
    becomes ``<stamp>-2``, ``<stamp>-3``, … The move is a hard link then an unlink (a crash in
    between leaves the image in both places, never in neither), or a rename where the
    filesystem has no hard links. Symlinks are moved as links. Raises FileNotFoundError when
    there is nothing at ``path`` and ValueError when it is not inside ``output_dir`` or is
    inside ``.dalle-pipe/``.
    """
    output_dir = Path(output_dir)
    rel = _rel_inside(output_dir, path)
    parts = rel_parts(rel)
    if parts is None or parts[0] == STATE_DIRNAME:
        raise ValueError(f"{path}: not an output of {output_dir}")
    os.lstat(path)  # FileNotFoundError before any folder is made
    base = stamp or history_stamp()
    n = 1
    while True:
        folder = base if n == 1 else f"{base}-{n}"
        dest = history_dir(output_dir).joinpath(folder, *parts)
        _makedirs(dest.parent)
        try:
            os.link(path, dest, follow_symlinks=False)
        except FileExistsError:
            n += 1
            continue
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(dest):  # we hold the run lock: nobody else writes history
                n += 1
                continue
            os.rename(path, dest)
            fsync_dir(dest.parent)
            fsync_dir(Path(path).parent)
            return dest
        fsync_dir(dest.parent)
        os.unlink(path)
        fsync_dir(Path(path).parent)
        return dest


def _walk_files(
    top: str, rel_top: str, skip_dir: Callable[[str], bool] = lambda rel: False
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(rel path, entry) of every non-folder below ``top``, never following symlinked folders;
    folders whose rel path ``skip_dir`` accepts are not entered."""
    stack = [(rel_top, top)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            it = os.scandir(abs_dir)
        except OSError:
            continue
        with it:
            for d in it:
                rel = f"{rel_dir}{d.name}"
                if d.is_dir(follow_symlinks=False):
                    if not skip_dir(rel):
                        stack.append((f"{rel}/", d.path))
                else:
                    yield rel, d


#: Providers whose images cost nothing (masks and local transforms are "local").
FREE_PROVIDERS = frozenset({"offline", "local"})
_TMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX))

CleanAction = Literal["history", "remove", "purge", "keep"]


@dataclass(frozen=True)
class CleanItem:
    """One file clean acted on (or, with action "keep", spared), and why."""

    path: str  # relative to output_dir, POSIX
    action: CleanAction
    reason: str
    paid: bool = False
    cost_usd: float | None = None


def clean(output_dir: Path, keep: Iterable[str], *, protect: Iterable[Path] = (), purge: bool = False,
          dry_run: bool = False) -> list[CleanItem]:
    """Tidy ``output_dir``, touching only what its own records name. Returns every file acted on.

    - A file an entry of ``manifest.json`` or ``.dalle-pipe/manifest.prev.json`` records, that
      no task makes any more (its path is not in ``keep``, relative POSIX paths): a paid one
      moves to history, a free one (offline, masks, local steps) is removed. Spared, with
      action "keep": a file changed since it was recorded (the user's now), a file in
      ``protect`` (an input some recipe reads), a symlink or anything reached through one.
    - ``purge``: every file under ``.dalle-pipe/history/`` is deleted (paid ones carry their
      recorded cost, found by sha256).
    - Temp files of an interrupted atomic write (``.NAME.<12 hex>.dp-tmp``) are removed.
    - Never: unrecorded files, ``manifest.json``, ``report.html``, anything outside
      ``output_dir``. ``dry_run`` decides the same and changes nothing.
    """
    output_dir = Path(output_dir)
    root = os.fspath(output_dir)
    if not os.path.isdir(root) or os.path.islink(root):
        return []
    from .manifest import load_manifest, load_previous_manifest

    records: dict[str, dict[str, Any]] = {}  # rel path -> newest entry recording it
    by_sha: dict[str, dict[str, Any]] = {}
    for manifest in (load_previous_manifest(output_dir), load_manifest(output_dir)):
        for entry in _entries(manifest):
            parts = rel_parts(entry["path"])
            if parts is None or parts[0] == STATE_DIRNAME:
                continue
            records["/".join(parts)] = entry
            by_sha[_hex(entry["sha256"])] = entry
    keep_norm = {"/".join(p) for p in (rel_parts(k) for k in keep) if p}
    real_root = os.path.realpath(root)
    protected = {os.path.realpath(p) for p in protect}
    items: list[CleanItem] = []
    emptied: set[str] = set()

    for rel in sorted(records):
        if rel in keep_norm or rel in (MANIFEST_NAME, REPORT_NAME):
            continue
        entry = records[rel]
        path = os.path.join(root, *rel.split("/"))
        if not os.path.lexists(path):
            continue
        paid, cost = _paid(entry)
        real = os.path.realpath(path)
        why = None
        if os.path.islink(path) or real != os.path.join(real_root, *rel.split("/")):
            why = "a symlink, or reached through one: not touched"
        elif not os.path.isfile(path):
            why = "not a regular file: not touched"
        elif real in protected:
            why = "an input a recipe reads: not touched"
        elif sha256_file(Path(path)) != _hex(entry["sha256"]):
            why = "changed since it was made: yours now, not touched"
        if why is not None:
            items.append(CleanItem(rel, "keep", f"no task makes it any more; {why}", paid, cost))
            continue
        if paid:
            items.append(CleanItem(rel, "history", f"no task makes it any more; paid{_cost_text(cost)}",
                                   True, cost))
            if not dry_run:
                move_to_history(output_dir, Path(path))
        else:
            items.append(CleanItem(rel, "remove", f"no task makes it any more; free ({entry.get('provider')})"))
            if not dry_run:
                os.unlink(path)
        emptied.add(os.path.dirname(path))

    for rel, d in _walk_files(root, "", lambda r: r.rpartition("/")[2] == THUMBS_DIRNAME or r == (
            f"{STATE_DIRNAME}/{HISTORY_DIRNAME}")):
        if _TMP_NAME.fullmatch(rel.rpartition("/")[2]) and d.is_file(follow_symlinks=False):
            items.append(CleanItem(rel, "remove", "left by an interrupted write"))
            if not dry_run:
                os.unlink(d.path)
                emptied.add(os.path.dirname(d.path))

    hist = history_dir(output_dir)
    if purge and hist.is_dir() and not hist.is_symlink():
        rel_hist = f"{STATE_DIRNAME}/{HISTORY_DIRNAME}/"
        for rel, d in sorted(_walk_files(os.fspath(hist), rel_hist), key=lambda x: x[0]):
            known = by_sha.get(sha256_file(Path(d.path))) if d.is_file(follow_symlinks=False) else None
            if known is None:
                items.append(CleanItem(rel, "purge", "history (in no manifest: cost unknown)", True, None))
            else:
                paid, cost = _paid(known)
                what = f"paid{_cost_text(cost)}" if paid else f"free ({known.get('provider')})"
                items.append(CleanItem(rel, "purge", f"history; {what}", paid, cost))
        if not dry_run:
            shutil.rmtree(hist)
            fsync_dir(hist.parent)

    if not dry_run:
        _prune(root, emptied)
    return items


def _entries(manifest: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The manifest's entries that record a file: a path and a sha256 (failed ones record none)."""
    entries = manifest.get("entries") if isinstance(manifest, dict) else None
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str) \
                and e["sha256"] and e.get("status") != "failed":
            yield e


def _hex(sha: str) -> str:
    return sha[7:] if sha.startswith("sha256:") else sha


def _paid(entry: dict[str, Any]) -> tuple[bool, float | None]:
    """(paid, recorded cost): an image of a provider that bills, its cost_usd when known."""
    if entry.get("provider") in FREE_PROVIDERS:
        return False, None
    cost = entry.get("cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost):
        return True, float(cost)
    return True, None


def _cost_text(cost: float | None) -> str:
    return f" (${cost:.4f})" if cost is not None else " (cost unknown)"


def _prune(root: str, emptied: set[str]) -> None:
    """Remove folders left empty by a removal (never output_dir itself), and fsync what changed."""
    root_abs = os.path.abspath(root)
    for folder in sorted(emptied, key=len, reverse=True):
        cur = os.path.abspath(folder)
        while cur != root_abs and cur.startswith(root_abs + os.sep):
            try:
                os.rmdir(cur)
            except OSError:
                break
            cur = os.path.dirname(cur)
    for folder in emptied:
        with contextlib.suppress(OSError):
            fsync_dir(Path(folder))
