"""The write-ahead journal: an intent line before each paid call, a done line once it landed."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeGuard

from ._fs import (
    JOURNAL_NAME,
    _makedirs,
    atomic_write_bytes,
    fsync_dir,
    fsync_file,
    state_dir,
    utc_now_iso,
    write_all,
)


@dataclass(frozen=True)
class PendingIntent:
    """A paid call that was announced but never resolved: it may have been paid for.

    ``attempts`` is how many intent lines (calls) were written for this task and fingerprint
    since its last done/failed line; ``attempt`` is the highest attempt number seen.
    """

    task: str
    fingerprint: str
    attempt: int
    attempts: int
    at: str


@dataclass
class JournalState:
    """What :meth:`Journal.read` recovered.

    - ``done``: fingerprint -> the manifest entries of the latest done line for it.
    - ``done_entries``: every entry of every done line, oldest first (feed to ``ReuseIndex``).
    - ``failed``: the failed lines, oldest first (``{"t", "task", "fp", "error", "at"}``).
    - ``pending``: intents with no later done/failed line for the same task and fingerprint:
      possibly paid but not landed. The runner flags those as possible duplicate charges.
    - ``bad_lines``: unparseable or wrong-typed lines other than the last one (should be 0): a
      line whose ``task`` or ``fp`` is not a string, or a done line whose ``entries`` is not a
      list, is skipped and counted here; a failed line's ``error`` that is not an object is kept
      as ``{"message": <its text>}``.
    - ``torn_tail``: the last line was incomplete or unparseable and was ignored.
    """

    done: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    done_entries: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    pending: list[PendingIntent] = field(default_factory=list)
    bad_lines: int = 0
    torn_tail: bool = False


def _well_typed(obj: object) -> TypeGuard[dict[str, Any]]:
    """Whether a parsed line has the types :meth:`Journal.read` relies on (other kinds pass)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        return False
    if obj["t"] in ("intent", "done", "failed"):
        if not isinstance(obj.get("task"), str) or not isinstance(obj.get("fp"), str):
            return False
        if obj["t"] == "done" and not isinstance(obj.get("entries"), list):
            return False
    return True


def _parse(data: bytes) -> tuple[list[dict[str, Any]], int, bool]:
    lines = data.split(b"\n")
    # A complete file ends with "\n", so the last element is b"": anything else there is torn.
    tail = lines.pop()
    torn = bool(tail.strip())
    records: list[dict[str, Any]] = []
    bad = 0
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            obj = None
        if _well_typed(obj):
            records.append(obj)
        elif i == last and not torn:
            torn = True
        else:
            bad += 1
    return records, bad, torn


class Journal:
    """``output_dir/.dalle-pipe/journal.jsonl``: append-only, one JSON object a line.

    Every line is written with one ``write`` on an ``O_APPEND`` descriptor and fsynced before
    the method returns, so an intent is durable before the paid call it announces. Thread-safe.
    The file is opened on the first write; if it ends in a torn line (a crash mid-write), that
    fragment is cut off first so the next line starts clean. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = state_dir(Path(output_dir)) / JOURNAL_NAME
        self._fd: int | None = None
        self._lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is None:
            _makedirs(self.path.parent)
            existed = self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = os.pread(fd, size, 0)
                os.ftruncate(fd, data.rfind(b"\n") + 1)
                os.fsync(fd)
            if not existed:
                fsync_dir(self.path.parent)
            self._fd = fd
        return self._fd

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            fd = self._open()
            write_all(fd, line, self.path)
            fsync_file(fd, self.path)

    def intent(self, task: str, fingerprint: str, attempt: int) -> None:
        """Before each paid call (every retry too): ``{"t":"intent", task, fp, attempt, at}``."""
        rec = {"t": "intent", "task": task, "fp": fingerprint, "attempt": attempt, "at": utc_now_iso()}
        self._append(rec)

    def done(self, task: str, fingerprint: str, entries: list[dict[str, Any]]) -> None:
        """Once the image(s) are durable: ``{"t":"done", task, fp, entries, at}``."""
        self._append({"t": "done", "task": task, "fp": fingerprint, "entries": entries, "at": utc_now_iso()})

    def failed(self, task: str, fingerprint: str, error: dict[str, Any]) -> None:
        """The task gave up (refusal, retries exhausted): ``{"t":"failed", task, fp, error, at}``."""
        self._append({"t": "failed", "task": task, "fp": fingerprint, "error": error, "at": utc_now_iso()})

    # -- reading -----------------------------------------------------------------------------

    def read(self) -> JournalState:
        """Replay the journal; never raises on bad content (a missing file is an empty state)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return JournalState()
        records, bad, torn = _parse(data)
        state = JournalState(bad_lines=bad, torn_tail=torn)
        open_intents: dict[tuple[str, str], PendingIntent] = {}
        for rec in records:
            kind, task, fp = rec["t"], str(rec.get("task", "")), str(rec.get("fp", ""))
            if kind == "intent":
                prev = open_intents.get((task, fp))
                attempt = rec.get("attempt")
                attempt = attempt if isinstance(attempt, int) else 0
                open_intents[(task, fp)] = PendingIntent(
                    task=task,
                    fingerprint=fp,
                    attempt=max(attempt, prev.attempt if prev else 0),
                    attempts=(prev.attempts if prev else 0) + 1,
                    at=str(rec.get("at", "")),
                )
            elif kind == "done":
                open_intents.pop((task, fp), None)
                raw = rec.get("entries")
                entries = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
                state.done[fp] = entries
                state.done_entries.extend(entries)
            elif kind == "failed":
                open_intents.pop((task, fp), None)
                if not isinstance(rec.get("error"), dict):
                    rec = {**rec, "error": {"message": str(rec.get("error", ""))}}
                state.failed.append(rec)
        state.pending = list(open_intents.values())
        return state

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty the journal (atomically: an empty file replaces it). Call only once the manifest
        that holds every done entry is safely written."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self.path.exists():
                atomic_write_bytes(self.path, b"")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
