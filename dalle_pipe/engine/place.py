"""Placing images at their output paths and building their manifest entries: reused, saved, adopted, made.

Every write goes through here: a paid or hand-edited image about to be replaced goes to history
first (`retire_replaced`); an image is written atomically and recorded in the file index.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from .. import store
from ..imaging import io as imgio
from ..plan import Task
from ..prices import cost_from_usage
from ..recipe import display_path
from ..store import DiskError, ObjectCorruptError, ObjectRecord, is_disk_error
from .decide import endpoint_of, recorded_endpoint
from .decision import Decision, Outcome, Resolved
from .estimate import edit_inputs
from .state import PAID_FREE, RunState


def place_found(state: RunState, task: Task, index: int, found: dict[str, Any]) -> dict[str, Any]:
    """Reuse a found image at this task's path (copying it there when it lives elsewhere)."""
    rel = task.outputs[index]
    if found["path"] != rel and state.mode == "run" and state.files.sha_rel(rel) != found["sha256"]:
        dst = store.safe_join(state.output_dir, rel)
        src = store.safe_join(state.output_dir, found["path"])
        if dst.exists():  # another task may still want it: history keeps it findable
            store.move_to_history(state.output_dir, dst)
            state.files.forget(dst)
            state.reuse.invalidate()
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.copy")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        state.files.record(dst, str(found["sha256"]))
    entry = dict(found)  # earlier entries stay as they were: batch collect and reports compare with them
    entry.update({"step": task.step.id, "key": task.unit.key, "index": index, "path": rel,
                  "status": "up_to_date"})
    entry.pop("stale", None)
    entry.pop("current_sha256", None)
    return entry


def retire_replaced(state: RunState, rel: str) -> None:
    """Before a file is replaced: a paid or hand-edited image goes to history; a free one is replaced."""
    prev = state.prev_by_path.get(rel.lower())
    path = state.output_dir / rel
    if not path.exists():
        return
    free = prev is not None and prev.get("provider") in PAID_FREE
    if not free or prev is None or state.files.sha(path) != prev.get("sha256"):
        store.move_to_history(state.output_dir, path)
        state.files.forget(path)


def failed_outcome(task: Task, etype: str, message: str, scoped: bool, **extra: Any) -> Outcome:
    error = {"type": etype, "status": extra.get("status"), "code": extra.get("code"), "message": message}
    return Outcome("failed", reason=message, in_scope=scoped,
                   entries=[{"error": error, "attempts": extra.get("attempts", 0),
                             "possible_duplicate_charge": extra.get("dup", False)}] * max(task.n, 1))


def shown(state: RunState, path: Path) -> str:
    """An input's path in the manifest: relative to output_dir, else to the project root."""
    for base in (state.output_dir, state.project_root):
        if base is not None:
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                continue
    return display_path(path)


def input_entries(state: RunState, inputs: Resolved) -> list[dict[str, Any]]:
    out = []
    for ref, path, sha in inputs:
        out.append({"role": ref.role, "path": shown(state, path), "sha256": sha})
    return out


def write_image(state: RunState, task: Task, index: int, data: bytes,
           decoded: tuple[int, int, str] | None = None) -> dict[str, Any]:
    rel = task.outputs[index]
    path = store.safe_join(state.output_dir, rel)
    retire_replaced(state, rel)
    store.atomic_write_bytes(path, data)
    sha = store.sha256_bytes(data)
    state.files.record(path, sha)
    if decoded is None:
        info = imgio.probe(path)
        decoded = (info.width, info.height, info.format)
    width, height, fmt = decoded
    return {"step": task.step.id, "key": task.unit.key, "index": index, "path": rel, "sha256": sha,
            "width": width, "height": height, "format": fmt, "bytes": len(data)}


def common_fields(state: RunState, task: Task, provider: str, fp: str, prompt: str | None,
            inputs: Resolved, started: float) -> dict[str, Any]:
    common = {"provider": provider, "model": task.model, "endpoint": endpoint_of(task, state),
              "params": task.params, "prompt": prompt, "inputs": input_entries(state, inputs),
              "fingerprint": fp, "approved": False, "created_at": store.utc_now_iso(),
              "duration_s": round(time.monotonic() - started, 3), "status": "generated", "error": None}
    if provider not in PAID_FREE and state.endpoint_host is not None:
        common["endpoint_host"] = state.endpoint_host  # `endpoint` stays a path
    return common


def check_size(task: Task, entry: dict[str, Any]) -> None:
    """An image whose size differs from an explicit `size` is kept, with a warning in its entry."""
    want = task.params.get("size")
    if not isinstance(want, str) or "x" not in want or entry.get("width") is None:
        return
    got = f"{entry['width']}x{entry['height']}"
    if got != want:
        entry["warnings"] = [f"asked for size {want}, the server sent {got}"]


def forget_objects(state: RunState, records: list[ObjectRecord]) -> None:
    if state.objects is None:
        return
    for record in records:
        with contextlib.suppress(OSError):
            state.objects.discard(record)


def placement_failed(state: RunState, task: Task, exc: BaseException, record: ObjectRecord | None,
                      attempts: int, dup: bool) -> Outcome:
    """A paid image that could not be placed: its bytes stay in the store for the next run."""
    message = str(getattr(exc, "message", None) or exc)
    if is_disk_error(exc):
        message = DiskError.from_exception(exc, what=f"the image of {task.id}").message()
        state.ledger.disk_failed(message)
    where = (f"; its bytes are kept in {display_path(state.objects.root)}, and a rerun places them without paying"
             if record is not None and state.objects is not None else "")
    return failed_outcome(task, "placement", f"the image could not be written: {message}{where}", True,
                   attempts=attempts, dup=dup)


