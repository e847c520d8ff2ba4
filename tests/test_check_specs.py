"""A step's `checks:` and `on_fail:` as typed specs on the plan's tasks (dalle_pipe/config/checks.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from dalle_pipe.config.checks import CheckImage, CheckSpec, ImageSpec
from dalle_pipe.plan import Plan, build_plan
from dalle_pipe.recipe import Overrides, load_targets

Build = Callable[[dict[str, str | bytes]], Path]

RECIPE = """\
version: 1
name: shots
ask_model: gpt-5.5
items:
  - {id: mug-1, sku: MUG-001, name: ceramic mug}
  - {id: mug-2, sku: MUG-002, name: steel mug}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble", size: 1024x1024}
  - id: keep
    mask: {size_of: {step: hero}, shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]}
  - id: scene
    edit: {image: {step: hero}, mask: {step: keep}, prompt: a beach at sunset, output_format: jpeg}
    checks:
      - size: 1024x1024
      - format: jpg
        severity: warn
      - transparent: {max: 0.01}
      - unchanged: {from: {step: hero}, outside: {step: keep}, min: 0.97}
      - similar: {to: "photos/{{ item.sku }}.png", min: 0.6}
      - ask: "Is this the same {{ item.name }} as in the reference, fully visible, on a beach?"
        with: ["photos/{{ item.sku }}.png"]
        severity: warn
      - ask: {question: "Is the handle visible?", model: gpt-4.1-mini}
        name: handle
    on_fail: {retry: 2}
