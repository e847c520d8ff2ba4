"""``manifest.json``, the shards' manifests and their previous copies; merging them into one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_pipe.errors import DallePipeError

from ._fs import (
    MANIFEST_NAME,
    PREV_MANIFEST_NAME,
    atomic_write_bytes,
    atomic_write_chunks,
    atomic_write_json,
    fsync_dir,
    state_dir,
)


class ManifestCorruptError(DallePipeError):
    """``manifest.json`` exists but is not a JSON object with an ``entries`` list (exit 2).

    Raised by :func:`load_manifest`; ``path`` is the bad file. The runner may stop, or warn and
    carry on from the previous manifest and the journal: :func:`write_manifest` never lets a
    corrupt manifest overwrite ``manifest.prev.json`` (it is kept as ``manifest.corrupt.json``).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: not a valid dalle-pipe manifest: {reason}",
            hint=f"fix or remove it; the previous one is {state_dir(path.parent) / PREV_MANIFEST_NAME}",
        )
        self.path = path


def _parse_manifest(path: Path, raw: bytes | None = None) -> dict[str, Any]:
    if raw is None:
        raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ManifestCorruptError(path, str(e)) from None
    except RecursionError:
        raise ManifestCorruptError(path, "it is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestCorruptError(path, "the top level is not an object")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ManifestCorruptError(path, "it has no 'entries' list")
    if set(map(type, entries)) - {dict}:  # one C-level pass: 10 ms for 300,000 entries
        i = next(i for i, e in enumerate(entries) if type(e) is not dict)
        raise ManifestCorruptError(path, f"entries[{i}] is not an object")
    seen: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()
    for i, entry in enumerate(entries):
        shape = (tuple(entry), tuple(map(type, entry.values())))  # keys and value types decide the check
        if shape in seen:
            continue
        problem = entry_problem(entry)
        if problem is not None:
            raise ManifestCorruptError(path, f"entries[{i}].{problem}")
        seen.add(shape)
    return doc


#: The fields an entry's readers rely on, and the JSON types each may have (None: null).
_TYPES: dict[str, tuple[type, ...]] = {
    "step": (str,), "key": (str,), "index": (int,), "path": (str,), "sha256": (str, type(None)),
    "width": (int, type(None)), "height": (int, type(None)), "format": (str, type(None)),
    "bytes": (int, type(None)), "provider": (str, type(None)), "model": (str, type(None)),
    "endpoint": (str, type(None)), "params": (dict,), "prompt": (str, type(None)),
    "revised_prompt": (str, type(None)), "inputs": (list,), "fingerprint": (str, type(None)),
    "request_id": (str, type(None)), "usage": (dict, type(None)), "cost_usd": (int, float, type(None)),
    "attempts": (int,), "possible_duplicate_charge": (bool,), "approved": (bool,),
    "created_at": (str, type(None)), "duration_s": (int, float, type(None)), "status": (str,),
    "error": (dict, type(None)), "endpoint_host": (str,), "warnings": (list,),
}
def entry_problem(e: dict[str, Any]) -> str | None:
    """What is wrong with one entry's types (``"index: is a string, not an integer"``), or None.
    Fields it does not know are left alone; a known field may be missing (readers default it)."""
    for name, value in e.items():
        types = _TYPES.get(name)
        if types is not None and (type(value) not in types or (type(value) is bool and bool not in types)):
            want = " or ".join("null" if t is type(None) else _JSON_NAMES.get(t, t.__name__) for t in types)
            return f"{name}: is {_JSON_NAMES.get(type(value), type(value).__name__)}, not {want}"
    return None


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object",
               list: "a list", type(None): "null"}


