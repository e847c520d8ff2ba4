"""Second review of the engine redesign (issue 10): each test failed on main as of 36990ff, and passes now."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fakeapi import FakeOpenAI
from PIL import Image
from test_review_findings import KEY, cli

from dalle_pipe import store


def entries(root: Path, name: str) -> dict[str, dict[str, Any]]:
    m = json.loads((root / "out" / name / "manifest.json").read_text())
    return {f"{e['step']}@{e['key']}#{e['index']}": e for e in m["entries"]}


def touch_pixel(path: Path) -> None:
    """A hand edit: one pixel changed."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.putpixel((0, 0), (1, 2, 3))
    rgb.save(path)


TWINS = """\
version: 1
name: twins
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {images_per_minute: 6000, concurrency: 1, max_retries: 0}
items: [{id: b, name: mug}, {id: c, name: mug}]
steps:
  - id: shot
    generate: {prompt: "a {{ item.name }} on a table"}
"""


def test_a_hand_edit_of_one_image_of_an_n2_task_is_kept_not_paid_over(tmp_path: Path, api: FakeOpenAI) -> None:
    """decide._keep_existing returns None (make it) at the first image of a task that is unchanged,
    so with n: 2 a hand edit of shot-1.png alone is never `modified`: a rerun of an unchanged recipe
    pays for the request again and moves the hand-edited file to history (n: 1 keeps it)."""
    (tmp_path / "recipe.yaml").write_text(TWINS.replace("quality: low}", "quality: low, n: 2}")
                                          .replace("[{id: b, name: mug}, {id: c, name: mug}]", "[{id: a, name: mug}]"))
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    edited = tmp_path / "out/twins/a/shot-1.png"
    touch_pixel(edited)
    mine = edited.read_bytes()
    sent = len(api.image_requests)
    plan = json.loads(cli(tmp_path, api, "plan", "--json", "recipe.yaml").stdout)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert len(api.image_requests) == sent, r.stdout
    assert edited.read_bytes() == mine
    assert entries(tmp_path, "twins")["shot@a#1"]["status"] == "modified"
    assert plan["total"]["to_make"] == 0, plan["total"]


def _crash_after_write(root: Path, maker: str, absent: str | None) -> None:
    """As if killed after `maker`'s image was written (its bytes in the paid-bytes store, its intent
    journaled) but before its `done` line, its twin `absent` not copied yet, and no manifest."""
    out = root / "out" / "twins"
    e = entries(root, "twins")[f"shot@{maker}#0"]
    data = (out / e["path"]).read_bytes()
    (out / "manifest.json").unlink()
    (out / ".dalle-pipe" / "manifest.prev.json").unlink(missing_ok=True)
    if absent is not None:
        (out / absent / "shot.png").unlink()
    (out / ".dalle-pipe" / "journal.jsonl").write_text(
        json.dumps({"t": "intent", "task": f"shot@{maker}", "fp": e["fingerprint"], "attempt": 1,
                    "at": "2026-12-02T00:00:00Z"}) + "\n")
    store.ObjectStore(out).put(data, task=f"shot@{maker}", fingerprint=e["fingerprint"], index=0,
                               meta={"request_id": e["request_id"], "usage": e["usage"], "attempts": 1,
                                     "revised_prompt": e["revised_prompt"], "format": "png",
                                     "images_in_answer": 1})


def test_a_twin_of_an_adopted_image_is_not_paid_again(tmp_path: Path, api: FakeOpenAI) -> None:
    """Killed after shot@b's image landed, before its `done` line; its twin shot@c not copied yet.
    The rerun adopts shot@b (make.settle -> place.adopt, which also discards the saved bytes), but
    shot@c is then decided MAKE (the reuse index is the load-time one; no claim for an adoption):
    the same request is paid a second time."""
    (tmp_path / "recipe.yaml").write_text(TWINS)
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    _crash_after_write(tmp_path, "b", "c")
    sent = len(api.image_requests)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert r.returncode == 0, r.stdout + r.stderr[-800:]
    assert len(api.image_requests) == sent, r.stdout


def test_a_twin_placing_saved_bytes_that_an_adoption_took_does_not_crash(tmp_path: Path,
                                                                         api: FakeOpenAI) -> None:
    """The same crash, but the request was made by the task of the later unit (shot@c; with
    concurrency > 1 either may claim it). The fast pass decides shot@b PLACE_SAVED (carried to a
    worker), then adopts shot@c, whose adopt() pops the saved record: the worker's place_saved reads
    state.saved[(fp, 0)] -> KeyError, a traceback, no manifest."""
    (tmp_path / "recipe.yaml").write_text(TWINS)
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    _crash_after_write(tmp_path, "c", "b")
    sent = len(api.image_requests)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert "Traceback" not in r.stderr, r.stderr[-800:]
    assert r.returncode == 0 and len(api.image_requests) == sent, r.stdout


