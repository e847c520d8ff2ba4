"""Batch state files: `output_dir/.dalle-pipe/batches/<token>.json`, one per submitted batch.

Each holds the batch and file ids, its status, and for each custom_id everything `collect` needs
(task, step, key, image indexes and paths, fingerprint, provider, model, endpoint, params, prompt,
inputs), so that status and collect run later, on another machine, with only the recipe and the
output folder. A file is written before its batch is created (the token is also the batch's
metadata), so a crash in between is recovered by finding the batch by its metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ... import __version__, store
from ...errors import UsageError
from ...providers.batches import TERMINAL, BatchInfo
from ...recipe import Recipe, display_path
from ..results import RunOptions

ENDPOINT = "/v1/images/generations"
MAX_REQUESTS = 50_000  # per batch file
MAX_BYTES = 200 * 1000 * 1000  # 200 MB per batch file (decimal: the stricter reading)
STATE_FORMAT = 1
OPEN = frozenset({"submitting", "validating", "in_progress", "finalizing", "cancelling"})
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


def states_dir(out_dir: Path) -> Path:
    return store.batches_dir(out_dir)


class BatchStateCorruptError(UsageError):
    """A batch state file that is not what dalle-pipe wrote (exit 2): its open requests would be
    forgotten and paid again, so nothing runs until it is fixed or removed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{display_path(path)}: not a valid dalle-pipe batch state: {reason}",
                         "restore it from a backup, or remove it: requests still queued in its batch are then "
                         "made again, and paid again")
        self.path = path


_STR, _OPT_STR, _LIST, _DICT = (str,), (str, type(None)), (list,), (dict,)
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "token": _STR, "status": _STR, "requests": _DICT, "results": _DICT, "collected_at": _OPT_STR,
    "batch_id": _OPT_STR, "submitted_at": _OPT_STR, "only": (list, type(None)), "shard": (list, type(None)),
    "input_file_id": _OPT_STR, "wave": (int,),
}
_REQUEST_TYPES: dict[str, tuple[type, ...]] = {
    "fingerprint": _STR, "key": _STR, "task": _STR, "step": _STR, "paths": _LIST, "model": _OPT_STR,
    "params": _DICT, "prompt": _OPT_STR, "provider": _STR, "endpoint": _STR, "inputs": _LIST, "twin_keys": _LIST,
    "attempt": (int,),
}
_REQUIRED = ("fingerprint", "key", "task", "step", "paths", "params", "provider", "endpoint", "inputs")


