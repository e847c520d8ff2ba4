"""Hostile file trees: refused at plan time, before anything is sent or written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from front_util import KEY, invoke, tree, write

from dalle_pipe.plan import bad_name

ONE = """version: 1
name: t
{extra}items: [{{id: mug}}, {{id: cup}}]
steps:
  - id: hero
    generate:
      prompt: a red {{{{ item.id }}}}
"""


def run(root: Path, api: FakeOpenAI, *args: str) -> tuple[int, str]:
    r = invoke(root, "run", *args, env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
    return r.exit_code, r.stderr


def test_the_default_output_folder_through_a_symlink_out_of_the_project_is_refused(
        tmp_path: Path, api: FakeOpenAI) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = write(tmp_path / "p", {"recipe.yaml": ONE.format(extra="")})
    (root / "out").symlink_to(outside)
    before = tree(root)
    assert run(root, api, "recipe.yaml") == (2, (
        "recipe.yaml:2:7: name: the default output folder 'out/t' leads outside the project through a symlink "
        "(set output_dir to a folder inside the project, or use --output-dir)\n"))
    assert api.requests == []
    assert tree(root) == before and list(outside.iterdir()) == []


def test_a_symlink_on_an_outputs_path_inside_the_output_folder_is_refused_before_anything_is_paid(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": ONE.format(extra=""), "keep/.keep": ""})
    (root / "out" / "t").mkdir(parents=True)
    (root / "out" / "t" / "cup").symlink_to(root / "keep")
    before = tree(root)
    assert run(root, api, "recipe.yaml") == (2, (
        "recipe.yaml:5:5: steps[0]: row 2 (key 'cup'): output path 'cup/hero.png' passes through a symlink "
        "inside output_dir ('cup') (dalle-pipe writes only real folders inside output_dir; remove the symlink "
        "or change output)\n"))
    assert api.requests == []
    assert tree(root) == before


def test_an_output_file_that_is_a_symlink_is_refused(tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": ONE.format(extra=""), "victim.txt": "precious"})
    (root / "out" / "t" / "mug").mkdir(parents=True)
    (root / "out" / "t" / "mug" / "hero.png").symlink_to(root / "victim.txt")
    code, err = run(root, api, "recipe.yaml")
    assert (code, err) == (2, (
        "recipe.yaml:5:5: steps[0]: row 1 (key 'mug'): output path 'mug/hero.png' passes through a symlink "
        "inside output_dir ('mug/hero.png') (dalle-pipe writes only real folders inside output_dir; remove "
        "the symlink or change output)\n"))
    assert api.requests == [] and (root / "victim.txt").read_text() == "precious"


def test_an_output_that_is_another_outputs_folder_is_a_plan_problem(tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": """version: 1
name: t
items: [{id: mug, out: a/b.png}, {id: cup, out: a}]
steps:
  - id: hero
    generate:
      prompt: a red {{ item.id }}
    output: "{{ item.out }}"
"""})
    before = tree(root)
    assert run(root, api, "recipe.yaml") == (2, (
        "recipe.yaml:8:13: steps[0].output: row 2 (key 'cup'): output path 'a' is a folder of hero@mug's output "
        "(an output may not be another output's folder)\n"))
    assert api.requests == [] and tree(root) == before


def test_two_recipes_whose_output_folders_nest_are_a_plan_problem(tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {
        "pipeline.yaml": "version: 1\nrecipes: [a.yaml, b.yaml]\n",
        "a.yaml": ONE.format(extra="output_dir: gallery/b\n").replace("name: t", "name: a"),
        "b.yaml": ONE.format(extra="output_dir: gallery\n").replace("name: t", "name: b"),
    })
    before = tree(root)
    assert run(root, api) == (2, (
        "b.yaml:3:13: output_dir: output folder 'gallery' holds the output folder of recipe 'a' "
        "(give every recipe a folder of its own)\n"))
    assert api.requests == [] and tree(root) == before


@pytest.mark.parametrize(("out", "why"), [
    ("Manifest.json", "is reserved by dalle-pipe"),
    ("REPORT.HTML", "is reserved by dalle-pipe"),
    (".Dalle-Pipe/state.png", "is reserved by dalle-pipe"),
    ("CON", "uses 'CON', a Windows device name"),
    ("x/aux.png", "uses 'aux.png', a Windows device name"),
    ("nul", "uses 'nul', a Windows device name"),
    ("Com1.png", "uses 'Com1.png', a Windows device name"),
    ("lpt9", "uses 'lpt9', a Windows device name"),
    ("dir./x.png", "has a name ending in a dot or a space ('dir.')"),
    ("x.png.", "has a name ending in a dot or a space ('x.png.')"),
    ("dir /x.png", "has a name ending in a dot or a space ('dir ')"),
    ("tab\tx.png", "has a control character (a line break, a tab...)"),
    ("é" * 128 + ".png", "has a name over 255 bytes"),
])
def test_names_no_system_can_hold_are_refused(tmp_path: Path, api: FakeOpenAI, out: str, why: str) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": f"""version: 1
name: t
items: [{{id: mug, out: {out!r}}}]
steps:
  - id: hero
    generate:
      prompt: a red mug
    output: "{{{{ item.out }}}}"
""".replace("'", '"').replace("\t", "\\t")})
    before = tree(root)
    code, err = run(root, api, "recipe.yaml")
    assert code == 2
    shown = repr(out if len(out) <= 80 else out[:77] + "...")
    assert err == (f"recipe.yaml:8:13: steps[0].output: row 1 (key 'mug'): output path {shown} {why} "
                   f"(outputs are relative paths inside output_dir)\n")
    assert api.requests == [] and tree(root) == before


def test_names_that_are_fine_everywhere_pass() -> None:
    for part in ("console.png", "auxiliary", "com10.png", "nul-ish", "a.b.png", "é" * 127):
        assert bad_name(part) is None, part


def test_an_output_folder_that_cannot_be_made_is_exit_2_before_anything_is_sent(
        tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": ONE.format(extra="output_dir: blocker/out\n"),
                                  "blocker": "a file, not a folder"})
    before = tree(root)
    assert run(root, api, "recipe.yaml") == (2, (
        "recipe.yaml:3:13: output_dir: output folder 'blocker/out' cannot be made: 'blocker' is not a folder "
        "(use --output-dir, or set output_dir)\n"))
    assert api.requests == [] and tree(root) == before


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Path:
    """A small read-only tmpfs; skipped where mounting is refused (not root, no CAP_SYS_ADMIN)."""
    point = tmp_path / "ro"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield point
    subprocess.run(["umount", str(point)], check=False)


def test_a_read_only_output_folder_is_exit_2_before_anything_is_sent(
        read_only_mount: Path, api: FakeOpenAI) -> None:
    root = read_only_mount.parent
    write(root, {"recipe.yaml": ONE.format(extra="output_dir: ro\n")})
    before = tree(root)
    assert run(root, api, "recipe.yaml") == (2, (
        "recipe.yaml:3:13: output_dir: output folder 'ro' is read-only "
        "(make it writable, or use --output-dir to write elsewhere)\n"))
    assert api.requests == [] and tree(root) == before
    assert os.listdir(read_only_mount) == []