def decode(data: bytes) -> tuple[int, int, str] | None:
    """Width, height and format of an answer's bytes, decoded whole; None when they are no image."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = (img.format or "").lower()
            return img.width, img.height, "jpeg" if fmt == "jpg" else fmt
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def place_saved(state: RunState, task: Task, d: Decision) -> Outcome | None:
    """Paid bytes an earlier run stored but never placed: place them now, paying nothing. None when
    they turn out unusable (damaged, or no image): the task is then decided again without them."""
    assert d.fingerprint is not None and d.endpoint is not None
    fp, prompt, inputs, scoped = d.fingerprint, d.prompt, d.resolved(state.output_dir), d.in_scope
    entries = []
    for i in range(task.n):
        try:
            entry = place_saved_image(state, task, fp, i, prompt, inputs, d.endpoint)
        except SavedPlacementError as exc:
            exc.outcome.in_scope = scoped
            return exc.outcome
        if entry is None:
            return None
        entries.append(entry)
    if state.journal is not None:
        state.journal.done(task.id, fp, entries)
    return Outcome("generated", entries, prompt, entries[0].get("revised_prompt"), in_scope=scoped)


class SavedPlacementError(Exception):
    """Saved paid bytes that could not be written at their path: the failed outcome (bytes kept)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def place_saved_image(state: RunState, task: Task, fp: str, index: int, prompt: str | None, inputs: Resolved,
                      endpoint: str) -> dict[str, Any] | None:
    """One saved answer's image placed at the task's path `index` (its record then removed); None when
    there is none, or it is unusable (damaged: left for inspection; no image: removed)."""
    assert state.objects is not None
    with state.lock:
        record = state.saved.pop((fp, index), None)  # taken: a task with the same request waits for it
    if record is None:
        return None
    try:
        try:
            data = state.objects.read(record)
        except ObjectCorruptError:
            return None
        decoded = decode(data)
        if decoded is None:
            forget_objects(state, [record])
            return None
        entry = write_image(state, task, index, data, decoded)
    except (OSError, ValueError, imgio.ImageInputError) as exc:
        with state.lock:
            state.saved[(fp, index)] = record  # still unplaced: the next run places it
        raise SavedPlacementError(placement_failed(state, task, exc, record, int(record.meta.get("attempts") or 1),
                                                   True)) from None
    entry.update(common_fields(state, task, state.provider_name, fp, prompt, inputs, time.monotonic()))
    entry.update({"endpoint": recorded_endpoint(endpoint), "revised_prompt": None, "request_id": None,
                  "usage": None, "cost_usd": None, "attempts": 1, "possible_duplicate_charge": False})
    _recorded_answer(state, task, entry, record, prompt)
    entry["recovered"] = True
    check_size(task, entry)
    forget_objects(state, [record])
    return entry


_SAVED_META = frozenset({"revised_prompt", "request_id", "usage", "attempts", "response_id"})


def _recorded_answer(state: RunState, task: Task, entry: dict[str, Any], record: ObjectRecord,
                     prompt: str | None) -> None:
    """What a saved answer said (revised prompt, request id, usage), and its cost, into the entry."""
    entry.update({k: v for k, v in record.meta.items() if k in _SAVED_META and v is not None})
    usage = record.meta.get("usage")
    if state.provider_name not in PAID_FREE:  # without usage (dall-e), the estimate of the same request
        share = int(record.meta.get("images_in_answer") or 1)
        cost = cost_from_usage(state.prices, task.model or "", usage if isinstance(usage, dict) else None,
                               {**task.params, "n": share},
                               kind=task.kind, input_images=edit_inputs(task),
                               prompt=prompt)
        entry["cost_usd"] = None if cost is None else round(cost / share, 6)


def adopt(state: RunState, task: Task, d: Decision) -> Outcome:
    """Keep the images asked for before a crash (see decide._adoptable); journaled in a run. What the
    answer said (revised prompt, request id, usage, cost) comes from its saved record when there is one;
    a later task with the same request copies these images (a claim, already done)."""
    assert d.fingerprint is not None and d.provider is not None and d.endpoint is not None
    fp = d.fingerprint
    inputs = d.resolved(state.output_dir)
    with state.lock:
        records = {i: state.saved.get((fp, i)) for i in range(task.n)}
    entries: list[dict[str, Any]] = []
    for i, rel in enumerate(task.outputs):
        path = state.output_dir / rel
        info = imgio.probe(path)
        entry: dict[str, Any] = {"step": task.step.id, "key": task.unit.key, "index": i, "path": rel,
                 "sha256": state.files.sha(path), "width": info.width, "height": info.height,
                 "format": info.format, "bytes": path.stat().st_size}
        entry.update(common_fields(state, task, d.provider, fp, d.prompt, inputs, time.monotonic()))
        entry.update({"endpoint": recorded_endpoint(d.endpoint), "revised_prompt": None, "request_id": None,
                      "usage": None, "cost_usd": None, "attempts": 1, "possible_duplicate_charge": False,
                      "recovered": True, "duration_s": None})
        record = records.get(i)
        if record is not None and record.sha256 == entry["sha256"]:
            _recorded_answer(state, task, entry, record, d.prompt)
        entries.append(entry)
    if state.journal is not None and state.mode == "run":
        state.journal.done(task.id, fp, entries)
        with state.lock:
            saved = [state.saved.pop((fp, i)) for i in range(task.n) if (fp, i) in state.saved]
        forget_objects(state, saved)  # its answer's bytes, stored before the crash: the image is placed
        claim = state.claim(fp, task.id)
        if claim.owner == task.id and not claim.done.is_set():
            claim.entries = [dict(e) for e in entries]
            claim.done.set()
    return Outcome("up_to_date", entries, d.prompt, entries[0].get("revised_prompt"), in_scope=d.in_scope,
                   decision=d)
