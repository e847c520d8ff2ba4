"""GitHub Actions output: annotations at the recipe line at fault, and the job summary (simulated env)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakeapi import FakeOpenAI
from PIL import Image

from dalle_pipe import ci_output
from dalle_pipe.ci_output import command
from dalle_pipe.cli import main

KEY = "sk-test-SECRET-ci-0123456789"

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items:
  - {id: mug, what: "a ceramic mug"}
  - {id: board, what: "a wooden board"}
steps:
  - id: hero
    generate: {prompt: "{{ item.what }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
"""
HERO_LINE = RECIPE.splitlines().index("  - id: hero") + 1
MASK_LINE = RECIPE.splitlines().index("  - id: bg_mask") + 1




@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return tmp_path


def invoke(root: Path, *args: str, gha: bool = True, **env: str | None) -> Any:
    base: dict[str, str | None] = {"GITHUB_ACTIONS": "true" if gha else None, "GITHUB_STEP_SUMMARY": None,
                                   "GITHUB_WORKSPACE": None, "DALLE_PIPE_NO_REPORT": "1"}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(main, list(args), env={**base, **env}, catch_exceptions=False)
    finally:
        os.chdir(cwd)


def annotations(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("::")]


def test_command_escapes_data_and_properties() -> None:
    assert command("error", "a\nb%c\r::x", file="a,b:c.yaml", line=3) == (
        "::error file=a%2Cb%3Ac.yaml,line=3,title=dalle-pipe::a%0Ab%25c%0D::x")
    assert command("warning", "plain", title=None) == "::warning::plain"


