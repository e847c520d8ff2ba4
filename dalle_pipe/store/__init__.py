"""Everything durable a run writes in ``output_dir``.

Layout::

    output_dir/
      <images>                  paths relative to output_dir, each written atomically
      manifest.json             rewritten atomically at the end of a run and on interrupt
      report.html, .thumbs/     the review page (not written here)
      .dalle-pipe/
        lock                    flock held by the running process (pid inside, informational)
        journal.jsonl           intent before each paid call, done once the image is durable
        index.json              stat cache: rel path -> [size, mtime_ns, ino, sha256] (a cache:
                                rebuilt when missing or corrupt)
        objects/                paid answers' raw bytes and records, until placed (objects.py)
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
    fsync_file,
    history_dir,
    inject_faults,
    safe_join,
    sha256_bytes,
    sha256_file,
    state_dir,
    utc_now_iso,
    write_all,
)
from .diskspace import (
    DISK_ERRNOS,
    DiskError,
    bytes_for_images,
    check_free_space,
    free_bytes,
    image_bytes_bound,
    is_disk_error,
    margin_for,
    mount_point,
)
from .fileindex import FileIndex
from .history import FREE_PROVIDERS, IMAGE_SUFFIXES, CleanItem, clean, history_stamp, move_to_history
from .journal import Journal, JournalState, PendingIntent
from .lock import RunLock
from .manifest import (
    ORPHANS_NAME,
    SHARD_MANIFEST_GLOB,
    ManifestCorruptError,
    add_orphans,
    entry_key,
    load_manifest,
    load_previous_manifest,
    manifest_files,
    manifest_name,
    manifest_path,
    merge_manifests,
    previous_manifest_files,
    read_manifest_file,
    read_manifests,
    read_orphans,
    shard_suffix,
    write_manifest,
)
from .objects import (
    CorruptRecord,
    ObjectCorruptError,
    ObjectRecord,
    ObjectScan,
    ObjectStore,
    objects_dir,
    rescue,
    rescue_dir,
)
from .reuse import ReuseIndex

__all__ = [
    "BATCHES_DIRNAME",
    "DISK_ERRNOS",
    "FREE_PROVIDERS",
    "HISTORY_DIRNAME",
    "IMAGE_SUFFIXES",
    "INDEX_NAME",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "ORPHANS_NAME",
    "PREV_MANIFEST_NAME",
    "REPORT_NAME",
    "SHARD_MANIFEST_GLOB",
    "STATE_DIRNAME",
    "THUMBS_DIRNAME",
    "CleanItem",
    "CorruptRecord",
    "DiskError",
    "FileIndex",
    "Journal",
    "JournalState",
    "ManifestCorruptError",
    "ObjectCorruptError",
    "ObjectRecord",
    "ObjectScan",
    "ObjectStore",
    "PendingIntent",
    "ReuseIndex",
    "RunLock",
    "add_orphans",
    "atomic_write_bytes",
    "atomic_write_chunks",
    "atomic_write_json",
    "batches_dir",
    "bytes_for_images",
    "check_free_space",
    "clean",
    "dumps_json",
    "entry_key",
    "fingerprint",
    "free_bytes",
    "fsync_dir",
    "fsync_file",
    "history_dir",
    "history_stamp",
    "image_bytes_bound",
    "inject_faults",
    "is_disk_error",
    "load_manifest",
    "load_previous_manifest",
    "manifest_files",
    "manifest_name",
    "manifest_path",
    "margin_for",
    "merge_manifests",
    "mount_point",
    "move_to_history",
    "objects_dir",
    "previous_manifest_files",
    "read_manifest_file",
    "read_manifests",
    "read_orphans",
    "rescue",
    "rescue_dir",
    "safe_join",
    "sha256_bytes",
    "sha256_file",
    "shard_suffix",
    "state_dir",
    "utc_now_iso",
    "write_all",
    "write_manifest",
]