RESPONSES_N2 = """\
version: 1
name: twins
provider: {name: openai, api: responses, model: gpt-5.1}
model: gpt-image-2
params: {size: 1024x1024, quality: low, n: 2}
throttle: {images_per_minute: 6000, concurrency: 1, max_retries: 0}
items: [{id: a, name: mug}]
steps:
  - id: shot
    generate: {prompt: "a {{ item.name }} on a table"}
    output: "{{ key }}-{{ index }}/shot.png"
"""


def test_saved_bytes_of_one_image_of_a_split_request_are_placed_not_paid_again(tmp_path: Path,
                                                                                api: FakeOpenAI) -> None:
    """Responses route, n: 2 (one call per image). Image 0 lands; image 1's answer is stored but
    cannot be placed (a file stands where its folder goes). decide() places saved bytes only when
    every image of the task is saved (PLACE_SAVED needs all n), and make_api's per-call loop looks
    for landed images (reuse) but never in state.saved: the rerun pays for image 1 again, then
    run._leftovers discards the first paid copy."""
    (tmp_path / "recipe.yaml").write_text(RESPONSES_N2)
    out = tmp_path / "out" / "twins"
    out.mkdir(parents=True)
    (out / "a-1").write_text("x")
    first = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert "a rerun places them without paying" in first.stdout, first.stdout
    assert len(api.image_requests) == 2
    (out / "a-1").unlink()
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert r.returncode == 0, r.stdout + r.stderr[-600:]
    assert len(api.image_requests) == 2, r.stdout


PAIR = TWINS.replace("{id: c, name: mug}", "{id: c, name: cup}")


