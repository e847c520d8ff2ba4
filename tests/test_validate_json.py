"""`--json` on validate and plan: one problem shape, {file, line, column, path, message, hint}, even when invalid."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from dalle_pipe.cli import main

Build = Callable[[dict[str, str | bytes]], Path]

BROKEN = """\
version: 1
name: shots
modle: gpt-image-2
steps:
  - id: hero
    generate:
      prompt: a red mug
  - id: beach
    edit:
      image: {step: heor}
      prompt: a beach
"""

GOOD = """\
version: 1
name: shots
model: dall-e-3
steps:
  - id: hero
    generate:
      prompt: a red mug
"""

PROBLEMS = [
    {"file": "recipe.yaml", "line": 3, "column": 1, "path": "modle", "message": "unknown key 'modle'",
     "hint": "did you mean 'model'?"},
    {"file": "recipe.yaml", "line": 10, "column": 21, "path": "steps[1].edit.image.step",
     "message": "no earlier step 'heor'", "hint": "did you mean 'hero'?"},
]


def test_validate_json_lists_every_problem_of_an_invalid_recipe(project: Build) -> None:
    project({"recipe.yaml": BROKEN})
    r = CliRunner().invoke(main, ["validate", "--json", "recipe.yaml"])
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {"exit_code": 2, "error": None, "problems": PROBLEMS, "warnings": []}
    assert r.stderr == ""


def test_plan_json_on_an_invalid_recipe_has_the_same_shape(project: Build) -> None:
    project({"recipe.yaml": BROKEN})
    r = CliRunner().invoke(main, ["plan", "--json", "recipe.yaml"])
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {"exit_code": 2, "error": None, "problems": PROBLEMS, "warnings": []}


def test_a_usage_error_is_json_too(project: Build) -> None:
    project({"recipe.yaml": GOOD})
    r = CliRunner().invoke(main, ["validate", "--json", "--var", "nope", "recipe.yaml"])
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {"exit_code": 2, "error": "--var 'nope' is not K=V (e.g. --var brand=Acme)",
                                    "problems": [], "warnings": []}


def test_validate_json_on_a_valid_recipe_keeps_its_warnings(project: Build) -> None:
    project({"recipe.yaml": GOOD})
    r = CliRunner().invoke(main, ["validate", "--json", "--base-url", "http://127.0.0.1:9/v1", "recipe.yaml"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "exit_code": 0, "error": None, "problems": [],
        "warnings": [{"file": "recipe.yaml", "line": 3, "column": 8, "path": "model",
                      "message": "model 'dall-e-3' was retired on 2026-05-12",
                      "hint": "use a GPT image model such as gpt-image-2"}],
        "recipes": [{"name": "shots", "file": "recipe.yaml", "units": 1, "tasks": 1}],
    }
    plan = json.loads(CliRunner().invoke(main, ["plan", "--json", "--base-url", "http://127.0.0.1:9/v1",
                                                "recipe.yaml"]).stdout)
    assert (plan["exit_code"], plan["problems"], len(plan["warnings"])) == (0, [], 1)


def test_report_offers_no_provider_options() -> None:
    text = CliRunner().invoke(main, ["report", "--help"]).stdout
    assert "--var" in text and "--output-dir" in text
    for option in ("--offline", "--provider", "--base-url"):
        assert option not in text
    r = CliRunner().invoke(main, ["report", "--offline"])
    assert r.exit_code == 2 and "No such option '--offline'" in r.stderr
