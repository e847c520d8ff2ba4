"""Find an earlier output by fingerprint, wherever its file now is."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._fs import HISTORY_DIRNAME, STATE_DIRNAME, THUMBS_DIRNAME, TMP_SUFFIX, rel_parts
from .fileindex import FileIndex


def _hex(sha: str) -> str:
    return sha[7:] if sha.startswith("sha256:") else sha


class ReuseIndex:
    """Earlier entries (previous manifest entries, then journal done entries) by fingerprint.

    :meth:`lookup` returns an entry whose image is still there, unchanged:
    first at the entry's own ``path`` (one stat when the file index knows it); failing that,
    anywhere under ``output_dir`` — including ``.dalle-pipe/history/`` — with the same sha256
    (a file the user moved or renamed, or a replaced image whose prompt came back). The folder
    is scanned at most once per ``ReuseIndex``, only on such a miss, and only files of the
    entry's ``bytes`` size are hashed. Later entries win over earlier ones.
    """

    def __init__(self, entries: Iterable[dict[str, Any]], files: FileIndex, output_dir: Path) -> None:
        self.files = files
        self.output_dir = Path(output_dir)
        # Indexed at the first question: a no-op rerun finds every image at its own path and never asks.
        self._entries: list[dict[str, Any]] | None = list(entries)
        self._by_fp: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._fps: set[str] = set()
        self._lock = threading.Lock()
        self._by_size: dict[int, list[str]] | None = None

    def _index(self) -> dict[tuple[str, int], list[dict[str, Any]]]:
        with self._lock:
            if self._entries is not None:
                by_fp = self._by_fp
                for e in self._entries:
                    fp, idx, path, sha = e.get("fingerprint"), e.get("index", 0), e.get("path"), e.get("sha256")
                    if not (isinstance(fp, str) and isinstance(path, str) and isinstance(sha, str) and sha):
                        continue
                    if not isinstance(idx, int) or isinstance(idx, bool) or e.get("status") == "failed":
                        continue
                    by_fp.setdefault((fp, idx), []).append(e)
                self._fps.update(fp for fp, _ in by_fp)
                self._entries = None
        return self._by_fp

    def invalidate(self) -> None:
        """Forget the folder scan: files were moved (e.g. into history) since it was made."""
        self._by_size = None

    def __contains__(self, fingerprint: object) -> bool:
        self._index()
        return fingerprint in self._fps

    @staticmethod
    def _norm(rel: str) -> str | None:
        """``rel`` as a clean relative POSIX path, or None if it is unsafe (absolute, ``..``)."""
        if "/." in f"/{rel}" or "//" in rel or rel.endswith("/"):  # rare: take the slow road
            parts = rel_parts(rel)
            return "/".join(parts) if parts else None
        if not rel or rel.startswith("/") or "\x00" in rel:
            return None
        return rel

    def lookup(self, fingerprint: str, index: int) -> dict[str, Any] | None:
        """An earlier entry with this fingerprint and image index whose file exists with its
        recorded sha256, or None. When the file was found elsewhere, the result is a copy of
        the entry with ``path`` set to where it is now (relative to ``output_dir``; it may be
        under ``.dalle-pipe/history/``: copy it, do not link it)."""
        candidates = self._index().get((fingerprint, index))
        if not candidates:
            return None
        newest_first = candidates[::-1]
        for e in newest_first:
            rel = self._norm(e["path"])
            if rel is not None and self.files.sha_rel(rel) == _hex(e["sha256"]):
                return e
        for e in newest_first:
            size = e.get("bytes")
            found = self._find(_hex(e["sha256"]), size if isinstance(size, int) else None)
            if found is not None:
                return {**e, "path": found}
        return None

    # -- search by content -------------------------------------------------------------------

    def _scan(self) -> dict[int, list[str]]:
        if self._by_size is None:
            by_size: dict[int, list[str]] = {}
            root = os.fspath(self.output_dir)
            stack = [("", root)]
            while stack:
                rel_dir, abs_dir = stack.pop()
                try:
                    it = os.scandir(abs_dir)
                except OSError:
                    continue
                with it:
                    for d in it:
                        rel = f"{rel_dir}{d.name}"
                        try:
                            if d.is_dir(follow_symlinks=False):
                                if rel == STATE_DIRNAME:
                                    hist = os.path.join(d.path, HISTORY_DIRNAME)
                                    stack.append((f"{rel}/{HISTORY_DIRNAME}/", hist))
                                elif rel != THUMBS_DIRNAME:
                                    stack.append((f"{rel}/", d.path))
                            elif d.is_file(follow_symlinks=False) and not d.name.endswith(TMP_SUFFIX):
                                by_size.setdefault(d.stat(follow_symlinks=False).st_size, []).append(rel)
                        except OSError:
                            continue
            for paths in by_size.values():
                paths.sort()
            self._by_size = by_size
        return self._by_size

    def _find(self, sha: str, size: int | None) -> str | None:
        by_size = self._scan()
        if size is not None:
            pools: Iterable[list[str]] = [by_size.get(size, [])]
        else:
            pools = by_size.values()
        for pool in pools:
            for rel in pool:
                if self.files.sha_rel(rel) == sha:
                    return rel
        return None
