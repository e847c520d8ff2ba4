"""Sending one task's request: through the limiter and the retry policy, the answer's bytes durable
in the paid-bytes store before they are decoded, checked and placed."""

from __future__ import annotations

from typing import Any

from .. import models
from ..imaging import io as imgio
from ..plan import Task
from ..prices import cost_from_usage
from ..providers.base import Fatal, ImageRequest, ImageResponse, InputFile, NoImage, ProviderError
from ..store import DiskError, ObjectRecord, is_disk_error, rescue
from ..throttle import Outcome as CallOutcome
from ..throttle import Stopped, call_with_retries
from .decide import own_entry, recorded_endpoint
from .decision import Outcome, Resolved
from .estimate import edit_inputs
from .place import (
    SavedPlacementError,
    check_size,
    common_fields,
    decode,
    failed_outcome,
    forget_objects,
    input_entries,
    place_found,
    place_saved_image,
    placement_failed,
    write_image,
)
from .state import PAID_FREE, RunState

NO_IMAGE = "the server sent no readable image"


def build_request(state: RunState, task: Task, inputs: Resolved,
             prompt: str | None) -> ImageRequest:
    spec = models.get_model(task.model or "")
    rules = (spec.variation_inputs if task.kind == "variation" else spec.edit_inputs) if spec else None
    allowed = set(rules.formats) if rules else {"png"}
    square_png = bool(rules and rules.square)
    images: list[InputFile] = []
    mask: InputFile | None = None
    markup: InputFile | None = None
    first_size: tuple[int, int] | None = None
    for ref, path, _ in inputs:
        shown = input_entries(state, [(ref, path, "")])[0]["path"]
        if ref.role == "markup":  # api helper (issue 13): size and transparency checked before sending
            from ..imaging.markup import prepare_markup

            markup = InputFile("markup", shown, prepare_markup(path, first_size), "markup.png", "image/png")
        elif ref.role == "mask":
            info = imgio.probe(path)
            resize = task.step.body.get("fit") == "resize" and first_size not in (None, info.size)
            if info.format == "png" and info.mode == "RGBA" and info.orientation == 1 and not resize:
                data = path.read_bytes()  # already what the API wants: sent byte for byte
            else:
                data = imgio.to_rgba_png(path)
                if resize and first_size is not None:
                    data = _resize_mask(data, first_size)
            mask = InputFile("mask", shown, data, "mask.png", "image/png")
        else:
            data, mime, name = imgio.prepare_upload(path, allowed_formats=allowed,
                                                    as_png=square_png)
            if first_size is None:
                info = imgio.probe(path)
                first_size = (info.width, info.height)
            images.append(InputFile("image", shown, data, name, mime))
    provider = task.recipe.provider
    responses = provider.api == "responses" and state.provider_name != "offline"
    params = dict(task.params)
    if responses:  # the tool's settings: no n (one image per call), nothing the tool does not take
        params = models.request_params(task.model or "", task.kind, params, api="responses")  # type: ignore[arg-type]
    return ImageRequest(kind=task.kind, model=task.model or "", prompt=prompt,  # type: ignore[arg-type]
                        params=params, images=tuple(images), mask=mask, markup=markup,
                        timeout_s=state.timeout_s,
                        api="responses" if responses else "images",
                        # api helper (issue 12.6): offline gets the mainline model too, so it can
                        # mirror the Responses route's shape (a revised prompt)
                        mainline_model=provider.model if provider.api == "responses" else None)


