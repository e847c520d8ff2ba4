"""Batch API lines: the JSONL request line a task becomes, and reading answer files back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...plan import Task
from ..decision import Outcome
from ..state import RunState
from .edits import ENDPOINTS


@dataclass
class Queued:
    order: int
    task: Task
    fp: str
    prompt: str | None
    inputs: list[dict[str, Any]]
    body: dict[str, Any] | None = None  # a JSON edit's body (its files uploaded); None: from the params
    attempt: int = 0  # a retry after failed checks (numbered in the fingerprint, never sent)


def request_record(q: Queued) -> dict[str, Any]:
    t = q.task
    record: dict[str, Any] = {
        "task": t.id, "step": t.step.id, "key": t.unit.key, "indexes": list(range(t.n)), "paths": list(t.outputs),
        "fingerprint": q.fp, "provider": "openai", "model": t.model, "endpoint": ENDPOINTS[t.kind],
        "params": t.params, "prompt": q.prompt, "inputs": q.inputs, "twins": [], "twin_keys": []}
    if q.attempt:
        record["attempt"] = q.attempt
    return record


def jsonl_line(custom_id: str, req: dict[str, Any], body: dict[str, Any] | None = None) -> bytes:
    """The request exactly as a direct call sends it: the params (minus prompt and files), prompt, model;
    an edit's `body` also names its files by file id (`edits.line_body`)."""
    if body is None:
        body = {k: v for k, v in req["params"].items() if k not in ("model", "prompt", "image", "mask")}
        body.update({"prompt": req["prompt"] or "", "model": req["model"]})
    line = {"custom_id": custom_id, "method": "POST", "url": req["endpoint"], "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def made_in_this_flow(state: RunState, entry: dict[str, Any]) -> bool:
    """Is this reused entry the one the manifest (or a landing) recorded as `generated` at its path?"""
    prev = state.prev_by_path.get(str(entry.get("path")).lower())
    return (prev is not None and prev.get("status") == "generated" and prev.get("index") == entry.get("index")
            and prev.get("fingerprint") == entry.get("fingerprint") and prev.get("sha256") == entry.get("sha256"))


def waiting(task: Task, reason: str, prompt: str | None) -> Outcome:
    return Outcome("pending", entries=[{"path": p} for p in task.outputs], prompt=prompt, reason=reason,
                   in_scope=False)


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for raw in f:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj
