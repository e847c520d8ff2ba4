"""Review findings on the engine redesign (issue 10): each test failed on main as of fdb56bb, and passes now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fakeapi import FakeOpenAI

KEY = "sk-test"


def cli(root: Path, api: FakeOpenAI | None, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DALLE_PIPE_NO_REPORT": "1"}
    env.pop("OPENAI_BASE_URL", None)
    if api is not None:
        env.update({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
    return subprocess.run([sys.executable, "-m", "dalle_pipe.cli", *args], cwd=root, env=env, text=True,
                          capture_output=True, timeout=timeout)


TWINS = """\
version: 1
name: twins
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {images_per_minute: 6000, concurrency: 1, max_retries: 0}
items: [{id: a, name: bad}, {id: b, name: mug}, {id: c, name: mug}]
steps:
  - id: shot
    generate: {prompt: "a {{ item.name }} on a table"}
"""


def test_fail_fast_with_a_twin_ends(tmp_path: Path, api: FakeOpenAI) -> None:
    """shot@a is refused (--fail-fast stops); shot@b, the owner of a request, is skipped without
    releasing its claim; shot@c, its twin, must not wait for ever."""
    (tmp_path / "recipe.yaml").write_text(TWINS)
    api.script([("moderation",)])
    r = cli(tmp_path, api, "run", "recipe.yaml", "--fail-fast", "--no-space-check", timeout=20)
    assert r.returncode == 1, r.stderr


TWINS_CHECKED = """\
version: 1
name: twins
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {images_per_minute: 6000, concurrency: 1, max_retries: 0}
items: [{id: a, name: mug}, {id: b, name: mug}]
steps:
  - id: shot
    generate: {prompt: "a {{ item.name }} on a table"}
    checks:
      - ask: "Is the mug whole?"
        model: gpt-5.1
    on_fail: {retry: 1}