def _state_problem(doc: object) -> str | None:
    """What makes a parsed state file unusable, naming the field; None when it is usable."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("format") != STATE_FORMAT:
        return f"format is {doc.get('format')!r}, not {STATE_FORMAT}"
    for name, types in _STATE_TYPES.items():
        if name in doc and type(doc[name]) not in types:
            return f"{name}: has the wrong type ({type(doc[name]).__name__})"
    if "requests" not in doc:
        return "requests: missing"
    for cid, req in doc["requests"].items():
        if not isinstance(req, dict):
            return f"requests[{cid!r}]: not an object"
        missing = next((k for k in _REQUIRED if k not in req), None)
        if missing is not None:
            return f"requests[{cid!r}].{missing}: missing"
        for name, types in _REQUEST_TYPES.items():
            if name in req and type(req[name]) not in types:
                return f"requests[{cid!r}].{name}: has the wrong type ({type(req[name]).__name__})"
    if any(not isinstance(r, dict) for r in (doc.get("results") or {}).values()):
        return "results: an entry is not an object"
    return None


def load_states(out_dir: Path) -> list[dict[str, Any]]:
    """Every batch state of an output folder, oldest submission first.

    A file that is not valid JSON or not shaped as dalle-pipe writes it raises BatchStateCorruptError
    (exit 2, naming the file): skipping it would forget requests already queued and pay for them again.
    """
    folder = states_dir(out_dir)
    docs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text("utf-8"))
        except UnicodeDecodeError:
            raise BatchStateCorruptError(path, "not UTF-8 text") from None
        except ValueError as exc:
            raise BatchStateCorruptError(path, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise BatchStateCorruptError(path, "nested too deeply") from None
        problem = _state_problem(doc)
        if problem is not None:
            raise BatchStateCorruptError(path, problem)
        doc["_path"] = str(path)
        docs.append(doc)
    return sorted(docs, key=lambda d: (str(d.get("submitted_at") or ""), str(d.get("token"))))


def save_state(doc: dict[str, Any]) -> None:
    store.atomic_write_json(Path(doc["_path"]), {k: v for k, v in doc.items() if not k.startswith("_")})


def is_open(doc: dict[str, Any]) -> bool:
    return doc.get("collected_at") is None and doc.get("status") in OPEN | TERMINAL


def in_shard(doc: dict[str, Any], shard: tuple[int, int] | None) -> bool:
    return shard is None or doc.get("shard") == list(shard)


def in_flight(states: list[dict[str, Any]]) -> dict[str, str]:
    """fingerprint -> batch (id or token) of every request in a batch not collected yet."""
    out: dict[str, str] = {}
    for doc in states:
        if is_open(doc):
            label = str(doc.get("batch_id") or doc.get("token"))
            for req in doc["requests"].values():
                out[str(req["fingerprint"])] = label
    return out


def failed_lines(states: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """fingerprint -> error, for requests whose latest batch was collected with that request failed."""
    latest: dict[str, dict[str, Any] | None] = {}
    for doc in states:
        if doc.get("status") == "abandoned":
            continue
        results = doc.get("results") or {}
        for cid, req in doc["requests"].items():
            res = results.get(cid) if doc.get("collected_at") else None
            latest[str(req["fingerprint"])] = res.get("error") if res and res.get("status") == "failed" else None
    return {fp: err for fp, err in latest.items() if err is not None}


def retries(states: list[dict[str, Any]]) -> dict[tuple[str, int], set[str]]:
    """(task, attempt) -> fingerprints of the retries after failed checks sent in a batch (not abandoned)."""
    out: dict[tuple[str, int], set[str]] = {}
    for doc in states:
        if doc.get("status") == "abandoned":
            continue
        for req in doc["requests"].values():
            if req.get("attempt"):
                out.setdefault((str(req["task"]), int(req["attempt"])), set()).add(str(req["fingerprint"]))
    return out


def new_state(recipe: Recipe, token: str, wave: int, opts: RunOptions,
              requests: dict[str, dict[str, Any]], endpoint: str = ENDPOINT) -> dict[str, Any]:
    """A batch state file: everything `status` and `collect` need, with only the recipe and the folder."""
    return {
        "format": STATE_FORMAT, "tool": "dalle-pipe", "version": __version__, "token": token,
        "recipe": {"path": display_path(recipe.source.path), "name": recipe.name, "sha256": recipe.sha256},
        "shard": list(opts.shard) if opts.shard else None, "only": list(opts.only), "wave": wave,
        "endpoint": endpoint, "completion_window": "24h", "submitted_at": store.utc_now_iso(),
        "submitted_unix": int(time.time()), "status": "submitting", "input_file_id": None, "batch_id": None,
        "request_counts": None, "output_file_id": None, "error_file_id": None, "errors": [],
        "collected_at": None, "requests": requests, "results": {},
    }


def update_state(doc: dict[str, Any], info: BatchInfo) -> None:
    doc.update({"batch_id": info.id, "status": info.status, "input_file_id": info.input_file_id,
                "request_counts": info.request_counts, "output_file_id": info.output_file_id,
                "error_file_id": info.error_file_id, "errors": info.errors})


def open_requests(out_dir: Path) -> int:
    """How many requests of this output folder are in batches not collected yet (no network)."""
    return sum(len(d["requests"]) for d in load_states(out_dir) if is_open(d))
