"""The Batch API: `run --batch`, `batch status`, `batch collect` — the real SDK over HTTP against FakeOpenAI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI
from test_run import by_task, invoke, make_project, manifest

from dalle_pipe import store
from dalle_pipe.engine import batch as batch_mod
from dalle_pipe.engine.batch import flow as batch_flow

KEY = "sk-test-BATCH-5e2d7c1a9f"

CATALOG = ("sku,name\nmug,ceramic mug\nboard,cutting board\nwallet,leather wallet\n"
           "lamp,brass lamp\nvase,glass vase\n")

# generate -> mask -> edit (wave 1 batch, then local + direct), n=2, a dall-e-3 step with
# revised prompts, and a generate whose prompt reads that revised prompt (wave 2).
RECIPE = """\
version: 1
name: cat
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: alt
    generate: {prompt: "A {{ item.name }} from above", n: 2, quality: medium}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "a tropical beach at sunset as background"
  - id: wide
    generate: {model: dall-e-3, prompt: "A cinematic wide shot of a {{ item.name }}", size: 1792x1024,
               quality: hd, style: vivid}
  - id: poster
    generate: {prompt: "Poster: {{ steps.wide.revised_prompt }}"}
"""

SIMPLE = """\
version: 1
name: cat
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "a tropical beach at sunset as background"
"""

VOLATILE = {"created_at", "duration_s", "request_id", "cost_usd"}


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"}


def cli(root: Path, api: FakeOpenAI, *args: str) -> Any:
    return invoke(root, *args, env=env(api))


def subprocess_cli(root: Path, api: FakeOpenAI, *args: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **env(api)}
    return subprocess.run([sys.executable, "-m", "dalle_pipe.cli", *args], cwd=root, env=e,
                          capture_output=True, text=True, timeout=120)


def collect_all(root: Path, api: FakeOpenAI, *args: str) -> Any:
    """`batch collect` until no batch is left running (each collect may submit the next wave)."""
    for _ in range(5):
        r = cli(root, api, "batch", "collect", "recipe.yaml", *args)
        if "still running" not in r.output:
            return r
    raise AssertionError(r.output)


def direct(api: FakeOpenAI) -> list[Any]:
    return [q for q in api.requests if q.path.startswith("/v1/images/")]


def states(root: Path, name: str = "cat") -> list[dict[str, Any]]:
    return batch_mod.load_states(root / "out" / name)


def images(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".dalle-pipe" not in p.parts and p.suffix in (".png", ".jpg", ".webp")}


def stable(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in e.items() if f not in VOLATILE} for k, e in by_task(m).items()}


# ------------------------------------------------------------------------------------------ judged


def test_submitted_then_collected_in_another_process_equals_a_direct_run(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "batched", RECIPE, CATALOG)
    shutil.copytree(root, tmp_path / "direct")

    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert direct(api) == []  # nothing up front: every generation is in the batch, edits wait for it
    (doc,) = states(root)
    assert doc["status"] == "validating" and doc["endpoint"] == "/v1/images/generations"
    assert len(doc["requests"]) == 15  # hero, alt, wide for 5 rows; poster waits for wide's revised prompt
    assert "submitted 15 request(s) in 1 batch(es)" in r.output
    assert "waiting for a batch" in r.output
    out = root / "out" / "cat"
    assert images(out) == {}

    # wave 1 lands in another process: masks, then wave 2 (the edits, in a batch of their own)
    p = subprocess_cli(root, api, "batch", "collect", "recipe.yaml")
    assert p.returncode == 1, p.stdout + p.stderr  # wave 2 is still running
    assert "collected 1 batch(es): 20 image(s) landed, 0 request(s) failed" in p.stdout
    assert "1 batch(es) still running" in p.stdout
    assert "5 waiting for a batch" in p.stdout  # poster's prompt reads steps.*: it waits for the edits
    assert direct(api) == []  # the edits go through a batch too
    (wave2,) = [d for d in states(root) if d["wave"] == 2]
    assert wave2["endpoint"] == "/v1/images/edits" and len(wave2["requests"]) == 5

    p = subprocess_cli(root, api, "batch", "collect", "recipe.yaml")  # the edits land; wave 3: poster
    assert p.returncode == 1, p.stdout + p.stderr
    (wave3,) = [d for d in states(root) if d["wave"] == 3]
    assert wave3["endpoint"] == "/v1/images/generations" and len(wave3["requests"]) == 5
    p = subprocess_cli(root, api, "batch", "collect", "recipe.yaml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert direct(api) == []
    p = subprocess_cli(root, api, "batch", "status", "recipe.yaml")
    assert p.returncode == 0 and p.stdout.count(": collected,") == 3, p.stdout

    # the same catalog, run directly in a fresh folder
    other = tmp_path / "direct"
    r = cli(other, api, "run", "recipe.yaml")
    assert r.exit_code == 0, r.output

    assert images(out) == images(other / "out" / "cat")  # byte-identical files, same paths
    batched, plain = manifest(root, "cat"), manifest(other, "cat")
    assert stable(batched) == stable(plain)
    assert list(by_task(batched)) == list(by_task(plain))  # in the same order, too
    assert len(batched["entries"]) == 5 * 7
    assert {e["status"] for e in batched["entries"]} == {"generated"}
    for key, e in by_task(batched).items():
        d = by_task(plain)[key]
        assert e["created_at"] and (e["request_id"] or e["step"] == "bg_mask")
        if e["step"] in ("hero", "alt", "poster", "beach"):  # batched: half the price of the same usage
            assert e["cost_usd"] == pytest.approx(d["cost_usd"] / 2, abs=1e-6)
            assert e["endpoint"] == ("/v1/images/edits" if e["step"] == "beach" else "/v1/images/generations")
        if e["step"] == "wide":  # dall-e-3 is not a GPT image model, but its generations are batched
            assert e["cost_usd"] == pytest.approx(d["cost_usd"] / 2, abs=1e-6) if d["cost_usd"] else True
    wide = by_task(batched)["wide@mug#0"]
    assert wide["revised_prompt"] and wide["revised_prompt"] != wide["prompt"]
    assert by_task(batched)["poster@mug#0"]["prompt"] == f"Poster: {wide['revised_prompt']}"

    # a run after collecting sends nothing: the batched images are up to date
    api.clear()
    r = cli(root, api, "run", "recipe.yaml")
    assert r.exit_code == 0 and "0 generated, 30 up to date" in r.output, r.output  # 30 tasks, 35 images
    assert api.requests == []


# ------------------------------------------------------------------------------------------ format


def test_the_jsonl_is_exactly_what_a_direct_call_sends_split_by_count(tmp_path: Path, api: FakeOpenAI,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    monkeypatch.setattr(batch_flow, "MAX_REQUESTS", 2)
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    docs = states(root)
    assert [len(d["requests"]) for d in docs] == [2, 2, 1]
    uploads = [q for q in api.requests if q.method == "POST" and q.path == "/v1/files"]
    assert len(uploads) == 3
    assert all(q.fields["purpose"] == ["batch"] for q in uploads)
    creates = [q.json for q in api.requests if q.method == "POST" and q.path == "/v1/batches"]
    assert [c["endpoint"] for c in creates] == ["/v1/images/generations"] * 3
    assert all(c["completion_window"] == "24h" for c in creates)
    lines = [json.loads(x) for q in uploads for x in q.files[0].data.decode().splitlines()]
    assert [ln["body"]["prompt"] for ln in lines] == [f"A {n} on marble" for n in
                                                     ("ceramic mug", "cutting board", "leather wallet",
                                                      "brass lamp", "glass vase")]
    # each body is exactly the JSON a direct call sends
    other = make_project(tmp_path / "direct", SIMPLE, CATALOG)
    assert cli(other, api, "run", "recipe.yaml", "--only", "hero").exit_code == 0
    sent = {q.json["prompt"]: q.json for q in direct(api) if q.path == "/v1/images/generations"}
    assert len(sent) == 5
    for ln in lines:
        assert ln["method"] == "POST" and ln["url"] == "/v1/images/generations"
        assert ln["body"] == sent[ln["body"]["prompt"]]
        assert ln["body"]["model"] == "gpt-image-2" and ln["body"]["quality"] == "low"
        req = next(d["requests"][ln["custom_id"]] for d in docs if ln["custom_id"] in d["requests"])
        assert ln["custom_id"] == req["fingerprint"]
        assert req["paths"] == [f"{req['key']}/hero.png"] and req["step"] == "hero"
        assert req["params"] == {"n": 1, "size": "1024x1024", "quality": "low"} and req["inputs"] == []
    # what collect needs is all in the state file: batch and file ids, and each request's mapping
    for d in docs:
        assert d["batch_id"].startswith("batch_") and d["input_file_id"].startswith("file-")
        on_disk = json.loads((root / "out/cat/.dalle-pipe/batches" / f"{d['token']}.json").read_text())
        assert on_disk["requests"] == d["requests"]
    assert subprocess_cli(root, api, "batch", "collect", "recipe.yaml").returncode == 1  # edits: wave 2
    p = subprocess_cli(root, api, "batch", "collect", "recipe.yaml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert manifest(root, "cat")["counts"]["generated"] == 15


def test_files_are_split_at_the_byte_limit_too(tmp_path: Path, api: FakeOpenAI,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    monkeypatch.setattr(batch_flow, "MAX_BYTES", 500)  # a line is about 200 bytes: two to a file
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    uploads = [q.files[0].data for q in api.requests if q.method == "POST" and q.path == "/v1/files"]
    assert [len(u.splitlines()) for u in uploads] == [2, 2, 1]
    assert all(len(u) <= 500 for u in uploads)


def test_up_to_date_work_and_work_in_a_batch_are_never_sent_again(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    r = cli(root, api, "run", "recipe.yaml", "--items", "mug", "--items", "board")
    assert r.exit_code == 0, r.output
    api.clear()
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    (doc,) = states(root)
    assert sorted(req["key"] for req in doc["requests"].values()) == ["lamp", "vase", "wallet"]
    assert direct(api) == []
    m = by_task(manifest(root, "cat"))
    assert m["beach@mug#0"]["status"] == "up_to_date" and "hero@lamp#0" not in m
    # again while the batch is in flight: nothing new is submitted
    api.clear()
    r = cli(root, api, "batch", "submit", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert "3 in a batch" in r.output
    assert len(states(root)) == 1 and [q for q in api.requests if q.path == "/v1/files"] == []
    # a direct run warns that it would pay again
    r = cli(root, api, "run", "--dry-run", "recipe.yaml")
    assert "in batches not collected yet" not in r.output  # a dry run sends nothing: no warning
    r = collect_all(root, api)
    assert r.exit_code == 0, r.output
    # the new masks are copies of the first run's (a size_of mask depends on the size only)
    assert manifest(root, "cat")["counts"] == {"generated": 6, "up_to_date": 9, "failed": 0, "skipped": 0,
                                               "modified": 0}


def test_two_tasks_with_one_fingerprint_are_one_request(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE.replace("{{ item.name }}", "{{ item.name.split(' ')[1] }}"),
                        "sku,name\nmug,red mug\nmug2,blue mug\n")
    r = cli(root, api, "run", "--batch", "recipe.yaml", "--only", "hero")
    assert r.exit_code == 0, r.output
    (doc,) = states(root)
    assert len(doc["requests"]) == 1
    r = collect_all(root, api)
    assert r.exit_code == 0, r.output
    m = by_task(manifest(root, "cat"))
    assert m["hero@mug#0"]["sha256"] == m["hero@mug2#0"]["sha256"]
    assert (root / "out/cat/mug2/hero.png").read_bytes() == (root / "out/cat/mug/hero.png").read_bytes()
    assert "bg_mask@mug#0" not in m  # --only hero at submit: collect keeps to it


# ------------------------------------------------------------------------------------------ lifecycle


def test_status_while_running_then_collect_twice_changes_nothing(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    api.batch_api.hold = True
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    r = cli(root, api, "batch", "status", "recipe.yaml")
    assert r.exit_code == 1, r.output
    assert "in_progress, 0/5 done, 0 failed" in r.output
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 1 and "1 batch(es) still running" in r.output, r.output
    assert images(root / "out" / "cat") == {}
    api.batch_api.release()
    r = cli(root, api, "batch", "status", "recipe.yaml", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["batches"][0]["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    r = collect_all(root, api)
    assert r.exit_code == 0, r.output
    out = root / "out" / "cat"
    before = images(out)
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "history" not in p.parts}
    assert len(before) == 15
    api.clear()
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 0 and "nothing new: nothing written" in r.output, r.output
    assert [q for q in api.requests if q.method == "POST"] == []
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "history" not in p.parts}
    assert after == snapshot  # not one byte: images, manifest, state, journal


def test_failed_lines_are_failed_entries_and_the_next_run_batch_sends_them_again(tmp_path: Path,
                                                                                api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    api.batch_api.fail = lambda line: ("moderation",) if "mug" in line["body"]["prompt"] else (
        ("expired",) if "lamp" in line["body"]["prompt"] else None)
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 1, r.output
    assert "3 image(s) landed, 2 request(s) failed" in r.output
    assert "hero@mug:" in r.output
    m = by_task(manifest(root, "cat"))
    mug = m["hero@mug#0"]
    assert mug["status"] == "failed" and mug["error"]["code"] == "moderation_blocked"
    assert mug["error"]["type"] == "refused" and mug["error"]["status"] == 400
    assert mug["prompt"] == "A ceramic mug on marble"
    assert m["hero@lamp#0"]["error"]["type"] == "expired"
    assert m["bg_mask@mug#0"]["status"] == "skipped" and m["beach@mug#0"]["status"] == "skipped"
    assert "beach@board#0" not in m  # its edit is in the next wave's batch
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 1 and "3 image(s) landed, 0 request(s) failed" in r.output, r.output
    assert by_task(manifest(root, "cat"))["beach@board#0"]["status"] == "generated"
    # collecting again reports the same and sends nothing
    api.clear()
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 1 and "hero@mug:" in r.output, r.output
    assert [q for q in api.requests if q.method == "POST"] == []
    # the next run --batch sends exactly the failed ones again
    api.batch_api.fail = None
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    newest = states(root)[-1]
    assert sorted(req["key"] for req in newest["requests"].values()) == ["lamp", "mug"]
    r = collect_all(root, api)
    assert r.exit_code == 0, r.output
    assert manifest(root, "cat")["counts"]["failed"] == 0
    assert {e["status"] for e in manifest(root, "cat")["entries"]} <= {"generated", "up_to_date"}


def test_a_submission_that_crashed_before_learning_its_batch_id_is_found_not_sent_twice(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    (doc,) = states(root)
    path = Path(doc.pop("_path"))
    crashed = {**doc, "status": "submitting", "batch_id": None}
    path.write_text(json.dumps(crashed))
    # a crash before the upload: no batch exists
    lost = {**doc, "token": "lost", "status": "submitting", "batch_id": None, "input_file_id": None,
            "requests": {"x" * 64: {**next(iter(doc["requests"].values())), "fingerprint": "x" * 64}}}
    (path.parent / "lost.json").write_text(json.dumps(lost))
    api.clear()
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert [q for q in api.requests if q.path in ("/v1/files", "/v1/batches") and q.method == "POST"] == []
    found = {d["token"]: d for d in states(root)}
    assert found[doc["token"]]["batch_id"] == doc["batch_id"]
    assert found["lost"]["status"] == "abandoned"
    r = collect_all(root, api)
    assert r.exit_code == 0, r.output
    assert manifest(root, "cat")["counts"]["generated"] == 15


# ------------------------------------------------------------------------------------------ edges


def test_batch_needs_the_openai_provider_and_refuses_check(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    r = cli(root, api, "run", "--batch", "--offline", "recipe.yaml")
    assert r.exit_code == 2 and "Batch API needs openai" in r.output
    r = cli(root, api, "run", "--batch", "--check", "recipe.yaml")
    assert r.exit_code == 2
    r = invoke(root, "run", "--batch", "recipe.yaml", env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": api.base_url})
    assert r.exit_code == 2 and "OPENAI_API_KEY" in r.output
    assert not (root / "out").exists()


def test_max_cost_uses_the_batch_price_of_the_whole_flow(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    r = cli(root, api, "plan", "recipe.yaml", "--json")
    doc = json.loads(r.output)["recipes"][0]
    rows = {s["step"]: s for s in doc["steps"]}
    sync, batch = rows["hero"]["cost_usd"], rows["hero"]["batch_cost_usd"]
    assert batch == pytest.approx(sync / 2, abs=2e-6)  # each request is rounded to 6 places
    assert rows["beach"]["batch_cost_usd"] == pytest.approx(rows["beach"]["cost_usd"] / 2, abs=2e-6)
    total = doc["total"]["batch_cost_usd"]
    assert total == pytest.approx(batch + rows["beach"]["batch_cost_usd"], abs=1e-6)
    # the edits are a later wave, sent by `collect` (which has no --max-cost): the gate counts them now
    r = cli(root, api, "run", "--batch", "recipe.yaml", "--max-cost", f"{batch * 1.01:.6f}")
    assert r.exit_code == 2, r.output
    assert f"estimated cost ${total:.2f} exceeds --max-cost ${batch * 1.01:.2f}" in r.output
    assert not (root / "out").exists() and api.requests == []
    r = cli(root, api, "run", "--batch", "recipe.yaml", "--max-cost", f"{total * 0.99:.6f}")
    assert r.exit_code == 2 and "exceeds --max-cost" in r.output
    r = cli(root, api, "run", "--batch", "recipe.yaml", "--max-cost", f"{total * 1.01:.6f}")
    assert r.exit_code == 0, r.output
    # again while wave 1 is in a batch: only the edits are still to pay for
    r = cli(root, api, "run", "--batch", "recipe.yaml", "--max-cost", f"{rows['beach']['batch_cost_usd'] * 1.01:.6f}")
    assert r.exit_code == 0 and "5 in a batch" in r.output, r.output


def test_state_files_hold_no_secret_and_status_reads_only(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    r = cli(root, api, "run", "--batch", "recipe.yaml", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)["recipes"][0]
    assert summary["requests"] == 5 and summary["submitted"][0]["status"] == "validating"
    folder = store.batches_dir(root / "out" / "cat")
    before = {p: p.read_bytes() for p in folder.iterdir()}
    r = cli(root, api, "batch", "status", "recipe.yaml")
    assert r.exit_code == 0, r.output  # completed at the API (not collected yet): nothing is running
    assert {p: p.read_bytes() for p in folder.iterdir()} == before
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    seen = r.output
    for path in root.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    assert KEY not in seen and KEY[-10:] not in seen
