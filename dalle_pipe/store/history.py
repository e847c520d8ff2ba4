"""Nothing paid is lost: replaced images go to history; ``clean`` is the only thing that deletes."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ._fs import (
    MANIFEST_NAME,
    REPORT_NAME,
    STATE_DIRNAME,
    THUMBS_DIRNAME,
    TMP_SUFFIX,
    _makedirs,
    fsync_dir,
    history_dir,
    rel_parts,
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


def clean(output_dir: Path, keep: set[str]) -> list[str]:
    """Delete ``.dalle-pipe/history/`` and every output image no recipe produces any more.

    Removed: all of history; image files (``.png .jpg .jpeg .webp .gif``, any case) under
    ``output_dir`` whose relative POSIX path is not in ``keep``; and temp files left by an
    interrupted atomic write. Never touched: ``.dalle-pipe/`` (but its history and temp files),
    ``manifest.json``, ``report.html``, ``.thumbs/`` folders, non-image files, and symlinks
    (neither the link nor what it points to; symlinked folders are not entered). Folders left
    empty by a removal are removed too. Returns the removed files' relative paths, sorted.
    """
    output_dir = Path(output_dir)
    root = os.fspath(output_dir)
    if not os.path.isdir(root):
        return []
    keep_norm = {"/".join(p) for p in (rel_parts(k) for k in keep) if p}
    removed: list[str] = []
    emptied: set[str] = set()

    def skip(rel: str) -> bool:
        return rel == STATE_DIRNAME or rel.rpartition("/")[2] == THUMBS_DIRNAME

    for rel, d in _walk_files(root, "", skip):
        name = rel.rpartition("/")[2]
        if d.is_symlink() or not d.is_file(follow_symlinks=False):
            continue
        is_tmp = name.startswith(".") and name.endswith(TMP_SUFFIX)
        if rel in (MANIFEST_NAME, REPORT_NAME) or rel in keep_norm:
            continue
        if is_tmp or os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
            os.unlink(d.path)
            removed.append(rel)
            emptied.add(os.path.dirname(d.path))

    state = os.path.join(root, STATE_DIRNAME)
    if os.path.isdir(state) and not os.path.islink(state):
        with os.scandir(state) as it:
            for d in it:
                if d.name.endswith(TMP_SUFFIX) and d.is_file(follow_symlinks=False):
                    os.unlink(d.path)
                    removed.append(f"{STATE_DIRNAME}/{d.name}")
        hist = history_dir(output_dir)
        if hist.is_dir() and not hist.is_symlink():
            rel_hist = f"{STATE_DIRNAME}/{hist.name}/"
            removed.extend(rel for rel, _ in _walk_files(os.fspath(hist), rel_hist))
            shutil.rmtree(hist)
        fsync_dir(Path(state))

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
    return sorted(removed)
