"""`dalle-pipe run` with the openai provider: the real SDK over HTTP against tests/fakeapi.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from PIL import Image
from test_run import RECIPE, by_task, invoke, make_project, manifest

KEY = "sk-test-SECRET-4f1c2a9b7e"




def _shots(out: Path) -> list[Path]:
    """The shot.png files under `out`, read while a run writes (os.walk skips folders that vanish meanwhile)."""
    return [Path(d) / "shot.png" for d, _, files in os.walk(out) if "shot.png" in files]


def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url}


def run(root: Path, api: FakeOpenAI, *args: str) -> object:
    return invoke(root, "run", "recipe.yaml", *args, env=env(api))


def test_a_run_sends_exactly_the_planned_requests_and_records_them(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    r = run(root, api)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    gens = [q for q in api.image_requests if q.path == "/v1/images/generations"]
    edits = [q for q in api.image_requests if q.path == "/v1/images/edits"]
    assert len(gens) == 2 and len(edits) == 2
    assert sorted(q.json["prompt"] for q in gens) == ["A ceramic mug on marble", "A cutting board on marble"]
    assert gens[0].json == {"model": "gpt-image-2", "prompt": gens[0].json["prompt"], "n": 1,
                            "size": "1024x1024", "quality": "low"}
    m = by_task(manifest(root))
    hero = m["hero@mug#0"]
    assert hero["provider"] == "openai" and hero["endpoint"] == "/v1/images/generations"
    assert hero["request_id"] and hero["usage"]["output_tokens"] > 0
    assert hero["cost_usd"] is not None and hero["cost_usd"] > 0
    assert hero["attempts"] == 1 and hero["possible_duplicate_charge"] is False
    # what was uploaded for the edit is exactly the files on disk
    edit = next(q for q in edits if q.fields["prompt"] == ["a tropical beach at sunset as background"]
                and q.images[0].data == (root / "out/shots/mug/hero.png").read_bytes())
    assert edit.mask is not None
    assert edit.mask.data == (root / "out/shots/mug/bg_mask.png").read_bytes()
    # a rerun sends nothing
    api.clear()
    r = run(root, api)
    assert "0 generated, 6 up to date" in r.output  # type: ignore[attr-defined]
    assert api.image_requests == []


def test_429_pauses_and_retries_and_a_reset_flags_a_possible_duplicate(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE.replace("scarf,wool scarf,no", ""))
    api.script([("429", 200), ("reset",)])
    r = run(root, api, "--items", "mug", "--only", "hero", "--concurrency", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    hero = by_task(manifest(root))["hero@mug#0"]
    assert hero["status"] == "generated"
    assert hero["attempts"] == 3
    assert hero["possible_duplicate_charge"] is True
    assert len(api.image_requests) == 3


def test_a_refusal_is_recorded_not_retried_and_its_dependents_are_skipped(tmp_path: Path,
                                                                         api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    api.script([("moderation",)])
    r = run(root, api, "--items", "mug")
    assert r.exit_code == 1  # type: ignore[attr-defined]
    m = by_task(manifest(root))
    assert m["hero@mug#0"]["status"] == "failed"
    assert m["hero@mug#0"]["error"]["code"] == "moderation_blocked"
    assert m["hero@mug#0"]["error"]["status"] == 400
    assert m["hero@mug#0"]["attempts"] == 1
    assert m["bg_mask@mug#0"]["status"] == "skipped"
    assert m["beach@mug#0"]["status"] == "skipped"
    assert len(api.image_requests) == 1
    assert "hero@mug:" in r.output  # type: ignore[attr-defined]
    api.clear()
    r = run(root, api, "--items", "mug")  # a rerun tries the refused one again
    assert r.exit_code == 0  # type: ignore[attr-defined]


def test_a_fatal_error_stops_new_requests(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    api.script([("401",)] * 2)
    r = run(root, api, "--concurrency", "1")
    assert r.exit_code == 1  # type: ignore[attr-defined]
    assert "stopped after a fatal error" in r.output  # type: ignore[attr-defined]
    assert len(api.image_requests) <= 2
    statuses = {e["status"] for e in manifest(root)["entries"]}
    assert statuses <= {"failed", "skipped"}


def test_the_key_is_written_nowhere(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    api.script([("moderation",), ("500",), ("401",)])
    r = run(root, api, "--json")
    seen = r.output  # type: ignore[attr-defined]
    for path in root.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    assert KEY not in seen
    assert KEY[-10:] not in seen


def test_legacy_dalle3_records_revised_prompts_from_url_responses(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = """\
version: 1
name: legacy
model: dall-e-3
items: [{id: car}, {id: office}]
steps:
  - id: shot
    generate:
      prompt: "a {{ item.id }} scene"
      size: 1792x1024
      quality: hd
      style: vivid
      response_format: url
"""
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "retired" in r.output
    m = by_task(manifest(root, "legacy"))
    for key in ("car", "office"):
        e = m[f"shot@{key}#0"]
        assert e["revised_prompt"] and e["revised_prompt"] != e["prompt"]
        assert e["params"]["response_format"] == "url"
        with Image.open(root / "out" / "legacy" / e["path"]) as img:
            assert img.size == (1792, 1024)
    assert any(q.path.startswith("/files/") for q in api.requests)


def many_recipe(n: int) -> str:
    """n one-step units at concurrency 2: for tests that stop a run part-way."""
    items = "\n".join(f"  - {{id: p{i}}}" for i in range(n))
    return f"""\
