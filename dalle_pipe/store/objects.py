"""The paid-answer store: the raw bytes of every paid image, durable before anything can fail.

Layout under ``output_dir/.dalle-pipe/objects/``::

    <sha[:2]>/<sha256>          the raw bytes of an answer, named by their sha256 (shared by equal answers)
    records/<key>.json          one record per (task, fingerprint, index): what the bytes are for

A blob is written (temp file, fsync, rename, folder fsync) before its record, and a record the
same way, so a record that parses names bytes that were durable when it was written. A record
goes once its image is placed and recorded (:meth:`ObjectStore.discard`); its blob goes with the
last record that names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat as stat_mod
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._fs import (
    TMP_SUFFIX,
    _makedirs,
    atomic_write_bytes,
    fsync_dir,
    fsync_file,
    sha256_bytes,
    state_dir,
    utc_now_iso,
    write_all,
)

OBJECTS_DIRNAME = "objects"
RECORDS_DIRNAME = "records"
RESCUE_DIRNAME = "dalle-pipe-rescue"
_VERSION = 1
_SHA_RE = re.compile(r"[0-9a-f]{64}")
#: A record is a few hundred bytes; anything much larger was not written by this store.
_MAX_RECORD_BYTES = 1 << 20


@dataclass(frozen=True)
class ObjectRecord:
    """What one stored answer is for: ``index`` is the image's place in the answer (0 for n=1).

    ``meta`` holds what the answer said besides the bytes, as JSON values (``request_id``,
    ``usage``, ``revised_prompt``, ``format``, ``attempts``, ...): whatever the caller needs to
    write the manifest entry later without asking the server again.
    """

    task: str
    fingerprint: str
    index: int
    sha256: str
    size: int
    created_at: str
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "task": self.task,
            "fingerprint": self.fingerprint,
            "index": self.index,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": self.created_at,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, doc: object) -> ObjectRecord:
        """The record in ``doc``; ``ValueError`` saying what is wrong when it is not one."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("version") != _VERSION:
            raise ValueError(f"unknown version {doc.get('version')!r}")
        for key, kind in (("task", str), ("fingerprint", str), ("sha256", str), ("created_at", str)):
            if type(doc.get(key)) is not kind:
                raise ValueError(f"{key} is not a string")
        for key in ("index", "size"):
            v = doc.get(key)
            if type(v) is not int or v < 0:
                raise ValueError(f"{key} is not a whole number >= 0")
        if not _SHA_RE.fullmatch(doc["sha256"]):
            raise ValueError("sha256 is not 64 lowercase hex digits")
        meta = doc.get("meta", {})
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
        return cls(
            task=doc["task"],
            fingerprint=doc["fingerprint"],
            index=doc["index"],
            sha256=doc["sha256"],
            size=doc["size"],
            created_at=doc["created_at"],
            meta=meta,
        )


@dataclass(frozen=True)
class CorruptRecord:
    """A record that cannot be used: unreadable, malformed, or naming bytes that are missing or of
    the wrong size. Reported, never raised; the file is left where it is."""

    path: Path
    reason: str


@dataclass
class ObjectScan:
    """What :meth:`ObjectStore.scan` found.

    - ``records``: usable records, sorted by (task, fingerprint, index, created_at, sha256).
    - ``corrupt``: records that cannot be used, sorted by path.
    - ``orphans``: blobs no record names (a crash between writing the bytes and the record).
    """

    records: list[ObjectRecord] = field(default_factory=list)
    corrupt: list[CorruptRecord] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)


