"""A catalog through the OpenAI Batch API: `run --batch` (alias `batch submit`), `batch status`, `batch collect`.

Submit. The same resolution as a direct run decides what is up to date (`execute.process`:
fingerprint, reuse, kept and approved files); nothing up to date is ever sent. Generation
requests that would be sent become JSONL lines
`{"custom_id": <fingerprint>, "method": "POST", "url": "/v1/images/generations", "body": {model,
prompt, **params}}` — the body is exactly what a direct call sends — split into files of at most
50,000 requests and 200 MB, uploaded (`purpose="batch"`) and submitted (`completion_window="24h"`),
one endpoint per batch. Two tasks with one fingerprint are one request; the second reuses the
first's image, as on a rerun. Local steps and direct requests whose inputs are ready are made at
once; steps that need a batch's outputs wait for a later wave.

Edits are not batched. The Batch API lists `/v1/images/edits`, but the SDK's edit parameters
(`image_edit_params.ImageEditParams`) take `image` and `mask` only as uploaded files
(`FileTypes`, multipart); there is no JSON form with a data URL or a `file_id` (the SDK's
`ImageInputReferenceParam` is used only by videos). A JSONL line cannot carry a file, so edits
(and variations) run directly, at the synchronous price, once their inputs have landed.

State. Each submitted batch has `output_dir/.dalle-pipe/batches/<token>.json` (atomic JSON, see
`new_state`): the batch and file ids, its status, and for each custom_id everything `collect`
needs — task, step, key, image indexes and paths, fingerprint, provider, model, endpoint, params,
prompt, inputs — so that status and collect run later, on another machine, with only the recipe
and the output folder. The file is written before the batch is created (the token is also the
batch's metadata), so a crash in between is recovered by finding the batch by its metadata.

Collect. Under the output folder's lock: finished batches' output and error files are downloaded
(kept next to the state), each image is written atomically at its recorded path and journaled
(a `done` line), exactly as a direct run writes it (same entry fields; `cost_usd` at the batch
price). Then the same pass as submit runs over the units of the batches: what landed is
`generated`, failed lines are `failed` entries with their error (their dependents `skipped`),
local steps and edits are made, and the next wave is submitted. Collecting twice changes
nothing. A later `run --batch` sends failed lines again.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures as cf
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, store
from .batch_api import META_KEY, TERMINAL, BatchAPIError, BatchClient, BatchInfo
from .engine.estimate import sum_costs, task_cost, unknown_price_message
from .errors import CostLimitError, UsageError, reduce_exit
from .execute import Outcome, RunState, failed_outcome, input_entries, process, retire_replaced
from .imaging import io as imgio
from .plan import Plan, Task
from .prices import PriceTable, cost_from_usage
from .providers.base import Provider
from .recipe import Recipe, display_path
from .runner import (
    Interrupt,
    RecipeResult,
    RunOptions,
    TaskReport,
    limits_for,
    load_state,
    manifest_name,
    run_locks,
    select_units,
    shard_provider,
    trap_signals,
    write_run_manifest,
)

ENDPOINT = "/v1/images/generations"
MAX_REQUESTS = 50_000  # per batch file
MAX_BYTES = 200 * 1000 * 1000  # 200 MB per batch file (decimal: the stricter reading)
STATE_FORMAT = 1
OPEN = frozenset({"submitting", "validating", "in_progress", "finalizing", "cancelling"})
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


def batchable(task: Task) -> bool:
    """Does this task go through the Batch API? Generations of the openai Images API, base64 answers."""
    recipe = task.recipe
    return (task.is_api and task.kind == "generate" and recipe.provider.name == "openai"
            and recipe.provider.api != "responses" and task.params.get("response_format") != "url")


# --------------------------------------------------------------------------- state files


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


def _in_shard(doc: dict[str, Any], shard: tuple[int, int] | None) -> bool:
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


# --------------------------------------------------------------------------- results


@dataclass
class BatchRun:
    """What `run --batch` or `batch collect` did for one recipe."""

    result: RecipeResult
    submitted: list[dict[str, Any]] = field(default_factory=list)  # state docs submitted now
    collected: list[dict[str, Any]] = field(default_factory=list)  # state docs collected now
    running: list[dict[str, Any]] = field(default_factory=list)  # state docs still in flight afterwards
    requests: int = 0  # requests submitted now
    in_batch: int = 0  # tasks already in a batch (not sent again)
    waiting: int = 0  # tasks waiting for a batch's outputs
    landed: int = 0  # images written from batch outputs now
    failed_lines: int = 0  # lines of batches collected now that failed
    errors: list[str] = field(default_factory=list)  # submissions that failed
    wrote_manifest: bool = False

    @property
    def name(self) -> str:
        return self.result.recipe.name


def summary(run: BatchRun, collect: bool) -> str:
    c = run.result.counts
    parts = []
    if collect:
        parts.append(f"collected {len(run.collected)} batch(es): {run.landed} image(s) landed, "
                     f"{run.failed_lines} request(s) failed")
    if run.submitted:
        ids = ", ".join(str(d.get("batch_id") or d.get("token")) for d in run.submitted)
        parts.append(f"submitted {run.requests} request(s) in {len(run.submitted)} batch(es) ({ids})")
    parts.append(f"{c['generated']} generated, {c['up_to_date']} up to date, {c['failed']} failed, "
                 f"{c['skipped']} skipped, {c['modified']} modified")
    if run.in_batch:
        parts.append(f"{run.in_batch} in a batch")
    if run.waiting:
        parts.append(f"{run.waiting} waiting for a batch")
    if run.running:
        parts.append(f"{len(run.running)} batch(es) still running" if collect else
                     f"{len(run.running)} batch(es) to collect (`dalle-pipe batch collect`)")
    if run.result.spent_usd:
        parts.append(f"${run.result.spent_usd:.2f} spent")
    if run.result.stop_reason:
        parts.append(f"({run.result.stop_reason})")
    if collect and not run.wrote_manifest:
        parts.append("nothing new: nothing written")
    return f"{run.name}: " + "; ".join(parts)


def as_json(runs: list[BatchRun], exit_code: int) -> dict[str, Any]:
    return {"exit_code": exit_code, "recipes": [{
        "name": r.name, "output_dir": str(r.result.output_dir), "counts": r.result.counts,
        "submitted": [_public(d) for d in r.submitted], "collected": [_public(d) for d in r.collected],
        "running": [_public(d) for d in r.running], "requests": r.requests, "in_batch": r.in_batch,
        "waiting": r.waiting, "landed": r.landed, "failed_lines": r.failed_lines, "errors": r.errors,
        "spent_usd": r.result.spent_usd, "estimate_usd": r.result.estimate_usd,
        "failed": [{"task": t.task.id, "error": t.outcome.reason} for t in r.result.reports
                   if t.outcome.status == "failed"],
    } for r in runs]}


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {"token": doc.get("token"), "batch_id": doc.get("batch_id"), "status": doc.get("status"),
            "wave": doc.get("wave"), "endpoint": doc.get("endpoint"), "request_counts": doc.get("request_counts"),
            "requests": len(doc.get("requests") or {}), "collected_at": doc.get("collected_at")}


def exit_code(runs: list[BatchRun], *, collect: bool) -> int:
    """0 all done; 1 failures, a submission that failed, or (collect) batches still in flight; 130 interrupted."""
    return reduce_exit(
        interrupted=any(r.result.interrupted for r in runs),
        failed=any(r.result.count("failed") or r.errors
                   or (r.result.stop_reason and r.result.stop_reason != "interrupted") for r in runs),
        work_left=collect and any(r.running for r in runs))


# --------------------------------------------------------------------------- the commands


def check_recipe(recipe: Recipe) -> None:
    if recipe.provider.name != "openai":
        raise UsageError(f"recipe {recipe.name!r} uses the {recipe.provider.name} provider: the Batch API needs "
                         "openai", "drop --batch, or use --provider openai")


def submit(plan: Plan, opts: RunOptions, prices: PriceTable,
           provider_factory: Callable[[], Provider],
           progress: Callable[[TaskReport], None] | None = None,
           on_wait: Callable[[str, float], None] | None = None) -> BatchRun:
    """`run --batch`: make what can be made now, send the generations of this wave as batches."""
    return _Drive(plan, opts, prices, provider_factory, progress, on_wait, collect=False).run()


def collect(plan: Plan, opts: RunOptions, prices: PriceTable,
            provider_factory: Callable[[], Provider],
            progress: Callable[[TaskReport], None] | None = None,
            on_wait: Callable[[str, float], None] | None = None) -> BatchRun:
    """`batch collect`: land finished batches, make what follows from them, submit the next wave."""
    return _Drive(plan, opts, prices, provider_factory, progress, on_wait, collect=True).run()


@dataclass
class StatusLine:
    recipe: str
    doc: dict[str, Any]
    info: BatchInfo | None

    @property
    def status(self) -> str:
        if self.doc.get("collected_at"):
            return "collected"
        return self.info.status if self.info is not None else str(self.doc.get("status"))

    def format(self) -> str:
        doc = self.doc
        counts = (self.info.request_counts if self.info is not None else doc.get("request_counts")) or {}
        total = counts.get("total") or len(doc.get("requests") or {})
        text = (f"{self.recipe}: {doc.get('batch_id') or doc.get('token')} (wave {doc.get('wave')}, "
                f"{doc.get('endpoint')}): {self.status}, {counts.get('completed', 0)}/{total} done, "
                f"{counts.get('failed', 0)} failed")
        if doc.get("shard"):
            text += f", shard {doc['shard'][0]}/{doc['shard'][1]}"
        if self.info is not None and self.info.errors:
            text += f" ({'; '.join(self.info.errors[:3])})"
        return text


def status(plan: Plan, shard: tuple[int, int] | None) -> list[StatusLine]:
    """`batch status`: each batch of the recipe's output folder, as the API reports it now (reads only)."""
    recipe = plan.recipe
    docs = [d for d in load_states(recipe.output_dir) if _in_shard(d, shard) and d.get("status") != "abandoned"]
    lines = []
    client: BatchClient | None = None
    try:
        for doc in docs:
            info = None
            if doc.get("batch_id") and not doc.get("collected_at"):
                if client is None:
                    check_recipe(recipe)
                    client = BatchClient(base_url=recipe.base_url)
                info = client.retrieve(str(doc["batch_id"]))
            lines.append(StatusLine(recipe.name, doc, info))
    finally:
        if client is not None:
            client.close()
    return lines