def _resize_mask(data: bytes, size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        out = img.convert("RGBA").resize(size, Image.Resampling.NEAREST)
    return imgio.encode(out, "png")


def make_api(state: RunState, task: Task, inputs: Resolved, fp: str,
              prompt: str | None, endpoint: str, started: float) -> Outcome:
    """Make a task's images: one call for n images, or, on the Responses route (one image per
    call), n calls, each through the limiter and the retry loop. Every answer's bytes are put in
    the object store before they are decoded or placed; every image is journaled as it lands;
    attempts and possible_duplicate_charge are the task's, summed."""
    if state.ledger.over_budget():
        return Outcome("skipped", reason=f"cost limit ${state.ledger.max_cost:.2f} reached")
    try:
        request = build_request(state, task, inputs, prompt)
    except (imgio.ImageInputError, OSError, ValueError) as exc:
        return failed_outcome(task, "input", str(getattr(exc, "message", exc)), True)
    split = request.api == "responses"
    per_call = 1 if split else task.n
    recorded = recorded_endpoint(endpoint)
    entries: list[dict[str, Any]] = []
    made: list[dict[str, Any]] = []
    attempts = 0
    dup = fp in state.pending_fps
    total: float | None = 0.0
    failure: Outcome | None = None
    unreadable = 0
    placed: list[ObjectRecord] = []  # stored objects whose image is placed: removed once journaled
    while len(entries) < task.n:
        first = len(entries)
        if split and not state.force:  # a call of an earlier, partly failed run that landed
            found = own_entry(state, task, fp, first) or state.reuse.lookup(fp, first)
            if found is not None:
                entries.append(place_found(state, task, first, found))
                continue
        if split and state.saved and (fp, first) in state.saved:  # its paid bytes, saved by an earlier run
            try:
                saved = place_saved_image(state, task, fp, first, prompt, inputs, endpoint)
            except SavedPlacementError as exc:
                failure = exc.outcome
                break
            if saved is not None:
                if state.journal is not None:
                    state.journal.done(task.id, fp, [saved])
                entries.append(saved)
                continue
        if (made or unreadable) and state.ledger.stop_reason is not None:
            failure = Outcome("skipped", reason=state.ledger.stop_reason)
            break
        if made and state.ledger.over_budget():
            failure = Outcome("skipped", reason=f"cost limit ${state.ledger.max_cost:.2f} reached")
            break
        call = _Call(state, task, request, fp, first, attempts, per_call)
        got = call.run()
        attempts = call.attempt
        if got is None:  # the run was stopped, or the budget spent, while this call waited for the limiter
            reason = (f"cost limit ${state.ledger.max_cost:.2f} reached" if state.ledger.over_budget()
                      else state.ledger.stop_reason or "run stopped")
            failure = Outcome("skipped", reason=reason)
            break
        dup = dup or got.possible_duplicate_charge
        if call.unreadable:
            # A 2xx without a readable image may still have been billed: ask once more, no more.
            dup = True
            unreadable += 1
            if unreadable <= min(1, state.max_retries) and state.ledger.stop_reason is None:
                continue
            status = (call.no_image.status if call.no_image is not None else None) or 200
            if state.journal is not None:
                state.journal.failed(task.id, fp, {"type": "no_image", "status": status, "code": "no_image",
                                                   "message": NO_IMAGE})
            failure = failed_outcome(task, "no_image", NO_IMAGE, True, status=status, code="no_image",
                                     attempts=attempts, dup=dup)
            break
        if call.disk_error is not None:
            failure = failed_outcome(task, "disk", call.disk_error, True, attempts=attempts, dup=True)
            break
        if got.error is not None or got.value is None:
            err = got.error or ProviderError("no response")
            if isinstance(err, Fatal):
                state.ledger.stop(f"stopped after a fatal error: {err.message}")
            if state.journal is not None:
                state.journal.failed(task.id, fp, err.as_dict())
            failure = failed_outcome(task, err.type, err.message, True, status=err.status, code=err.code,
                              attempts=attempts, dup=dup)
            break
        resp = got.value
        params = {**task.params, "n": per_call} if split else task.params
        cost = (0.0 if state.provider_name in PAID_FREE
                else cost_from_usage(state.prices, task.model or "", resp.usage, params,
                                     mainline_model=request.mainline_model,  # + the text model's tokens
                                     kind=task.kind, input_images=edit_inputs(task),
                                     prompt=prompt))
        if cost is not None:
            state.ledger.charge(cost)
        total = None if total is None or cost is None else total + cost
        images = resp.images[:per_call]
        landed = []
        for k, image in enumerate(images):
            meta = {"revised_prompt": image.revised_prompt, "request_id": resp.request_id, "usage": resp.usage,
                    "cost_usd": round(cost / len(images), 6) if cost is not None else None,
                    "attempts": attempts, "possible_duplicate_charge": dup}
            if resp.response_id:
                meta.update({"response_id": resp.response_id, "mainline_model": request.mainline_model})
            record = call.stored[k] if k < len(call.stored) else None
            try:
                entry = write_image(state, task, first + k, image.data, call.decoded[k])
            except (OSError, ValueError, imgio.ImageInputError) as exc:
                failure = placement_failed(state, task, exc, record, attempts, dup)
                break
            entry.update(common_fields(state, task, state.provider_name, fp, prompt, inputs, started))
            entry.update({"endpoint": recorded, **meta})
            check_size(task, entry)
            landed.append(entry)
            if record is not None:
                placed.append(record)
        entries.extend(landed)
        made.extend(landed)
        if split and landed and state.journal is not None:
            state.journal.done(task.id, fp, landed)  # durable now: a crash later never pays for it again
            forget_objects(state, placed)
            placed = []
        if failure is not None:
            break
        if len(images) < per_call:
            failure = failed_outcome(task, "short_response", f"asked for {per_call} images, got {len(images)}", True,
                              attempts=attempts, dup=dup)
            break
    for entry in made:
        entry["attempts"], entry["possible_duplicate_charge"] = attempts, dup
    if failure is not None:
        # Images that landed before the failure are kept, with their entries (reused next time).
        error = failure.entries[0].get("error") if failure.entries else None
        for entry in entries:
            if error is not None:
                entry["error"] = error
        failure.entries = [*entries, *failure.entries[len(entries):]]
        failure.prompt = prompt
        failure.cost = total
        if made and state.journal is not None and not split:
            state.journal.done(task.id, fp, made)
            forget_objects(state, placed)
        return failure
    if state.journal is not None and not split:
        state.journal.done(task.id, fp, entries)
        forget_objects(state, placed)
    revised = entries[0].get("revised_prompt") if entries else None
    return Outcome("generated", entries, prompt, revised, cost=total)


class _Call:
    """One request with its retries: an intent line before every attempt (numbered across the
    task); the answer's bytes put in the object store before they are decoded."""

    def __init__(self, state: RunState, task: Task, request: ImageRequest, fp: str, first: int, before: int,
                 images: int) -> None:
        self.state, self.task, self.request, self.fp = state, task, request, fp
        self.first, self.attempt, self.images = first, before, images
        self.stored: list[ObjectRecord] = []
        self.decoded: list[tuple[int, int, str]] = []
        self.unreadable = False
        self.no_image: NoImage | None = None
        self.disk_error: str | None = None

    def _send(self) -> ImageResponse:
        state = self.state
        if state.ledger.over_budget():  # checked once the limiter let us through: spend may have grown meanwhile
            raise _BudgetReached
        if state.ledger.disk_error is not None:
            raise _Halt
        self.attempt += 1
        if state.journal is not None:
            state.journal.intent(self.task.id, self.fp, self.attempt)
        try:
            resp = state.provider().send(self.request)
        except NoImage as exc:
            self.no_image = exc
            raise _Unreadable from None
        self._keep(resp)
        decoded = [decode(img.data) for img in resp.images]
        if not resp.images or any(d is None for d in decoded):
            # bytes that are no image can never be placed; the readable images of the answer were paid
            # for: they stay in the store (a retry's answer replaces them; else a later run reports them)
            forget_objects(state, [r for r, d in zip(self.stored, decoded, strict=False) if d is None])
            self.stored = []
            raise _Unreadable
        self.decoded = [d for d in decoded if d is not None]
        return resp

    def _keep(self, resp: ImageResponse) -> None:
        """Durable first: the raw bytes and their record, fsynced, before anything can fail."""
        state = self.state
        self.stored = []
        for k, image in enumerate(resp.images):
            index = self.first + k
            try:
                if state.objects is not None:
                    meta = {"revised_prompt": image.revised_prompt, "request_id": resp.request_id,
                            "usage": resp.usage, "attempts": self.attempt, "format": image.format,
                            "images_in_answer": len(resp.images), "response_id": resp.response_id}
                    self.stored.append(state.objects.put(image.data, task=self.task.id, fingerprint=self.fp,
                                                         index=index, meta=meta))
            except OSError as exc:
                if not is_disk_error(exc):
                    raise
                name = f"{self.task.id.replace('/', '_')}-{index}.{image.format}"
                where = rescue(state.output_dir, image.data, name=name,
                               meta={"task": self.task.id, "fingerprint": self.fp, "index": index})
                problem = DiskError.from_exception(exc, what="the paid image")
                message = f"{problem.message()}; its bytes were rescued to {where}"

                state.ledger.disk_failed(message)
                self.disk_error = message
                raise _Halt from None

    def run(self) -> CallOutcome[ImageResponse] | None:
        state = self.state
        assert state.limiter is not None and state.clock is not None
        try:
            return call_with_retries(self._send, state.limiter, images=self.images,
                                     max_retries=state.max_retries, clock=state.clock, rng=state.rng,
                                     on_wait=state.on_wait)
        except _Unreadable:
            self.unreadable = True
            return CallOutcome(None, None, self.attempt, True)
        except _Halt:
            return CallOutcome(None, None, self.attempt, True) if self.disk_error else None
        except (Stopped, _BudgetReached):
            return None


class _BudgetReached(Exception):
    """--max-cost: actual spend reached the limit before this request was sent."""


class _Unreadable(Exception):
    """A 2xx answer without a readable image (no data, bad base64, bytes that are no image)."""


class _Halt(Exception):
    """The disk refused a write: no new request."""
