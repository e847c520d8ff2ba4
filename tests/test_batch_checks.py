"""Checks in the Batch API route (`run --batch`, `batch collect`), end to end through the CLI against the
stand-in: landed and reused images are checked (judgements paid, cached), a retry after failed checks
is a Batch line of the next wave, and the flow's final manifest reads like a direct run's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI, RecordedRequest
from test_checks_run import RECIPE, answers
from test_run import by_task, invoke, manifest

from dalle_pipe.engine import batch as batch_mod

KEY = "sk-test-batch-checks-7c31"
# cost_usd: the batch price is half; endpoint_host: the direct run has a stand-in of its own (another port)
VOLATILE = {"created_at", "duration_s", "request_id", "cost_usd", "endpoint_host"}
CUT_OFF = "checks failed: ask: the mug's handle is cut off"


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def project(root: Path, *, retry: int = 2, recipe: str = RECIPE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(recipe.replace("RETRY", str(retry)).replace("SEVERITY", "error"))
    return root


def cli(root: Path, api: FakeOpenAI, *args: str) -> Any:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1", "GITHUB_ACTIONS": ""}
    return invoke(root, *args, env=env)


def batch(root: Path, api: FakeOpenAI, *args: str) -> Any:
    return cli(root, api, "run", "--batch", "recipe.yaml", *args)


def collect(root: Path, api: FakeOpenAI, *args: str) -> Any:
    return cli(root, api, "batch", "collect", "recipe.yaml", *args)


def judgements(api: FakeOpenAI) -> list[RecordedRequest]:
    return [q for q in api.image_requests if q.path == "/v1/responses"]


def posts(api: FakeOpenAI) -> list[str]:
    return [q.path for q in api.image_requests]


def lines(api: FakeOpenAI) -> list[dict[str, Any]]:
    """Every JSONL line uploaded for a batch, in order."""
    return [json.loads(x) for q in api.image_requests if q.path == "/v1/files" and q.fields["purpose"] == ["batch"]
            for x in q.files[0].data.decode().splitlines()]


def states(root: Path) -> list[dict[str, Any]]:
    return batch_mod.load_states(root / "out" / "shots")


def hero(root: Path) -> dict[str, Any]:
    return by_task(manifest(root))["hero@mug#0"]


def stable(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in e.items() if f not in VOLATILE} for k, e in by_task(m).items()}


def history(root: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in (root / "out/shots/.dalle-pipe/history").rglob("*.png"))


def direct_run(root: Path, judge: Callable[[str, list[bytes]], tuple[bool, str]], retry: int) -> Any:
    """The same recipe run directly, against a stand-in of its own (the same images in the same order)."""
    with FakeOpenAI(api_key=KEY) as other:
        other.vary = True
        other.judge = judge
        return cli(project(root, retry=retry), other, "run", "recipe.yaml")


def test_a_retry_after_failed_checks_is_a_batch_line_and_the_flow_reads_like_a_direct_run(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "batched")
    api.vary = True  # each image a new picture, as the real API
    api.judge = answers(False, True)
    r = batch(root, api)
    assert r.exit_code == 0, r.output
    assert judgements(api) == []  # nothing to judge before an image lands
    (first,) = lines(api)

    # the first try lands and is judged at collect; it fails, so its retry is queued in the next wave
    r = collect(root, api)
    assert r.exit_code == 1, r.output  # a batch is still running
    assert len(judgements(api)) == 1
    assert "submitted 1 request(s) in 1 batch(es)" in r.output and "1 waiting for a batch" in r.output
    assert f"  hero@mug: {CUT_OFF}; retry 1 submitted in a batch" in r.output.splitlines()
    assert "failed checks" not in r.output.split("\n")[0]  # in a batch, not failed
    retry = lines(api)[1]
    assert retry["body"] == first["body"]  # the same request as a direct retry sends...
    assert retry["custom_id"] != first["custom_id"]  # ...numbered in its fingerprint
    (req,) = states(root)[-1]["requests"].values()
    assert (req["task"], req["attempt"], req["fingerprint"]) == ("hero@mug", 1, retry["custom_id"])
    tried = hero(root)  # the first try stays recorded (its file is a paid image) until the retry lands
    assert (tried["status"], tried["attempt"], tried["fingerprint"]) == ("failed_checks", 0, first["custom_id"])
    assert [(a["attempt"], a["checks"][1]["passed"]) for a in tried["check_attempts"]] == [(0, False)]
    assert "beach@mug#0" not in by_task(manifest(root))  # it waits for the final image
    assert manifest(root)["counts"]["failed_checks"] == 1

    # while the retry is in its batch, a run --batch sends nothing and says so
    api.clear()
    r = batch(root, api, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)["recipes"][0]
    assert (doc["in_batch"], doc["requests"], doc["failed"]) == (1, 0, [])
    assert doc["retrying"] == [{"task": "hero@mug", "reason": f"{CUT_OFF}; retry 1 in batch batch_000002"}]
    assert api.image_requests == []
    assert hero(root) == tried

    # the retry lands and passes: the edit follows in the next wave, then lands too
    r = collect(root, api)
    assert r.exit_code == 1, r.output
    assert len(judgements(api)) == 1 and len(lines(api)) == 1  # one judgement; the edit's line
    final = hero(root)
    assert (final["status"], final["attempt"], final["fingerprint"]) == ("generated", 1, retry["custom_id"])
    assert [(a["attempt"], a["fingerprint"], a["checks"][1]["passed"]) for a in final["check_attempts"]] == [
        (0, first["custom_id"], False), (1, retry["custom_id"], True)]
    r = collect(root, api)
    assert r.exit_code == 0, r.output
    assert "2 generated" in r.output and "checks: 2 passed, 0 failed, 0 not judged" in r.output
    edit = by_task(manifest(root))["beach@mug#0"]
    assert edit["status"] == "generated" and edit["inputs"][0]["sha256"] == final["sha256"]
    assert len(judgements(api)) == 1  # the final image's judgement is cached: not paid twice

    # the same recipe run directly: the same images, history and manifest (but for the batch price)
    plain = tmp_path / "direct"
    assert direct_run(plain, answers(False, True), 2).exit_code == 0
    assert stable(manifest(root)) == stable(manifest(plain))
    for name in ("mug/hero.png", "mug/beach.png"):
        assert (root / "out/shots" / name).read_bytes() == (plain / "out/shots" / name).read_bytes()
    assert history(root) == history(plain) and len(history(root)) == 1
    assert hero(root)["cost_usd"] == pytest.approx(hero(plain)["cost_usd"] / 2, abs=1e-6)
    assert hero(root)["checks"] == hero(plain)["checks"]  # judgements at the same (synchronous) price

    api.clear()
    r = cli(root, api, "run", "recipe.yaml")
    assert r.exit_code == 0 and "0 generated, 2 up to date" in r.output, r.output
    assert api.requests == []


def test_retries_spent_in_batches_end_failed_checks_as_a_direct_run_does(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "batched", retry=1)
    api.vary = True
    api.judge = answers(False)
    assert batch(root, api).exit_code == 0
    assert collect(root, api).exit_code == 1  # the first try fails; its retry is queued
    r = collect(root, api)
    assert r.exit_code == 1, r.output
    assert "1 image(s) landed" in r.output and "1 failed checks" in r.output
    assert "checks: 1 passed, 1 failed, 0 not judged" in r.output
    assert f"  hero@mug: {CUT_OFF}" in r.output.splitlines()
    assert len(lines(api)) == 2 and len(judgements(api)) == 2  # retry: 1 makes it twice, no more
    m = manifest(root)
    assert m["counts"]["failed_checks"] == 1 and by_task(m)["beach@mug#0"]["status"] == "skipped"
    assert [a["attempt"] for a in hero(root)["check_attempts"]] == [0, 1] and hero(root)["attempt"] == 1
    assert len(history(root)) == 1

    plain = tmp_path / "direct"
    assert direct_run(plain, answers(False), 1).exit_code == 1
    assert stable(manifest(root)) == stable(manifest(plain))

    # kept: never made or judged again (the next run --batch sends nothing), and it still fails
    api.clear()
    r = batch(root, api, "--json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)["recipes"][0]
    assert (doc["failed_checks"], doc["checks"]) == (1, {"passed": 1, "failed": 1, "warn": 0, "not_judged": 0})
    assert doc["failed"] == [{"task": "hero@mug", "error": f"{CUT_OFF}; kept from an earlier run (`dalle-pipe "
                              "approve` accepts it; --force or a changed recipe makes it again)"}]
    assert api.image_requests == [] and len(states(root)) == 2


def test_a_retry_whose_line_fails_ends_the_task_failed_checks_saying_why(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    api.vary = True
    api.judge = answers(False)
    ran: list[str] = []

    def second_fails(line: dict[str, Any]) -> tuple[str] | None:  # the retry: the same body, run second
        ran.append(line["custom_id"])
        return ("moderation",) if len(ran) > 1 else None
    api.batch_api.fail = second_fails
    assert batch(root, api).exit_code == 0
    assert collect(root, api).exit_code == 1
    first = (root / "out/shots/mug/hero.png").read_bytes()
    api.clear()
    r = collect(root, api)
    assert r.exit_code == 1, r.output
    assert "0 image(s) landed, 1 request(s) failed" in r.output
    why = (f"{CUT_OFF}; the retry did not land: HTTP 400 moderation_blocked: Your request was rejected by the "
           f"safety system.")
    assert f"  hero@mug: {why}" in r.output.splitlines()
    assert judgements(api) == [] and lines(api) == []  # nothing judged or queued again
    tried = hero(root)
    assert (tried["status"], tried["attempt"]) == ("failed_checks", 0)
    assert [a["attempt"] for a in tried["check_attempts"]] == [0]
    assert (root / "out/shots/mug/hero.png").read_bytes() == first and history(root) == []
    assert by_task(manifest(root))["beach@mug#0"]["status"] == "skipped"
    # collecting again reports the same and sends nothing; a later run --batch does not pay for it again
    api.clear()
    r = collect(root, api)
    assert r.exit_code == 1 and f"  hero@mug: {why}" in r.output.splitlines(), r.output
    r = batch(root, api)
    assert r.exit_code == 1 and "kept from an earlier run" in r.output, r.output
    assert api.image_requests == []


CHECKED_LATER = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items:
  - {id: mug}
steps:
  - id: hero
    generate: {prompt: "A ceramic mug on marble"}
CHECKS
"""
CHECKS = """\
    checks:
      - ask: "Is the {{ item.id }} whole, handle included?"
        model: gpt-5.1
    on_fail: {retry: 2}
"""


