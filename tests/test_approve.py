"""`dalle-pipe approve`: approved images are never regenerated, only reported stale; --force still can."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_pipe import store
from dalle_pipe.approve import matches
from dalle_pipe.cli import main

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items:
  - {id: mug, what: "a ceramic mug"}
  - {id: board, what: "a wooden cutting board"}
steps:
  - id: hero
    generate: {prompt: "{{ item.what }} on marble"}
  - id: small
    mask: {size_of: {step: hero}, shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]}
"""

KEYLESS = """\
version: 1
name: campaign
model: gpt-image-2
params: {size: 1024x1024, quality: low}
steps:
  - id: wide
    generate: {prompt: "a city at night"}
  - id: headshot
    generate: {prompt: "a headshot"}
"""


def invoke(root: Path, *args: str) -> Any:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False,
                                  env={"DALLE_PIPE_NO_REPORT": None, "GITHUB_ACTIONS": None})
    finally:
        os.chdir(cwd)


def entries(root: Path, name: str = "shots") -> dict[str, dict[str, Any]]:
    doc = json.loads((root / "out" / name / "manifest.json").read_text())
    return {f"{e['step']}@{e['key']}" if e["key"] else e["step"]: e for e in doc["entries"]}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    result = invoke(tmp_path, "run", "recipe.yaml", "--offline", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_approved_image_is_kept_and_reported_stale_until_force(project: Path) -> None:
    before = entries(project)
    result = invoke(project, "approve", "mug/hero", "--recipe", "recipe.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout == "shots: approved hero@mug (mug/hero.png)\n"
    assert result.stderr == ("warning: hero@mug: this is an offline placeholder; `run --check` against a real "
                             "provider fails on it until it is made again\n")
    assert entries(project)["hero@mug"]["approved"] is True
    assert entries(project)["hero@board"]["approved"] is False

    (project / "recipe.yaml").write_text(RECIPE.replace("on marble", "on slate"))
    result = invoke(project, "run", "recipe.yaml", "--offline")
    assert result.exit_code == 0, result.output
    after = entries(project)
    assert after["hero@mug"]["sha256"] == before["hero@mug"]["sha256"]  # not regenerated
    assert after["hero@mug"]["stale"] is True
    assert after["hero@mug"]["approved"] is True
    assert after["hero@mug"]["prompt"] == "a ceramic mug on marble"
    assert after["hero@board"]["sha256"] != before["hero@board"]["sha256"]  # not approved: made again
    assert after["hero@board"]["status"] == "generated"
    assert "stale" not in after["hero@board"]

    result = invoke(project, "run", "recipe.yaml", "--offline", "--force", "--only", "hero")
    assert result.exit_code == 0, result.output
    forced = entries(project)["hero@mug"]
    assert forced["sha256"] != before["hero@mug"]["sha256"]
    assert forced["status"] == "generated"
    assert forced["approved"] is False
    assert forced["prompt"] == "a ceramic mug on slate"


def test_key_selects_every_step_of_the_unit(project: Path) -> None:
    result = invoke(project, "approve", "board", "--recipe", "recipe.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["shots: approved hero@board (board/hero.png)",
                                          "shots: approved small@board (board/small.png)"]
    approved = {k for k, e in entries(project).items() if e["approved"]}
    assert approved == {"hero@board", "small@board"}
    again = invoke(project, "approve", "board/hero", "--recipe", "recipe.yaml")
    assert again.output == "shots: already approved hero@board (board/hero.png)\n"


def test_unknown_selector_exits_2_with_did_you_mean_and_writes_nothing(project: Path) -> None:
    manifest = project / "out" / "shots" / "manifest.json"
    before = manifest.read_bytes()
    result = invoke(project, "approve", "mug", "borad", "--recipe", "recipe.yaml")
    assert result.exit_code == 2
    assert result.output == "error: borad: no image matches (did you mean 'board'?)\n"
    assert manifest.read_bytes() == before
    result = invoke(project, "approve", "mug/heor", "--recipe", "recipe.yaml")
    assert result.exit_code == 2
    assert "did you mean 'mug/hero'?" in result.output


def test_revoke(project: Path) -> None:
    invoke(project, "approve", "mug", "--recipe", "recipe.yaml")
    result = invoke(project, "approve", "--revoke", "mug/small", "--recipe", "recipe.yaml")
    assert result.exit_code == 0
    assert result.output == "shots: unapproved small@mug (mug/small.png)\n"
    assert {k for k, e in entries(project).items() if e["approved"]} == {"hero@mug"}


def test_approve_keeps_the_previous_manifest_and_rebuilds_the_report(project: Path) -> None:
    out = project / "out" / "shots"
    invoke(project, "run", "recipe.yaml", "--offline", "--quiet")
    prev = (out / ".dalle-pipe" / "manifest.prev.json").read_bytes()
    invoke(project, "approve", "mug/hero", "--recipe", "recipe.yaml")
    assert (out / ".dalle-pipe" / "manifest.prev.json").read_bytes() == prev
    assert '<span class="b approved">approved</span>' in (out / "report.html").read_text()


def test_keyless_recipe_selects_by_step(tmp_path: Path) -> None:
    (tmp_path / "campaign.yaml").write_text(KEYLESS)
    assert invoke(tmp_path, "run", "campaign.yaml", "--offline", "--quiet").exit_code == 0
    result = invoke(tmp_path, "approve", "wide", "--recipe", "campaign.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout == "campaign: approved wide (wide.png)\n"
    assert entries(tmp_path, "campaign")["headshot"]["approved"] is False


def test_nothing_to_approve_without_an_image(project: Path) -> None:
    out = project / "out" / "shots"
    doc = store.load_manifest(out)
    assert doc is not None
    for e in doc["entries"]:
        if e["key"] == "mug":
            e.update(status="failed", sha256=None)
    store.atomic_write_json(out / "manifest.json", doc)
    result = invoke(project, "approve", "mug", "--recipe", "recipe.yaml")
    assert result.exit_code == 2
    assert result.output.startswith("error: mug: nothing to approve (no image: failed)")


def test_no_manifest_yet(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    result = invoke(tmp_path, "approve", "mug", "--recipe", "recipe.yaml")
    assert result.exit_code == 2
    assert "run the recipe first" in result.output


def test_refuses_while_a_run_holds_the_lock(project: Path) -> None:
    with store.RunLock(project / "out" / "shots"):
        result = invoke(project, "approve", "mug", "--recipe", "recipe.yaml")
    assert result.exit_code == 2
    assert "another dalle-pipe run is using" in result.output
    assert not any(e["approved"] for e in entries(project).values())


def test_approving_a_hand_edit_adopts_it(project: Path) -> None:
    path = project / "out" / "shots" / "mug" / "hero.png"
    with Image.open(path) as im:
        im.convert("RGB").rotate(90).save(path)
    edited = store.sha256_file(path)
    assert invoke(project, "run", "recipe.yaml", "--offline", "--quiet").exit_code == 0
    assert entries(project)["hero@mug"]["status"] == "modified"
    assert invoke(project, "approve", "mug/hero", "--recipe", "recipe.yaml").exit_code == 0
    assert entries(project)["hero@mug"]["sha256"] == edited
    assert invoke(project, "run", "recipe.yaml", "--offline", "--quiet").exit_code == 0
    (project / "recipe.yaml").write_text(RECIPE.replace("on marble", "on slate"))
    assert invoke(project, "run", "recipe.yaml", "--offline", "--quiet").exit_code == 0
    assert store.sha256_file(path) == edited
    assert entries(project)["hero@mug"]["stale"] is True


@pytest.mark.parametrize(("selector", "key", "step", "expected"), [
    ("mug", "mug", "hero", True),
    ("mug", "mugs", "hero", False),
    ("mug/hero", "mug", "hero", True),
    ("mug/hero", "mug", "small", False),
    ("mug", "mug/beach", "hero", True),  # a row key selects all its matrix combinations
    ("mug/beach", "mug/beach", "hero", True),
    ("mug/hero", "mug/beach", "hero", True),
    ("mug/beach/hero", "mug/beach", "hero", True),
    ("mug/beach/hero", "mug/studio", "hero", False),
    ("wide", "", "wide", True),
    ("wide", "", "headshot", False),
])
def test_matches(selector: str, key: str, step: str, expected: bool) -> None:
    assert matches(selector, key, step) is expected


def test_approve_in_shard_manifests(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    for shard in ("1/2", "2/2"):
        assert invoke(tmp_path, "run", "recipe.yaml", "--offline", "--shard", shard, "--quiet").exit_code == 0
    out = tmp_path / "out" / "shots"
    assert not (out / "manifest.json").exists()
    result = invoke(tmp_path, "approve", "mug/hero", "board/hero", "--recipe", "recipe.yaml")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["shots: approved hero@board (board/hero.png)",
                                                  "shots: approved hero@mug (mug/hero.png)"]
    approved = sorted(f"{e['step']}@{e['key']}" for p in out.glob("manifest.shard-*.json")
                      for e in json.loads(p.read_text())["entries"] if e["approved"])
    assert approved == ["hero@board", "hero@mug"]
