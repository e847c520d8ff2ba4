"""A catalog through the OpenAI Batch API: `run --batch` (alias `batch submit`), `batch status`, `batch collect`.

Submit. The engine's one decision (`engine.decide`) decides every task, and the engine's unit loop
(`engine.run.drive`) carries it out through this module's sink (`_Drive.take`): a batchable task
to make becomes a queued line; everything else is taken as a direct run takes it. Nothing up to
date is ever sent. Generation
requests that would be sent become JSONL lines
`{"custom_id": <fingerprint>, "method": "POST", "url": "/v1/images/generations", "body": {model,
prompt, **params}}` — the body is exactly what a direct call sends — split into files of at most
50,000 requests and 200 MB, uploaded (`purpose="batch"`) and submitted (`completion_window="24h"`),
one endpoint per batch. Two tasks with one fingerprint are one request; the second reuses the
first's image, as on a rerun. Local steps and direct requests whose inputs are ready are made at
once; steps that need a batch's outputs wait for a later wave.

Edits of GPT image models are batched too, in the JSON form of `/v1/images/edits` that OpenAI's
OpenAPI spec defines (the SDK has none): their input files are uploaded once each through the
Files API and named by file id (see `edits`), and their lines go in batches of their own
(one endpoint per batch). A server that refuses that form gets its edits directly, and the
summary says so. Variations, markup edits and dall-e-2 edits run directly, at the synchronous
price, once their inputs have landed.

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

Checks. The engine's unit loop runs a task's checks after this sink, so what lands (collect) or is
reused (submit) is checked at that command. A retry after failed checks comes back to this sink as
a decision to make (its attempt numbered in the fingerprint, recorded in the line's state): a line
of the next wave. Until it lands the task is pending and the try that failed is recorded
(`_retry`); landing carries the attempt and the earlier tries' checks into the new entry (`_tried`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ... import store
from ...engine.estimate import pending_cost, sum_costs, task_cost
from ...errors import UsageError
from ...imaging import io as imgio
from ...plan import Plan, Task
from ...prices import PriceTable
from ...providers.base import Provider
from ...providers.batches import META_KEY, BatchAPIError, BatchClient
from ...recipe import Recipe, display_path
from ..call import build_request
from ..checked import failure_of, retrying
from ..decide import decide
from ..decision import Decision, Kind, Outcome
from ..load import load_state
from ..make import settle, take
from ..place import failed_outcome, input_entries
from ..record import write_run_manifest
from ..results import RecipeResult, RunOptions, TaskReport
from ..run import drive, gate
from ..shards import run_locks, shard_provider
from ..signals import Interrupt, trap_signals
from ..state import RunState
from ..units import limits_for, select_units
from .edits import ENDPOINTS, Uploads, json_edit
from .land import Landing
from .lines import Queued, jsonl_line, made_in_this_flow, request_record, waiting
from .results import BatchRun, StatusLine
from .states import (
    MAX_BYTES,
    MAX_REQUESTS,
    failed_lines,
    in_flight,
    in_shard,
    is_open,
    load_states,
    new_state,
    retries,
    save_state,
    states_dir,
    update_state,
)


def batchable(task: Task) -> bool:
    """Does this task go through the Batch API? Generations and JSON edits (GPT image models) of the
    openai Images API, base64 answers."""
    recipe = task.recipe
    return (task.is_api and (task.kind == "generate" or json_edit(task)) and recipe.provider.name == "openai"
            and recipe.provider.api != "responses" and task.params.get("response_format") != "url")


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


def status(plan: Plan, shard: tuple[int, int] | None) -> list[StatusLine]:
    """`batch status`: each batch of the recipe's output folder, as the API reports it now (reads only)."""
    recipe = plan.recipe
    docs = [d for d in load_states(recipe.output_dir) if in_shard(d, shard) and d.get("status") != "abandoned"]
    lines = []
    client: BatchClient | None = None
    try:
        for doc in docs:
            info = None
            if doc.get("batch_id") and not doc.get("collected_at"):
                if client is None:
                    check_recipe(recipe)
                    client = BatchClient(base_url=recipe.base_url, policy=limits_for(recipe, RunOptions()).retry_policy)
                info = client.retrieve(str(doc["batch_id"]))
            lines.append(StatusLine(recipe.name, doc, info))
    finally:
        if client is not None:
            client.close()
    return lines


