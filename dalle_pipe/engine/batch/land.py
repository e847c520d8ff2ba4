"""`batch collect`'s landing: finished batches' answer files become images at their paths.

Under the output folder's lock, the output and error files of each finished batch are downloaded
(kept next to its state), each image is checked (a line whose bytes are no image is a failed
entry, written nowhere), written atomically at its recorded path and journaled (a `done` line),
exactly as a direct run writes it (same entry fields; `cost_usd` at the batch price). Failed
lines become failed entries with their error. Collecting twice changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import threading
from pathlib import Path
from typing import Any

from ... import store
from ...imaging import io as imgio
from ...plan import Plan
from ...prices import PriceTable, cost_from_usage
from ...providers.batches import BatchClient, BatchInfo
from ...recipe import display_path
from ...throttle import Limits
from ..call import NO_IMAGE
from ..load import load_state
from ..place import decode, retire_replaced
from ..results import RunOptions
from ..state import RunState
from .edits import ENDPOINTS, form_refused
from .lines import obj, read_lines
from .results import BatchRun
from .states import REFUSAL_CODES, in_shard, is_open, save_state, states_dir, update_state


class Landing:
    """The landing half of a batch flow (`flow._Drive`), which provides what is declared here."""

    plan: Plan
    opts: RunOptions
    prices: PriceTable
    limits: Limits
    out_dir: Path
    run_: BatchRun
    lock: threading.Lock
    landed_now: dict[str, list[dict[str, Any]]]
    spent: float
    unplaced: bool = False  # a line of the batch being landed could not be placed

    @property
    def client(self) -> BatchClient:
        raise NotImplementedError

    def _fall_back(self, why: str) -> None:
        raise NotImplementedError

    def _land(self, states: list[dict[str, Any]]) -> None:
        docs = [d for d in states if is_open(d) and d.get("batch_id") and in_shard(d, self.opts.shard)]
        if not docs:
            return
        state = load_state(self.plan, self.opts, self.prices, "openai", None, self.limits, None)
        try:
            for doc in docs:
                info = self.client.retrieve(str(doc["batch_id"]))
                update_state(doc, info)
                if not info.terminal:
                    save_state(doc)
                    continue
                self.unplaced = False
                self._land_batch(state, doc, info)
                if not self.unplaced:  # else it stays open: the next collect lands what could not be placed
                    doc["collected_at"] = store.utc_now_iso()
                save_state(doc)
                self.run_.collected.append(doc)
        finally:
            if state.journal is not None:
                state.journal.close()
            state.files.save()

    def _land_batch(self, state: RunState, doc: dict[str, Any], info: BatchInfo) -> None:
        folder = states_dir(self.out_dir)
        results: dict[str, dict[str, Any]] = dict(doc.get("results") or {})
        took = float(info.completed_at - info.created_at) if info.completed_at and info.created_at else None
        for suffix, file_id in (("output", info.output_file_id), ("errors", info.error_file_id)):
            if not file_id:
                continue
            path = folder / f"{doc['token']}.{suffix}.jsonl"
            if not path.exists():
                self.client.download(file_id, path)
            for line in read_lines(path):
                cid = line.get("custom_id")
                req = doc["requests"].get(cid) if isinstance(cid, str) else None
                if req is None or results.get(str(cid), {}).get("status") == "generated":
                    continue
                results[str(cid)] = self._land_line(state, req, line, took)
        for cid, req in doc["requests"].items():
            if cid not in results:
                why = "; ".join(info.errors) or f"the batch ended {info.status} before this request ran"
                results[cid] = self._failure(state, req, {"type": f"batch_{info.status}", "status": None,
                                                          "code": info.status, "message": why}, None)
        doc["results"] = results

    def _land_line(self, state: RunState, req: dict[str, Any], line: dict[str, Any],
                   took: float | None) -> dict[str, Any]:
        response = line.get("response") if isinstance(line.get("response"), dict) else None
        body = response.get("body") if response is not None else None
        request_id = response.get("request_id") if response is not None else None
        code = response.get("status_code") if response is not None else None
        if response is None or code != 200 or not isinstance(body, dict):
            error = self._line_error(line, response)
            if req["endpoint"] == ENDPOINTS["edit"] and form_refused(error):
                self._fall_back(str(error["message"]))  # made directly by this collect's pass
                return {"status": "direct", "error": error, "request_id": request_id}
            return self._failure(state, req, error, request_id)
        items = [d for d in body.get("data") or [] if isinstance(d, dict)]
        images: list[tuple[bytes, str | None]] = []
        for item in items[: len(req["paths"])]:
            try:
                images.append((base64.b64decode(str(item.get("b64_json") or ""), validate=True),
                               item.get("revised_prompt")))
            except (binascii.Error, ValueError):
                break
        if len(images) < len(req["paths"]) or not all(data for data, _ in images):
            err = {"type": "short_response", "status": code, "code": None,
                   "message": f"asked for {len(req['paths'])} images, got {len(images)} usable"}
            return self._failure(state, req, err, request_id)
        decoded = [decode(data) for data, _ in images]  # checked (decoded whole) before anything is written
        if any(d is None for d in decoded):
            err = {"type": "no_image", "status": code, "code": "no_image", "message": NO_IMAGE}
            return self._failure(state, req, err, request_id)
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
        edit = req["endpoint"] == ENDPOINTS["edit"]
        cost = cost_from_usage(self.prices, req["model"] or "", usage, req["params"], batch=True,
                               kind="edit" if edit else "generate", prompt=req["prompt"],
                               input_images=sum(1 for i in req["inputs"] if i.get("role") == "image") if edit else 0)
        if self._approved(state, req):
            self._shelve(req, [data for data, _ in images])
            with self.lock:
                self.spent += cost or 0.0
            return {"status": "generated", "error": None, "request_id": request_id}
        entries = []
        for i, (data, revised) in enumerate(images):
            tried = self._tried(state, req, i)
            try:
                entry = self._write(state, req, i, data, decoded[i])
            except (OSError, ValueError, imgio.ImageInputError) as exc:
                # like a direct run: this line fails, its bytes stay in the downloaded answer file
                # (a later collect places them: a line is landed again until it is generated)
                message = str(getattr(exc, "message", None) or exc)
                where = display_path(states_dir(self.out_dir))
                err = {"type": "placement", "status": None, "code": None,
                       "message": f"the image could not be written: {message}; its bytes are kept in the "
                                  f"batch's answer file in {where}, and the next `batch collect` places them"}
                self.unplaced = True
                return self._failure(state, req, err, request_id)
            entry.update({
                "provider": req["provider"], "model": req["model"], "endpoint": req["endpoint"],
                "params": req["params"], "prompt": req["prompt"], "inputs": req["inputs"],
                "fingerprint": req["fingerprint"], "approved": False, "created_at": store.utc_now_iso(),
                "duration_s": took, "status": "generated", "error": None, "revised_prompt": revised,
                "request_id": request_id, "usage": usage,
                "cost_usd": round(cost / len(images), 6) if cost is not None else None,
                "attempts": 1, "possible_duplicate_charge": False,
            })
            if state.endpoint_host is not None:
                entry["endpoint_host"] = state.endpoint_host
            entry.update(tried)
            entries.append(entry)
        if state.journal is not None:
            state.journal.done(str(req["task"]), str(req["fingerprint"]), entries)
        with self.lock:
            self.landed_now[str(req["fingerprint"])] = entries
            self.run_.landed += len(entries)
            self.spent += cost or 0.0
        return {"status": "generated", "error": None, "request_id": request_id}

    @staticmethod
    def _approved(state: RunState, req: dict[str, Any]) -> bool:
        """Was the image at this request's path approved while the request was in a batch (a retry after
        failed checks, typically)? An approval wins: nothing is placed over it."""
        for rel in req["paths"]:
            prev = state.prev_by_path.get(str(rel).lower())
            if prev is not None and prev.get("approved") and state.files.sha_rel(str(rel)) == prev.get("sha256"):
                return True
        return False

    def _shelve(self, req: dict[str, Any], images: list[bytes]) -> None:
        """Paid images that may not be placed: kept in history, next to what replaced them there."""
        for rel, data in zip(req["paths"], images, strict=False):
            path = store.safe_join(self.out_dir, str(rel))
            landed = path.with_name(f"{path.stem}.batch-{str(req['fingerprint'])[:12]}{path.suffix}")
            store.atomic_write_bytes(landed, data)
            kept = store.move_to_history(self.out_dir, landed)
            with self.lock:
                self.run_.notes.append(f"{req['task']} was approved while a request for it was in a batch: "
                                       f"the image that came back is kept in {display_path(kept)}, not placed")

    @staticmethod
    def _tried(state: RunState, req: dict[str, Any], index: int) -> dict[str, Any]:
        """A retry after failed checks: its attempt, and the earlier tries' checks from the entry it replaces."""
        attempt = req.get("attempt")
        if not attempt:
            return {}
        prev = state.prev_by_path.get(str(req["paths"][index]).lower()) or {}
        same = prev.get("step") == req["step"] and prev.get("key") == req["key"]
        earlier = [a for a in prev.get("check_attempts") or [] if same and isinstance(a, dict)
                   and isinstance(a.get("attempt"), int) and a["attempt"] < attempt]
        return {"attempt": attempt, "check_attempts": earlier}

    def _write(self, state: RunState, req: dict[str, Any], index: int, data: bytes,
               decoded: tuple[int, int, str] | None) -> dict[str, Any]:
        rel = str(req["paths"][index])
        path = store.safe_join(self.out_dir, rel)
        sha = store.sha256_bytes(data)
        if state.files.sha(path) != sha:  # else it landed already (a collect that crashed)
            retire_replaced(state, rel)
            store.atomic_write_bytes(path, data)
            state.files.record(path, sha)
        assert decoded is not None  # checked by the caller: the bytes are an image
        width, height, fmt = decoded
        return {"step": req["step"], "key": req["key"], "index": index, "path": rel, "sha256": sha,
                "width": width, "height": height, "format": fmt, "bytes": len(data)}

    def _failure(self, state: RunState, req: dict[str, Any], error: dict[str, Any],
                 request_id: str | None) -> dict[str, Any]:
        if state.journal is not None:
            state.journal.failed(str(req["task"]), str(req["fingerprint"]), error)
        self.run_.failed_lines += 1
        return {"status": "failed", "error": error, "request_id": request_id}

    def _line_error(self, line: dict[str, Any], response: dict[str, Any] | None) -> dict[str, Any]:
        scrub = self.client.scrub
        if response is None:
            err = obj(line.get("error"))
            code = err.get("code")
            return {"type": "expired" if code == "batch_expired" else "batch_error", "status": None,
                    "code": code, "message": scrub(str(err.get("message") or "the request did not run"))}
        status = response.get("status_code")
        err = obj(obj(response.get("body")).get("error"))
        code = err.get("code")
        message = scrub(str(err.get("message") or f"HTTP {status}"))
        status_i = status if isinstance(status, int) else None
        if code in REFUSAL_CODES or (status_i == 400 and "safety system" in message.lower()):
            etype = "refused"
        elif status_i == 429:
            etype = "rate_limited"
        elif status_i in (401, 403, 404):
            etype = "fatal"
        elif status_i is not None and 400 <= status_i < 500:
            etype = "bad_request"
        else:
            etype = "transient"
        text = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        return {"type": etype, "status": status_i, "code": code, "message": text}

