"""`dalle-pipe init`: a starter project that validates and runs offline as it is, in an empty folder only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dalle_pipe.cli import main
from dalle_pipe.schema import schema_text

WRITTEN = ["pipeline.yaml", "recipes/example.yaml", "catalogs/example.csv", "schemas/recipe.schema.json",
           "schemas/pipeline.schema.json"]


def invoke(root: Path, *args: str) -> Any:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False,
                                  env={"GITHUB_ACTIONS": None, "OPENAI_API_KEY": None})
    finally:
        os.chdir(cwd)


def test_init_validate_run_offline(tmp_path: Path) -> None:
    r = invoke(tmp_path, "init")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        *(f"wrote {p}" for p in WRITTEN),
        "next: dalle-pipe validate && dalle-pipe run --offline   (a preview: no key, no network)"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(WRITTEN)

    r = invoke(tmp_path, "validate")
    assert r.exit_code == 0, r.output
    assert r.output == "ok: 1 recipe(s), 3 unit(s), 9 task(s)\n"

    r = invoke(tmp_path, "run", "--offline")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out" / "example"
    doc = json.loads((out / "manifest.json").read_text())
    assert len(doc["entries"]) == 9
    assert {e["status"] for e in doc["entries"]} == {"generated"}
    for e in doc["entries"]:
        assert (out / e["path"]).is_file()
    assert (out / "report.html").is_file()


def test_init_into_a_new_folder_then_run_by_path(tmp_path: Path) -> None:
    r = invoke(tmp_path, "init", "images")
    assert r.exit_code == 0, r.output
    assert r.output.endswith("next: cd images && dalle-pipe validate && dalle-pipe run --offline   "
                             "(a preview: no key, no network)\n")
    assert invoke(tmp_path, "validate", "images/pipeline.yaml").exit_code == 0


def test_recipe_points_at_the_schema_it_ships(tmp_path: Path) -> None:
    invoke(tmp_path, "init")
    first = (tmp_path / "recipes" / "example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/recipe.schema.json"
    target = (tmp_path / "recipes" / first.split("$schema=")[1]).resolve()
    assert target.read_text() == schema_text("recipe")
    assert (tmp_path / "pipeline.yaml").read_text().startswith(
        "# yaml-language-server: $schema=schemas/pipeline.schema.json\n")


def test_refuses_when_any_file_exists_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "catalogs").mkdir()
    (tmp_path / "catalogs" / "example.csv").write_text("mine\n")
    r = invoke(tmp_path, "init")
    assert r.exit_code == 2
    assert r.output == ("error: . already has catalogs/example.csv: init writes only into a folder without "
                        "them, and never overwrites (run it in an empty folder, e.g. dalle-pipe init my-images)\n")
    assert (tmp_path / "catalogs" / "example.csv").read_text() == "mine\n"
    assert not (tmp_path / "pipeline.yaml").exists()
    assert not (tmp_path / "recipes").exists()


def test_other_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hello\n")
    assert invoke(tmp_path, "init").exit_code == 0
    assert (tmp_path / "README.md").read_text() == "hello\n"


def test_refuses_a_file_as_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    r = invoke(tmp_path, "init", "f")
    assert r.exit_code == 2