# --------------------------------------------------------------------------- the driver


@dataclass
class _Queued:
    order: int
    task: Task
    fp: str
    prompt: str | None
    inputs: list[dict[str, Any]]


class _Drive:
    """One recipe's submit or collect, under its output folder's lock(s)."""

    def __init__(self, plan: Plan, opts: RunOptions, prices: PriceTable,
                 provider_factory: Callable[[], Provider], progress: Callable[[TaskReport], None] | None,
                 on_wait: Callable[[str, float], None] | None, *, collect: bool) -> None:
        check_recipe(plan.recipe)
        self.plan = plan
        self.recipe = plan.recipe
        self.out_dir = plan.recipe.output_dir
        self.collect = collect
        self.opts = RunOptions(**{**opts.__dict__, "mode": "run", "force": opts.force and not collect})
        self.prices = prices
        self.provider_factory = provider_factory
        self.progress = progress
        self.on_wait = on_wait
        self.limits = limits_for(self.recipe, self.opts)
        self.run_ = BatchRun(RecipeResult(self.recipe, self.out_dir))
        self._client: BatchClient | None = None
        self.lock = threading.Lock()
        self.queue: list[_Queued] = []
        self.landed_now: dict[str, list[dict[str, Any]]] = {}
        self.spent = 0.0
        self.order = {id(t): n for n, t in enumerate(plan.tasks)}
        self.made_now = 0  # tasks made (or failed) by this command itself
        self.flight: dict[str, str] = {}
        self.failed: dict[str, dict[str, Any]] = {}

    @property
    def client(self) -> BatchClient:
        if self._client is None:
            self._client = BatchClient(base_url=self.recipe.base_url)
        return self._client

    def run(self) -> BatchRun:
        states = load_states(self.out_dir)
        units = self._units(states)
        self._gate(units, states)
        locks = run_locks(self.out_dir, self.opts.shard)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state: RunState | None = None
        try:
            for lock in locks:
                lock.acquire()
            states = load_states(self.out_dir)  # again, under the lock
            self._recover(states)
            if self.collect:
                self._land(states)
            state = load_state(self.plan, self.opts, self.prices, "openai",
                                shard_provider(self.provider_factory, self.opts.shard), self.limits, self.on_wait)
            journal_had = bool(state.journal and state.journal.path.exists() and state.journal.path.stat().st_size)
            self.flight = in_flight(states)
            self.failed = failed_lines(states) if self.collect else {}
            result = self.run_.result
            result.estimate_usd = self._estimate_selected(units)
            started_at = store.utc_now_iso()
            reports = self._pass(state, units)
            result.reports = reports
            result.stop_reason = state.ledger.stop_reason
            result.spent_usd = round(state.ledger.spent + self.spent, 6)
            if not result.interrupted and state.ledger.stop_reason is None:
                self._submit(states)
            self.run_.running = [d for d in load_states(self.out_dir) if is_open(d) and _in_shard(d, self.opts.shard)]
            changed = (not self.collect or bool(self.run_.collected or self.run_.submitted or journal_had)
                       or self.made_now > 0 or not (self.out_dir / manifest_name(self.opts.shard)).exists())
            if changed:
                write_run_manifest(self.plan, result, state, units, started_at, "openai", shard=self.opts.shard)
                self.run_.wrote_manifest = True
            elif state.journal is not None:
                state.journal.close()
                state.files.save()
        finally:
            for lock in reversed(locks):
                lock.release()
            if state is not None and state._provider is not None:
                state._provider.close()
            if self._client is not None:
                self._client.close()
        return self.run_

    # -- selection and cost --------------------------------------------------------------------

    def _units(self, states: list[dict[str, Any]]) -> list[int]:
        """Submit: the run's selection. Collect: the selected units that have a request in a batch."""
        units = select_units(self.plan, self.opts)
        if not self.collect:
            return units
        keys: set[str] = set()
        only: set[str] = set()
        every_step = False
        for doc in states:
            if not _in_shard(doc, self.opts.shard) or doc.get("status") == "abandoned":
                continue
            for req in doc["requests"].values():
                keys.add(str(req["key"]))
                keys.update(str(k) for k in req.get("twin_keys", []))
            steps = doc.get("only") or []
            only.update(steps)
            every_step = every_step or not steps
        if only and not every_step:
            self.opts = RunOptions(**{**self.opts.__dict__, "only": tuple(sorted(only))})
        return [i for i in units if self.plan.units[i].key in keys]

    def _estimate_selected(self, units: list[int]) -> float | None:
        return sum_costs([task_cost(self.prices, task, "openai", batch=batchable(task))
                          for i in units for task in self.plan.tasks_of(i) if task.is_api and task.enabled])

    def _gate(self, units: list[int], states: list[dict[str, Any]]) -> None:
        """--max-cost: what would be sent now (batch price for batched requests); reads only."""
        if self.opts.max_cost is None:
            return
        dry = RunOptions(**{**self.opts.__dict__, "mode": "dry"})
        peek = load_state(self.plan, dry, self.prices, "openai", None, self.limits, None)
        flight = in_flight(states)
        todo = 0.0
        for i in units:
            done: dict[str, Outcome] = {}
            for task in self.plan.tasks_of(i):
                out = process(peek, task, done)
                done[task.step.id] = out
                if out.status != "pending" or not task.is_api or self._waits(task, done):
                    continue
                if batchable(task) and out.fingerprint in flight:
                    continue
                cost = task_cost(self.prices, task, "openai", prompt=out.prompt, batch=batchable(task))
                if cost is None:
                    raise CostLimitError(unknown_price_message(task),
                                         "add its price with --prices FILE, or submit without --max-cost")
                todo += cost
        if todo > self.opts.max_cost:
            raise CostLimitError(f"estimated cost ${todo:.2f} exceeds --max-cost ${self.opts.max_cost:.2f}",
                                 "raise --max-cost, or submit fewer units with --limit or --items")

    # -- recovery ------------------------------------------------------------------------------

    def _recover(self, states: list[dict[str, Any]]) -> None:
        """A submission that crashed between writing its state and learning its batch id."""
        for doc in states:
            if doc.get("status") != "submitting" or doc.get("batch_id"):
                continue
            found = None
            if doc.get("input_file_id"):
                since = int(doc.get("submitted_unix") or 0) - 300
                found = self.client.find(str(doc["token"]), since=since)
            if found is None:
                doc["status"] = "abandoned"  # never created: nothing was paid; its tasks are sent again
            else:
                _update(doc, found)
            save_state(doc)

    # -- landing -------------------------------------------------------------------------------

    def _land(self, states: list[dict[str, Any]]) -> None:
        docs = [d for d in states if is_open(d) and d.get("batch_id") and _in_shard(d, self.opts.shard)]
        if not docs:
            return
        state = load_state(self.plan, self.opts, self.prices, "openai", None, self.limits, None)
        try:
            for doc in docs:
                info = self.client.retrieve(str(doc["batch_id"]))
                _update(doc, info)
                if not info.terminal:
                    save_state(doc)
                    continue
                self._land_batch(state, doc, info)
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
            for line in _lines(path):
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
            return self._failure(state, req, self._line_error(line, response), request_id)
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
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
        cost = cost_from_usage(self.prices, req["model"] or "", usage, req["params"], batch=True)
        entries = []
        for i, (data, revised) in enumerate(images):
            entry = self._write(state, req, i, data)
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
            entries.append(entry)
        if state.journal is not None:
            state.journal.done(str(req["task"]), str(req["fingerprint"]), entries)
        with self.lock:
            self.landed_now[str(req["fingerprint"])] = entries
            self.run_.landed += len(entries)
            self.spent += cost or 0.0
        return {"status": "generated", "error": None, "request_id": request_id}

    def _write(self, state: RunState, req: dict[str, Any], index: int, data: bytes) -> dict[str, Any]:
        rel = str(req["paths"][index])
        path = store.safe_join(self.out_dir, rel)
        sha = store.sha256_bytes(data)
        if state.files.sha(path) != sha:  # else it landed already (a collect that crashed)
            retire_replaced(state, rel)
            store.atomic_write_bytes(path, data)
            state.files.record(path, sha)
        info = imgio.probe(path)
        return {"step": req["step"], "key": req["key"], "index": index, "path": rel, "sha256": sha,
                "width": info.width, "height": info.height, "format": info.format, "bytes": len(data)}

    def _failure(self, state: RunState, req: dict[str, Any], error: dict[str, Any],
                 request_id: str | None) -> dict[str, Any]:
        if state.journal is not None:
            state.journal.failed(str(req["task"]), str(req["fingerprint"]), error)
        self.run_.failed_lines += 1
        return {"status": "failed", "error": error, "request_id": request_id}

    def _line_error(self, line: dict[str, Any], response: dict[str, Any] | None) -> dict[str, Any]:
        scrub = self.client.scrub
        if response is None:
            err = _obj(line.get("error"))
            code = err.get("code")
            return {"type": "expired" if code == "batch_expired" else "batch_error", "status": None,
                    "code": code, "message": scrub(str(err.get("message") or "the request did not run"))}
        status = response.get("status_code")
        err = _obj(_obj(response.get("body")).get("error"))
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

    # -- the pass ------------------------------------------------------------------------------

    def _pass(self, state: RunState, units: list[int]) -> list[TaskReport]:
        peek = state.view(reuse_only=True)
        reports: dict[int, list[TaskReport]] = {}
        interrupt = Interrupt(lambda: state.ledger.stop("interrupted"))
        fail_fast = self.opts.fail_fast

        def unit(i: int) -> list[TaskReport]:
            done: dict[str, Outcome] = {}
            out = []
            for task in self.plan.tasks_of(i):
                outcome = self._task(state, peek, task, done)
                done[task.step.id] = outcome
                rep = TaskReport(task, outcome)
                out.append(rep)
                with self.lock:
                    if self.progress:
                        self.progress(rep)
                    if fail_fast and outcome.status == "failed":
                        state.ledger.stop("stopped at the first failure (--fail-fast)")
            return out

        with trap_signals(interrupt):
            workers = max(1, min(self.limits.concurrency * 2, len(units), 64))
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unit") as pool:
                futures = {pool.submit(unit, i): i for i in units}
                remaining = set(futures)
                while remaining:
                    finished, remaining = cf.wait(remaining, timeout=0.2)
                    for fut in finished:
                        reports[futures[fut]] = fut.result()
        self.run_.result.interrupted = interrupt.fired
        return [r for i in units for r in reports.get(i, [])]

    def _waits(self, task: Task, done: dict[str, Outcome]) -> str | None:
        """The earlier step this task needs that is still to come (in a batch, or after one)."""
        for ref in task.inputs:
            if ref.step is not None and ref.step in done and done[ref.step].status == "pending":
                return ref.step
        if task.prompt_template is not None:  # the prompt reads steps.*: wait until they are final
            for sid, out in done.items():
                if out.status == "pending":
                    return sid
        return None

    def _task(self, state: RunState, peek: RunState, task: Task, done: dict[str, Outcome]) -> Outcome:
        out = self._decide(state, peek, task, done)
        if self.collect and out.status == "up_to_date" and out.entries and not out.stale and all(
                _made_in_this_flow(state, e) for e in out.entries):
            # A batch flow (submit, collect, collect...) is one run: what an earlier collect (or the
            # submit) of it made stays `generated`, so the final manifest reads as a direct run's.
            return Outcome("generated", out.entries, out.prompt, out.revised_prompt, in_scope=out.in_scope)
        return out

    def _decide(self, state: RunState, peek: RunState, task: Task, done: dict[str, Outcome]) -> Outcome:
        if not task.enabled:
            return process(peek, task, done)
        waits = self._waits(task, done)
        if waits is not None:
            with self.lock:
                self.run_.waiting += 1
            return _pending(task, f"waits for step {waits!r}", None)
        if not batchable(task):
            out = process(state, task, done)  # local steps and direct requests (edits): made now
            if out.status in ("generated", "failed") and out.in_scope:
                with self.lock:
                    self.made_now += 1
            return out
        out = process(peek, task, done)
        if out.status == "up_to_date" and out.entries and all(
                e.get("fingerprint") in self.landed_now for e in out.entries):
            return Outcome("generated", out.entries, out.prompt, out.revised_prompt, in_scope=out.in_scope)
        if out.status != "pending":
            return out
        assert out.fingerprint is not None and out.resolved is not None  # the one decision's, not a copy
        fp, inputs = out.fingerprint, input_entries(state, out.resolved)
        if fp in self.flight:
            with self.lock:
                self.run_.in_batch += 1
            return _pending(task, f"in batch {self.flight[fp]}", out.prompt)
        error = self.failed.get(fp)
        if error is not None:
            failed = failed_outcome(task, str(error.get("type")), str(error.get("message")), True,
                             status=error.get("status"), code=error.get("code"), attempts=1)
            failed.prompt = out.prompt
            return failed
        if state.ledger.stop_reason is not None:
            return Outcome("skipped", reason=state.ledger.stop_reason)
        with self.lock:
            self.queue.append(_Queued(self.order[id(task)], task, fp, out.prompt, inputs))
        return _pending(task, "submitted in a batch", out.prompt)

    # -- submission ----------------------------------------------------------------------------

    def _submit(self, states: list[dict[str, Any]]) -> None:
        if not self.queue:
            return
        queued = sorted(self.queue, key=lambda q: q.order)
        unique: dict[str, dict[str, Any]] = {}
        for q in queued:
            req = unique.get(q.fp)
            if req is not None:  # the same request twice: sent once, the other reuses its image
                req["twin_keys"].append(q.task.unit.key)
                req["twins"].append(q.task.id)
                continue
            unique[q.fp] = _request(q)
        wave = max((int(d.get("wave") or 0) for d in states), default=0) + 1
        chunk: list[tuple[str, dict[str, Any], bytes]] = []
        size = 0
        for fp, req in unique.items():
            line = _jsonl_line(fp, req)
            if chunk and (len(chunk) >= MAX_REQUESTS or size + len(line) > MAX_BYTES):
                self._send(chunk, wave)
                chunk, size = [], 0
            chunk.append((fp, req, line))
            size += len(line)
        if chunk:
            self._send(chunk, wave)

    def _send(self, chunk: list[tuple[str, dict[str, Any], bytes]], wave: int) -> None:
        token = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(6)}"
        recipe = self.recipe
        doc: dict[str, Any] = new_state(recipe, token, wave, self.opts, {fp: req for fp, req, _ in chunk})
        doc["_path"] = str(states_dir(self.out_dir) / f"{token}.json")
        save_state(doc)  # first: a crash after creating the batch finds it again by this token
        data = b"".join(line for _, _, line in chunk)
        try:
            doc["input_file_id"] = self.client.upload(f"dalle-pipe-{recipe.name}-{token}.jsonl", data)
            save_state(doc)
            info = self.client.create(doc["input_file_id"], ENDPOINT,
                                      {META_KEY: token, "recipe": recipe.name[:512]})
        except BatchAPIError as exc:
            doc["status"] = "abandoned"
            doc["error"] = exc.format()
            save_state(doc)
            self.run_.errors.append(exc.format())
            return
        _update(doc, info)
        save_state(doc)
        self.run_.submitted.append(doc)
        self.run_.requests += len(chunk)


