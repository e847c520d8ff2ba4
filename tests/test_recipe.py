"""Project root, pipeline inheritance, the merge order, throttle lowering, confinement, targets."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dalle_pipe.errors import Problem
from dalle_pipe.recipe import Overrides, Project, load_targets, locate, project_root

Build = Callable[[dict[str, str | bytes]], Path]

RECIPE = """\
version: 1
name: {name}
{extra}
steps:
  - id: hero
    generate:
      prompt: "a {{{{ vars.colour }}}} mug"
"""


def recipe(name: str = "shots", extra: str = "") -> str:
    return RECIPE.format(name=name, extra=extra)


def load(targets: list[str], overrides: Overrides | None = None) -> tuple[Project, list[str]]:
    project, problems = load_targets([Path(t) for t in targets], overrides or Overrides())
    return project, [p.format() for p in problems]


def only(targets: list[str], overrides: Overrides | None = None) -> object:
    project, problems = load(targets, overrides)
    assert [p for p in problems if "warning" not in p] == []
    assert len(project.recipes) == 1
    return project.recipes[0]


# --------------------------------------------------------------------------- project root


def test_the_project_root_is_the_nearest_folder_up_with_a_pipeline(project: Build) -> None:
    root = project({"pipeline.yaml": "version: 1\nrecipes: []\n", "a/b/r.yaml": recipe(),
                    "a/pipeline.yaml": "version: 1\nrecipes: []\n", "c/r.yaml": recipe()})
    assert project_root(root / "a" / "b" / "r.yaml") == (root / "a").resolve()
    assert project_root(root / "c" / "r.yaml") == root.resolve()


def test_without_a_pipeline_the_root_is_the_recipes_folder(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(recipe())
    assert project_root(tmp_path / "r.yaml") == tmp_path.resolve()


# --------------------------------------------------------------------------- inheritance and merging

PIPELINE = """\
version: 1
recipes: [recipes/shots.yaml]
provider: openai
model: gpt-image-1.5
params: {size: 1536x1024, quality: high}
throttle: {images_per_minute: 50, requests_per_minute: 100, concurrency: 8}
vars: {colour: red, brand: Acme}
"""


def test_a_recipe_run_alone_inherits_from_the_pipeline_that_lists_it(project: Build) -> None:
    project({"pipeline.yaml": PIPELINE, "recipes/shots.yaml": recipe()})
    r = only(["recipes/shots.yaml"])
    assert r.pipeline is not None  # type: ignore[attr-defined]
    assert r.model == "gpt-image-1.5"  # type: ignore[attr-defined]
    assert dict(r.params) == {"size": "1536x1024", "quality": "high"}  # type: ignore[attr-defined]
    assert dict(r.vars) == {"colour": "red", "brand": "Acme"}  # type: ignore[attr-defined]
    assert r.provider.name == "openai"  # type: ignore[attr-defined]
    assert r.output_dir == Path.cwd().resolve() / "out" / "shots"  # type: ignore[attr-defined]


def test_not_from_a_pipeline_that_does_not_list_it(project: Build) -> None:
    project({"pipeline.yaml": PIPELINE.replace("recipes/shots.yaml", "recipes/missing.yaml"),
             "recipes/other.yaml": recipe()})
    r = only(["recipes/other.yaml"])  # the pipeline's own problem (a missing recipe) is not this recipe's
    assert r.pipeline is None  # type: ignore[attr-defined]
    assert r.model == "gpt-image-2"  # type: ignore[attr-defined]
    assert dict(r.vars) == {}  # type: ignore[attr-defined]
    assert r.root == Path.cwd().resolve()  # type: ignore[attr-defined]  # still the project root


def test_command_line_over_recipe_over_pipeline(project: Build) -> None:
    extra = "model: gpt-image-2\nprovider: openai\nparams: {quality: low}\nvars: {colour: blue, size: big}"
    project({"pipeline.yaml": PIPELINE, "recipes/shots.yaml": recipe(extra=extra)})
    r = only(["recipes/shots.yaml"])
    assert r.model == "gpt-image-2"  # type: ignore[attr-defined]
    assert dict(r.params) == {"size": "1536x1024", "quality": "low"}  # type: ignore[attr-defined]
    assert dict(r.vars) == {"colour": "blue", "brand": "Acme", "size": "big"}  # type: ignore[attr-defined]
    r = only(["recipes/shots.yaml"], Overrides(provider="offline", vars={"colour": "green", "new": "1"},
                                               base_url="http://localhost:1234/v1"))
    assert dict(r.vars) == {"colour": "green", "brand": "Acme", "size": "big", "new": "1"}  # type: ignore[attr-defined]
    assert r.provider.name == "offline"  # type: ignore[attr-defined]
    assert r.base_url == "http://localhost:1234/v1"  # type: ignore[attr-defined]


def test_the_endpoint_comes_from_the_command_line_then_the_environment(project: Build,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    project({"r.yaml": recipe()})
    assert only(["r.yaml"]).base_url is None  # type: ignore[attr-defined]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    assert only(["r.yaml"]).base_url == "http://env:1/v1"  # type: ignore[attr-defined]
    assert only(["r.yaml"], Overrides(base_url="http://cli:2/v1")).base_url == "http://cli:2/v1"  # type: ignore[attr-defined]


def test_a_recipe_may_only_lower_the_pipelines_throttle(project: Build) -> None:
    extra = "throttle: {images_per_minute: 5, concurrency: 20, max_retries: 3}"
    project({"pipeline.yaml": PIPELINE, "recipes/shots.yaml": recipe(extra=extra)})
    project_, problems = load(["recipes/shots.yaml"])
    r = project_.recipes[0]
    assert dict(r.throttle) == {"images_per_minute": 5, "requests_per_minute": 100, "concurrency": 8,
                                "max_retries": 3}
    assert r.throttle_stated
    assert problems == ["recipes/shots.yaml:3:47: warning: throttle.concurrency: concurrency 20 is above the "
                        "pipeline's 8; 8 applies (the pipeline's limits are the account's: a recipe may only "
                        "lower them)"]


def test_max_wait_s_and_timeout_s_are_not_account_limits_the_recipe_wins(project: Build) -> None:
    pipeline = PIPELINE.replace("concurrency: 8}", "concurrency: 8, max_wait_s: 30, timeout_s: 60}")
    assert pipeline != PIPELINE
    extra = "throttle: {max_wait_s: 300, timeout_s: 600}"
    project({"pipeline.yaml": pipeline, "recipes/shots.yaml": recipe(extra=extra)})
    project_, problems = load(["recipes/shots.yaml"])
    assert dict(project_.recipes[0].throttle) == {"images_per_minute": 50, "requests_per_minute": 100,
                                                  "concurrency": 8, "max_wait_s": 300, "timeout_s": 600}
    assert problems == []


def test_a_recipe_alone_keeps_its_own_throttle(project: Build) -> None:
    project({"r.yaml": recipe(extra="throttle: {images_per_minute: 500}")})
    r = only(["r.yaml"])
    assert dict(r.throttle) == {"images_per_minute": 500}  # type: ignore[attr-defined]


def test_the_recipe_sha256_is_of_the_file_bytes(project: Build) -> None:
    text = "\ufeff" + recipe()
    root = project({"r.yaml": text})
    assert only(["r.yaml"]).sha256 == hashlib.sha256((root / "r.yaml").read_bytes()).hexdigest()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- output_dir


def test_output_dirs(project: Build) -> None:
    root = project({"pipeline.yaml": "version: 1\nrecipes: [recipes/a.yaml, recipes/b.yaml]\noutput_root: build\n",
                    "recipes/a.yaml": recipe("a"), "recipes/b.yaml": recipe("b", "output_dir: ../renders/b")})
    project_, problems = load([])
    assert problems == []
    top = root.resolve()
    assert [r.output_dir for r in project_.recipes] == [top / "build" / "out" / "a", top / "renders" / "b"]
    project_, _ = load([], Overrides(output_dir=Path("elsewhere")))
    assert [r.output_dir for r in project_.recipes] == [top / "elsewhere" / "a", top / "elsewhere" / "b"]
    project_, _ = load(["recipes/a.yaml"], Overrides(output_dir=Path("/tmp/x")))
    assert project_.recipes[0].output_dir == Path("/tmp/x")


@pytest.mark.parametrize(("value", "message"), [
    ("../..", "output_dir '../..' is outside the project (use a path inside the project, or --output-dir)"),
    ("/etc", "output_dir '/etc' is outside the project (use a path inside the project, or --output-dir)"),
    (".", "output_dir is the project folder itself (use a folder of its own, e.g. out/shots)"),
])
def test_output_dir_must_stay_inside(project: Build, value: str, message: str) -> None:
    project({"r.yaml": recipe(extra=f"output_dir: {value}")})
    assert load(["r.yaml"])[1] == [f"r.yaml:3:13: output_dir: {message}"]


# --------------------------------------------------------------------------- confinement


def test_locate(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "in.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("s")
    os.symlink(tmp_path / "secret.txt", root / "sub" / "link.txt")
    os.symlink(tmp_path, root / "up")
    base = root / "sub"
    assert locate(root, base, "in.txt") == ((root / "sub" / "in.txt").resolve(), None)
    assert locate(root, base, str(root / "sub" / "in.txt")) == ((root / "sub" / "in.txt").resolve(), None)
    assert locate(root, base, "../../secret.txt") == (None, "is outside the project")
    assert locate(root, base, "/etc/passwd") == (None, "is outside the project")
    assert locate(root, base, "link.txt") == (None, "leads outside the project through a symlink")
    assert locate(root, base, "../up/secret.txt") == (None, "leads outside the project through a symlink")
    assert locate(root, base, "a\x00b") == (None, "contains a NUL character")
    assert locate(root, base, " ") == (None, "is empty")
    assert locate(root, base, "x" * 5000)[0] is not None or locate(root, base, "x" * 5000)[1]


# --------------------------------------------------------------------------- targets


def test_no_target_means_the_pipeline_here(project: Build) -> None:
    project({"pipeline.yaml": "version: 1\nrecipes: [a.yaml, b.yaml]\n", "a.yaml": recipe("a"),
             "b.yaml": recipe("b")})
    assert [r.name for r in load([])[0].recipes] == ["a", "b"]
    assert [r.name for r in load(["."])[0].recipes] == ["a", "b"]  # a folder: its pipeline.yaml
    # A recipe given and also listed by the pipeline given is loaded once.
    assert [r.name for r in load(["pipeline.yaml", "a.yaml"])[0].recipes] == ["a", "b"]


def test_missing_targets(project: Build) -> None:
    project({})
    assert load([])[1] == ["pipeline.yaml:1:1: no such file (name a recipe or a pipeline.yaml)"]
    assert load(["nope.yaml"])[1] == ["nope.yaml:1:1: no such file"]


def test_a_recipe_name_used_twice(project: Build) -> None:
    project({"a.yaml": recipe("same"), "b.yaml": recipe("same")})
    assert load(["a.yaml", "b.yaml"])[1] == ["b.yaml:2:7: name: recipe name 'same' is used twice (also in a.yaml)"]


def test_pipeline_problems_are_reported_once(project: Build) -> None:
    project({"pipeline.yaml": "version: 1\nrecipes: [a.yaml, b.yaml, gone.yaml, ./a.yaml]\n",
             "a.yaml": recipe("a"), "b.yaml": recipe("b")})
    _, problems = load(["a.yaml", "b.yaml"])
    assert problems == ["pipeline.yaml:2:27: recipes[2]: recipe 'gone.yaml' does not exist",
                        "pipeline.yaml:2:38: recipes[3]: recipe './a.yaml' is listed twice"]


def test_a_broken_pipeline_is_reported_with_the_recipe(project: Build) -> None:
    project({"pipeline.yaml": "version: 1\nrecipes: [a.yaml\n", "a.yaml": recipe("a")})
    _, problems = load(["a.yaml"])
    assert problems == ["pipeline.yaml:2:10: YAML error: this '[' is never closed (close the list with ']' before "
                        "the next key; an unquoted '#' starts a comment)"]


def test_problems_are_problems() -> None:
    assert Problem("f", 1, 2, "p", "m", "h").format() == "f:1:2: p: m (h)"
