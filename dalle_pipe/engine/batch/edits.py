"""Edits through the Batch API: the JSON form of `/v1/images/edits`, for GPT image models.

OpenAI's published OpenAPI spec defines a JSON body for `/v1/images/edits` (`EditImageBodyJsonParam`):
`images: [{file_id | image_url}]` (up to 16) and `mask: {file_id | image_url}` beside the usual
fields. A Batch line is JSON anyway, so an edit of a GPT image model goes into a batch at half
price. Its input files are the exact bytes a direct call would upload (`engine.call.build_request`);
each distinct one (by sha256) is uploaded once through the Files API and named by its file id.

Uploads are remembered per base URL in `.dalle-pipe/batch-uploads.json`, so a later submission
(a failed line sent again, a submission that was abandoned) never uploads the same bytes twice. A
server that refuses the form (a 4xx at an upload, at batch creation, or on an edit's line) is
remembered there too: from then on, edits against it are sent directly, and the summary says so.
Deleting the file makes dalle-pipe try again.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ... import models, store
from ...plan import Task
from ...providers.base import ImageRequest, InputFile
from ...providers.batches import BatchClient

ENDPOINTS = {"generate": "/v1/images/generations", "edit": "/v1/images/edits"}
UPLOADS_FORMAT = "uploads/1"
MAX_IMAGES = 16  # images of one JSON edit


def json_edit(task: Task) -> bool:
    """Can this edit go through the Batch API? A GPT image model, no markup (the form has none)."""
    if task.kind != "edit" or task.markup is not None or len(task.images) > MAX_IMAGES:
        return False
    spec = models.get_model(task.model or "")
    return spec is not None and spec.family == "gpt-image"


def line_body(req: dict[str, Any], image_ids: list[str], mask_id: str | None) -> dict[str, Any]:
    """An edit's JSON body: the fields a direct call sends, with its files named by their file ids."""
    body = {k: v for k, v in req["params"].items() if k not in ("model", "prompt", "image", "mask", "markup")}
    body.update({"prompt": req["prompt"] or "", "model": req["model"],
                 "images": [{"file_id": i} for i in image_ids]})
    if mask_id is not None:
        body["mask"] = {"file_id": mask_id}
    return body


def form_refused(error: dict[str, Any]) -> bool:
    """Does an edit line's error say the server takes no JSON edits (rather than refusing the image)?"""
    return error.get("type") == "bad_request" or error.get("status") in (404, 405, 415, 422)


class Uploads:
    """What this output folder uploaded, per base URL, and whether that server refused JSON edits."""

    def __init__(self, out_dir: Path, base_url: str) -> None:
        self.path = store.state_dir(out_dir) / "batch-uploads.json"  # beside batches/: not a batch state
        self.base_url = server_name(base_url)
        self.doc = self._read()
        server = self.doc["servers"].get(self.base_url)
        if not isinstance(server, dict) or not isinstance(server.get("files"), dict):
            server = {"files": {}, "refused": None}
            self.doc["servers"][self.base_url] = server
        self.server: dict[str, Any] = server
        self._lock = threading.Lock()  # the document, and the per-sha locks
        self._uploading: dict[str, threading.Lock] = {}  # sha -> held while its bytes upload

    @property
    def refused(self) -> str | None:
        """Why this server takes no JSON edits (None: it may)."""
        why = self.server.get("refused")
        return str(why.get("reason")) if isinstance(why, dict) else None

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.server["refused"] = {"reason": reason, "at": store.utc_now_iso()}
            self._save()

    def file_id(self, client: BatchClient, f: InputFile) -> str:
        """The file id of these bytes: uploaded now, or remembered from an earlier upload."""
        sha = store.sha256_bytes(f.data)
        with self._lock:
            one = self._uploading.setdefault(sha, threading.Lock())
        with one:  # two tasks with the same input: one uploads, the other waits and reuses its id
            with self._lock:
                known = self.server["files"].get(sha)
            if isinstance(known, dict) and isinstance(known.get("file_id"), str):
                return str(known["file_id"])
            file_id = client.upload_input(f"{sha[:16]}-{f.filename}", f.data, f.mime)
            with self._lock:
                self.server["files"][sha] = {"file_id": file_id, "bytes": len(f.data),
                                             "uploaded_at": store.utc_now_iso()}
                self._save()  # at once: a crash later never uploads these bytes again
            return file_id

    def line_body(self, client: BatchClient, req: dict[str, Any], request: ImageRequest) -> dict[str, Any]:
        """Upload what is not uploaded yet; the edit's JSON body."""
        image_ids = [self.file_id(client, f) for f in request.images]
        mask_id = self.file_id(client, request.mask) if request.mask is not None else None
        return line_body(req, image_ids, mask_id)

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("format") == UPLOADS_FORMAT and isinstance(doc.get("servers"), dict):
            return doc
        return {"format": UPLOADS_FORMAT, "servers": {}}

    def _save(self) -> None:
        """Write the file, keeping what another process (a shard) recorded since it was read."""
        on_disk = self._read()["servers"].get(self.base_url)
        if isinstance(on_disk, dict) and isinstance(on_disk.get("files"), dict):
            self.server["files"] = {**on_disk["files"], **self.server["files"]}
        self.doc["servers"][self.base_url] = self.server
        store.atomic_write_json(self.path, self.doc)


def server_name(base_url: str) -> str:
    """A base URL as batch-uploads.json names it: no user, password or query (they may hold a secret)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")
