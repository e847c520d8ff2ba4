"""`--json` on validate and plan: one problem shape, {file, line, column, path, message, hint}, even when invalid."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("command", [["run"], ["run", "--check"], ["run", "--batch"], ["batch", "status"],
                                     ["batch", "submit"], ["batch", "collect"], ["clean", "--dry-run"]])
def test_every_json_command_lists_the_problems_of_an_invalid_recipe(project: Build, command: list[str]) -> None:
    project({"recipe.yaml": BROKEN})
    r = CliRunner().invoke(main, [*command, "--json", "recipe.yaml"])
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {"exit_code": 2, "error": None, "problems": PROBLEMS, "warnings": []}
    assert r.stderr == ""


def test_a_run_that_cannot_start_says_why_in_json(project: Build) -> None:
    root = project({"recipe.yaml": GOOD.replace("dall-e-3", "gpt-image-2")})
    r = CliRunner().invoke(main, ["run", "--json", "recipe.yaml"], env={"OPENAI_API_KEY": ""})
    assert r.exit_code == 2
    assert json.loads(r.stdout) == {
        "exit_code": 2, "problems": [], "warnings": [],
        "error": "OPENAI_API_KEY is not set: recipe 'shots' needs it to send requests (export OPENAI_API_KEY=..., "
                 "or run with --offline to preview without a key)"}
    assert not (root / "out").exists()


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


@pytest.mark.parametrize("command", ["report", "approve"])
def test_report_and_approve_offer_no_provider_options(command: str) -> None:
    text = CliRunner().invoke(main, [command, "--help"]).stdout
    assert "--var" in text and "--output-dir" in text
    for option in ("--offline", "--provider", "--base-url", "--allow-insecure-http"):
        assert option not in text
    r = CliRunner().invoke(main, [command, "--offline"])
    assert r.exit_code == 2 and "No such option '--offline'" in r.stderr


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_commands_that_send_nothing_do_not_offer_to_send_insecurely(command: str) -> None:
    text = CliRunner().invoke(main, [command, "--help"]).stdout
    assert "--offline" in text and "--provider" in text and "--base-url" in text  # they change what is checked
    assert "--allow-insecure-http" not in text
    r = CliRunner().invoke(main, [command, "--allow-insecure-http"])
    assert r.exit_code == 2 and "No such option '--allow-insecure-http'" in r.stderr