class ObjectCorruptError(ValueError):
    """The bytes of a record are missing or do not match its sha256 (see :meth:`ObjectStore.read`)."""

    def __init__(self, record: ObjectRecord, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.record = record
        self.path = path
        self.reason = reason


def objects_dir(output_dir: Path) -> Path:
    """``output_dir/.dalle-pipe/objects`` (not created)."""
    return state_dir(Path(output_dir)) / OBJECTS_DIRNAME


def record_key(task: str, fingerprint: str, index: int) -> str:
    """The file stem of the record of (task, fingerprint, index): a sha256, so any task name is safe."""
    return hashlib.sha256(f"{task}\x00{fingerprint}\x00{index}".encode()).hexdigest()


def _sort_key(r: ObjectRecord) -> tuple[str, str, int, str, str]:
    return (r.task, r.fingerprint, r.index, r.created_at, r.sha256)


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` through a fsynced temp file and a rename; fsync the folder."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            write_all(fd, data, path)
            fsync_file(fd, path)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


class ObjectStore:
    """The paid answers of ``output_dir``: put them first, place them, then discard them.

    Thread-safe. One run holds the output folder's lock, so one process writes here at a time;
    a reader in another process sees only whole files. Nothing is created until the first
    :meth:`put`, so a run that pays nothing leaves no folder. Keep one instance per output folder
    for a run: :meth:`find` and the reference counts of shared bytes are read from disk once, on
    first use, and then kept in memory.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self.root = objects_dir(self.output_dir)
        self.records_dir = self.root / RECORDS_DIRNAME
        self._lock = threading.Lock()
        self._index: dict[tuple[str, int], list[ObjectRecord]] | None = None
        self._refs: dict[str, int] = {}
        self._writing = 0  # puts between making their folders and recording: no folder may go then

    # -- paths -------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the bytes with this sha256 live."""
        return self.root / sha256[:2] / sha256

    def record_path(self, record: ObjectRecord) -> Path:
        """Where ``record`` lives."""
        return self.records_dir / f"{record_key(record.task, record.fingerprint, record.index)}.json"

    # -- writing -----------------------------------------------------------------------------

    def put(
        self, data: bytes, *, task: str, fingerprint: str, index: int, meta: Mapping[str, Any] | None = None
    ) -> ObjectRecord:
        """Make ``data`` durable, then its record; return the record.

        When this returns, the bytes and the record survive a crash or power loss. A second put
        for the same (task, fingerprint, index) replaces the record (the newer answer wins). On an
        error (``OSError``: see ``is_disk_error``) nothing half-written is left under a final name
        and bytes that no record names are removed; the caller still holds ``data`` (rescue it).
        ``meta`` must be JSON values (``TypeError`` otherwise, before anything is written).
        """
        if type(index) is not int or index < 0:
            raise ValueError(f"index must be a whole number >= 0, not {index!r}")
        sha = sha256_bytes(data)
        record = ObjectRecord(
            task=task,
            fingerprint=fingerprint,
            index=index,
            sha256=sha,
            size=len(data),
            created_at=utc_now_iso(),
            meta=dict(meta or {}),
        )
        text = json.dumps(record.to_json(), ensure_ascii=False, allow_nan=False, indent=1).encode("utf-8")
        blob = self.blob_path(sha)
        rpath = self.record_path(record)
        with self._lock:
            self._load_index()
            self._refs[sha] = self._refs.get(sha, 0) + 1  # pinned: a discard cannot take the blob now
            self._writing += 1
        try:
            for attempt in range(3):
                # Another process (a shard beside this one) may remove an empty folder between the
                # makedirs and the write: make it again and retry.
                try:
                    _makedirs(blob.parent)
                    _makedirs(self.records_dir)
                    _write_durable(blob, data)  # always: an equal-sized blob on disk may be damaged
                    _write_durable(rpath, text)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
        except BaseException:
            with self._lock:
                self._writing -= 1
                self._release(sha)  # removes bytes that no record names
            raise
        with self._lock:
            self._writing -= 1
            index_ = self._load_index()
            old = self._drop_from_index(index_, task, fingerprint, index)
            index_.setdefault((fingerprint, index), []).append(record)
            if old is not None:
                self._release(old.sha256)
        return record

    def discard(self, record: ObjectRecord) -> None:
        """Forget ``record`` once its image is placed and recorded; its bytes go with the last
        record naming them. Idempotent. A record that a later :meth:`put` for the same (task,
        fingerprint, index) replaced is already gone: discarding it leaves the newer one alone."""
        rpath = self.record_path(record)
        with self._lock:
            index_ = self._load_index()
            current = next(
                (r for r in index_.get((record.fingerprint, record.index), []) if r.task == record.task), None
            )
            if current is None or current != record:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rpath)
                fsync_dir(rpath.parent)
            self._drop_from_index(index_, record.task, record.fingerprint, record.index)
            self._release(record.sha256)
            if not index_ and not self._writing:
                # The last one: leave no empty folders behind (other files keep theirs).
                shards = [self.root / d for d in _listdir(self.root) if len(d) == 2]
                for folder in (*shards, self.records_dir, self.root):
                    with contextlib.suppress(OSError):
                        folder.rmdir()

    def _release(self, sha: str) -> None:
        n = self._refs.get(sha, 0) - 1
        if n > 0:
            self._refs[sha] = n
            return
        self._refs.pop(sha, None)
        self._unlink_blob(sha)

    def _unlink_blob(self, sha: str) -> None:
        blob = self.blob_path(sha)
        try:
            os.unlink(blob)
        except FileNotFoundError:
            return
        fsync_dir(blob.parent)
        if not self._writing:  # a put may have just made this folder for its own bytes
            with contextlib.suppress(OSError):
                blob.parent.rmdir()  # only when empty

    @staticmethod
    def _drop_from_index(
        index_: dict[tuple[str, int], list[ObjectRecord]], task: str, fingerprint: str, index: int
    ) -> ObjectRecord | None:
        same = index_.get((fingerprint, index))
        if not same:
            return None
        for i, r in enumerate(same):
            if r.task == task:
                del same[i]
                if not same:
                    del index_[(fingerprint, index)]
                return r
        return None

    # -- reading -----------------------------------------------------------------------------

    def _load_index(self) -> dict[tuple[str, int], list[ObjectRecord]]:
        """The in-memory view of the usable records (built on first use; caller holds the lock)."""
        if self._index is None:
            found = self._scan()
            self._index = {}
            self._refs = {}
            for r in found.records:
                self._index.setdefault((r.fingerprint, r.index), []).append(r)
                self._refs[r.sha256] = self._refs.get(r.sha256, 0) + 1
            # A corrupt record may still name a blob (e.g. a hand-edited meta): keep such blobs.
            for c in found.corrupt:
                sha = _blob_named(c.path)
                if sha is not None:
                    self._refs[sha] = self._refs.get(sha, 0) + 1
        return self._index

    def scan(self) -> ObjectScan:
        """Read every record from disk (never raises on bad content; a missing folder is empty)."""
        with self._lock:
            return self._scan()

    def _scan(self) -> ObjectScan:
        out = ObjectScan()
        try:
            names = sorted(os.listdir(self.records_dir))
        except (FileNotFoundError, NotADirectoryError):
            names = []
        except OSError as exc:
            out.corrupt.append(CorruptRecord(self.records_dir, f"cannot list the records: {exc.strerror or exc}"))
            names = []
        named: set[str] = set()
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue  # temp files of an interrupted write, or foreign files
            path = self.records_dir / name
            record, reason = self._load_record(path)
            if record is None:
                out.corrupt.append(CorruptRecord(path, reason))
                sha = _blob_named(path)
                if sha is not None:
                    named.add(sha)
                continue
            named.add(record.sha256)
            out.records.append(record)
        out.records.sort(key=_sort_key)
        out.corrupt.sort(key=lambda c: str(c.path))
        out.orphans = [p for p in self._blobs() if p.name not in named]
        return out

    def _load_record(self, path: Path) -> tuple[ObjectRecord | None, str]:
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_RECORD_BYTES + 1)
        except OSError as exc:
            return None, f"cannot read the record: {exc.strerror or exc}"
        if len(raw) > _MAX_RECORD_BYTES:
            return None, "the record is too large to be one"
        try:
            record = ObjectRecord.from_json(json.loads(raw))
        except (ValueError, RecursionError) as exc:
            reason = "not valid JSON" if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError) else str(exc)
            if isinstance(exc, RecursionError):
                reason = "nested too deeply"
            return None, f"not a record: {reason}"
        if path.stem != record_key(record.task, record.fingerprint, record.index):
            return None, "not a record: its name does not match its task, fingerprint and index"
        blob = self.blob_path(record.sha256)
        try:
            st = os.stat(blob)
        except OSError:
            return None, f"its bytes are missing ({blob})"
        if not stat_mod.S_ISREG(st.st_mode) or st.st_size != record.size:
            return None, f"its bytes are {st.st_size} long, the record says {record.size} ({blob})"
        return record, ""

    def _blobs(self) -> list[Path]:
        out: list[Path] = []
        try:
            subdirs = sorted(os.listdir(self.root))
        except OSError:
            return out
        for sub in subdirs:
            if len(sub) != 2 or sub == RECORDS_DIRNAME:
                continue
            with contextlib.suppress(OSError):
                out.extend(self.root / sub / n for n in sorted(os.listdir(self.root / sub)) if _SHA_RE.fullmatch(n))
        return out

    def pending(self) -> list[ObjectRecord]:
        """The usable records, sorted by (task, fingerprint, index, created_at, sha256): paid
        answers not yet placed and recorded. Corrupt records are left out (see :meth:`scan`)."""
        return self.scan().records

    def find(self, fingerprint: str, index: int, task: str | None = None) -> ObjectRecord | None:
        """The stored answer for (fingerprint, index), of ``task`` when given; the oldest when
        several tasks stored one. None when there is none."""
        with self._lock:
            same = self._load_index().get((fingerprint, index), [])
            candidates = [r for r in same if task is None or r.task == task]
        if not candidates:
            return None
        return min(candidates, key=_sort_key)

    def read(self, record: ObjectRecord) -> bytes:
        """The stored bytes of ``record``, verified against its sha256 (:class:`ObjectCorruptError`
        when they are missing or do not match; the file is left for inspection)."""
        blob = self.blob_path(record.sha256)
        try:
            data = blob.read_bytes()
        except FileNotFoundError:
            raise ObjectCorruptError(record, blob, "the stored bytes are missing") from None
        if sha256_bytes(data) != record.sha256:
            raise ObjectCorruptError(record, blob, "the stored bytes do not match their sha256")
        return data

    def remove_temp_files(self) -> int:
        """Remove the temp files of writes a crash interrupted (never named by a record); returns
        how many. Call it while no :meth:`put` is running, e.g. at the start of a run, under the lock."""
        removed = 0
        for folder in [self.records_dir, *(self.root / d for d in _listdir(self.root) if len(d) == 2)]:
            for name in _listdir(folder):
                if name.startswith(".") and name.endswith(TMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(folder / name)
                        removed += 1
        return removed

    # -- rescue ------------------------------------------------------------------------------

    def rescue(self, data: bytes, *, name: str, meta: Mapping[str, Any] | None = None) -> Path:
        """:func:`rescue` for this output folder."""
        return rescue(self.output_dir, data, name=name, meta=meta)


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _blob_named(record_path: Path) -> str | None:
    """The sha256 a (possibly corrupt) record file names, if any can be read from it."""
    try:
        with open(record_path, "rb") as f:
            raw = f.read(_MAX_RECORD_BYTES)
        match = re.search(rb'"sha256"\s*:\s*"([0-9a-f]{64})"', raw)
    except OSError:
        return None
    return match.group(1).decode() if match else None


# -- rescue -------------------------------------------------------------------------------------


def rescue_dir(output_dir: Path) -> Path:
    """``<system temp>/dalle-pipe-rescue/<hash of output_dir's absolute path>`` (not created)."""
    key = hashlib.sha256(os.path.abspath(output_dir).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / RESCUE_DIRNAME / key


def _private_dir(path: Path) -> bool:
    """Create ``path`` (mode 0700) if needed; whether it is a real folder owned by us."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    return stat_mod.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def _safe_name(name: str, sha: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lstrip(".").strip()
    base = "".join(c if c.isalnum() or c in "-_.@+=" else "_" for c in base)[:120]
    return base or sha[:16]


def rescue(output_dir: Path, data: bytes, *, name: str, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``data`` where a full output disk cannot lose it: :func:`rescue_dir` of ``output_dir``,
    as ``name`` (its last path part, made filesystem-safe). With ``meta``, a ``<file>.json`` next
    to it says what the bytes are. Returns the file's path.

    The folders are created private (mode 0700) and must be ours (not another user's, not a
    symlink); otherwise a fresh private folder from ``tempfile.mkdtemp`` is used. An existing
    file of another content is never overwritten: the name gets the sha256's first 12 digits.
    Raises ``OSError`` when the temp folder's disk refuses too: the caller reports the bytes lost.
    """
    sha = sha256_bytes(data)
    folder = rescue_dir(Path(output_dir))
    try:
        ok = _private_dir(folder.parent) and _private_dir(folder)
    except OSError:
        ok = False
    if not ok:
        folder = Path(tempfile.mkdtemp(prefix=f"{RESCUE_DIRNAME}-"))
    fname = _safe_name(name, sha)
    target = folder / fname
    if target.exists() and not _has_sha(target, sha):
        target = folder / f"{sha[:12]}-{fname}"
    if not _has_sha(target, sha):
        atomic_write_bytes(target, data)
    if meta is not None:
        doc = {"sha256": sha, "size": len(data), "output_dir": os.path.abspath(output_dir), **dict(meta)}
        atomic_write_bytes(target.with_name(target.name + ".json"), (json.dumps(doc, indent=1) + "\n").encode())
    return target


def _has_sha(path: Path, sha: str) -> bool:
    try:
        return sha256_bytes(path.read_bytes()) == sha
    except OSError:
        return False


__all__ = [
    "OBJECTS_DIRNAME",
    "CorruptRecord",
    "ObjectCorruptError",
    "ObjectRecord",
    "ObjectScan",
    "ObjectStore",
    "objects_dir",
    "record_key",
    "rescue",
    "rescue_dir",
]
