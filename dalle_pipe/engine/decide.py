"""The one decision: a task and what is already known -> a typed `Decision`. It writes nothing.

The order is the no-loss contract: reuse by fingerprint first; an image asked for before a crash
is adopted; paid bytes an earlier run saved are placed, never paid again; an approved image is never
made again; a hand-edited file is kept; the offline provider never writes over another provider's
image. A request another task of this run already makes is made once and copied (a twin). Only
then is a task made. Every command takes its decisions here: `plan`, `--dry-run`,
`--check`, the `--max-cost` gate, a direct run and the Batch API route.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import models, store
from ..imaging import io as imgio
from ..plan import InputRef, Task
from ..providers.base import RESPONSES_ENDPOINT
from ..recipe import display_path
from ..templating import RenderError, render
from .decision import Decision, Kind, Outcome
from .estimate import task_cost
from .hosts import reusable_from
from .state import PAID_FREE, RunState

IMAGE_PATHS: dict[str, str] = {"generate": "images/generations", "edit": "images/edits",
                               "variation": "images/variations"}
#: Kinds under which an image a retry made (after failed checks) in an earlier run is kept.
_RETRY_KEPT = frozenset({Kind.REUSE, Kind.ADOPT, Kind.PLACE_SAVED})


def decide(state: RunState, task: Task, done: Mapping[str, Outcome], *, attempt: int | None = None) -> Decision:
    """Decide one task; `done` holds this unit's earlier outcomes. `attempt` (a retry after failed
    checks, see engine/checked.py) is numbered in the fingerprint; by default, an image a retry made in
    an earlier run is found by the attempt its entry records."""
    if attempt is None:
        attempt = 0
        earlier = _recorded_attempt(state, task)
        if earlier:
            found = _decide(state, task, done, earlier)
            if found.kind in _RETRY_KEPT:
                return found
    return _decide(state, task, done, attempt)


def _recorded_attempt(state: RunState, task: Task) -> int:
    if not task.checks or not task.outputs or state.force:
        return 0
    prev = state.prev_by_path.get(task.outputs[0].lower())
    attempt = prev.get("attempt") if prev else None
    return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0 else 0


def _decide(state: RunState, task: Task, done: Mapping[str, Outcome], attempt: int) -> Decision:
    rc = state.ctx
    scoped = rc.selected_steps is None or task.step.id in rc.selected_steps
    if not task.enabled:
        return Decision(Kind.SKIP, "`when` is false", scoped)
    inputs: list[tuple[InputRef, Path | str, str]] = []  # str: relative to output_dir (Paths made lazily)
    changing = False  # an input from an earlier step will change: not known yet
    for ref in task.inputs:
        if ref.step is not None:
            up = done.get(ref.step)
            if up is None or not up.usable:
                status = up.status if up else "missing"
                return Decision(Kind.SKIP, f"needs step {ref.step!r}, which is {status}", scoped)
            idx = ref.index or 0
            if up.status == "pending":
                if ref.role == "size_of" and up.size is not None:  # the size is known before it is made
                    inputs.append((ref, up.outputs[idx], f"size:{up.size[0]}x{up.size[1]}"))
                else:  # previews: the request it will be is named by the one it waits for (twins)
                    inputs.append((ref, task.outputs[0], f"pending:{up.fingerprint}" if up.fingerprint else ""))
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
                return Decision(Kind.FAIL, f"input {display_path(ref.path)} is missing", scoped)
            inputs.append((ref, ref.path, file_sha))
    prompt = task.prompt
    if task.prompt_template is not None:
        try:
            prompt = render(task.prompt_template, steps_context(task, done))
        except RenderError as exc:
            return Decision(Kind.FAIL, exc.message, scoped, error_type="template")
    if changing:
        cost = task_cost(rc.prices, task, rc.provider_name, prompt=prompt)
        if rc.mode == "run" or not twinnable(task) or not all(sha for _, _, sha in inputs):
            return Decision(Kind.WAIT, "an input will change", scoped, prompt=prompt, size=fixed_size(task),
                            cost=cost)
        # a preview: inputs that will be the same images (twins upstream) make the same request. A
        # provisional name, not a fingerprint (one step: the same model, endpoint and params), and cheap:
        # a 100,000-row plan decides 90,000 of these
        fp = f"wait:{hash((task.step.id, prompt, *(sha for _, _, sha in inputs))):x}"
        first = state.planned.get(fp)
        if first is not None and first != task.id:
            return Decision(Kind.WAIT, f"the same request as {first} once its inputs land: made once, then copied",
                            scoped, prompt=prompt, fingerprint=fp, size=fixed_size(task), cost=0.0)
        return Decision(Kind.WAIT, "an input will change", scoped, prompt=prompt, fingerprint=fp,
                        size=fixed_size(task), cost=cost)
    provider = rc.provider_name if task.is_api else "local"
    endpoint = endpoint_of(task, state)
    fp = store.fingerprint(provider=provider, model=task.model, endpoint=endpoint,
                           params={**task.params, "attempt": attempt} if attempt else task.params,
                           prompt=prompt, input_shas=[s for _, _, s in inputs])
    raw = tuple(inputs)
    if not rc.force:
        found = []
        for i in range(task.n):
            f = own_entry(state, task, fp, i) or state.reuse.lookup(fp, i)
            if f is None:
                break
            found.append(f)
        else:
            return Decision(Kind.REUSE, None, scoped, prompt, fp, endpoint, provider, raw, tuple(found),
                            attempt=attempt)
    if fp in state.pending_fps and _adoptable(state, task):
        return Decision(Kind.ADOPT, "landed before a crash", scoped, prompt, fp, endpoint, provider, raw, cost=0.0,
                        attempt=attempt)
    if state.saved and all((fp, i) in state.saved for i in range(task.n)):
        return Decision(Kind.PLACE_SAVED, "paid bytes saved by an earlier run will be placed", scoped, prompt, fp,
                        endpoint, provider, raw, cost=0.0, attempt=attempt)
    kept = _keep_existing(state, task, provider, scoped)
    if kept is not None:
        return kept
    if not scoped:
        return Decision(Kind.SKIP, "not selected (--only) and not up to date", False)
    first = state.planned.get(fp) if state.planned and twinnable(task) else None  # previews; a run finds
    # twins as it makes them (make.py: claims)
    if first is not None and first != task.id:
        return Decision(Kind.TWIN, f"the same request as {first}: made once, then copied", scoped, prompt, fp,
                        endpoint, provider, raw, cost=0.0, attempt=attempt)
    return Decision(Kind.MAKE, "would be made", scoped, prompt, fp, endpoint, provider, raw, size=fixed_size(task),
                    cost=task_cost(rc.prices, task, rc.provider_name, prompt=prompt), attempt=attempt)


def twinnable(task: Task) -> bool:
    """Can a task with this request copy another's images? API steps without checks (a task with checks
    may replace its image after they fail, so its first image is not the one a twin should copy)."""
    return task.is_api and not task.checks


def steps_context(task: Task, done: Mapping[str, Outcome]) -> dict[str, Any]:
    """What a prompt template sees: vars, the row, and this unit's earlier steps (`steps.<id>.path`...)."""
    recipe, unit = task.recipe, task.unit
    steps = {}
    for sid, out in done.items():
        paths = out.outputs
        steps[sid] = {"path": paths[0] if paths else None, "paths": paths, "prompt": out.prompt,
                      "revised_prompt": out.revised_prompt}
    return {"vars": dict(recipe.vars), "recipe": {"name": recipe.name}, "item": dict(unit.item),
            "key": unit.key, "matrix": dict(unit.matrix), "steps": steps, "step": task.step.id}


