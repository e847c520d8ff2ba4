"""Paid bytes are durable first: every 2xx answer is stored before it is decoded or placed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from fakeapi import FakeOpenAI
from test_run import RECIPE, by_task, invoke, make_project, manifest

ONE = RECIPE.replace("scarf,wool scarf,no", "")
JSON = {"content-type": "application/json"}
EMPTY = ("raw", 200, json.dumps({"created": 1, "data": []}), JSON)
NOT_AN_IMAGE = ("raw", 200, json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(b"<html>").decode()}]}),
                JSON)
BAD_BASE64 = ("raw", 200, json.dumps({"created": 1, "data": [{"b64_json": "@@not base64@@"}]}), JSON)


def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"}


def objects(root: Path) -> list[Path]:
    folder = root / "out/shots/.dalle-pipe/objects"
    return sorted(p for p in folder.glob("??/*") if p.is_file())


def records(root: Path) -> list[dict[str, object]]:
    folder = root / "out/shots/.dalle-pipe/objects/records"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def hero(root: Path, api: FakeOpenAI) -> object:
    return invoke(root, "run", "recipe.yaml", "--items", "mug", "--only", "hero", env=env(api))


def test_a_200_without_a_readable_image_is_asked_once_more_then_a_failed_entry(tmp_path: Path,
                                                                               api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    api.script([EMPTY, NOT_AN_IMAGE])
    r = hero(root, api)
    assert r.exit_code == 1, r.output  # type: ignore[attr-defined]
    assert len(api.image_requests) == 2
    entry = by_task(manifest(root))["hero@mug#0"]
    assert entry["status"] == "failed"
    assert entry["error"]["message"] == "the server sent no readable image"
    assert entry["error"]["type"] == "no_image"
    assert entry["possible_duplicate_charge"] is True and entry["attempts"] == 2
    assert not (root / "out/shots/mug/hero.png").exists()


def test_bad_base64_then_an_image_is_generated_and_flagged(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    api.script([BAD_BASE64])
    r = hero(root, api)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert len(api.image_requests) == 2
    entry = by_task(manifest(root))["hero@mug#0"]
    assert entry["status"] == "generated"
    assert entry["possible_duplicate_charge"] is True and entry["attempts"] == 2
    assert objects(root) == []  # placed and recorded: the stored bytes are gone


def test_an_image_that_cannot_be_placed_is_kept_and_placed_by_the_rerun_without_paying(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    (root / "out/shots").mkdir(parents=True)
    (root / "out/shots/mug").write_text("a file where the unit's folder goes")
    r = hero(root, api)
    assert r.exit_code == 1, r.output  # type: ignore[attr-defined]
    assert len(api.image_requests) == 1
    entry = by_task(manifest(root))["hero@mug#0"]
    assert entry["status"] == "failed"
    assert entry["error"]["message"].startswith("the image could not be written: ")
    assert "a rerun places them without paying" in entry["error"]["message"]
    stored = objects(root)
    assert len(stored) == 1
    (record,) = records(root)
    assert record["task"] == "hero@mug" and record["index"] == 0 and record["sha256"] == stored[0].name
    assert record["meta"]["request_id"]  # what the answer said, kept for the entry
    paid = stored[0].read_bytes()
    # the plan says it will be placed, at no cost
    plan = invoke(root, "plan", "recipe.yaml", "--json", env=env(api))
    assert plan.exit_code == 0, plan.output
    (root / "out/shots/mug").unlink()
    api.clear()
    r = hero(root, api)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert api.image_requests == []
    placed = by_task(manifest(root))["hero@mug#0"]
    assert placed["status"] == "generated" and placed["recovered"] is True
    assert (root / "out/shots/mug/hero.png").read_bytes() == paid
    assert placed["sha256"] == stored[0].name
    assert placed["request_id"] == record["meta"]["request_id"]  # type: ignore[index]
    assert placed["cost_usd"] is not None and placed["cost_usd"] > 0
    assert objects(root) == [] and records(root) == []


def test_damaged_saved_bytes_are_not_placed_and_the_image_is_made_again(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    (root / "out/shots").mkdir(parents=True)
    (root / "out/shots/mug").write_text("a file where the unit's folder goes")
    assert hero(root, api).exit_code == 1  # type: ignore[attr-defined]
    (blob,) = objects(root)
    blob.write_bytes(b"\0" * blob.stat().st_size)  # same size, other bytes: it no longer matches its sha256
    (root / "out/shots/mug").unlink()
    api.clear()
    r = hero(root, api)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert len(api.image_requests) == 1
    assert by_task(manifest(root))["hero@mug#0"]["status"] == "generated"
    assert records(root) == []  # the new answer replaced the damaged one, and was placed


def test_a_run_removes_the_temp_files_a_crash_left_in_the_store_and_keeps_saved_objects(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    folder = root / "out/shots/.dalle-pipe/objects/ab"
    folder.mkdir(parents=True)
    torn = folder / ".abcdef.dp-tmp"
    torn.write_bytes(b"half an image")
    kept = folder / "not-a-temp-file"
    kept.write_bytes(b"x")
    r = hero(root, api)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert not torn.exists()
    assert kept.read_bytes() == b"x"