def plan_row(root: Path, api: FakeOpenAI, step: str = "hero") -> dict[str, Any]:
    r = cli(root, api, "plan", "recipe.yaml", "--json")
    assert r.exit_code == 0, r.output
    return next(s for s in json.loads(r.output)["recipes"][0]["steps"] if s["step"] == step)


def test_an_image_reused_by_run_batch_is_judged_there_through_the_limiter_once(tmp_path: Path,
                                                                               api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", recipe=CHECKED_LATER.replace("CHECKS\n", ""))
    assert cli(root, api, "run", "recipe.yaml").exit_code == 0
    (root / "recipe.yaml").write_text(CHECKED_LATER.replace("CHECKS\n", CHECKS))
    row = plan_row(root, api)  # the image is kept: only its judgement is to pay, once, at its own price
    ask = row["cost_usd"]
    assert ask > 0 and row["batch_cost_usd"] == ask and row["up_to_date"] == 0
    api.clear()
    r = batch(root, api, "--max-cost", f"{ask * 0.9:.6f}")
    assert r.exit_code == 2 and f"estimated cost ${ask:.2f} exceeds" in r.output, r.output
    assert api.requests == []
    api.script([("429", 20)])  # the judgement goes through the run's limiter and retry policy
    r = batch(root, api, "--max-cost", f"{ask * 1.1:.6f}", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)["recipes"][0]
    assert doc["checks"] == {"passed": 1, "failed": 0, "warn": 0, "not_judged": 0} and doc["requests"] == 0
    assert posts(api) == ["/v1/responses", "/v1/responses"] and states(root) == []
    judged = hero(root)["checks"][0]
    assert (judged["kind"], judged["passed"], hero(root)["status"]) == ("ask", True, "up_to_date")
    assert doc["spent_usd"] == pytest.approx(judged["cost_usd"]) and judged["cost_usd"] > 0
    api.clear()
    r = batch(root, api)
    assert r.exit_code == 0 and api.requests == [], r.output  # cached by fingerprint: never paid twice


def test_a_reused_image_that_fails_its_checks_is_kept_not_retried(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", recipe=CHECKED_LATER.replace("CHECKS\n", ""))
    assert cli(root, api, "run", "recipe.yaml").exit_code == 0
    (root / "recipe.yaml").write_text(CHECKED_LATER.replace("CHECKS\n", CHECKS))
    api.clear()
    api.judge = answers(False)
    r = batch(root, api)
    assert r.exit_code == 1, r.output
    assert "1 failed checks" in r.output and f"  hero@mug: {CUT_OFF}; kept from an earlier run" in r.output
    assert posts(api) == ["/v1/responses"] and states(root) == []  # no retry line: not made in this flow
    assert hero(root)["status"] == "failed_checks"


def test_the_batch_gate_counts_every_try_as_plan_shows_it(tmp_path: Path, api: FakeOpenAI) -> None:
    once = plan_row(project(tmp_path / "once", retry=0), api)
    root = project(tmp_path / "p", retry=2)
    worst = plan_row(root, api)
    assert worst["tries"] == 3
    judge = 2 * once["batch_cost_usd"] - once["cost_usd"]  # image / 2 + ask, against image + ask
    assert judge > 0  # a judgement is a synchronous call: never at the batch price
    assert worst["batch_cost_usd"] == pytest.approx(3 * once["batch_cost_usd"], abs=1e-5)
    r = cli(root, api, "plan", "recipe.yaml", "--json")
    total = json.loads(r.output)["recipes"][0]["total"]["batch_cost_usd"]
    assert total == pytest.approx(worst["batch_cost_usd"] + plan_row(root, api, "beach")["batch_cost_usd"])
    r = batch(root, api, "--max-cost", f"{total * 0.99:.6f}")
    assert r.exit_code == 2 and f"estimated cost ${total:.2f} exceeds" in r.output, r.output
    assert api.requests == [] and not (root / "out").exists()
    r = batch(root, api, "--max-cost", f"{total * 1.01:.6f}")
    assert r.exit_code == 0, r.output


def test_while_a_retry_is_in_a_batch_the_gate_still_counts_what_waits_for_it(tmp_path: Path,
                                                                            api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    edit = plan_row(root, api, "beach")["batch_cost_usd"]
    api.vary = True
    api.judge = answers(False)
    assert batch(root, api).exit_code == 0
    assert collect(root, api).exit_code == 1  # the retry is in a batch; the edit waits for it
    api.clear()
    r = batch(root, api, "--max-cost", f"{edit * 0.9:.6f}")
    assert r.exit_code == 2 and f"estimated cost ${edit:.2f} exceeds" in r.output, r.output
    r = batch(root, api, "--max-cost", f"{edit * 1.1:.6f}")
    assert r.exit_code == 0 and "1 in a batch" in r.output, r.output
    assert api.image_requests == []


def test_a_collect_that_only_pays_a_judgement_records_it(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", recipe=CHECKED_LATER.replace("CHECKS\n", CHECKS).replace(
        "items:", "throttle: {max_retries: 0}\nitems:"))
    assert batch(root, api).exit_code == 0
    api.script(["500"])  # the judgement at collect is not answered
    r = collect(root, api)
    assert r.exit_code == 1 and "checks: 0 passed, 0 failed, 1 not judged" in r.output, r.output
    assert hero(root)["status"] == "failed_checks" and hero(root)["checks"][0]["passed"] is None
    api.clear()
    r = collect(root, api)  # nothing lands, nothing is made: only the judgement is asked again, and paid
    assert r.exit_code == 0, r.output
    assert posts(api) == ["/v1/responses"] and "nothing written" not in r.output
    assert hero(root)["checks"][0]["passed"] is True and hero(root)["status"] == "up_to_date"
    api.clear()
    r = collect(root, api)
    assert r.exit_code == 0 and "nothing new: nothing written" in r.output, r.output
    assert api.image_requests == []


def test_plan_counts_a_local_steps_judgements_as_the_gate_does(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = CHECKED_LATER.replace("CHECKS\n", """\
  - id: cutout
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
""" + CHECKS.replace("    on_fail: {retry: 2}\n", ""))  # (a local step makes the same image again: no retry)
    root = project(tmp_path / "p", recipe=recipe)
    row = plan_row(root, api, "cutout")
    assert row["kind"] == "mask" and "tries" in row
    assert row["cost_usd"] > 0 and row["batch_cost_usd"] == row["cost_usd"]  # its judgement, never batched
    r = cli(root, api, "plan", "recipe.yaml", "--json")
    total = json.loads(r.output)["recipes"][0]["total"]
    r = cli(root, api, "run", "recipe.yaml", "--max-cost", f"{total['cost_usd'] * 0.99:.6f}")
    assert r.exit_code == 2 and f"estimated cost ${total['cost_usd']:.2f} exceeds" in r.output, r.output
    r = batch(root, api, "--max-cost", f"{total['batch_cost_usd'] * 0.99:.6f}")
    assert r.exit_code == 2 and f"estimated cost ${total['batch_cost_usd']:.2f} exceeds" in r.output, r.output
    assert api.requests == []


def test_an_image_approved_while_its_retry_is_in_a_batch_stays(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    api.vary = True
    api.judge = answers(False)
    assert batch(root, api).exit_code == 0
    assert collect(root, api).exit_code == 1  # the retry is queued
    api.batch_api.hold = True
    approved = (root / "out/shots/mug/hero.png").read_bytes()
    a = invoke(root, "approve", "mug/hero", "--recipe", "recipe.yaml")
    assert a.exit_code == 0, a.output
    r = collect(root, api)  # the approval overrides the checks: the edit follows, from the approved image
    assert r.exit_code == 1 and "submitted 1 request(s)" in r.output, r.output
    assert lines(api)[-1]["url"] == "/v1/images/edits"
    api.batch_api.release()
    api.clear()
    r = collect(root, api)
    assert r.exit_code == 0, r.output
    (retry,) = [d for d in states(root) if d["wave"] == 2]
    (fp,) = retry["requests"]
    kept = next((root / "out/shots/.dalle-pipe/history").rglob(f"hero.batch-{fp[:12]}.png"))
    assert (f"note: hero@mug was approved while a request for it was in a batch: the image that came back is "
            f"kept in out/shots/.dalle-pipe/history/{kept.parent.parent.name}/mug/{kept.name}, not placed") in r.output
    assert (root / "out/shots/mug/hero.png").read_bytes() == approved  # not replaced
    assert kept.read_bytes() != approved  # the paid retry is kept, not lost
    m = by_task(manifest(root))
    assert (m["hero@mug#0"]["approved"], m["hero@mug#0"]["status"], m["hero@mug#0"]["attempt"]) == (
        True, "up_to_date", 0)
    assert m["beach@mug#0"]["status"] == "generated"
    assert m["beach@mug#0"]["inputs"][0]["sha256"] == m["hero@mug#0"]["sha256"]
    assert judgements(api) == [] and lines(api) == []  # nothing judged, retried or made again
