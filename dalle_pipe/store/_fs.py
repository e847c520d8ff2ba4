"""Low-level durable file operations, hashing and the layout of ``output_dir``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring as _encode_basestring
from pathlib import Path, PurePosixPath

#: Everything the tool keeps for itself inside ``output_dir``.
STATE_DIRNAME = ".dalle-pipe"
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.html"
THUMBS_DIRNAME = ".thumbs"
JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = "lock"
PREV_MANIFEST_NAME = "manifest.prev.json"
INDEX_NAME = "index.json"
HISTORY_DIRNAME = "history"
BATCHES_DIRNAME = "batches"

#: Small pieces are gathered into writes of about this size (the buffered file object did the same).
_WRITE_BLOCK = 1 << 20

#: Temp files made by :func:`atomic_write_bytes` are named ``.<name>.<hex>.dp-tmp``.
TMP_SUFFIX = ".dp-tmp"


def state_dir(output_dir: Path) -> Path:
    """``output_dir/.dalle-pipe`` (not created)."""
    return Path(output_dir) / STATE_DIRNAME


def batches_dir(output_dir: Path) -> Path:
    """``output_dir/.dalle-pipe/batches`` (not created), where batch state lives."""
    return state_dir(output_dir) / BATCHES_DIRNAME


def history_dir(output_dir: Path) -> Path:
    """``output_dir/.dalle-pipe/history`` (not created)."""
    return state_dir(output_dir) / HISTORY_DIRNAME


def utc_now_iso() -> str:
    """The current UTC time as ``2026-11-05T14:22:33.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: ``hook(op, path)`` is called before each durable ``"write"`` (one per chunk) and ``"fsync"`` of a
#: file the store writes; raising an ``OSError`` there is how tests inject a full, read-only or
#: failing disk at the file layer (see :func:`inject_faults`).
FaultHook = Callable[[str, Path], None]

_fault_hook: FaultHook | None = None


@contextlib.contextmanager
def inject_faults(hook: FaultHook) -> Iterator[None]:
    """The test seam of the file layer: while active, every durable write and fsync made through
    :func:`write_all` / :func:`fsync_file` (images, manifests, the journal, the index, paid-answer
    objects, rescue files) first calls ``hook(op, path)``, which may raise ``OSError``.
    Process-wide; not nestable (the inner hook replaces the outer one until it exits)."""
    global _fault_hook
    previous, _fault_hook = _fault_hook, hook
    try:
        yield
    finally:
        _fault_hook = previous


def write_all(fd: int, data: bytes | memoryview, path: Path) -> None:
    """``os.write`` until every byte of ``data`` is in the file behind ``fd`` (``path`` names it
    for the fault seam and for errors)."""
    view = memoryview(data)
    while view:
        hook = _fault_hook
        if hook is not None:
            hook("write", path)
        view = view[os.write(fd, view) :]


def fsync_file(fd: int, path: Path) -> None:
    """``os.fsync(fd)`` through the fault seam."""
    hook = _fault_hook
    if hook is not None:
        hook("fsync", path)
    os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new directory entry in ``path`` durable (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path) -> None:
    """Create ``path`` and its parents, fsyncing each parent that gained an entry."""
    if path.is_dir():
        return
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        fsync_dir(d.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` only ever holds the old or the whole new content."""
    atomic_write_chunks(path, (data,))


def atomic_write_chunks(path: Path, chunks: Iterable[bytes | str]) -> None:
    """Like :func:`atomic_write_bytes`, from pieces (text is UTF-8): a 25 MB manifest or page is
    written without first being joined into one string and one bytes copy.

    A temp file in the same folder is written, flushed and fsynced, renamed over ``path`` with
    ``os.replace``, then the folder is fsynced. Parent folders are created. On any error the temp
    file is removed. New files get mode 0666 minus the umask (not mkstemp's 0600).
    """
    path = Path(path)
    parent = path.parent
    _makedirs(parent)
    tmp = parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            pending: list[bytes] = []
            size = 0
            for chunk in chunks:
                piece = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                pending.append(piece)
                size += len(piece)
                if size >= _WRITE_BLOCK:
                    write_all(fd, b"".join(pending), path)
                    pending, size = [], 0
            if pending:
                write_all(fd, b"".join(pending), path)
            fsync_file(fd, path)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)


def dumps_json(obj: object) -> str:
    """The tool's on-disk JSON style: 2-space indent, keys in insertion order, UTF-8, final newline."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, obj: object) -> None:
    """:func:`atomic_write_bytes` of :func:`dumps_json` (UTF-8)."""
    atomic_write_bytes(path, dumps_json(obj).encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data`` (no ``sha256:`` prefix)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_PARAMS_JSON: dict[int, tuple[Mapping[str, object], str]] = {}


def _canon(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _string(value: str | None) -> str:
    """json.dumps of a string or None, through json's C string encoder (5x faster per call)."""
    if value is None:
        return "null"
    if not isinstance(value, str):
        return _canon(value)
    return _encode_basestring(value)


def fingerprint(
    *,
    provider: str,
    model: str | None,
    endpoint: str,
    params: Mapping[str, object],
    prompt: str | None,
    input_shas: Sequence[str],
) -> str:
    """Hex sha256 of a canonical JSON of exactly these fields (no ``sha256:`` prefix).

    Canonical: keys sorted at every level, no whitespace, UTF-8, NaN refused; ``input_shas``
    keep their order (the first edit image is special). ``params`` must be JSON values; a tuple
    counts as a list, and 1 and 1.0 are different values (send what you mean).

    The text is assembled from its sorted parts, and each ``params`` mapping's JSON is cached by
    identity (a plan shares one mapping per step, and must not mutate it): 30,000 fingerprints of a
    no-op rerun cost one params encoding per step.
    """
    cached = _PARAMS_JSON.get(id(params))
    if cached is None or cached[0] is not params:
        cached = (params, _canon(dict(params)))
        if len(_PARAMS_JSON) > 4096:
            _PARAMS_JSON.clear()
        _PARAMS_JSON[id(params)] = cached
    shas = "[" + ",".join(map(_string, input_shas)) + "]"
    text = (
        f'{{"endpoint":{_string(endpoint)},"input_shas":{shas},"model":{_string(model)},'
        f'"params":{cached[1]},"prompt":{_string(prompt)},"provider":{_string(provider)}}}'
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rel_parts(rel: str) -> tuple[str, ...] | None:
    """The components of a relative POSIX path, or None if it is absolute, empty or uses ``..``."""
    if not rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = tuple(p for p in PurePosixPath(rel).parts if p != ".")
    if not parts or ".." in parts:
        return None
    return parts


def safe_join(output_dir: Path, rel: str) -> Path:
    """``output_dir / rel``, refusing (ValueError) anything that escapes ``output_dir``.

    ``rel`` must be a relative POSIX path without ``..``; the joined path is then resolved
    (symlinks followed) and must still be inside the resolved ``output_dir``. The returned
    path is the lexical join (not the resolved one), so it stays relative to ``output_dir``.
    """
    parts = rel_parts(str(rel))
    if parts is None:
        raise ValueError(f"unsafe path {rel!r}: must be relative, inside the output folder")
    joined = Path(output_dir).joinpath(*parts)
    root = Path(output_dir).resolve()
    target = joined.resolve()
    if target == root or not target.is_relative_to(root):
        raise ValueError(f"unsafe path {rel!r}: resolves outside {output_dir}")
    return joined