def endpoint_of(task: Task, state: RunState) -> str:
    """The endpoint as the fingerprint sees it (the manifest records its path: `recorded_endpoint`).

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


def recorded_endpoint(endpoint: str) -> str:
    """The manifest's `endpoint`: a path, without the fingerprint's query (`/v1/responses`)."""
    return endpoint.split("?", 1)[0]


def own_entry(state: RunState, task: Task, fp: str, index: int) -> dict[str, Any] | None:
    """The entry already at this task's own path, when it has this fingerprint and is unchanged."""
    rel = task.outputs[index]
    prev = state.prev_by_path.get(rel.lower())
    if prev is None or prev.get("fingerprint") != fp or prev.get("index", 0) != index:
        return None
    if not reusable_from(prev.get("endpoint_host"), state.endpoint_host):
        return None
    return prev if state.files.sha_rel(rel) == prev.get("sha256") else None


def _adoptable(state: RunState, task: Task) -> bool:
    """Images written just before a crash, whose journal `done` line never came: the intent proves
    we asked for them with this fingerprint, and atomic writes prove they are whole."""
    for rel in task.outputs:
        path = state.output_dir / rel
        if state.prev_by_path.get(rel.lower()) is not None or not path.is_file():
            return False
        try:
            imgio.probe(path)
        except imgio.ImageInputError:
            return False
    return True


