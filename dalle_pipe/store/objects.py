"""Paid bytes, durable first: a content-addressed store under ``.dalle-pipe/objects/``.

The raw bytes of every 2xx image answer are put here (fsynced) with a record of their task,
fingerprint and image index before anything else can fail; once the image is placed and its
entry recorded, the object is removed. A later run lists what is left and places it without
paying. When the output disk refuses a write, the bytes go to a rescue folder under the system
temp directory instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._fs import atomic_write_bytes, sha256_bytes, state_dir

OBJECTS_DIRNAME = "objects"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT})


def is_disk_error(exc: BaseException) -> bool:
    """True for a full, read-only or failing disk (ENOSPC, EDQUOT, EROFS, EIO)."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


@dataclass(frozen=True)
class ObjectRecord:
    """What a stored object is: whose image, which of its n, and what the answer said."""

    digest: str
    task: str
    fingerprint: str
    index: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


class ObjectStore:
    """``output_dir/.dalle-pipe/objects/<sha256>`` plus ``<sha256>.json`` (its record)."""

    def __init__(self, output_dir: Path) -> None:
        self.dir = state_dir(Path(output_dir)) / OBJECTS_DIRNAME

    def put(self, data: bytes, *, task: str, fingerprint: str, index: int,
            meta: dict[str, Any] | None = None) -> ObjectRecord:
        """Store ``data`` and its record, both fsynced; return the record."""
        digest = sha256_bytes(data)
        record = ObjectRecord(digest, task, fingerprint, index, dict(meta or {}))
        atomic_write_bytes(self.dir / digest, data)
        atomic_write_bytes(self.dir / f"{digest}.json", _dump(record))
        return record

    def read(self, record: ObjectRecord) -> bytes:
        return (self.dir / record.digest).read_bytes()

    def pending(self) -> list[ObjectRecord]:
        """Every stored object with a readable record (not yet placed), oldest first."""
        if not self.dir.is_dir():
            return []
        out: list[tuple[float, ObjectRecord]] = []
        for meta in self.dir.glob("*.json"):
            try:
                doc = json.loads(meta.read_text("utf-8"))
                rec = ObjectRecord(str(doc["digest"]), str(doc["task"]), str(doc["fingerprint"]),
                                   int(doc["index"]), dict(doc.get("meta") or {}))
                if (self.dir / rec.digest).is_file():
                    out.append((meta.stat().st_mtime, rec))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return [r for _, r in sorted(out, key=lambda t: t[0])]

    def remove(self, record: ObjectRecord) -> None:
        """Forget an object once it is placed and recorded."""
        for name in (f"{record.digest}.json", record.digest):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()


def rescue(data: bytes, *, task: str, fingerprint: str, index: int) -> Path:
    """Write bytes the output disk refused to a folder under the system temp dir; return the file."""
    folder = Path(tempfile.gettempdir()) / "dalle-pipe-rescue"
    folder.mkdir(parents=True, exist_ok=True)
    digest = sha256_bytes(data)
    path = folder / digest
    path.write_bytes(data)
    (folder / f"{digest}.json").write_bytes(_dump(ObjectRecord(digest, task, fingerprint, index)))
    with contextlib.suppress(OSError):
        os.sync()
    return path


def _dump(record: ObjectRecord) -> bytes:
    doc = {"digest": record.digest, "task": record.task, "fingerprint": record.fingerprint,
           "index": record.index, "meta": record.meta}
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")