version: 1
name: many
model: gpt-image-2
params: {{size: 1024x1024, quality: low}}
throttle: {{concurrency: 2}}
items:
{items}
steps:
  - id: shot
    generate: {{prompt: "product {{{{ item.id }}}}"}}
"""


def test_kill_9_then_resume_never_pays_twice_for_a_landed_image(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", many_recipe(12))
    with FakeOpenAI(latency_s=0.3) as api:
        e = {**os.environ, **env(api)}
        proc = subprocess.Popen([sys.executable, "-m", "dalle_pipe.cli", "run", "recipe.yaml", "--quiet"],
                                cwd=root, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = root / "out" / "many"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_shots(out)) < 4:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed = {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _shots(out)}
        assert 4 <= len(landed) < 12
        assert not (out / "manifest.json").exists()  # killed before the end: only the journal knows
        first_round = len(api.image_requests)
        r = invoke(root, "run", "recipe.yaml", env=env(api))
        assert r.exit_code == 0, r.output
        resent = [q.json["prompt"].split()[-1] for q in api.image_requests[first_round:]]
        assert not set(resent) & set(landed)
        m = by_task(manifest(root, "many"))
        assert len(m) == 12
        for key, sha in landed.items():
            assert m[f"shot@{key}#0"]["sha256"] == sha
            assert m[f"shot@{key}#0"]["status"] == "up_to_date"
        in_flight = [k for k in resent if m[f"shot@{k}#0"]["possible_duplicate_charge"]]
        assert len(in_flight) <= 2  # at most the requests that were in flight at the kill
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == 0


def test_sigterm_lets_in_flight_requests_land_writes_the_manifest_and_exits_130(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", many_recipe(20))
    with FakeOpenAI(latency_s=0.4) as api:
        proc = subprocess.Popen([sys.executable, "-m", "dalle_pipe.cli", "run", "recipe.yaml", "--quiet"],
                                cwd=root, env={**os.environ, **env(api)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        out = root / "out" / "many"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_shots(out)) < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        sent = len(api.image_requests)
    m = json.loads((out / "manifest.json").read_text())
    generated = [e for e in m["entries"] if e["status"] == "generated"]
    assert len(generated) == sent  # every request that was sent landed and is recorded
    assert 2 <= sent < 20
    assert all((out / e["path"]).is_file() for e in generated)


def test_max_cost_refuses_a_run_whose_estimate_exceeds_it(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    r = run(root, api, "--max-cost", "0.001")
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert "error: estimated cost $" in r.output and "exceeds --max-cost $0.00" in r.output  # type: ignore[attr-defined]
    assert api.image_requests == []
    assert not (root / "out").exists()
    r = run(root, api, "--max-cost", "100")
    assert r.exit_code == 0  # type: ignore[attr-defined]


def test_max_cost_stops_new_requests_once_actual_spend_reaches_it(tmp_path: Path, api: FakeOpenAI) -> None:
    # a price table whose estimate is tiny but whose token prices make each image cost $2.72
    table = json.loads((Path(__file__).parent.parent / "dalle_pipe" / "data" / "prices.json").read_text())
    model = table["models"]["gpt-image-2"]
    model["per_image"] = {q: {s: 0.001 for s in sizes} for q, sizes in model["per_image"].items()}
    model["tokens"] = {"text_input": 0.0, "image_input": 0.0, "image_output": 10_000.0, "text_output": 0.0}
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(table))
    items = "\n".join(f"  - {{id: p{i}}}" for i in range(4))
    recipe = f"""\
version: 1
name: capped
model: gpt-image-2
params: {{size: 1024x1024, quality: low}}
items:
{items}
steps:
  - id: shot
    generate: {{prompt: "product {{{{ item.id }}}}"}}
"""
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "run", "recipe.yaml", "--prices", str(prices), "--max-cost", "5", "--concurrency", "1",
               env=env(api))
    assert r.exit_code == 0, r.output
    assert len(api.image_requests) == 2  # $2.72 spent, then $5.44 >= $5: no third request
    m = manifest(root, "capped")
    assert [e["status"] for e in m["entries"]] == ["generated", "generated", "skipped", "skipped"]
    assert m["entries"][2]["error"]["message"] == "cost limit $5.00 reached"
    assert sum(e["cost_usd"] for e in m["entries"][:2]) == pytest.approx(5.44)
    assert "$5.44 spent" in r.output


def test_a_second_signal_aborts_at_once_and_a_rerun_resumes(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", many_recipe(6))
    with FakeOpenAI(latency_s=5.0) as api:
        proc = subprocess.Popen([sys.executable, "-m", "dalle_pipe.cli", "run", "recipe.yaml", "--quiet"],
                                cwd=root, env={**os.environ, **env(api)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not api.image_requests:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert time.monotonic() - started < 3  # did not wait for the 5 s requests in flight
        assert "aborted: a rerun resumes from the journal" in err
    with FakeOpenAI() as api2:
        r = invoke(root, "run", "recipe.yaml", env=env(api2))
        assert r.exit_code == 0, r.output
        m = by_task(manifest(root, "many"))
        flagged = [k for k, e in m.items() if e["possible_duplicate_charge"]]
        assert 1 <= len(flagged) <= 2  # the requests that were in flight at the abort