class _Drive(Landing):
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
        self.queue: list[Queued] = []
        self.landed_now: dict[str, list[dict[str, Any]]] = {}
        self.spent = 0.0
        self.order = {id(t): n for n, t in enumerate(plan.tasks)}
        self.made_now = 0  # tasks made (or failed) by this command itself
        self.flight: dict[str, str] = {}  # fingerprint -> batch, of requests in batches not collected yet
        self.failed: dict[str, dict[str, Any]] = {}  # collect: fingerprint -> error, of lines that failed
        self.retries: dict[tuple[str, int], set[str]] = {}  # (task, attempt) -> retries after failed checks
        self._uploads: Uploads | None = None

    @property
    def client(self) -> BatchClient:
        with self.lock:
            if self._client is None:
                self._client = BatchClient(base_url=self.recipe.base_url, policy=self.limits.retry_policy)
            return self._client

    @property
    def uploads(self) -> Uploads:
        client = self.client
        with self.lock:
            if self._uploads is None:
                self._uploads = Uploads(self.out_dir, client.base_url)
            return self._uploads

    def _batched(self, task: Task) -> bool:
        """Does this task go through a batch now? Not an edit once its server refused JSON edits."""
        return batchable(task) and not (task.kind == "edit" and self._edits_refused() is not None)

    def _edits_refused(self) -> str | None:
        uploads = self.uploads
        with self.lock:
            why = uploads.refused
            if why is not None and not self.run_.notes:
                self.run_.notes.append(f"edits sent directly, at the synchronous price: the server refused "
                                       f"JSON edits in a batch earlier ({why}; delete "
                                       f"{display_path(uploads.path)} to try again)")
            return why

    def _fall_back(self, why: str) -> None:
        """The server refused JSON edits: remember it; this and later runs send edits directly."""
        uploads = self.uploads
        with self.lock:
            if uploads.refused is None:
                uploads.refuse(why)
                self.run_.notes.append(f"edits sent directly, at the synchronous price: the server refused "
                                       f"JSON edits in a batch ({why})")

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
            self._index(states)
            result = self.run_.result
            result.estimate_usd = self._estimate_selected(units)
            started_at = store.utc_now_iso()
            reports = self._pass(state, units)
            result.reports = reports
            result.stop_reason = state.ledger.stop_reason
            result.spent_usd = round(state.ledger.spent + self.spent, 6)
            if not result.interrupted and state.ledger.stop_reason is None:
                self._submit(states)
            self.run_.running = [d for d in load_states(self.out_dir) if is_open(d) and in_shard(d, self.opts.shard)]
            changed = (not self.collect or bool(self.run_.collected or self.run_.submitted or journal_had)
                       or self.made_now > 0 or state.ledger.spent > 0  # a paid judgement is recorded
                       or not (self.out_dir / store.manifest_name(self.opts.shard)).exists())
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
            if not in_shard(doc, self.opts.shard) or doc.get("status") == "abandoned":
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
        return sum_costs([task_cost(self.prices, task, "openai", batch=self._batched(task))
                          for i in units for task in self.plan.tasks_of(i) if task.is_api and task.enabled])

    def _index(self, states: list[dict[str, Any]]) -> None:
        """What the batch states say about requests: in flight, failed (collect), retries after failed checks."""
        self.flight = in_flight(states)
        self.failed = failed_lines(states) if self.collect else {}
        self.retries = retries(states)

    def _gate(self, units: list[int], states: list[dict[str, Any]]) -> None:
        """--max-cost: the worst case of what this flow would still send, its later waves too, as `plan`
        shows it (batch price for batched requests); what is in a batch already costs nothing. Reads only."""
        if self.opts.max_cost is None:
            return
        dry = RunOptions(**{**self.opts.__dict__, "mode": "dry"})
        peek = load_state(self.plan, dry, self.prices, "openai", None, self.limits, None)
        self._index(states)

        def look(state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
            waits = self._retry(state, task, d, done)
            return waits if waits is not None and waits.status == "pending" else settle(state, task, d)

        def price(task: Task, d: Decision, out: Outcome, done: Mapping[str, Outcome]) -> float | None:
            if d.kind is Kind.MAKE and batchable(task) and d.fingerprint in self.flight:
                return 0.0  # in a batch already
            return pending_cost(self.prices, task, out, "openai", batch=self._batched(task))

        gate(self.plan, units, peek, self.opts.max_cost, price=price, preview=look, verb="submit")

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
                update_state(doc, found)
            save_state(doc)

    # -- the pass ------------------------------------------------------------------------------

    def _pass(self, state: RunState, units: list[int]) -> list[TaskReport]:
        """The engine's unit loop, with this flow as its sink."""
        interrupt = Interrupt(lambda: state.ledger.stop("interrupted"))
        with trap_signals(interrupt):
            reports = drive(self.plan, dict.fromkeys(units), state, self.take, self.progress,
                            max(2, self.limits.concurrency), self.opts.fail_fast)
        self.run_.result.interrupted = interrupt.fired
        return [r for i in units for r in reports.get(i, [])]

    def _waits(self, task: Task, done: Mapping[str, Outcome]) -> str | None:
        """The earlier step this task needs that is still to come (in a batch, or after one)."""
        for ref in task.inputs:
            if ref.step is not None and ref.step in done and done[ref.step].status == "pending":
                return ref.step
        if task.prompt_template is not None:  # the prompt reads steps.*: wait until they are final
            for sid, out in done.items():
                if out.status == "pending":
                    return sid
        return None

    def take(self, state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
        """The batch sink: a batchable task to make becomes a queued line; the rest is taken directly."""
        out = self._take(state, task, d, done)
        if self.collect and out.status == "up_to_date" and out.entries and not out.stale and all(
                made_in_this_flow(state, e) for e in out.entries):
            # A batch flow (submit, collect, collect...) is one run: what an earlier collect (or the
            # submit) of it made stays `generated`, so the final manifest reads as a direct run's.
            return Outcome("generated", out.entries, out.prompt, out.revised_prompt, in_scope=out.in_scope)
        return out

    def _take(self, state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome:
        if not task.enabled:
            return take(state, task, d, done)
        waits = self._waits(task, done)
        if waits is not None:
            with self.lock:
                self.run_.waiting += 1
            return waiting(task, f"waits for step {waits!r}", None)
        retried = self._retry(state, task, d, done)
        if retried is not None:
            if retried.status == "pending":
                with self.lock:
                    self.run_.in_batch += 1
            return retried
        if not self._batched(task) or d.kind not in (Kind.MAKE, Kind.TWIN):
            out = take(state, task, d, done)  # local steps, direct requests (variations...), reuse: now
            if d.kind is Kind.MAKE and out.status in ("generated", "failed") and out.in_scope:
                with self.lock:
                    self.made_now += 1
            if out.status == "up_to_date" and out.entries and all(
                    e.get("fingerprint") in self.landed_now for e in out.entries):
                return Outcome("generated", out.entries, out.prompt, out.revised_prompt, in_scope=out.in_scope)
            return out
        assert d.fingerprint is not None
        resolved = d.resolved(state.output_dir)
        fp, inputs = d.fingerprint, input_entries(state, resolved)
        if fp in self.flight:
            with self.lock:
                self.run_.in_batch += 1
            return waiting(task, f"in batch {self.flight[fp]}", d.prompt)
        error = self.failed.get(fp)
        if error is not None:
            failed = failed_outcome(task, str(error.get("type")), str(error.get("message")), True,
                                    status=error.get("status"), code=error.get("code"), attempts=1)
            failed.prompt = d.prompt
            return failed
        if state.ledger.stop_reason is not None:
            return Outcome("skipped", reason=state.ledger.stop_reason)
        body = None
        if task.kind == "edit":
            try:
                body = self.uploads.line_body(self.client, request_record(Queued(0, task, fp, d.prompt, inputs)),
                                              build_request(state, task, resolved, d.prompt))
            except (imgio.ImageInputError, OSError, ValueError) as exc:  # as a direct call would fail
                failed = failed_outcome(task, "input", str(getattr(exc, "message", exc)), True)
                failed.prompt = d.prompt
                return failed
            except BatchAPIError as exc:
                if exc.refused:
                    self._fall_back(exc.message)
                    return self._take(state, task, d, done)  # now directly
                with self.lock:  # not submitted: the next `run --batch` tries again
                    if exc.format() not in self.run_.errors:
                        self.run_.errors.append(exc.format())
                return Outcome("skipped", reason=f"not submitted: {exc.message}", prompt=d.prompt)
        with self.lock:
            self.queue.append(Queued(self.order[id(task)], task, fp, d.prompt, inputs, body, d.attempt))
        return waiting(task, "submitted in a batch", d.prompt)

    def _retry(self, state: RunState, task: Task, d: Decision, done: Mapping[str, Outcome]) -> Outcome | None:
        """A kept image whose retry after failed checks was sent in a batch. In flight: the task is
        pending, the image recorded as it is. Failed (collect): the image is this flow's, so its checks
        retry it once more, into that failed line (the task is `failed_checks`, saying why)."""
        if d.kind is not Kind.REUSE or not task.checks:
            return None
        sent = self.retries.get((task.id, d.attempt + 1))
        if not sent:
            return None
        fp = decide(state, task, done, attempt=d.attempt + 1).fingerprint
        if fp not in sent or (fp not in self.flight and fp not in self.failed):
            return None  # another recipe's retry, or it landed
        out = settle(state, task, d)
        if fp in self.failed:
            return Outcome("generated", out.entries, out.prompt, out.revised_prompt, in_scope=out.in_scope)
        return retrying(out, f"{failure_of(out.entries)}; retry {d.attempt + 1} in batch {self.flight[fp]}")

    # -- submission ----------------------------------------------------------------------------

    def _submit(self, states: list[dict[str, Any]]) -> None:
        if not self.queue:
            return
        queued = sorted(self.queue, key=lambda q: q.order)
        unique: dict[str, dict[str, Any]] = {}
        bodies = {q.fp: q.body for q in queued if q.body is not None}
        for q in queued:
            req = unique.get(q.fp)
            if req is not None:  # the same request twice: sent once, the other reuses its image
                req["twin_keys"].append(q.task.unit.key)
                req["twins"].append(q.task.id)
                continue
            unique[q.fp] = request_record(q)
        wave = max((int(d.get("wave") or 0) for d in states), default=0) + 1
        for endpoint in ENDPOINTS.values():  # one endpoint per batch: generations first, then edits
            chunk: list[tuple[str, dict[str, Any], bytes]] = []
            size = 0
            for fp, req in unique.items():
                if req["endpoint"] != endpoint:
                    continue
                line = jsonl_line(fp, req, bodies.get(fp))
                if chunk and (len(chunk) >= MAX_REQUESTS or size + len(line) > MAX_BYTES):
                    self._send(chunk, wave, endpoint)
                    chunk, size = [], 0
                chunk.append((fp, req, line))
                size += len(line)
            if chunk:
                self._send(chunk, wave, endpoint)

    def _send(self, chunk: list[tuple[str, dict[str, Any], bytes]], wave: int, endpoint: str) -> None:
        token = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(6)}"
        recipe = self.recipe
        doc: dict[str, Any] = new_state(recipe, token, wave, self.opts, {fp: req for fp, req, _ in chunk},
                                        endpoint)
        doc["_path"] = str(states_dir(self.out_dir) / f"{token}.json")
        save_state(doc)  # first: a crash after creating the batch finds it again by this token
        data = b"".join(line for _, _, line in chunk)
        try:
            doc["input_file_id"] = self.client.upload(f"dalle-pipe-{recipe.name}-{token}.jsonl", data)
            save_state(doc)
            info = self.client.create(doc["input_file_id"], endpoint,
                                      {META_KEY: token, "recipe": recipe.name[:512]})
        except BatchAPIError as exc:
            doc["error"] = exc.format()
            if exc.maybe_done:  # its answer was lost: it may exist; the next run looks it up (`_recover`)
                save_state(doc)
                self.run_.errors.append(f"{exc.format()} (the batch may exist: the next `run --batch` or "
                                        f"`batch collect` looks for it before sending anything again)")
                return
            doc["status"] = "abandoned"
            save_state(doc)
            if endpoint == ENDPOINTS["edit"] and exc.refused:  # sent directly by the next run or collect
                self._fall_back(exc.message)
                self.run_.notes.append(f"{len(chunk)} edit(s) wait for the next `run --batch` or `batch collect`")
                return
            self.run_.errors.append(exc.format())
            return
        update_state(doc, info)
        save_state(doc)
        self.run_.submitted.append(doc)
        self.run_.requests += len(chunk)


# --------------------------------------------------------------------------- every recipe


def status_all(plans: list[Plan], shard: tuple[int, int] | None) -> list[StatusLine]:
    return [line for plan in plans for line in status(plan, shard)]