"""


def test_a_twin_of_a_task_retried_after_failed_checks_records_the_file_it_copied(tmp_path: Path,
                                                                                api: FakeOpenAI) -> None:
    """shot@a fails its check and is made again (attempt 1); shot@b, its twin, copies shot@a's file
    (now attempt 1's image) but records attempt 0's sha256: the next run calls it changed by hand."""
    (tmp_path / "recipe.yaml").write_text(TWINS_CHECKED)
    api.vary = True
    verdicts = [False, True]
    api.judge = lambda q, imgs: (verdicts.pop(0) if len(verdicts) > 1 else verdicts[0], "ok")
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    m = json.loads((tmp_path / "out/twins/manifest.json").read_text())
    import hashlib
    for e in m["entries"]:
        data = (tmp_path / "out/twins" / e["path"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest(), (e["key"], e["status"], r.stdout)
    again = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    statuses = [e["status"] for e in json.loads((tmp_path / "out/twins/manifest.json").read_text())["entries"]]
    assert "modified" not in statuses, again.stdout


TWINS_PLAIN = TWINS.replace("name: bad", "name: mug").replace("{id: c, name: mug}", "{id: c, name: cup}")


def test_twins_whose_paid_bytes_were_saved_are_placed_without_a_traceback(tmp_path: Path, api: FakeOpenAI) -> None:
    """shot@a's image cannot be written (a file stands where its folder goes): its bytes stay in the
    store. On the rerun shot@a and its twin shot@b are both decided PLACE_SAVED; the first pops the
    saved record, the second reads it: KeyError in place_saved, a traceback and no manifest."""
    (tmp_path / "recipe.yaml").write_text(TWINS_PLAIN)
    out = tmp_path / "out" / "twins"
    out.mkdir(parents=True)
    (out / "a").write_text("x")
    first = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert first.returncode == 1 and "a rerun places them without paying" in first.stdout
    (out / "a").unlink()
    sent = len(api.image_requests)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert "Traceback" not in r.stderr, r.stderr[-600:]
    assert r.returncode == 0 and len(api.image_requests) == sent


def test_run_batch_max_cost_gates_on_what_plan_shows(tmp_path: Path, api: FakeOpenAI) -> None:
    """plan's batch column counts every wave; the gate of `run --batch` counts only the first wave
    (a WAIT is priced $0), and `batch collect` submits the edits with no gate at all."""
    from test_run import CATALOG, RECIPE
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "products.csv").write_text(CATALOG)
    plan = json.loads(cli(tmp_path, api, "plan", "--json", "recipe.yaml").stdout)
    batch_total = plan["total"]["batch_cost_usd"]
    hero = plan["recipes"][0]["steps"][0]["batch_cost_usd"]
    assert hero < batch_total
    limit = f"{(hero + batch_total) / 2:.4f}"  # above the first wave, below the plan's total
    r = cli(tmp_path, api, "run", "--batch", "--max-cost", limit, "recipe.yaml")
    assert r.returncode == 2, r.stdout


def test_plan_offline_counts_what_the_run_keeps_as_kept(tmp_path: Path, api: FakeOpenAI) -> None:
    """Images made by openai: `run --offline` keeps them all and makes nothing; `plan --offline` says
    every one is "to make" (plan_summary counts skipped and failed outcomes as to make)."""
    from test_run import CATALOG, RECIPE
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "products.csv").write_text(CATALOG)
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    plan = json.loads(cli(tmp_path, None, "plan", "--offline", "--json", "recipe.yaml").stdout)
    dry = cli(tmp_path, None, "run", "--offline", "--dry-run", "recipe.yaml")
    assert "0 generated" in dry.stdout and "to make" not in dry.stdout
    assert plan["total"]["to_make"] == 0, plan["total"]


def test_an_offline_run_does_not_make_the_next_paid_run_pay_again(tmp_path: Path, api: FakeOpenAI) -> None:
    """`run --offline` over openai images keeps hero (KEEP_FOREIGN -> skipped), so its dependants are
    skipped and their manifest entries lose their sha256: the next openai run pays for every edit again."""
    from test_run import CATALOG, RECIPE
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "products.csv").write_text(CATALOG)
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    cli(tmp_path, None, "run", "--offline", "recipe.yaml")
    sent = len(api.image_requests)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert len(api.image_requests) == sent, r.stdout


def test_a_batch_line_whose_bytes_are_no_image_becomes_a_failed_entry(tmp_path: Path, api: FakeOpenAI) -> None:
    """A batch output line with valid base64 that is no image: `_Drive._write` writes it at the
    output path before probing it, then the probe raises: collect exits 2, every later collect
    fails the same way, the other lines of the batch never land, and a direct run keeps the junk
    as "changed by hand"."""
    import base64
    (tmp_path / "recipe.yaml").write_text(TWINS_PLAIN)
    assert cli(tmp_path, api, "run", "--batch", "recipe.yaml").returncode == 0
    states = tmp_path / "out/twins/.dalle-pipe/batches"
    doc = json.loads(next(states.glob("*.json")).read_text())
    first = sorted(doc["requests"])[0]
    junk = base64.b64encode(b"not an image").decode()
    lines = [{"custom_id": first, "response": {"status_code": 200, "request_id": "req_1",
                                                "body": {"data": [{"b64_json": junk}]}}}]
    (states / f"{doc['token']}.output.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = cli(tmp_path, api, "batch", "collect", "recipe.yaml")
    assert r.returncode == 1, (r.stdout, r.stderr)
    m = json.loads((tmp_path / "out/twins/manifest.json").read_text())
    failed = [e for e in m["entries"] if e["status"] == "failed"]
    assert failed and failed[0]["error"]["message"] == "the server sent no readable image"


def test_running_out_of_quota_with_twins_ends(tmp_path: Path, api: FakeOpenAI) -> None:
    """No flag needed: insufficient_quota stops the run (Fatal); the owner of a later request is
    skipped before its claim is released, and its twin waits for ever."""
    (tmp_path / "recipe.yaml").write_text(TWINS)
    api.script([("quota",)])
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check", timeout=20)
    assert r.returncode == 1, r.stderr


def test_a_batch_created_by_the_last_try_is_not_abandoned_and_paid_again(tmp_path: Path, api: FakeOpenAI) -> None:
    """batches.create answers 502 after the batch was created (a gateway lost the answer); with
    `max_retries: 0` (or on the last try) the client gives up without looking the batch up; `_send` marks the state
    "abandoned" ("never created: nothing was paid"), and the next `run --batch` submits the same
    requests in a second, paid batch."""
    (tmp_path / "recipe.yaml").write_text(TWINS_PLAIN)
    api.batch_api.script([("ok",), ("502", "after")])
    first = cli(tmp_path, api, "run", "--batch", "recipe.yaml", timeout=120)
    assert len(api.batch_api.batches) == 1, first.stdout  # the last try created it
    cli(tmp_path, api, "run", "--batch", "recipe.yaml", timeout=120)
    assert len(api.batch_api.batches) == 1


def test_a_responses_edit_without_image_usage_costs_what_plan_estimated() -> None:
    """Issue 10.2: the Responses route falls back to the one estimate when its answer has no image
    usage. prices._image_cost falls back to estimate_request(kind="generate") without the edit's
    input images and prompt, so the recorded cost is below the estimate the gate passed."""
    from dalle_pipe.prices import cost_from_usage, estimate_request, load_prices

    table = load_prices(None)
    params = {"quality": "low", "size": "1024x1024"}
    prompt = "a tropical beach at sunset as background, " * 10
    estimated = estimate_request(table, "gpt-image-2", "edit", params, input_images=1, prompt=prompt)
    recorded = cost_from_usage(table, "gpt-image-2", {"usage": {"input_tokens": 0, "output_tokens": 0}}, params,
                               kind="edit", input_images=1, prompt=prompt)
    assert recorded == estimated


def test_an_offline_run_keeps_every_image_of_a_paid_request(tmp_path: Path, api: FakeOpenAI) -> None:
    """n: 2 made by openai; `run --offline` keeps them (KEEP_FOREIGN), but the decision carries
    only the first entry: the manifest loses index 1's sha256 and the next openai run pays again."""
    (tmp_path / "recipe.yaml").write_text(TWINS_PLAIN.replace("quality: low}", "quality: low, n: 2}"))
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    cli(tmp_path, None, "run", "--offline", "recipe.yaml")
    m = json.loads((tmp_path / "out/twins/manifest.json").read_text())
    assert all(e.get("sha256") for e in m["entries"]), [(e["key"], e["index"], e.get("sha256")) for e in m["entries"]]