@dataclass
class Entry:
    """One image of a manifest, as the manifest holds it (`to_json` / `from_json`)."""

    step: str
    key: str
    index: int
    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    bytes: int | None = None
    provider: str | None = None
    model: str | None = None
    endpoint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    revised_prompt: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = None
    request_id: str | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    attempts: int = 0
    possible_duplicate_charge: bool = False
    approved: bool = False
    created_at: str | None = None
    duration_s: float | None = None
    status: str = "pending"
    error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # endpoint_host, warnings, stale, recovered, ...

    @classmethod
    def from_json(cls, doc: object) -> Entry:
        """The entry in ``doc``; ``ValueError`` naming the field when a type is wrong."""
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        problem = entry_problem(doc) or next((f"{k}: missing" for k in ("step", "key", "index", "path", "status")
                                              if k not in doc), None)
        if problem is not None:
            raise ValueError(problem)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(**{k: v for k, v in doc.items() if k in known},
                   extra={k: v for k, v in doc.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The manifest's form: the spec's fields in its order, then the extra ones."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "extra"}
        out.update(self.extra)
        return out


def read_manifest_file(path: Path) -> dict[str, Any]:
    """One manifest file (``manifest.json``, a shard's, or a previous copy) as a dict.

    Raises ``FileNotFoundError``/``OSError`` when unreadable and :class:`ManifestCorruptError`
    when it is not a JSON object with an ``entries`` list.
    """
    return _parse_manifest(Path(path))


SHARD_MANIFEST_GLOB = "manifest.shard-*-of-*.json"


def manifest_files(out_dir: Path) -> list[Path]:
    """Every manifest in ``out_dir``: ``manifest.json`` first, then the shards' in name order."""
    main = Path(out_dir) / MANIFEST_NAME
    shards = sorted(p for p in Path(out_dir).glob(SHARD_MANIFEST_GLOB) if p.is_file())
    return [*([main] if main.is_file() else []), *shards]


def previous_manifest_files(out_dir: Path) -> list[Path]:
    """The previous copies of every manifest in ``out_dir``: ``manifest.prev.json`` first, then the
    shards' (``.dalle-pipe/manifest.shard-I-of-N.prev.json``) in name order; present or not."""
    state = state_dir(Path(out_dir))
    return [state / PREV_MANIFEST_NAME, *sorted(state.glob(SHARD_MANIFEST_GLOB.replace(".json", ".prev.json")))]


def read_manifests(paths: Iterable[Path], *, strict: bool = False) -> list[dict[str, Any]]:
    """The manifests at ``paths``, oldest finished first. A missing one is skipped, and so is an
    unreadable or corrupt one, except ``manifest.json`` itself when ``strict`` (it raises)."""
    docs = []
    for path in paths:
        try:
            docs.append(_parse_manifest(Path(path)))
        except FileNotFoundError:
            continue
        except (OSError, ManifestCorruptError):
            if strict and Path(path).name == MANIFEST_NAME:
                raise
    return sorted(docs, key=lambda d: str(d.get("finished_at") or ""))


def entry_key(entry: Mapping[str, Any]) -> tuple[str, str, int]:
    """An entry's identity across manifests: (step, key, index)."""
    index = entry.get("index")
    return str(entry.get("step")), str(entry.get("key")), index if isinstance(index, int) else 0


def merge_manifests(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Manifests of one folder (oldest finished first, as ``read_manifests`` gives them) as one:
    entries by ``entry_key``, the last finished winning; the header is the last one's."""
    if len(docs) <= 1:
        return docs[0] if docs else None
    merged: dict[tuple[str, str, int], Any] = {}
    for doc in docs:
        for e in doc["entries"]:
            if isinstance(e, Mapping):
                merged[entry_key(e)] = e
    return {**docs[-1], "entries": list(merged.values())}


def load_manifest(output_dir: Path) -> dict[str, Any] | None:
    """``output_dir/manifest.json``, or None when there is none.

    Raises :class:`ManifestCorruptError` (a ``DallePipeError``) when it exists but is not valid.
    """
    path = Path(output_dir) / MANIFEST_NAME
    try:
        return _parse_manifest(path)
    except FileNotFoundError:
        return None


def load_previous_manifest(output_dir: Path) -> dict[str, Any] | None:
    """``.dalle-pipe/manifest.prev.json``, or None when absent or unreadable (it is only a backup)."""
    try:
        return _parse_manifest(state_dir(Path(output_dir)) / PREV_MANIFEST_NAME)
    except (OSError, ManifestCorruptError):
        return None


def shard_suffix(shard: tuple[int, int]) -> str:
    """``shard-I-of-N``: the name part of a shard's manifest, journal and lock."""
    return f"shard-{shard[0]}-of-{shard[1]}"


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``manifest.json``, or a shard's ``manifest.shard-I-of-N.json``."""
    return MANIFEST_NAME if shard is None else f"manifest.{shard_suffix(shard)}.json"


def write_manifest(output_dir: Path, manifest: dict[str, Any], *, previous_ok: bool = False,
                   shard: tuple[int, int] | None = None, previous: dict[str, Any] | None = None) -> None:
    """Copy the current ``manifest.json`` to ``.dalle-pipe/manifest.prev.json``, then write the
    new one atomically. A current manifest that is corrupt goes to
    ``.dalle-pipe/manifest.corrupt.json`` instead, so the good previous copy is kept. A shard's
    manifest (``shard``) keeps its ``previous`` one as ``.dalle-pipe/manifest.shard-I-of-N.prev.json``."""
    output_dir = Path(output_dir)
    if shard is not None:
        name = manifest_name(shard)
        if previous is not None:
            atomic_write_json(state_dir(output_dir) / name.replace(".json", ".prev.json"), previous)
        atomic_write_bytes(output_dir / name, dumps_manifest(manifest).encode("utf-8"))
        return
    path = output_dir / MANIFEST_NAME
    if previous_ok and _link_previous(output_dir, path):
        atomic_write_chunks(path, manifest_chunks(manifest))
        return
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None:
        backup = PREV_MANIFEST_NAME
        if not previous_ok:  # the caller may already have parsed it (a large manifest parses slowly)
            try:
                _parse_manifest(path, old)
            except ManifestCorruptError:
                backup = "manifest.corrupt.json"
        atomic_write_bytes(state_dir(output_dir) / backup, old)
    atomic_write_chunks(path, manifest_chunks(manifest))


def _link_previous(output_dir: Path, path: Path) -> bool:
    """Keep the current manifest as manifest.prev.json by a hard link (no 30 MB copy): the new
    manifest is then written beside it and renamed over the name, so the linked file is untouched."""
    prev = state_dir(output_dir) / PREV_MANIFEST_NAME
    tmp = prev.with_name(f".{prev.name}.link")
    try:
        prev.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, prev)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    fsync_dir(prev.parent)
    return True


def dumps_manifest(manifest: dict[str, Any]) -> str:
    """Top-level keys indented; each entry on one compact line (see :func:`manifest_chunks`)."""
    return "".join(manifest_chunks(manifest))


def manifest_chunks(manifest: dict[str, Any]) -> Iterator[str]:
    """The manifest's text in pieces: top-level keys indented, each entry on one compact line.

    Readable in a diff (one line per image) and fast: json's C encoder only runs without indent,
    and 30,000 indented entries take seconds to format. Written piece by piece, a 25 MB manifest is
    never held as one string.
    """
    yield "{\n"
    items = list(manifest.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        head = f"  {json.dumps(key)}: "
        if key == "entries" and isinstance(value, list) and value:
            yield f"{head}[\n"
            last = len(value) - 1
            for n, e in enumerate(value):
                yield "    " + json.dumps(e, ensure_ascii=False) + (",\n" if n < last else "\n")
            yield f"  ]{comma}\n"
        else:
            yield f"{head}{json.dumps(value, ensure_ascii=False)}{comma}\n"
    yield "}\n"
def manifest_path(output_dir: Path) -> Path:
    return Path(output_dir) / MANIFEST_NAME


__all__ = [
    "Entry",
    "ManifestCorruptError",
    "entry_problem",
    "load_manifest",
    "load_previous_manifest",
    "manifest_path",
    "write_manifest",
]


ORPHANS_NAME = "orphans.json"  # in .dalle-pipe/: entries of tasks no recipe has any more (they still feed reuse)
MAX_ORPHANS = 50_000


def read_orphans(out_dir: Path) -> list[dict[str, Any]]:
    """The entries of tasks that left the recipe, oldest first; an unreadable file is none."""
    try:
        data = json.loads((state_dir(Path(out_dir)) / ORPHANS_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def add_orphans(out_dir: Path, entries: list[dict[str, Any]]) -> None:
    """Keep the entries of tasks that left the recipe (the newest MAX_ORPHANS)."""
    atomic_write_json(state_dir(Path(out_dir)) / ORPHANS_NAME, [*read_orphans(out_dir), *entries][-MAX_ORPHANS:])
