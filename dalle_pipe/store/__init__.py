"""Everything durable a run writes in ``output_dir``.

Layout::

    output_dir/
      <images>                  paths relative to output_dir, each written atomically
      manifest.json             rewritten atomically at the end of a run and on interrupt
      report.html, .thumbs/     the review page (not written here)
      .dalle-pipe/
        lock                    flock held by the running process (pid inside, informational)
        journal.jsonl           intent before each paid call, done once the image is durable
        index.json              stat cache: rel path -> [size, mtime_ns, ino, sha256]
        manifest.prev.json      the manifest before the last write
        history/<UTC stamp>/    paid images that a newer one replaced
        batches/                batch state

Public names are re-exported here; the modules are an implementation detail.
"""

from __future__ import annotations

from ._fs import (
    BATCHES_DIRNAME,
    HISTORY_DIRNAME,
    INDEX_NAME,
    JOURNAL_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    PREV_MANIFEST_NAME,
    REPORT_NAME,
    STATE_DIRNAME,
    THUMBS_DIRNAME,
    atomic_write_bytes,
    atomic_write_chunks,
    atomic_write_json,
    batches_dir,
    dumps_json,
    fingerprint,
    fsync_dir,
    history_dir,
    safe_join,
    sha256_bytes,
    sha256_file,
    state_dir,
    utc_now_iso,
)
from .fileindex import FileIndex
from .history import IMAGE_SUFFIXES, clean, history_stamp, move_to_history
from .journal import Journal, JournalState, PendingIntent
from .lock import RunLock
from .manifest import (
    ManifestCorruptError,
    load_manifest,
    load_previous_manifest,
    manifest_path,
    write_manifest,
)
from .objects import ObjectRecord, ObjectStore, is_disk_error, rescue
from .reuse import ReuseIndex

__all__ = [
    "BATCHES_DIRNAME",
    "HISTORY_DIRNAME",
    "IMAGE_SUFFIXES",
    "INDEX_NAME",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "PREV_MANIFEST_NAME",
    "REPORT_NAME",
    "STATE_DIRNAME",
    "THUMBS_DIRNAME",
    "FileIndex",
    "Journal",
    "JournalState",
    "ManifestCorruptError",
    "ObjectRecord",
    "ObjectStore",
    "PendingIntent",
    "ReuseIndex",
    "RunLock",
    "atomic_write_bytes",
    "atomic_write_chunks",
    "atomic_write_json",
    "batches_dir",
    "clean",
    "dumps_json",
    "fingerprint",
    "fsync_dir",
    "history_dir",
    "history_stamp",
    "is_disk_error",
    "load_manifest",
    "load_previous_manifest",
    "manifest_path",
    "move_to_history",
    "rescue",
    "safe_join",
    "sha256_bytes",
    "sha256_file",
    "state_dir",
    "utc_now_iso",
    "write_manifest",
]