def test_batch_collect_that_cannot_place_an_image_fails_it_without_a_traceback(tmp_path: Path,
                                                                             api: FakeOpenAI) -> None:
    """A direct run that cannot place a paid image (disk full, read-only, a file where its folder
    goes) fails that entry, keeps the bytes and says a rerun places them. `batch collect` lets the
    OSError out of land._write (atomic_write_bytes, no handling up to flow._Drive.run): a traceback,
    no manifest, and the other lines of the batch do not land either."""
    import errno

    from click.testing import CliRunner

    from dalle_pipe.cli import main

    (tmp_path / "recipe.yaml").write_text(PAIR)
    assert cli(tmp_path, api, "run", "--batch", "recipe.yaml").returncode == 0
    out = (tmp_path / "out" / "twins").as_posix() + "/"

    def full(op: str, path: Path) -> None:
        if path.as_posix().startswith(out + "b/") and path.suffix == ".png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with store.inject_faults(full):
            r = CliRunner().invoke(main, ["batch", "collect", "recipe.yaml"], env=env)
    finally:
        os.chdir(cwd)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, r.output
    assert entries(tmp_path, "twins")["shot@c#0"]["status"] == "generated"
    # the batch stays open: the next collect, with space, places the image without a new request
    again = cli(tmp_path, api, "batch", "collect", "recipe.yaml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert entries(tmp_path, "twins")["shot@b#0"]["status"] == "generated"
    assert len(api.batch_api.batches) == 1


def test_an_adopted_image_keeps_what_its_saved_answer_recorded(tmp_path: Path, api: FakeOpenAI) -> None:
    """Killed after the image was written, before its `done` line: its answer's bytes and record
    (revised_prompt, request_id, usage) are in the paid-bytes store. decide() prefers ADOPT over
    PLACE_SAVED, and place.adopt() writes revised_prompt/request_id/usage/cost_usd as null, then
    discards the saved record: the revised prompt (which later prompts may read as
    steps.<id>.revised_prompt) and the cost of a paid image are lost for good."""
    (tmp_path / "recipe.yaml").write_text(TWINS.replace("gpt-image-2", "dall-e-3")
                                          .replace("quality: low", "quality: standard")
                                          .replace(", {id: c, name: mug}", ""))
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    before = entries(tmp_path, "twins")["shot@b#0"]
    assert before["revised_prompt"] and before["cost_usd"]
    _crash_after_write(tmp_path, "b", None)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    after = entries(tmp_path, "twins")["shot@b#0"]
    assert after.get("recovered") is True, r.stdout
    assert (after["revised_prompt"], after["request_id"], after["cost_usd"]) == (
        before["revised_prompt"], before["request_id"], before["cost_usd"])


TWIN_EDITS = TWINS.replace("{id: c, name: mug}]", "{id: c, name: mug}, {id: d, name: mug}]") + """\
  - id: beach
    edit: {image: {step: shot}, prompt: "on a beach"}
"""


def test_previews_count_the_edits_of_twins_once_as_the_run_makes_them(tmp_path: Path, api: FakeOpenAI) -> None:
    """shot@b/c/d are twins (one request, copied). Their edits then have one input sha256 and one
    prompt, so the run makes beach once and copies it twice. The previews decide each edit WAIT
    (its input is pending) and only MAKE decisions enter state.planned (make.settle), so `plan`,
    `--dry-run` and the --max-cost gate count three edits: a run that spends one is refused."""
    (tmp_path / "recipe.yaml").write_text(TWIN_EDITS)
    plan = json.loads(cli(tmp_path, api, "plan", "--json", "recipe.yaml").stdout)
    steps = {s["step"]: s for s in plan["recipes"][0]["steps"]}
    # one generation and one edit: the twins' requests (and the edits that follow them) cost $0
    assert steps["beach"]["cost_usd"] > steps["shot"]["cost_usd"] > 0
    limit = f"{(steps['shot']['cost_usd'] + steps['beach']['cost_usd']) * 1.05:.6f}"
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check", "--max-cost", limit)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [q.path for q in api.image_requests] == ["/v1/images/generations", "/v1/images/edits"]


def test_a_failed_or_skipped_task_keeps_the_entry_of_the_image_still_at_its_path(tmp_path: Path,
                                                                                 api: FakeOpenAI) -> None:
    """Run 1 makes shot@b and shot@c. The prompt changes; run 2 is refused for shot@b and stops
    (--fail-fast), so shot@c is skipped. Both images are still at their paths, but record._entries
    writes a failed/skipped entry without sha256 in place of each (the run covered the task), so the
    earlier entries, and their fingerprints, are gone. The prompt is put back: run 3 finds nothing
    to reuse and pays for both images again (each file at the path goes to history first).
    The same happens after Ctrl-C or a reached --max-cost."""
    (tmp_path / "recipe.yaml").write_text(PAIR)
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check").returncode == 0
    (tmp_path / "recipe.yaml").write_text(PAIR.replace("on a table", "on a shelf"))
    api.script([("moderation",)])
    assert cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check", "--fail-fast").returncode == 1
    (tmp_path / "recipe.yaml").write_text(PAIR)
    sent = len(api.image_requests)
    r = cli(tmp_path, api, "run", "recipe.yaml", "--no-space-check")
    assert len(api.image_requests) == sent, r.stdout


def test_the_responses_route_estimate_counts_the_mainline_model(tmp_path: Path, api: FakeOpenAI) -> None:
    """SPEC: an estimate may be high, never low. A Responses-route image's recorded cost is the
    image part (its estimate when the answer has no image usage) plus the mainline model's tokens;
    engine/estimate.task_cost (and so plan and the --max-cost gate) prices the image part only."""
    from dalle_pipe.prices import cost_from_usage, load_prices

    recipe = RESPONSES_N2.replace(", n: 2", "").replace('    output: "{{ key }}-{{ index }}/shot.png"\n', "")
    (tmp_path / "recipe.yaml").write_text(recipe)
    plan = json.loads(cli(tmp_path, api, "plan", "--json", "recipe.yaml").stdout)
    estimated = plan["total"]["cost_usd"]
    recorded = cost_from_usage(load_prices(None), "gpt-image-2", {"usage": {"input_tokens": 60, "output_tokens": 20}},
                               {"size": "1024x1024", "quality": "low"}, mainline_model="gpt-5.1",
                               prompt="a mug on a table")
    assert recorded is not None and recorded <= estimated, (recorded, estimated)


def test_an_edit_with_malformed_usage_costs_what_plan_estimated() -> None:
    """The first review's fix (the fallback is the same request's estimate) covers usage without
    image usage; prices._image_cost's other fallback, for malformed token counts (prices.py:384-385),
    still prices an edit as a generation without its input images and prompt: below the estimate."""
    from dalle_pipe.prices import cost_from_usage, estimate_request, load_prices

    table = load_prices(None)
    params = {"quality": "low", "size": "1024x1024"}
    prompt = "a tropical beach at sunset as background, " * 10
    estimated = estimate_request(table, "gpt-image-2", "edit", params, input_images=1, prompt=prompt)
    recorded = cost_from_usage(table, "gpt-image-2", {"input_tokens": -1, "output_tokens": 272}, params,
                               kind="edit", input_images=1, prompt=prompt)
    assert recorded == estimated
