"""Planning: units x steps -> tasks, their ids, outputs, inputs and every per-unit check."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dalle_pipe.app import load
from dalle_pipe.cli import main
from dalle_pipe.errors import DallePipeError, RecipeError
from dalle_pipe.plan import InputRef, Plan, Task, default_output
from dalle_pipe.recipe import Overrides

Build = Callable[[dict[str, str | bytes]], Path]
ROOT = Path(__file__).resolve().parent.parent


def plan_of(target: str = "recipe.yaml", overrides: Overrides | None = None) -> Plan:
    loaded = load([Path(target)], overrides or Overrides(provider="offline"))
    assert len(loaded.plans) == 1
    return loaded.plans[0]


def problems_of(target: str = "recipe.yaml", overrides: Overrides | None = None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load([Path(target)], overrides or Overrides(provider="offline"))
    return [p.format() for p in info.value.problems]


def png(w: int, h: int, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, "PNG")
    return buf.getvalue()


def recipe(steps: str, head: str = "") -> str:
    return f"version: 1\nname: t\n{head}steps:\n{steps}"


GEN = "  - id: hero\n    generate:\n      prompt: \"a {{ item.name | default('mug') }}\"\n"


# --------------------------------------------------------------------------- the shipped project


def test_the_shipped_pipeline_plans_to_these_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pipeline.yaml", "recipes", "catalogs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = CliRunner().invoke(main, ["plan", "--json", "--offline"])
    assert result.exit_code == 0, result.output
    counts = {r["recipe"]: (r["units"], [(s["step"], s["kind"], s["units"], s["requests"], s["images"], s["to_make"])
                                         for s in r["steps"]]) for r in json.loads(result.stdout)["recipes"]}
    assert counts == {
        "product-catalog": (3, [("hero", "generate", 3, 3, 3, 3), ("bg_mask", "mask", 3, 0, 3, 3),
                                ("beach", "edit", 3, 3, 3, 3)]),
        "campaign": (1, [("wide_shot", "generate", 1, 1, 1, 1), ("headshot", "generate", 1, 1, 1, 1)]),
        "product-shots": (3, [("shot", "generate", 3, 3, 3, 3)]),
    }
    assert not (tmp_path / "out").exists()
    validate = CliRunner().invoke(main, ["validate", "--offline"])
    assert (validate.exit_code, validate.stdout, validate.stderr) == (0, "ok: 3 recipe(s), 7 unit(s), 14 task(s)\n", "")


# --------------------------------------------------------------------------- ids, keys, outputs


def test_default_output_naming() -> None:
    assert default_output("mug", "hero", "png", 1, 0) == "mug/hero.png"
    assert default_output("mug/beach", "hero", "jpg", 3, 2) == "mug/beach/hero-2.jpg"
    assert default_output("", "hero", "webp", 1, 0) == "hero.webp"
    assert default_output("", "hero", "png", 2, 1) == "hero-1.png"


def test_tasks_are_unit_by_unit_in_step_order_named_step_at_key(project: Build) -> None:
    project({"recipe.yaml": recipe(GEN + "  - id: small\n    resize: {image: {step: hero}, size: 256x256}\n",
                                   "items: [{id: mug}, {id: board}]\nmatrix: {scene: [beach, studio]}\n")})
    plan = plan_of()
    assert [u.key for u in plan.units] == ["mug/beach", "mug/studio", "board/beach", "board/studio"]
    assert [t.id for t in plan.tasks] == [
        "hero@mug/beach", "small@mug/beach", "hero@mug/studio", "small@mug/studio",
        "hero@board/beach", "small@board/beach", "hero@board/studio", "small@board/studio"]
    assert [t.outputs for t in plan.tasks_of(1)] == [["mug/studio/hero.png"], ["mug/studio/small.png"]]
    small = plan.tasks[1]
    assert (small.images, small.size, small.fmt, small.model) == \
        ([InputRef("image", "hero", 0)], (256, 256), "png", None)


def test_no_catalog_and_no_matrix_is_one_unit_with_an_empty_key(project: Build) -> None:
    project({"recipe.yaml": recipe(GEN.replace("      prompt", "      n: 2\n      output_format: jpeg\n      prompt"))})
    plan = plan_of()
    (task,) = plan.tasks
    assert (task.id, task.outputs, task.n, task.fmt) == ("hero", ["hero-0.jpg", "hero-1.jpg"], 2, "jpeg")
    assert task.params == {"n": 2, "output_format": "jpeg"}
    assert task.prompt == "a mug"


def test_a_custom_output_template_sees_index_and_ext(project: Build) -> None:
    steps = GEN.replace("      prompt", "      n: 2\n      prompt") + \
        "    output: \"{{ recipe.name }}/{{ item.id }}-{{ index + 1 }}.{{ ext }}\"\n"
    project({"recipe.yaml": recipe(steps, "items: [{id: mug}]\n")})
    assert plan_of().tasks[0].outputs == ["t/mug-1.png", "t/mug-2.png"]


def test_only_a_matrix(project: Build) -> None:
    project({"recipe.yaml": recipe(GEN, "matrix: {scene: [beach, studio], light: [warm]}\n")})
    assert [t.outputs[0] for t in plan_of().tasks] == ["beach/warm/hero.png", "studio/warm/hero.png"]


# --------------------------------------------------------------------------- when, prompts, steps context


def test_when_false_disables_the_task_and_renders_nothing_for_it(project: Build) -> None:
    steps = GEN + ("  - id: beach\n    edit:\n      image: {step: hero}\n"
                   "      prompt: \"{{ item.scene }} and {{ steps.hero.prompt }}\"\n    when: item.scene is defined\n")
    project({"recipe.yaml": recipe(steps, "items: [{id: a, scene: sand}, {id: b}]\n")})
    plan = plan_of()
    beach_a, beach_b = plan.tasks[1], plan.tasks[3]
    assert (beach_a.enabled, beach_a.prompt) == (True, "sand and a mug")
    assert (beach_b.enabled, beach_b.prompt) == (False, None)
    assert beach_a.prompt_template is not None  # it uses steps: the runner renders it again
    assert plan.tasks[0].prompt_template is None


def test_a_variable_missing_in_some_rows_names_them(project: Build) -> None:
    items = "items:\n" + "".join(f"  - {{id: p{i}, name: n{i}}}\n" for i in range(6)) + "  - {id: odd}\n"
    project({"recipe.yaml": recipe("  - id: hero\n    generate:\n      prompt: \"a {{ item.name }}\"\n", items)})
    assert problems_of() == ["recipe.yaml:14:15: steps[0].generate.prompt: row 7 (key 'odd'): "
                             "undefined variable 'item.name' (this row's columns are id)"]


# --------------------------------------------------------------------------- sizes and inputs


def test_predicted_sizes_flow_to_masks_and_edits(project: Build) -> None:
    steps = ("  - id: hero\n    generate: {prompt: mug, size: 1536x1024}\n"
             "  - id: m\n    mask: {size_of: {step: hero}, shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]}\n"
             "  - id: beach\n    edit: {image: {step: hero}, mask: {step: m}, prompt: beach}\n")
    project({"recipe.yaml": recipe(steps)})
    plan = plan_of()
    assert [t.size for t in plan.tasks] == [(1536, 1024), (1536, 1024), (1536, 1024)]
    assert plan.tasks[2].mask == InputRef("mask", "m", 0)


def test_a_mask_of_another_size_is_refused_unless_fit_resize(project: Build) -> None:
    steps = ("  - id: hero\n    generate: {prompt: mug, size: 1536x1024}\n"
             "  - id: beach\n    edit: {image: {step: hero}, mask: mask.png, prompt: beach}\n")
    project({"recipe.yaml": recipe(steps), "mask.png": png(1024, 1024)})
    assert problems_of() == [
        "recipe.yaml:7:39: steps[1].edit.mask: mask size 1024x1024 differs from the first input image's 1536x1024 "
        "(a mask must be the size of the first image; use fit: resize or a mask step with size_of)"]
    (Path("recipe.yaml")).write_text(recipe(steps.replace("prompt: beach}", "prompt: beach, fit: resize}")))
    assert plan_of().tasks[1].mask is not None


def test_literal_inputs_are_templated_and_resolved(project: Build) -> None:
    steps = "  - id: beach\n    edit: {image: \"photos/{{ item.id }}.png\", prompt: beach}\n"
    root = project({"recipe.yaml": recipe(steps, "items: [{id: a}, {id: b}]\n"), "photos/a.png": png(64, 48),
                    "photos/b.png": png(32, 32, "RGB")})
    plan = plan_of()
    assert [t.images for t in plan.tasks] == [[InputRef("image", path=(root / "photos/a.png").resolve())],
                                              [InputRef("image", path=(root / "photos/b.png").resolve())]]
    assert [t.size for t in plan.tasks] == [(64, 48), (32, 32)]  # sizes gpt-image-2 accepts: kept


def test_references_to_all_images_of_an_earlier_step(project: Build) -> None:
    steps = ("  - id: hero\n    generate: {prompt: mug, n: 3}\n"
             "  - id: mix\n    edit: {image: [{step: hero}, {step: hero, index: 1}], prompt: mix}\n")
    project({"recipe.yaml": recipe(steps)})
    mix = plan_of().tasks[1]
    assert [(r.step, r.index) for r in mix.images] == [("hero", 0), ("hero", 1), ("hero", 2), ("hero", 1)]


def test_prompt_files_are_templates_beside_the_recipe(project: Build) -> None:
    project({"recipes/recipe.yaml": recipe("  - id: hero\n    generate: {prompt_file: prompts/hero.j2}\n",
                                           "vars: {colour: red}\n"),
             "recipes/prompts/hero.j2": "a {{ vars.colour }}\nmug {{ vars.size }}\n"})
    assert problems_of("recipes/recipe.yaml") == [
        "recipes/prompts/hero.j2:2:1: steps[0].generate.prompt_file: undefined variable 'vars.size' "
        "(set it under vars: or with --var size=...)"]
    plan = plan_of("recipes/recipe.yaml", Overrides(provider="offline", vars={"size": "large"}))
    assert plan.tasks[0].prompt == "a red\nmug large"


# --------------------------------------------------------------------------- model checks and warnings


def test_a_retired_model_is_only_a_warning_on_another_endpoint(project: Build) -> None:
    project({"recipe.yaml": recipe(GEN, "model: dall-e-3\n")})
    message = "model: model 'dall-e-3' was retired on 2026-05-12 (use a GPT image model such as gpt-image-2)"
    for args in (["validate", "recipe.yaml"], ["validate", "--offline", "recipe.yaml"]):
        result = CliRunner().invoke(main, args)
        assert (result.exit_code, result.stderr) == (2, f"recipe.yaml:3:8: {message}\n")
    for args in (["validate", "recipe.yaml", "--base-url", "http://localhost:1234/v1"],
                 ["validate", "--offline", "recipe.yaml", "--base-url", "http://localhost:1234/v1"]):
        result = CliRunner().invoke(main, args)
        assert (result.exit_code, result.stderr) == (0, f"recipe.yaml:3:8: warning: {message}\n")
        assert result.stdout == "ok: 1 recipe(s), 1 unit(s), 1 task(s)\n"


def test_a_long_prompt_is_checked_against_its_model(project: Build) -> None:
    project({"recipe.yaml": recipe("  - id: hero\n    generate:\n      prompt: \"{{ 'x' * 4001 }}\"\n",
                                   "model: dall-e-3\n")})
    assert problems_of(overrides=Overrides(provider="offline", base_url="http://localhost:1/v1")) == [
        "recipe.yaml:3:8: warning: model: model 'dall-e-3' was retired on 2026-05-12 (use a GPT image model such "
        "as gpt-image-2)",
        "recipe.yaml:7:15: steps[0].generate.prompt: prompt is 4001 characters; dall-e-3 accepts at most 4000 "
        "(shorten the prompt)"]


# --------------------------------------------------------------------------- fuzzing the whole load

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3000), st.floats(allow_nan=False, width=32),
                    st.text(max_size=12),
                    st.sampled_from(["hero", "{{ item.name }}", "{{ key }}/{{ index }}.{{ ext }}", "1024x1024",
                                     "gpt-image-2", "dall-e-2", "../x", "/etc/passwd", "png", "jpeg", "{{", "a/b",
                                     "item.a == 'x'", "cat.csv", "photo.png", "{{ ''.__class__ }}", "auto"]))
KEYS = st.sampled_from(["id", "step", "index", "prompt", "image", "mask", "size", "n", "model", "generate", "edit",
                        "mask", "resize", "pad", "crop", "convert", "composite", "variation", "shapes", "circle",
                        "center", "radius", "box", "size_of", "from_alpha", "output", "when", "path", "key",
                        "where", "format", "background", "output_format", "quality", "aspect", "fit", "x"])
DATA = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(KEYS, children, max_size=5), max_leaves=25)

BASE: dict[str, Any] = {
    "version": 1, "name": "fuzz", "catalog": {"path": "cat.csv"}, "matrix": {"scene": ["a", "b"]},
    "steps": [
        {"id": "hero", "generate": {"prompt": "a {{ item.name }} {{ matrix.scene }}", "n": 2}},
        {"id": "m", "mask": {"size_of": {"step": "hero", "index": 0},
                             "shapes": [{"circle": {"center": [0.5, 0.5], "radius": 0.4}}]}},
        {"id": "beach", "edit": {"image": [{"step": "hero"}, "photo.png"], "mask": {"step": "m"}, "prompt": "x"}},
        {"id": "small", "resize": {"image": {"step": "beach"}, "size": "256x256"}},
    ],
}


def _mutate(data: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following `path` (indices into keys/items, wrapped) with `value`."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    if isinstance(data, dict):
        keys = list(data)
        k = keys[path[0] % len(keys)]
        return {**data, k: _mutate(data[k], path[1:], value)}
    i = path[0] % len(data)
    return [*data[:i], _mutate(data[i], path[1:], value), *data[i + 1:]]


def _load_quietly(folder: Path, text: str) -> None:
    (folder / "recipe.yaml").write_text(text, encoding="utf-8")
    for provider in ("offline", None):
        try:
            loaded = load([folder / "recipe.yaml"], Overrides(provider=provider))
        except DallePipeError:
            continue
        for plan in loaded.plans:
            assert all(isinstance(t, Task) for t in plan.tasks)


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "cat.csv").write_text("id,name\nmug,ceramic mug\nboard,cutting board\n")
    (folder / "photo.png").write_bytes(png(64, 64))
    (folder / "mask.png").write_bytes(png(32, 32))
    return folder


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 50), max_size=6), DATA)
def test_a_mutated_recipe_loads_or_fails_as_problems(fuzz_project: Path, path: list[int], value: Any) -> None:
    _load_quietly(fuzz_project, yaml.safe_dump(_mutate(BASE, path, value), sort_keys=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DATA)
def test_random_data_as_a_recipe_fails_as_problems(fuzz_project: Path, value: Any) -> None:
    _load_quietly(fuzz_project, yaml.safe_dump(value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_as_a_recipe_fail_as_problems(fuzz_project: Path, raw: bytes) -> None:
    (fuzz_project / "recipe.yaml").write_bytes(raw)
    with pytest.raises(DallePipeError):
        load([fuzz_project / "recipe.yaml"], Overrides(provider="offline"))


def test_an_empty_catalog_or_a_where_that_keeps_nothing_is_a_warning(project: Build) -> None:
    project({"recipe.yaml": recipe(GEN, "catalog: {path: c.csv, where: \"item.a == 'x'\"}\n"), "c.csv": "a\ny\n"})
    plan = plan_of()
    assert (plan.units, plan.tasks) == ([], [])
    assert [w.format() for w in plan.warnings] == [
        "recipe.yaml:3:31: warning: catalog.where: where keeps none of the 1 rows: nothing to make"]
    Path("c.csv").write_text("a\n")
    assert [w.format() for w in plan_of().warnings] == [
        "recipe.yaml:3:17: warning: catalog.path: the catalog has no rows: nothing to make"]


def test_long_paths_are_shortened_in_messages_and_never_crash(project: Build) -> None:
    project({"recipe.yaml": recipe("  - id: a\n    edit: {image: \"" + "y/" * 3000 + "p.png\", prompt: x}\n",
                                   "catalog: {path: " + "x" * 5000 + ".csv}\n")})
    assert problems_of() == ["recipe.yaml:3:17: catalog.path: catalog "
                             f"'{'x' * 77}...' does not exist"]