def test_refusal_is_an_error_at_the_step_line_and_dependents_are_warnings(root: Path, api: FakeOpenAI) -> None:
    api.script([("moderation",)])
    summary = root / "summary.md"
    summary.write_text("earlier step\n")
    r = invoke(root, "run", "recipe.yaml", "--items", "mug", "--concurrency", "1", OPENAI_API_KEY=KEY,
               OPENAI_BASE_URL=api.base_url, GITHUB_STEP_SUMMARY=str(summary))
    assert r.exit_code == 1, r.output
    got = annotations(r.stdout)
    assert len(got) == 2, got
    assert got[0].startswith(f"::error file=recipe.yaml,line={HERO_LINE},title=dalle-pipe::hero@mug: ")
    assert "moderation_blocked" in got[0] or "safety system" in got[0]
    assert got[1] == (f"::warning file=recipe.yaml,line={MASK_LINE},title=dalle-pipe::bg_mask@mug: "
                      f"skipped: needs step 'hero', which is failed")
    assert KEY not in r.output
    text = summary.read_text()
    assert text.startswith("earlier step\n### dalle-pipe run\n")  # appended, never overwritten
    assert ("| recipe | generated | up to date | failed | skipped | modified | spent |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            "| shots | 0 | 0 | 1 | 1 | 0 | $0.00 |\n") in text
    assert "**Failed tasks** (1)" in text
    assert f"| shots | hero@mug | recipe.yaml:{HERO_LINE} | " in text


def test_outside_github_actions_nothing_extra(root: Path) -> None:
    summary = root / "summary.md"
    r = invoke(root, "run", "recipe.yaml", "--offline", gha=False, GITHUB_STEP_SUMMARY=str(summary))
    assert r.exit_code == 0, r.output
    assert annotations(r.output) == []
    assert not summary.exists()


def test_clean_run_has_no_annotations_and_a_summary(root: Path) -> None:
    summary = root / "summary.md"
    r = invoke(root, "run", "recipe.yaml", "--offline", GITHUB_STEP_SUMMARY=str(summary))
    assert r.exit_code == 0, r.output
    assert annotations(r.output) == []
    assert "| shots | 4 | 0 | 0 | 0 | 0 | $0.00 |" in summary.read_text()


def test_check_mode_marks_out_of_date_tasks(root: Path) -> None:
    summary = root / "summary.md"
    invoke(root, "run", "recipe.yaml", "--offline", gha=False)
    (root / "recipe.yaml").write_text(RECIPE.replace("on marble", "on slate"))
    r = invoke(root, "run", "recipe.yaml", "--offline", "--check", GITHUB_STEP_SUMMARY=str(summary))
    assert r.exit_code == 1
    got = annotations(r.stdout)
    # the size_of mask stays up to date: the hero's params fix its size, and the run reuses it
    assert got == [
        f"::error file=recipe.yaml,line={HERO_LINE},title=dalle-pipe::hero@{k}: out of date: would be made "
        f"({k}/hero.png)" for k in ("mug", "board")]
    text = summary.read_text()
    assert text.startswith("### dalle-pipe run --check\n")
    assert "| recipe | generated | up to date | failed | skipped | modified | to make | spent |" in text
    assert "**Out of date** (2)" in text


def test_hand_modified_file_is_a_warning(root: Path) -> None:
    invoke(root, "run", "recipe.yaml", "--offline", gha=False)
    path = root / "out" / "shots" / "mug" / "hero.png"
    with Image.open(path) as im:
        im.convert("RGB").rotate(90).save(path)
    r = invoke(root, "run", "recipe.yaml", "--offline")
    assert r.exit_code == 0, r.output
    assert annotations(r.stdout) == [
        f"::warning file=recipe.yaml,line={HERO_LINE},title=dalle-pipe::hero@mug: mug/hero.png was changed by "
        f"hand: kept, not regenerated (--force replaces it)"]


def test_recipe_problems_become_error_annotations_with_columns(root: Path) -> None:
    (root / "recipe.yaml").write_text(RECIPE.replace("size_of: {step: hero}", "size_of: {step: heor}"))
    r = invoke(root, "validate", "recipe.yaml")
    assert r.exit_code == 2
    got = annotations(r.stdout)
    assert len(got) == 1
    assert got[0].startswith(f"::error file=recipe.yaml,line={MASK_LINE + 2},col=")
    assert "heor" in got[0] and "did you mean 'hero'?" in got[0]
    assert r.stderr.startswith("recipe.yaml:")  # the usual message is still there


def test_other_errors_become_one_annotation(root: Path) -> None:
    r = invoke(root, "run", "recipe.yaml", OPENAI_API_KEY=None)
    assert r.exit_code == 2
    assert annotations(r.stdout) == [
        "::error title=dalle-pipe::OPENAI_API_KEY is not set%3A recipe 'shots' needs it to send requests "
        "(export OPENAI_API_KEY=..., or run with --offline to preview without a key)".replace("%3A", ":")]


def test_json_keeps_stdout_pure(root: Path) -> None:
    invoke(root, "run", "recipe.yaml", "--offline", gha=False)
    (root / "recipe.yaml").write_text(RECIPE.replace("on marble", "on slate"))
    r = invoke(root, "run", "recipe.yaml", "--offline", "--check", "--json")
    assert json.loads(r.stdout)["exit_code"] == 1
    assert len(annotations(r.stderr)) == 2  # the two heroes; the size_of masks stay up to date


def test_paths_are_relative_to_the_workspace(root: Path) -> None:
    sub = root / "images"
    sub.mkdir()
    (sub / "recipe.yaml").write_text(RECIPE.replace("size_of: {step: hero}", "size_of: {step: heor}"))
    r = invoke(sub, "validate", "recipe.yaml", GITHUB_WORKSPACE=str(root))
    assert annotations(r.stdout)[0].startswith(f"::error file=images/recipe.yaml,line={MASK_LINE + 2},")


def test_recipe_text_cannot_inject_workflow_commands(root: Path) -> None:
    (root / "recipe.yaml").write_text(RECIPE.replace("{step: hero}", '{step: "heor\\n::set-env name=X::1"}'))
    r = invoke(root, "validate", "recipe.yaml")
    assert r.exit_code == 2
    got = annotations(r.stdout)
    assert got and all(line.startswith("::error ") for line in got)
    assert any("%0A::set-env name=X::1" in line for line in got)


def test_annotations_are_capped(root: Path, api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci_output, "MAX_ANNOTATIONS", 1)
    api.script([("moderation",), ("moderation",)])
    r = invoke(root, "run", "recipe.yaml", "--only", "hero", "--concurrency", "1", OPENAI_API_KEY=KEY,
               OPENAI_BASE_URL=api.base_url)
    assert r.exit_code == 1
    got = annotations(r.stdout)
    assert len(got) == 2
    assert got[0].startswith("::error file=recipe.yaml")
    assert got[1] == "::error title=dalle-pipe::... and 1 more (error); see the job summary"