"""


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "PNG")
    return buf.getvalue()


def _plan(project: Build, text: str = RECIPE) -> Plan:
    root = project({"recipe.yaml": text, "photos/MUG-001.png": _png(), "photos/MUG-002.png": _png()})
    loaded, problems = load_targets([Path("recipe.yaml")], Overrides(provider="offline"))
    assert problems == []
    plan, problems = build_plan(loaded.recipes[0])
    assert [p.format() for p in problems] == []
    assert plan is not None and root.is_dir()
    return plan


def test_checks_become_typed_specs_with_names_and_severities(project: Build) -> None:
    scene = [t for t in _plan(project).tasks if t.step.id == "scene"]
    assert [t.id for t in scene] == ["scene@mug-1", "scene@mug-2"]
    specs = [c.spec for c in scene[0].checks]
    at = ("steps", 2, "checks")
    assert specs[:5] == [
        CheckSpec("size", "size", "error", (*at, 0), size=(1024, 1024)),
        CheckSpec("format", "format", "warn", (*at, 1), format="jpeg"),
        CheckSpec("transparent", "transparent", "error", (*at, 2), max=0.01),
        CheckSpec("unchanged", "unchanged", "error", (*at, 3), min=0.97,
                  source=ImageSpec((*at, 3, "unchanged", "from"), step="hero"),
                  region=ImageSpec((*at, 3, "unchanged", "outside"), step="keep")),
        CheckSpec("similar", "similar", "error", (*at, 4), min=0.6,
                  source=ImageSpec((*at, 4, "similar", "to"), path="photos/{{ item.sku }}.png")),
    ]
    assert [(s.name, s.kind, s.severity, s.model) for s in specs[5:]] == [
        ("ask-1", "ask", "warn", "gpt-5.5"), ("handle", "ask", "error", "gpt-4.1-mini")]
    assert [t.retry for t in scene] == [2, 2]


def test_templates_are_rendered_and_files_found_per_unit(project: Build) -> None:
    plan = _plan(project)
    scene = [t for t in plan.tasks if t.step.id == "scene"]
    root = plan.recipe.root.resolve()
    for task, sku, name in zip(scene, ("MUG-001", "MUG-002"), ("ceramic mug", "steel mug"), strict=True):
        ask = task.checks[5]
        assert ask.question == f"Is this the same {name} as in the reference, fully visible, on a beach?"
        assert ask.references == (CheckImage("with", path=root / "photos" / f"{sku}.png"),)
        assert task.checks[4].image("to") == CheckImage("to", path=root / "photos" / f"{sku}.png")
        assert task.checks[3].images == (CheckImage("from", step="hero"), CheckImage("outside", step="keep"))
        assert task.checks[6].question == "Is the handle visible?"


def test_steps_without_checks_have_none(project: Build) -> None:
    plan = _plan(project)
    assert [(t.id, len(t.checks), t.retry) for t in plan.tasks if t.step.id != "scene"] == [
        ("hero@mug-1", 0, 0), ("keep@mug-1", 0, 0), ("hero@mug-2", 0, 0), ("keep@mug-2", 0, 0)]


def test_a_disabled_task_plans_no_checks(project: Build) -> None:
    text = RECIPE.replace("    on_fail:", "    when: \"item.sku == 'MUG-001'\"\n    on_fail:")
    scene = [t for t in _plan(project, text).tasks if t.step.id == "scene"]
    assert [(t.enabled, len(t.checks)) for t in scene] == [(True, 7), (False, 0)]


def test_the_pipeline_sets_the_default_ask_model(project: Build) -> None:
    text = RECIPE.replace("ask_model: gpt-5.5\n", "")
    files: dict[str, str | bytes] = {"pipeline.yaml": "version: 1\nrecipes: [recipe.yaml]\nask_model: gpt-5\n",
                                     "recipe.yaml": text, "photos/MUG-001.png": _png(), "photos/MUG-002.png": _png()}
    project(files)
    loaded, problems = load_targets([Path("recipe.yaml")], Overrides(provider="offline"))
    plan, problems = build_plan(loaded.recipes[0])
    assert plan is not None and problems == []
    assert [c.spec.model for c in plan.tasks[2].checks if c.spec.kind == "ask"] == ["gpt-5", "gpt-4.1-mini"]


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-5.6", "recipe.yaml:3:12: warning: ask_model: model 'gpt-5.6' is not in the table: cannot tell whether "
                "it sees images (did you mean 'gpt-5.5'?)"),
])
def test_an_unknown_ask_model_is_a_warning_on_a_local_endpoint(project: Build, model: str, expected: str) -> None:
    project({"recipe.yaml": RECIPE.replace("ask_model: gpt-5.5", f"ask_model: {model}"),
             "photos/MUG-001.png": _png(), "photos/MUG-002.png": _png()})
    loaded, _ = load_targets([Path("recipe.yaml")], Overrides(base_url="http://127.0.0.1:8080/v1"))
    plan, problems = build_plan(loaded.recipes[0])
    assert plan is not None
    assert [p.format() for p in problems] == [expected]


def test_on_fail_with_only_warn_checks_is_a_warning(project: Build) -> None:
    project({"recipe.yaml": "version: 1\nname: t\nsteps:\n  - id: hero\n    generate: {prompt: a mug}\n"
                            "    checks: [{size: 1024x1024, severity: warn}]\n    on_fail: {retry: 1}\n"})
    loaded, _ = load_targets([Path("recipe.yaml")], Overrides(provider="offline"))
    plan, problems = build_plan(loaded.recipes[0])
    assert plan is not None
    assert [p.format() for p in problems] == [
        "recipe.yaml:7:5: warning: steps[0].on_fail: every check is severity warn, so on_fail never retries"]


def test_an_auto_size_is_never_held_against_a_size_check(project: Build) -> None:
    project({"recipe.yaml": "version: 1\nname: t\nsteps:\n  - id: hero\n    generate: {prompt: a mug}\n"
                            "    checks: [{size: 1536x1024}, {format: png}]\n"})
    loaded, _ = load_targets([Path("recipe.yaml")], Overrides(provider="offline"))
    plan, problems = build_plan(loaded.recipes[0])
    assert plan is not None and problems == []