def new_state(recipe: Recipe, token: str, wave: int, opts: RunOptions,
              requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A batch state file: everything `status` and `collect` need, with only the recipe and the folder."""
    return {
        "format": STATE_FORMAT, "tool": "dalle-pipe", "version": __version__, "token": token,
        "recipe": {"path": display_path(recipe.source.path), "name": recipe.name, "sha256": recipe.sha256},
        "shard": list(opts.shard) if opts.shard else None, "only": list(opts.only), "wave": wave,
        "endpoint": ENDPOINT, "completion_window": "24h", "submitted_at": store.utc_now_iso(),
        "submitted_unix": int(time.time()), "status": "submitting", "input_file_id": None, "batch_id": None,
        "request_counts": None, "output_file_id": None, "error_file_id": None, "errors": [],
        "collected_at": None, "requests": requests, "results": {},
    }


def _update(doc: dict[str, Any], info: BatchInfo) -> None:
    doc.update({"batch_id": info.id, "status": info.status, "input_file_id": info.input_file_id,
                "request_counts": info.request_counts, "output_file_id": info.output_file_id,
                "error_file_id": info.error_file_id, "errors": info.errors})


def _request(q: _Queued) -> dict[str, Any]:
    t = q.task
    return {"task": t.id, "step": t.step.id, "key": t.unit.key, "indexes": list(range(t.n)), "paths": list(t.outputs),
            "fingerprint": q.fp, "provider": "openai", "model": t.model, "endpoint": ENDPOINT,
            "params": t.params, "prompt": q.prompt, "inputs": q.inputs, "twins": [], "twin_keys": []}


def _jsonl_line(custom_id: str, req: dict[str, Any]) -> bytes:
    """The request exactly as a direct call sends it: the params (minus prompt and files), prompt, model."""
    body = {k: v for k, v in req["params"].items() if k not in ("model", "prompt", "image", "mask")}
    body.update({"prompt": req["prompt"] or "", "model": req["model"]})
    line = {"custom_id": custom_id, "method": "POST", "url": req["endpoint"], "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _made_in_this_flow(state: RunState, entry: dict[str, Any]) -> bool:
    """Is this reused entry the one the manifest (or a landing) recorded as `generated` at its path?"""
    prev = state.prev_by_path.get(str(entry.get("path")).lower())
    return (prev is not None and prev.get("status") == "generated" and prev.get("index") == entry.get("index")
            and prev.get("fingerprint") == entry.get("fingerprint") and prev.get("sha256") == entry.get("sha256"))


def _pending(task: Task, reason: str, prompt: str | None) -> Outcome:
    return Outcome("pending", entries=[{"path": p} for p in task.outputs], prompt=prompt, reason=reason,
                   in_scope=False)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for raw in f:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


# --------------------------------------------------------------------------- every recipe


def status_all(plans: list[Plan], shard: tuple[int, int] | None) -> list[StatusLine]:
    return [line for plan in plans for line in status(plan, shard)]


def open_requests(out_dir: Path) -> int:
    """How many requests of this output folder are in batches not collected yet (no network)."""
    return sum(len(d["requests"]) for d in load_states(out_dir) if is_open(d))