def _keep_existing(state: RunState, task: Task, provider: str, scoped: bool) -> Decision | None:
    """Another provider's image, approved, or hand-modified at our path: keep it."""
    if provider == "offline":
        foreign = _foreign(state, task, scoped)
        if foreign is not None:
            return foreign
    entries: list[dict[str, Any]] = []
    kind = None
    placeholder = False
    for i, rel in enumerate(task.outputs):
        prev = state.prev_by_path.get(rel.lower())
        if prev is None and state.empty_dir:
            return None  # no output folder yet: nothing to keep
        sha = state.files.sha_rel(rel)
        if prev is not None and prev.get("approved") and sha == prev.get("sha256") and not state.force:
            placeholder = placeholder or (prev.get("provider") == "offline" and provider != "offline")
            entries.append({**prev, "status": "up_to_date", "stale": True})
            kind = kind or Kind.KEEP_APPROVED
            continue
        if sha is None:
            return None
        if prev is None or (prev.get("sha256") and sha != prev.get("sha256")):
            if state.force and prev is not None:
                return None
            entries.append({**(prev or _bare_entry(task, i, rel)), "current_sha256": sha, "status": "modified"})
            kind = Kind.KEEP_MODIFIED
            continue
        entries.append({**prev, "status": "modified"})  # as recorded: kept beside an image kept for a reason
    if kind is None:
        return None
    return Decision(kind, None, scoped, found=tuple(entries), placeholder=placeholder)


def _foreign(state: RunState, task: Task, scoped: bool) -> Decision | None:
    """The offline provider never writes over an image a paid provider made: when any image of the
    task is one (unchanged, not approved), the whole task is kept, every image with its entry, so
    that later steps build on it and the next paid run finds it up to date."""
    maker = None
    entries = []
    for i, rel in enumerate(task.outputs):
        prev = state.prev_by_path.get(rel.lower())
        if prev is None:
            entries.append({**_bare_entry(task, i, rel), "status": "skipped"})
            continue
        entries.append({**prev, "status": "skipped"})
        if (maker is None and prev.get("provider") not in PAID_FREE and not prev.get("approved")
                and prev.get("sha256") and state.files.sha_rel(rel) == prev.get("sha256")):
            maker = prev.get("provider")
    if maker is None:
        return None
    return Decision(Kind.KEEP_FOREIGN, f"kept {task.outputs[0]}: the offline provider never writes over an image "
                    f"made by {maker}", scoped, found=tuple(entries))


def _bare_entry(task: Task, index: int, rel: str) -> dict[str, Any]:
    return {"step": task.step.id, "key": task.unit.key, "index": index, "path": rel, "provider": None,
            "model": task.model, "fingerprint": None, "approved": False, "sha256": None}


def fixed_size(task: Task) -> tuple[int, int] | None:
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
