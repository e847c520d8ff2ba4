"""A stat cache of sha256s, like git's index: hash a file only when its stat moved."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import stat as stat_mod
import threading
from pathlib import Path
from typing import TypeAlias

from ._fs import INDEX_NAME, atomic_write_bytes, sha256_file, state_dir

_VERSION = 1

StrPath: TypeAlias = "str | os.PathLike[str]"


class FileIndex:
    """The stat cache ``output_dir/.dalle-pipe/index.json``.

    On disk: ``{"version": 1, "entries": {key: [size, mtime_ns, ino, sha256]}}``, compact JSON.

    ``key`` is the POSIX path relative to ``output_dir`` for files inside it, else the absolute
    path (so input images elsewhere in the project are cached too). Paths given as relative are
    taken relative to the current directory, like any ``Path``.

    :meth:`sha` on an unchanged file costs one ``os.stat`` and a dict lookup. A file is rehashed
    when its size, ``mtime_ns`` or inode moved. Racy-clean, as in git: a file rewritten with the
    same size and then given back its old ``mtime_ns`` (``os.utime``) in place keeps its cached
    sha256 — nothing a normal editor or tool does. Entries whose ``mtime_ns`` is not older than
    the ``index.json`` they were loaded from (written in the same clock tick as the save) are
    not trusted and are rehashed once. A missing or corrupt ``index.json`` is an empty cache.
    Thread-safe.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self.path = state_dir(self.output_dir) / INDEX_NAME
        self._root = os.path.abspath(self.output_dir) + os.sep
        self._entries: dict[str, list[object]] = {}
        self._racy_ns = -1  # entries with mtime_ns >= this are rehashed once
        self._checked: set[str] = set()
        self._dirty = False
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        gc_was_on = gc.isenabled()
        gc.disable()  # 30,000 small lists would trigger needless collections
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                doc = json.loads(f.read())
            entries = doc.get("entries") if isinstance(doc, dict) and doc.get("version") == _VERSION else None
            if not isinstance(entries, dict):
                return
            int_, str_, list_ = int, str, list
            self._entries = {
                k: v
                for k, v in entries.items()
                if type(v) is list_
                and len(v) == 4
                and type(v[0]) is int_
                and type(v[1]) is int_
                and type(v[2]) is int_
                and type(v[3]) is str_
            }
            self._racy_ns = st.st_mtime_ns
        except (OSError, ValueError, RecursionError):
            return  # a cache: a missing, unreadable or hand-edited index.json is rebuilt by hashing
        finally:
            if gc_was_on:
                gc.enable()

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, path: StrPath) -> str:
        """The cache key of ``path``: relative POSIX path inside ``output_dir``, else absolute."""
        s = os.fspath(path)
        if not os.path.isabs(s):
            s = os.path.abspath(s)
        elif "/." in s or "//" in s:
            s = os.path.normpath(s)
        if s.startswith(self._root):
            return s[len(self._root) :]
        return s

    def _hash(self, path: str) -> str:
        """Hash a file's content (a seam for tests that count hashing)."""
        return sha256_file(Path(path))

    def sha(self, path: StrPath) -> str | None:
        """The file's hex sha256 (cached when its stat did not move), or None when it is missing
        or not a regular file."""
        s = os.fspath(path)
        return self._sha(self.key(s), s)

    def sha_rel(self, rel: str) -> str | None:
        """:meth:`sha` of ``output_dir/rel``, for a normalised relative POSIX path (no ``..``,
        no ``.`` or empty parts): the fast path for manifest entries."""
        return self._sha(rel, self._root + rel)

    def _sha(self, k: str, s: str) -> str | None:
        try:
            st = os.stat(s)
        except (FileNotFoundError, NotADirectoryError):
            if k in self._entries:
                with self._lock:
                    self._entries.pop(k, None)
                    self._dirty = True
            return None
        e = self._entries.get(k)
        if (
            e is not None
            and e[0] == st.st_size
            and e[1] == st.st_mtime_ns
            and e[2] == st.st_ino
            and (st.st_mtime_ns < self._racy_ns or k in self._checked)
        ):
            return e[3]  # type: ignore[return-value]
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        try:
            digest = self._hash(s)
        except (FileNotFoundError, IsADirectoryError):
            return None
        with self._lock:
            self._entries[k] = [st.st_size, st.st_mtime_ns, st.st_ino, digest]
            self._checked.add(k)
            self._dirty = True
        return digest

    def record(self, path: StrPath, sha: str) -> None:
        """Remember ``sha`` for the file we just wrote at ``path`` (stats it now)."""
        st = os.stat(path)
        k = self.key(path)
        with self._lock:
            self._entries[k] = [st.st_size, st.st_mtime_ns, st.st_ino, sha]
            self._checked.add(k)
            self._dirty = True

    def forget(self, path: StrPath) -> None:
        """Drop the entry of ``path`` (after moving or deleting it)."""
        k = self.key(path)
        with self._lock:
            if self._entries.pop(k, None) is not None:
                self._dirty = True

    def cached(self) -> dict[str, str]:
        """A snapshot ``key -> sha256`` of every entry, unverified (for diagnostics and searches)."""
        with self._lock:
            return {k: str(v[3]) for k, v in self._entries.items()}

    def save(self) -> None:
        """Write ``index.json`` atomically (compact JSON); a no-op when nothing changed."""
        with self._lock:
            if not self._dirty:
                return
            data = json.dumps(
                {"version": _VERSION, "entries": self._entries}, ensure_ascii=False, separators=(",", ":")
            ).encode("utf-8")
            self._dirty = False
        try:
            atomic_write_bytes(self.path, data)
        except BaseException:
            self._dirty = True
            raise
        with contextlib.suppress(OSError):
            self._racy_ns = os.stat(self.path).st_mtime_ns
