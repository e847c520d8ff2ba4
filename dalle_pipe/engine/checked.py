"""Running a task's checks on the images it just made (or kept), and making them again on failure.

`checked` takes the engine's decision for one task (`engine.decide`) through the sink (`take`): the
image is made or reused as always; then every check runs on each of its images. Local checks are free; an `ask` goes
through the run's limiter, is journaled and costed like any paid call, and is cached by fingerprint
(a result in the image's entry with the same fingerprint is reused, never paid twice). When an
`error` check fails on a freshly made image, `on_fail: {retry: N}` makes it again (a new attempt,
numbered in its fingerprint; the replaced image goes to history), at most N times, as long as the
next try fits --max-cost. The last image is kept; it is `failed_checks` when it still fails. When the
sink queues the retry as a Batch API line, the task is pending and the try that failed is recorded
(`retrying`); the collect that lands the retry checks it as the next attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from ..checks import ask, local
from ..checks.result import CheckResult, checks_pass
from ..config.checks import CheckImage, PlannedCheck
from ..plan import Task
from ..providers.base import ImageResponse, InputFile, Judge, ProviderError
from ..throttle import Stopped, call_with_retries
from .decide import decide
from .decision import Decision, Outcome
from .estimate import task_cost
from .state import RunState

FAILED = "failed_checks"
CHECKED = ("generated", "up_to_date")
Take = Callable[[RunState, Task, Decision, Mapping[str, Outcome]], Outcome]  # a sink: direct, or a batch line


def checked(state: RunState, task: Task, done: Mapping[str, Outcome], d: Decision, take: Take) -> Outcome:
    """Carry out one task's decision through `take`, then run its checks (retrying per `on_fail`)."""
    out = take(state, task, d, done)
    if not task.checks:
        return out
    attempt = d.attempt
    if out.status not in CHECKED or not out.entries or all(e.get("approved") for e in out.entries):
        return out  # nothing to check, or approved by a person: an approval overrides checks
    if state.mode != "run":
        return _judged_before(state, task, out, done)
    offline = state.provider_name == "offline"
    history: list[dict[str, Any]] = list(out.entries[0].get("check_attempts") or []) if attempt else []
    while True:
        results = _run_all(state, task, out, done)
        if results is None:  # a judgement to pay for, seen by the fast pass: decided again in the run
            return Outcome("pending", prompt=out.prompt, paths=task.outputs, reason="checks to judge",
                           in_scope=out.in_scope, decision=d)
        for entry, res in zip(out.entries, results, strict=True):
            entry["checks"] = [r.to_json() for r in res]
            entry["attempt"] = attempt
        if out.status == "generated":
            history = [h for h in history if h.get("attempt") != attempt]
            history += [{"attempt": attempt, "fingerprint": e.get("fingerprint"), "sha256": e.get("sha256"),
                         "checks": e["checks"]} for e in out.entries]
        for entry in out.entries:
            if history:
                entry["check_attempts"] = history
        passing = all(checks_pass(res, offline=offline) for res in results)
        if passing or any(e.get("approved") for e in out.entries):
            return out
        why = _first_failure(results)
        if out.status != "generated":
            return _failed(out, task, f"{why}; kept from an earlier run (`dalle-pipe approve` accepts it; "
                                      f"--force or a changed recipe makes it again)")
        if attempt >= task.retry or not _judged(results):
            return _failed(out, task, why)
        if not _affordable(state, task, out.prompt):
            return _failed(out, task, f"{why}; no retry: the next try would pass --max-cost")
        if state.ledger.stop_reason is not None:
            return _failed(out, task, f"{why}; no retry: {state.ledger.stop_reason}")
        attempt += 1
        for entry in out.entries:  # the replaced image is a paid one at this path: it goes to history
            state.prev_by_path[str(entry["path"]).lower()] = entry
        again = take(state, task, decide(state, task, done, attempt=attempt), done)
        if again.status == "pending":  # a Batch API line: the collect that lands it checks it
            return retrying(out, f"{why}; retry {attempt} {again.reason or 'queued'}")
        if again.status not in CHECKED or not again.entries:
            return _failed(out, task, f"{why}; the retry did not land: {again.reason or again.status}")
        out = again


