"""`clean` deletes only what the tool made, and never a paid image unless told to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from servers import cli, env, files_under, manifest, project

SHOTS = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items: [ITEMS]
steps:
  - id: hero
    generate: {prompt: "A {{ item.id }} on marble"}
  - id: bg
    mask: {size: 64x64, shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]}
"""
REUSE = """\
version: 1
name: reuse
model: gpt-image-2
params: {size: 1024x1024, quality: low}
steps:
  - id: beach
    edit: {image: out/shots/b/hero.png, prompt: "the same on a beach"}
"""


@pytest.fixture
def made(tmp_path: Path, api: FakeOpenAI) -> Path:
    """A project whose shots made a, b and c (paid heroes, free masks), then kept only a;
    another recipe of the pipeline reads b's hero as its input."""
    root = project(tmp_path / "p", SHOTS.replace("ITEMS", "{id: a}, {id: b}, {id: c}"))
    r = cli(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    (root / "recipe.yaml").write_text(SHOTS.replace("ITEMS", "{id: a}"))
    (root / "reuse.yaml").write_text(REUSE)
    (root / "pipeline.yaml").write_text("version: 1\nrecipes: [recipe.yaml, reuse.yaml]\n")
    (root / "out/shots/notes.png").write_bytes(b"the user's own file")
    return root


def cost_of(root: Path, key: str) -> float:
    (entry,) = [e for e in manifest(root)["entries"] if e["key"] == key and e["step"] == "hero"]
    return float(entry["cost_usd"])


def test_dry_run_lists_every_file_with_its_reason_and_changes_nothing(made: Path, api: FakeOpenAI) -> None:
    before = files_under(made / "out")
    api.clear()
    r = cli(made, "clean", "--dry-run", "recipe.yaml")
    assert r.exit_code == 0, r.output
    cost = cost_of(made, "c")
    assert r.output.splitlines() == [
        "shots: would remove b/bg.png: no task makes it any more; free (local)",
        "shots: would keep b/hero.png: no task makes it any more; an input a recipe reads: not touched",
        "shots: would remove c/bg.png: no task makes it any more; free (local)",
        f"shots: would move to history c/hero.png: no task makes it any more; paid (${cost:.4f})",
        "shots: would move 1 paid image(s) to history; would remove 2 free file(s); would keep 1 file(s) no task "
        "makes",
    ]
    assert files_under(made / "out") == before and api.requests == []


def test_clean_moves_paid_orphans_to_history_removes_free_ones_and_spares_inputs(made: Path) -> None:
    hero_b = (made / "out/shots/b/hero.png").read_bytes()
    hero_c = (made / "out/shots/c/hero.png").read_bytes()
    r = cli(made, "clean", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert r.output == ("shots: moved 1 paid image(s) to history; removed 2 free file(s); kept 1 file(s) no task "
                        "makes (see --dry-run)\n")
    files = [f for f in files_under(made / "out/shots")
             if not f.startswith((".dalle-pipe/", ".thumbs/")) or "/history/" in f]
    history = [f for f in files if f.startswith(".dalle-pipe/history/")]
    assert [h.split("/", 3)[3] for h in history] == ["c/hero.png"]
    assert (made / "out/shots" / history[0]).read_bytes() == hero_c
    assert (made / "out/shots/b/hero.png").read_bytes() == hero_b  # another recipe's input: untouched
    assert sorted(set(files) - set(history)) == ["a/bg.png", "a/hero.png", "b/hero.png", "manifest.json",
                                                 "notes.png", "report.html"]


def test_purge_empties_history_and_says_what_the_deleted_images_cost(made: Path) -> None:
    cost = cost_of(made, "c")
    assert cli(made, "clean", "recipe.yaml").exit_code == 0
    r = cli(made, "clean", "--purge", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert r.output == (f"shots: moved 0 paid image(s) to history; removed 0 free file(s); kept 1 file(s) no task "
                        f"makes (see --dry-run); deleted 1 paid image(s) from history (${cost:.4f}) and 0 free "
                        f"file(s)\n")
    assert not (made / "out/shots/.dalle-pipe/history").exists()
    assert (made / "out/shots/b/hero.png").is_file() and (made / "out/shots/notes.png").is_file()


def test_clean_offers_var_but_no_provider_options(made: Path) -> None:
    for option in ("--offline", "--provider=openai", "--base-url=https://example.com/v1"):
        r = cli(made, "clean", option, "recipe.yaml")
        assert r.exit_code == 2 and "No such option" in r.output, option
    r = cli(made, "clean", "--var", "tag=x", "--dry-run", "recipe.yaml")
    assert r.exit_code == 0, r.output


def test_clean_json_lists_what_it_would_do_then_what_it_did(made: Path) -> None:
    cost = cost_of(made, "c")
    r = cli(made, "clean", "--dry-run", "--json", "recipe.yaml")
    assert r.exit_code == 0, r.output
    gone = "no task makes it any more"
    files = [
        {"path": "b/bg.png", "action": "remove", "reason": f"{gone}; free (local)", "paid": False, "cost_usd": None},
        {"path": "b/hero.png", "action": "keep", "reason": f"{gone}; an input a recipe reads: not touched",
         "paid": True, "cost_usd": cost_of(made, "b")},
        {"path": "c/bg.png", "action": "remove", "reason": f"{gone}; free (local)", "paid": False, "cost_usd": None},
        {"path": "c/hero.png", "action": "history", "reason": f"{gone}; paid (${cost:.4f})", "paid": True,
         "cost_usd": cost},
    ]
    out_dir = str(made / "out/shots")
    assert json.loads(r.output) == {"exit_code": 0, "dry_run": True,
                                    "recipes": [{"recipe": "shots", "output_dir": out_dir, "files": files}]}
    assert (made / "out/shots/c/hero.png").is_file()
    r = cli(made, "clean", "--json", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"exit_code": 0, "dry_run": False,
                                    "recipes": [{"recipe": "shots", "output_dir": out_dir, "files": files}]}
    assert not (made / "out/shots/c/hero.png").exists()


def test_clean_json_on_an_invalid_recipe_lists_its_problems(made: Path) -> None:
    (made / "recipe.yaml").write_text(SHOTS.replace("ITEMS", "{id: a}").replace("model:", "modle:"))
    r = cli(made, "clean", "--dry-run", "--json", "recipe.yaml")
    assert r.exit_code == 2
    assert json.loads(r.output) == {"exit_code": 2, "error": None, "warnings": [], "problems": [
        {"file": "recipe.yaml", "line": 3, "column": 1, "path": "modle", "message": "unknown key 'modle'",
         "hint": "did you mean 'model'?"}]}
