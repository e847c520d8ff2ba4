"""After a run, every image that was kept or skipped rather than made says why, on the terminal and in --json."""

from __future__ import annotations

import json
from pathlib import Path

from fakeapi import FakeOpenAI
from PIL import Image
from test_run import invoke, make_project
from test_run_openai import env

MANY = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items: [{id: a}, {id: b}, {id: c}, {id: d}, {id: e}, {id: f}, {id: g}]
steps:
  - id: hero
    generate: {prompt: "A {{ item.id }} on marble"}
  - id: beach
    edit: {image: {step: hero}, prompt: "the same on a beach"}
"""


def test_offline_keeps_a_paid_image_and_says_why(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    assert invoke(root, "run", "recipe.yaml", "--items", "mug", "--only", "hero", env=env(api)).exit_code == 0
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    # the later steps build on the kept image (offline placeholders of their own)
    assert r.output.splitlines() == [
        "shots: 5 generated, 0 up to date, 0 failed, 1 skipped, 0 modified",
        "  hero@mug: kept: made by openai; offline never overwrites it (mug/hero.png)",
    ]
    doc = json.loads(invoke(root, "run", "--offline", "--json", "recipe.yaml").output)
    assert doc["recipes"][0]["kept"] == [
        {"task": "hero@mug", "paths": ["mug/hero.png"], "reason": "made by openai; offline never overwrites it"}]


def test_a_hand_modified_image_says_it_was_kept(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert invoke(root, "run", "--offline", "recipe.yaml").exit_code == 0
    Image.new("RGB", (1024, 1024), "red").save(root / "out/shots/mug/hero.png")
    r = invoke(root, "run", "--offline", "--check", "recipe.yaml")
    assert "  hero@mug: kept: changed by hand; --force replaces it (mug/hero.png)\n" in r.output
    r = invoke(root, "run", "--offline", "--quiet", "recipe.yaml")
    assert r.output == ""


def test_many_tasks_with_one_reason_share_one_line(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", MANY)
    assert invoke(root, "run", "recipe.yaml", "--only", "hero", env=env(api)).exit_code == 0
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "shots: 7 generated, 0 up to date, 0 failed, 7 skipped, 0 modified",
        "  kept 7 tasks: made by openai; offline never overwrites it (hero@a, hero@b, hero@c and 4 more)",
    ]