def _judged_before(state: RunState, task: Task, out: Outcome, done: Mapping[str, Outcome]) -> Outcome:
    """--check, dry runs and plan: the checks run where they cost nothing (local ones, results known
    by fingerprint); a judgement still to pay for makes the task pending, at its price."""
    results = _run_all(state, task, out, done)
    if results is None:
        free = state.provider_name == "offline"
        return Outcome("pending", prompt=out.prompt, paths=task.outputs, reason="its checks have not run",
                       cost=ask.checks_cost(state.prices, task.checks, task.n, free=free), in_scope=out.in_scope,
                       judging=True)
    offline = state.provider_name == "offline"
    for entry, res in zip(out.entries, results, strict=True):
        if not entry.get("approved") and not checks_pass(res, offline=offline):
            return _failed(out, task, _first_failure([res]))
    return out


def retrying(out: Outcome, why: str) -> Outcome:
    """A try that failed its checks, whose retry is a request in a batch: the task is pending (its
    dependents wait), and the image now at its path is recorded as it is, `failed_checks`."""
    for entry in out.entries:
        entry["status"] = FAILED
    return Outcome("pending", out.entries, out.prompt, out.revised_prompt, reason=f"checks failed: {why}",
                   in_scope=out.in_scope, cost=0.0)


def failure_of(entries: list[dict[str, Any]]) -> str:
    """The first failing `error` check recorded in these entries, as `_failed` words it."""
    read = [[CheckResult.from_json(c) for c in e.get("checks") or [] if isinstance(c, dict)] for e in entries]
    return _first_failure([[r for r in res if r is not None] for res in read])


def _failed(out: Outcome, task: Task, why: str) -> Outcome:
    out.status = FAILED
    out.reason = f"checks failed: {why}"
    for entry in out.entries:
        entry["status"] = FAILED
    return out


def _first_failure(results: list[list[CheckResult]]) -> str:
    for res in results:
        for r in res:
            if r.severity == "error" and r.passed is not True:
                return f"{r.name}: {r.reason}" if r.reason else r.name
    return "a check failed"


def _judged(results: list[list[CheckResult]]) -> bool:
    """Some `error` check said a real no (a judgement left unanswered is no reason to make the image again)."""
    return any(r.blocking for res in results for r in res)


def _affordable(state: RunState, task: Task, prompt: str | None) -> bool:
    """Spend is checked before every try: the next one's worst case (image + judgements) must fit."""
    cap = state.ledger.max_cost
    if cap is None:
        return True
    image = task_cost(state.prices, task, state.provider_name, prompt=prompt, try_only=True)
    return image is not None and state.ledger.spent + image <= cap


def _run_all(state: RunState, task: Task, out: Outcome, done: Mapping[str, Outcome]) -> list[list[CheckResult]] | None:
    """Each image's results, in check order; None when a judgement is due and this is the fast pass."""
    shas = _shas(done)
    results = []
    for entry in out.entries:
        cache = _cache(state, entry)
        path = state.output_dir / str(entry["path"])
        sha = str(entry.get("current_sha256") or entry.get("sha256"))
        res = []
        for check in task.checks:
            one = _run_one(state, task, check, path, sha, shas, done, cache)
            if one is None:
                return None
            res.append(one)
        results.append(res)
    return results


def _shas(done: Mapping[str, Outcome]) -> dict[tuple[str, int], tuple[str, str]]:
    """(step, index) -> (path, sha256) of this unit's earlier images."""
    found = {}
    for sid, o in done.items():
        if o.status in ("generated", "up_to_date", "modified"):
            for i, e in enumerate(o.entries):
                if e.get("sha256"):
                    found[(sid, i)] = (str(e["path"]), str(e.get("current_sha256") or e["sha256"]))
    return found


