"""One task, start to finish: inputs -> fingerprint -> reuse or keep -> make -> durable entry.

The decision order is the no-loss contract: reuse by fingerprint first; an
approved image is never regenerated; a hand-edited file is kept; the offline
provider never writes over another provider's image; a paid image about to be
replaced goes to history first.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import models, store
from .engine.context import Ledger, RunContext
from .engine.estimate import task_cost
from .engine.hosts import reusable_from
from .imaging import io as imgio
from .plan import InputRef, Task
from .prices import PriceTable, cost_from_usage
from .providers.base import (
    RESPONSES_ENDPOINT,
    Fatal,
    ImageRequest,
    ImageResponse,
    InputFile,
    NoImage,
    Provider,
    ProviderError,
)
from .recipe import display_path
from .steps.local import run_local
from .store import DiskError, ObjectCorruptError, ObjectRecord, ObjectStore, is_disk_error, rescue
from .templating import RenderError, render
from .throttle import Clock, Limiter, Stopped, call_with_retries
from .throttle import Outcome as CallOutcome

PAID_FREE = ("offline", "local")  # providers whose images cost nothing
NO_IMAGE = "the server sent no readable image"


@dataclass(slots=True)
class Outcome:
    """What became of one task."""

    status: str  # generated | up_to_date | failed | skipped | modified | pending (check/dry-run)
    entries: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None
    revised_prompt: str | None = None
    reason: str | None = None
    in_scope: bool = True
    stale: bool = False
    kept: str | None = None  # why a file at the path was kept rather than made (printed after a run)
    cost: float | None = None
    size: tuple[int, int] | None = None  # a pending task's output size, when its params fix it
    paths: list[str] | None = None  # a pending task's output paths (its entries are not built)
    fingerprint: str | None = None  # a task to make: its fingerprint, and (run mode) its resolved inputs
    resolved: list[tuple[InputRef, Path, str]] | None = None

    @property
    def outputs(self) -> list[str]:
        """The output paths this outcome stands for (a pending one's, or its entries')."""
        return self.paths if self.paths is not None else [str(e.get("path")) for e in self.entries]

    @property
    def usable(self) -> bool:
        return self.status in ("generated", "up_to_date", "modified", "pending")


@dataclass
class RunState:
    """Everything tasks of one recipe share while it runs: the context (immutable), the ledger, and
    what is known (manifests, journal, file index, paid-bytes store)."""

    ctx: RunContext
    output_dir: Path
    files: store.FileIndex
    reuse: store.ReuseIndex
    prev_by_path: dict[str, dict[str, Any]]
    pending_fps: set[str]
    project_root: Path | None = None
    prev_manifest: dict[str, Any] | None = None  # this run's own manifest as it was at the start
    prev_manifest_stat: tuple[int, int] | None = None
    provider_factory: Callable[[], Provider] | None = None
    limiter: Limiter | None = None
    journal: store.Journal | None = None
    ledger: Ledger = field(default_factory=Ledger)  # spend and the stop reason, shared by every view
    on_wait: Callable[[str, float], None] | None = None
    objects: ObjectStore | None = None  # paid bytes, durable before anything else can fail
    saved: dict[tuple[str, int], ObjectRecord] = field(default_factory=dict)  # (fp, index) -> stored, unplaced
    empty_dir: bool = False  # the output folder did not exist when the run started
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _provider: Provider | None = None

    def view(self, **changes: Any) -> RunState:
        """The same run seen in another mode (`mode="dry"`, `reuse_only=True`): one ledger, one store."""
        return replace(self, ctx=replace(self.ctx, **changes), lock=threading.Lock())

    # the context's fields, read where the decision needs them
    @property
    def mode(self) -> str:
        return self.ctx.mode

    @property
    def force(self) -> bool:
        return self.ctx.force

    @property
    def selected_steps(self) -> frozenset[str] | None:
        return self.ctx.selected_steps

    @property
    def reuse_only(self) -> bool:
        return self.ctx.reuse_only

    @property
    def prices(self) -> PriceTable:
        return self.ctx.prices

    @property
    def provider_name(self) -> str:
        return self.ctx.provider_name

    @property
    def endpoint_host(self) -> str | None:
        return self.ctx.endpoint_host

    @property
    def clock(self) -> Clock | None:
        return self.ctx.clock

    @property
    def max_retries(self) -> int:
        return self.ctx.max_retries

    @property
    def timeout_s(self) -> float:
        return self.ctx.timeout_s


    def provider(self) -> Provider:
        with self.lock:
            if self._provider is None:
                assert self.provider_factory is not None
                self._provider = self.provider_factory()
            return self._provider


def process(state: RunState, task: Task, done: dict[str, Outcome], *, attempt: int = 0) -> Outcome:
    """Decide and, in run mode, make one task; `done` holds this unit's earlier outcomes. `attempt`
    (a retry after failed checks, see checks/run.py) is numbered in the fingerprint."""
    rc = state.ctx
    scoped = rc.selected_steps is None or task.step.id in rc.selected_steps
    if not task.enabled:
        return Outcome("skipped", reason="`when` is false", in_scope=scoped)
    inputs: list[tuple[InputRef, Path | str, str]] = []  # str: relative to output_dir (Paths made lazily)
    changing = False  # an input from an earlier step will change: not known yet
    for ref in task.inputs:
        if ref.step is not None:
            up = done.get(ref.step)
            if up is None or not up.usable:
                status = up.status if up else "missing"
                return Outcome("skipped", reason=f"needs step {ref.step!r}, which is {status}", in_scope=scoped)
            idx = ref.index or 0
            if up.status == "pending":
                if ref.role == "size_of" and up.size is not None:  # the size is known before it is made
                    inputs.append((ref, up.outputs[idx], f"size:{up.size[0]}x{up.size[1]}"))
                else:
                    inputs.append((ref, task.outputs[0], ""))
                    changing = True
                continue
            entry = up.entries[idx]
            sha = str(entry.get("current_sha256") or entry["sha256"])
            if ref.role == "size_of" and entry.get("width"):  # only the size matters, not the pixels
                sha = f"size:{entry['width']}x{entry['height']}"
            changing = changing or not sha
            inputs.append((ref, entry["path"], sha))
        else:
            assert ref.path is not None
            file_sha = state.files.sha(ref.path)
            if file_sha is None:
                return Outcome("failed", reason=f"input {display_path(ref.path)} is missing", in_scope=scoped)
            inputs.append((ref, ref.path, file_sha))
    prompt = task.prompt
    if task.prompt_template is not None:
        ctx = _steps_context(task, done)
        try:
            prompt = render(task.prompt_template, ctx)
        except RenderError as exc:
            return failed_outcome(task, "template", exc.message, scoped)
    if changing:
        return Outcome("pending", prompt=prompt, in_scope=scoped, reason="an input will change",
                       paths=task.outputs, size=_fixed_size(task),
                       cost=task_cost(rc.prices, task, rc.provider_name, prompt=prompt))
    provider = rc.provider_name if task.is_api else "local"
    endpoint = _endpoint(task, state)
    fp = store.fingerprint(provider=provider, model=task.model, endpoint=endpoint,
                           params={**task.params, "attempt": attempt} if attempt else task.params,
                           prompt=prompt, input_shas=[s for _, _, s in inputs])
    if not rc.force:
        found = []
        for i in range(task.n):
            f = _own(state, task, fp, i) or state.reuse.lookup(fp, i)
            if f is None:
                break
            found.append(f)
        else:
            entries = [_place(state, task, i, f) for i, f in enumerate(found)]
            return Outcome("up_to_date", entries, prompt, entries[0].get("revised_prompt"), in_scope=scoped)
    if state.saved and all((fp, i) in state.saved for i in range(task.n)) and not rc.reuse_only:
        if rc.mode != "run":
            return Outcome("pending", prompt=prompt, entries=[{"path": p} for p in task.outputs],
                           reason="paid bytes saved by an earlier run will be placed", cost=0.0,
                           in_scope=scoped)
        placed = _place_saved(state, task, fp, prompt, _paths(state, inputs), endpoint, scoped)
        if placed is not None:
            return placed
    if fp in state.pending_fps and rc.mode == "run":
        adopted = _adopt(state, task, fp, prompt, _paths(state, inputs), provider, endpoint)
        if adopted is not None:
            return adopted
    kept = _keep_existing(state, task, provider, scoped)
    if kept is not None:
        return kept
    if not scoped:
        return Outcome("skipped", reason="not selected (--only) and not up to date", in_scope=False)
    if rc.mode != "run" or rc.reuse_only:
        return Outcome("pending", prompt=prompt, paths=task.outputs, fingerprint=fp,
                       resolved=_paths(state, inputs) if rc.reuse_only else None,
                       reason="would be made", size=_fixed_size(task),
                       cost=task_cost(rc.prices, task, rc.provider_name, prompt=prompt))
    if state.ledger.stop_reason is not None:
        return Outcome("skipped", reason=state.ledger.stop_reason)
    started = time.monotonic()
    paths = _paths(state, inputs)
    if not task.is_api:
        return _make_local(state, task, paths, fp, prompt, started)
    return _make_api(state, task, paths, fp, prompt, endpoint, started)


def _paths(state: RunState, inputs: list[tuple[InputRef, Path | str, str]]) -> list[tuple[InputRef, Path, str]]:
    """The inputs with their paths (those relative to output_dir made whole), for a task that uses them."""
    return [(ref, state.output_dir / p if isinstance(p, str) else p, sha) for ref, p, sha in inputs]


def _steps_context(task: Task, done: dict[str, Outcome]) -> dict[str, Any]:
    recipe, unit = task.recipe, task.unit
    steps = {}
    for sid, out in done.items():
        paths = out.outputs
        steps[sid] = {"path": paths[0] if paths else None, "paths": paths, "prompt": out.prompt,
                      "revised_prompt": out.revised_prompt}
    return {"vars": dict(recipe.vars), "recipe": {"name": recipe.name}, "item": dict(unit.item),
            "key": unit.key, "matrix": dict(unit.matrix), "steps": steps, "step": task.step.id}


IMAGE_PATHS: dict[str, str] = {"generate": "images/generations", "edit": "images/edits",
                               "variation": "images/variations"}


def _endpoint(task: Task, state: RunState) -> str:
    """The endpoint as the fingerprint sees it (see _recorded_endpoint for the manifest's).

    Responses route: ``/v1/responses?model=<mainline model>``. The mainline model rewrites the
    prompt the image model gets, so changing it makes the image again. Azure:
    ``/openai/deployments/<deployment>/images/...``: another deployment is another model.
    """
    if not task.is_api:
        return f"local/{task.kind}"
    provider = task.recipe.provider
    if state.provider_name != "offline" and provider.api == "responses":
        return f"{RESPONSES_ENDPOINT}?model={provider.model or ''}"
    if state.provider_name == "azure":
        return f"/openai/deployments/{provider.deployment or ''}/{IMAGE_PATHS[task.kind]}"
    return f"/v1/{IMAGE_PATHS[task.kind]}"


def _recorded_endpoint(endpoint: str) -> str:
    """The manifest's `endpoint`: a path, without the fingerprint's query (`/v1/responses`)."""
    return endpoint.split("?", 1)[0]


def _own(state: RunState, task: Task, fp: str, index: int) -> dict[str, Any] | None:
    """The entry already at this task's own path, when it has this fingerprint and is unchanged."""
    rel = task.outputs[index]
    prev = state.prev_by_path.get(rel.lower())
    if prev is None or prev.get("fingerprint") != fp or prev.get("index", 0) != index:
        return None
    if not reusable_from(prev.get("endpoint_host"), state.endpoint_host):
        return None
    return prev if state.files.sha_rel(rel) == prev.get("sha256") else None


def _place(state: RunState, task: Task, index: int, found: dict[str, Any]) -> dict[str, Any]:
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


def _keep_existing(state: RunState, task: Task, provider: str, scoped: bool) -> Outcome | None:
    """Approved, hand-modified, or another provider's image at our path: keep it."""
    entries: list[dict[str, Any]] = []
    status = None
    for i, rel in enumerate(task.outputs):
        prev = state.prev_by_path.get(rel.lower())
        if prev is None and state.empty_dir:
            return None  # no output folder yet: nothing to keep
        sha = state.files.sha_rel(rel)
        if prev is not None and prev.get("approved") and sha == prev.get("sha256") and not state.force:
            if state.mode == "check" and prev.get("provider") == "offline" and provider != "offline":
                return Outcome("pending", entries=[{"path": p} for p in task.outputs], in_scope=scoped,
                               reason="approved, but made offline: the approval covered a placeholder")
            entries.append({**prev, "status": "up_to_date", "stale": True})
            status = status or "up_to_date"
            continue
        if sha is None:
            return None
        if prev is None or (prev.get("sha256") and sha != prev.get("sha256")):
            if state.force and prev is not None:
                return None
            entries.append({**(prev or _bare_entry(task, i, rel)), "current_sha256": sha, "status": "modified"})
            status = "modified"
            continue
        if provider == "offline" and prev.get("provider") not in PAID_FREE:
            return Outcome("skipped", [{**prev, "status": "skipped"}], in_scope=scoped,
                           reason=f"kept {rel}: the offline provider never writes over an image made by "
                           f"{prev.get('provider')}",
                           kept=f"made by {prev.get('provider')}; offline never overwrites it")
        return None
    if status is None:
        return None
    stale = any(e.get("stale") for e in entries)
    out = Outcome(status, entries, in_scope=scoped, stale=stale,
                  kept="changed by hand; --force replaces it" if status == "modified"
                  else "approved; its recipe or inputs changed since" if stale else None)
    out.prompt = entries[0].get("prompt")
    out.revised_prompt = entries[0].get("revised_prompt")
    return out


def _adopt(state: RunState, task: Task, fp: str, prompt: str | None, inputs: list[tuple[InputRef, Path, str]],
           provider: str, endpoint: str) -> Outcome | None:
    """Images written just before a crash, whose journal `done` line never came: the intent proves
    we asked for them with this fingerprint, and atomic writes prove they are whole. Keep them."""
    entries = []
    for i, rel in enumerate(task.outputs):
        path = state.output_dir / rel
        if state.prev_by_path.get(rel.lower()) is not None or not path.is_file():
            return None
        sha = state.files.sha(path)
        try:
            info = imgio.probe(path)
        except imgio.ImageInputError:
            return None
        entry = {"step": task.step.id, "key": task.unit.key, "index": i, "path": rel, "sha256": sha,
                 "width": info.width, "height": info.height, "format": info.format,
                 "bytes": path.stat().st_size}
        entry.update(_common(state, task, provider, fp, prompt, inputs, time.monotonic()))
        entry.update({"endpoint": endpoint.split("?", 1)[0], "revised_prompt": None, "request_id": None,
                      "usage": None, "cost_usd": None, "attempts": 1, "possible_duplicate_charge": False,
                      "recovered": True, "duration_s": None})
        entries.append(entry)
    if state.journal is not None:
        state.journal.done(task.id, fp, entries)
    return Outcome("up_to_date", entries, prompt)


def _bare_entry(task: Task, index: int, rel: str) -> dict[str, Any]:
    return {"step": task.step.id, "key": task.unit.key, "index": index, "path": rel, "provider": None,
            "model": task.model, "fingerprint": None, "approved": False, "sha256": None}


def failed_outcome(task: Task, etype: str, message: str, scoped: bool, **extra: Any) -> Outcome:
    error = {"type": etype, "status": extra.get("status"), "code": extra.get("code"), "message": message}
    return Outcome("failed", reason=message, in_scope=scoped,
                   entries=[{"error": error, "attempts": extra.get("attempts", 0),
                             "possible_duplicate_charge": extra.get("dup", False)}] * max(task.n, 1))


def _fixed_size(task: Task) -> tuple[int, int] | None:
    """The size a task's image will have when its params (or its kind) fix it before it is made."""
    if task.is_api:
        size = task.params.get("size")
        if not isinstance(size, str):
            return None
        if size not in _SIZES:
            _SIZES[size] = models.parse_size(size)
        if _SIZES[size] is None:
            return None  # `auto`, or no size: the server decides
    return task.size


_SIZES: dict[str, tuple[int, int] | None] = {}


def _shown(state: RunState, path: Path) -> str:
    """An input's path in the manifest: relative to output_dir, else to the project root."""
    for base in (state.output_dir, state.project_root):
        if base is not None:
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                continue
    return display_path(path)


def input_entries(state: RunState, inputs: list[tuple[InputRef, Path, str]]) -> list[dict[str, Any]]:
    out = []
    for ref, path, sha in inputs:
        shown = _shown(state, path)
        out.append({"role": ref.role, "path": shown, "sha256": sha})
    return out


def _write(state: RunState, task: Task, index: int, data: bytes,
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


def _make_local(state: RunState, task: Task, inputs: list[tuple[InputRef, Path, str]], fp: str,
                prompt: str | None, started: float) -> Outcome:
    by_role: dict[str, list[Path]] = {}
    for ref, path, _ in inputs:
        by_role.setdefault(ref.role, []).append(path)
    try:
        data = run_local(task.kind, task.params, by_role, task.fmt)
    except (ValueError, OSError, imgio.ImageInputError) as exc:
        return failed_outcome(task, "local", str(getattr(exc, "message", exc)), True)
    entry = _write(state, task, 0, data)
    entry.update(_common(state, task, "local", fp, prompt, inputs, started))
    entry.update({"revised_prompt": None, "request_id": None, "usage": None, "cost_usd": 0.0, "attempts": 1,
                  "possible_duplicate_charge": False})
    return Outcome("generated", [entry], prompt)


def _common(state: RunState, task: Task, provider: str, fp: str, prompt: str | None,
            inputs: list[tuple[InputRef, Path, str]], started: float) -> dict[str, Any]:
    common = {"provider": provider, "model": task.model, "endpoint": _endpoint(task, state),
              "params": task.params, "prompt": prompt, "inputs": input_entries(state, inputs),
              "fingerprint": fp, "approved": False, "created_at": store.utc_now_iso(),
              "duration_s": round(time.monotonic() - started, 3), "status": "generated", "error": None}
    if provider not in PAID_FREE and state.endpoint_host is not None:
        common["endpoint_host"] = state.endpoint_host  # `endpoint` stays a path
    return common


def _request(state: RunState, task: Task, inputs: list[tuple[InputRef, Path, str]],
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
            from .imaging.markup import prepare_markup

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


def _make_api(state: RunState, task: Task, inputs: list[tuple[InputRef, Path, str]], fp: str,
              prompt: str | None, endpoint: str, started: float) -> Outcome:
    """Make a task's images: one call for n images, or, on the Responses route (one image per
    call), n calls, each through the limiter and the retry loop. Every answer's bytes are put in
    the object store before they are decoded or placed; every image is journaled as it lands;
    attempts and possible_duplicate_charge are the task's, summed."""
    if state.ledger.over_budget():
        return Outcome("skipped", reason=f"cost limit ${state.ledger.max_cost:.2f} reached")
    try:
        request = _request(state, task, inputs, prompt)
    except (imgio.ImageInputError, OSError, ValueError) as exc:
        return failed_outcome(task, "input", str(getattr(exc, "message", exc)), True)
    split = request.api == "responses"
    per_call = 1 if split else task.n
    recorded = _recorded_endpoint(endpoint)
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
            found = _own(state, task, fp, first) or state.reuse.lookup(fp, first)
            if found is not None:
                entries.append(_place(state, task, first, found))
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
                                     mainline_model=request.mainline_model))  # api helper: + text model
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
                entry = _write(state, task, first + k, image.data, call.decoded[k])
            except (OSError, ValueError, imgio.ImageInputError) as exc:
                failure = _placement_failed(state, task, exc, record, attempts, dup)
                break
            entry.update(_common(state, task, state.provider_name, fp, prompt, inputs, started))
            entry.update({"endpoint": recorded, **meta})
            _check_size(task, entry)
            landed.append(entry)
            if record is not None:
                placed.append(record)
        entries.extend(landed)
        made.extend(landed)
        if split and landed and state.journal is not None:
            state.journal.done(task.id, fp, landed)  # durable now: a crash later never pays for it again
            _forget_objects(state, placed)
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
            _forget_objects(state, placed)
        return failure
    if state.journal is not None and not split:
        state.journal.done(task.id, fp, entries)
        _forget_objects(state, placed)
    revised = entries[0].get("revised_prompt") if entries else None
    return Outcome("generated", entries, prompt, revised, cost=total)


def _check_size(task: Task, entry: dict[str, Any]) -> None:
    """An image whose size differs from an explicit `size` is kept, with a warning in its entry."""
    want = task.params.get("size")
    if not isinstance(want, str) or "x" not in want or entry.get("width") is None:
        return
    got = f"{entry['width']}x{entry['height']}"
    if got != want:
        entry["warnings"] = [f"asked for size {want}, the server sent {got}"]


def _forget_objects(state: RunState, records: list[ObjectRecord]) -> None:
    if state.objects is None:
        return
    for record in records:
        with contextlib.suppress(OSError):
            state.objects.discard(record)


def _placement_failed(state: RunState, task: Task, exc: BaseException, record: ObjectRecord | None,
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


def _decode(data: bytes) -> tuple[int, int, str] | None:
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
        decoded = [_decode(img.data) for img in resp.images]
        if not resp.images or any(d is None for d in decoded):
            _forget_objects(state, self.stored)  # bytes that are no image can never be placed
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


def _place_saved(state: RunState, task: Task, fp: str, prompt: str | None,
                 inputs: list[tuple[InputRef, Path, str]], endpoint: str, scoped: bool) -> Outcome | None:
    """Paid bytes an earlier run stored but never placed: place them now, paying nothing."""
    assert state.objects is not None
    entries = []
    records = [state.saved[(fp, i)] for i in range(task.n)]
    for i, record in enumerate(records):
        try:
            try:
                data = state.objects.read(record)
            except ObjectCorruptError:  # damaged: left where it is for inspection; the task is made again
                with state.lock:
                    state.saved.pop((fp, i), None)
                return None
            decoded = _decode(data)
            if decoded is None:  # no image after all: forget it, and make the task as if it were not there
                _forget_objects(state, [record])
                with state.lock:
                    state.saved.pop((fp, i), None)
                return None
            entry = _write(state, task, i, data, decoded)
        except (OSError, ValueError, imgio.ImageInputError) as exc:
            failed = _placement_failed(state, task, exc, record, int(record.meta.get("attempts") or 1), True)
            failed.in_scope = scoped
            return failed
        entry.update(_common(state, task, state.provider_name, fp, prompt, inputs, time.monotonic()))
        entry.update({"endpoint": _recorded_endpoint(endpoint), "revised_prompt": None, "request_id": None,
                      "usage": None, "cost_usd": None, "attempts": 1, "possible_duplicate_charge": False})
        entry.update({k: v for k, v in record.meta.items() if k in _SAVED_META and v is not None})
        usage = record.meta.get("usage")
        if isinstance(usage, dict) and state.provider_name not in PAID_FREE:
            share = int(record.meta.get("images_in_answer") or 1)
            cost = cost_from_usage(state.prices, task.model or "", usage, {**task.params, "n": share})
            entry["cost_usd"] = None if cost is None else round(cost / share, 6)
        entry["recovered"] = True
        _check_size(task, entry)
        entries.append(entry)
    if state.journal is not None:
        state.journal.done(task.id, fp, entries)
    _forget_objects(state, records)
    with state.lock:
        for i in range(task.n):
            state.saved.pop((fp, i), None)
    return Outcome("generated", entries, prompt, entries[0].get("revised_prompt"), in_scope=scoped)


_SAVED_META = frozenset({"revised_prompt", "request_id", "usage", "attempts", "response_id"})


class _BudgetReached(Exception):
    """--max-cost: actual spend reached the limit before this request was sent."""


class _Unreadable(Exception):
    """A 2xx answer without a readable image (no data, bad base64, bytes that are no image)."""


class _Halt(Exception):
    """The disk refused a write: no new request."""



def image_request(state: RunState, task: Task, inputs: list[tuple[InputRef, Path, str]],
                  prompt: str | None) -> ImageRequest:
    """The request a direct call of this task sends: its params, prompt, and the bytes of its files."""
    return _request(state, task, inputs, prompt)