def _cache(state: RunState, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results known by fingerprint: the image's own entry, and the entry at its path before this run.
    An answer wins over "not judged" (a try's record in `check_attempts` may predate the answer)."""
    found: dict[str, dict[str, Any]] = {}
    prev = state.prev_by_path.get(str(entry.get("path")).lower()) or {}
    for source in (prev, entry):
        for c in [*(source.get("checks") or []),
                  *(c for a in source.get("check_attempts") or [] for c in a.get("checks") or [])]:
            if isinstance(c, dict) and isinstance(c.get("fingerprint"), str):
                had = found.get(c["fingerprint"])
                if had is None or had.get("passed") is None:
                    found[c["fingerprint"]] = c
    return found


def _resolve(state: RunState, img: CheckImage, shas: Mapping[tuple[str, int], tuple[str, str]]) -> tuple[Path, str]:
    if img.step is not None:
        rel, sha = shas[(img.step, img.index)]
        return state.output_dir / rel, sha
    assert img.path is not None
    found = state.files.sha(img.path)
    if found is None:
        raise FileNotFoundError(str(img.path))
    return img.path, found


def _run_one(state: RunState, task: Task, check: PlannedCheck, path: Path, sha: str,
             shas: Mapping[tuple[str, int], tuple[str, str]], done: Mapping[str, Outcome],
             cache: Mapping[str, dict[str, Any]]) -> CheckResult | None:
    spec = check.spec
    try:
        inputs = [(i, *_resolve(state, i, shas)) for i in check.images]
    except KeyError:
        return CheckResult(spec.name, spec.kind, False, None, "an image it compares with was not made", 0.0,
                           spec.severity)
    except FileNotFoundError as exc:
        return CheckResult(spec.name, spec.kind, False, None, f"{exc} is missing", 0.0, spec.severity)
    if spec.kind != "ask":
        fp = local.fingerprint(spec, sha, [(i.role, s) for i, _, s in inputs])
        hit = _hit(cache, fp)
        if hit is not None:
            return hit
        paths = {i: p for i, p, _ in inputs}
        return local.run_planned(check, path, lambda i: paths[i])
    files = [sha, *(s for _, _, s in inputs)]  # the image's sha256, then each reference's
    blank = InputFile("image", "", b"", "", "image/png")  # the key needs the files' sha256, not their bytes
    fp = ask.request_fingerprint(ask.request(check, blank, [blank] * len(inputs)), provider=state.provider_name,
                                 base_url=state.endpoint_host, shas=files)
    hit = _hit(cache, fp)
    if hit is not None and (hit.passed is not None or state.provider_name == "offline"):
        return hit  # "not judged" is an answer only offline
    if state.mode != "run" or (state.reuse_only and state.provider_name != "offline"):
        return None  # --check, a dry run, the fast pass: no judgement is asked for here
    try:
        image, _ = ask.input_file(path, str(path.relative_to(state.output_dir)))
        refs = [ask.input_file(p, p.name)[0] for _, p, _ in inputs]
    except (OSError, ValueError) as exc:
        return CheckResult(spec.name, spec.kind, None, None, f"not judged: {exc}", 0.0, spec.severity, fp)
    return _judge(state, task, check, image, refs, fp, files)


def _hit(cache: Mapping[str, dict[str, Any]], fp: str) -> CheckResult | None:
    data = cache.get(fp)
    return CheckResult.from_json(data) if data is not None else None


def _judge(state: RunState, task: Task, check: PlannedCheck, image: InputFile, refs: list[InputFile], fp: str,
           shas: list[str]) -> CheckResult:
    """One paid judgement: through the limiter and its retry policy, journaled, costed, charged."""
    spec = check.spec
    if state.ledger.over_budget():
        return CheckResult(spec.name, spec.kind, None, None,
                           f"not judged: cost limit ${state.ledger.max_cost:.2f} reached", 0.0, spec.severity, fp)
    provider = cast(Judge, state.provider())
    if state.limiter is None or state.clock is None:  # nothing paces this view: judge directly
        return ask.judge(provider, check, image, refs, provider_name=state.provider_name,
                         base_url=state.endpoint_host, prices=state.prices, timeout_s=state.timeout_s, shas=shas)
    got: list[CheckResult] = []

    def send() -> ImageResponse:
        if state.journal is not None:
            state.journal.intent(task.id, fp, len(got) + 1)
        got[:] = [ask.judge(provider, check, image, refs, provider_name=state.provider_name,
                            base_url=state.endpoint_host, prices=state.prices, timeout_s=state.timeout_s,
                            shas=shas)]
        return ImageResponse(images=())

    try:
        call = call_with_retries(send, state.limiter, images=0, max_retries=state.max_retries, clock=state.clock,
                                 rng=state.rng, on_wait=state.on_wait)
    except Stopped:
        return CheckResult(spec.name, spec.kind, None, None, "not judged: the run stopped", 0.0, spec.severity, fp)
    if call.error is not None or not got:
        err = call.error or ProviderError("no answer")
        if state.journal is not None:
            state.journal.failed(task.id, fp, err.as_dict())
        return CheckResult(spec.name, spec.kind, None, None, f"not judged: {err.message}", None, spec.severity, fp)
    result = got[0]
    if result.cost_usd:
        state.ledger.charge(result.cost_usd)
    if state.journal is not None:
        state.journal.done(task.id, fp, [{"check": result.to_json()}])
    return result
