"""Gates that do not pass by accident: offline approvals, stale approvals, loopback-made images."""

from __future__ import annotations

import json
from pathlib import Path

from fakeapi import FakeOpenAI
from test_run import invoke, make_project

from dalle_pipe.engine.hosts import endpoint_host, is_loopback, reusable_from

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items: [{id: mug, what: a ceramic mug}, {id: board, what: a cutting board}]
steps:
  - id: hero
    generate: {prompt: "{{ item.what }} on marble"}
"""
NO_PAGE = {"DALLE_PIPE_NO_REPORT": "1"}


def entries(root: Path) -> dict[str, dict[str, object]]:
    doc = json.loads((root / "out/shots/manifest.json").read_text())
    return {f"{e['step']}@{e['key']}": e for e in doc["entries"]}


def test_check_fails_on_an_approved_image_made_offline(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    assert invoke(root, "run", "--offline", "recipe.yaml", env=NO_PAGE).exit_code == 0
    assert invoke(root, "approve", "mug/hero", "board/hero", "--recipe", "recipe.yaml").exit_code == 0
    r = invoke(root, "run", "--check", "--offline", "recipe.yaml", env=NO_PAGE)
    assert r.exit_code == 0, r.output  # offline checks offline: the approval stands
    r = invoke(root, "run", "--check", "recipe.yaml", env=NO_PAGE)
    assert r.exit_code == 1, r.output
    assert "  to make: hero@mug -> mug/hero.png" in r.output


def test_stale_approvals_are_named_on_the_terminal(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    assert invoke(root, "run", "--offline", "recipe.yaml", env=NO_PAGE).exit_code == 0
    assert invoke(root, "approve", "mug/hero", "--recipe", "recipe.yaml").exit_code == 0
    (root / "recipe.yaml").write_text(RECIPE.replace("on marble", "on slate"))
    r = invoke(root, "run", "--check", "--offline", "recipe.yaml", env=NO_PAGE)
    assert r.exit_code == 1, r.output  # board is out of date; mug is approved
    stale = ("warning: hero@mug: approved image is stale (its recipe or inputs changed): kept and still "
             "approved (dalle-pipe approve --revoke lets it be made again)")
    assert stale in r.output.splitlines()
    r = invoke(root, "run", "--offline", "recipe.yaml", env=NO_PAGE)
    assert r.exit_code == 0, r.output
    assert stale in r.output.splitlines()
    assert "hero@board" not in r.output


def test_images_made_against_a_local_stand_in_are_recorded_with_their_host(tmp_path: Path,
                                                                          api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    env = {**NO_PAGE, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url}
    assert invoke(root, "run", "recipe.yaml", env=env).exit_code == 0
    host = entries(root)["hero@mug"]["endpoint_host"]
    assert host == api.base_url.split("//", 1)[1].split("/", 1)[0]
    assert entries(root)["hero@mug"]["endpoint"] == "/v1/images/generations"
    # against the real endpoint they are not up to date (--check sends nothing)
    r = invoke(root, "run", "--check", "recipe.yaml", env=NO_PAGE)
    assert r.exit_code == 1, r.output
    assert "  to make: hero@mug -> mug/hero.png" in r.output
    # against another local stand-in they are
    r = invoke(root, "run", "--check", "recipe.yaml", env={**NO_PAGE, "OPENAI_BASE_URL": "http://localhost:9/v1"})
    assert r.exit_code == 0, r.output
    assert f"note: 2 image(s) reused were made against {host}, not localhost:9" in r.output


def test_hosts() -> None:
    assert endpoint_host(None) == "api.openai.com"
    assert endpoint_host("http://user:pw@127.0.0.1:8080/v1") == "127.0.0.1:8080"
    assert [is_loopback(h) for h in ("127.0.0.1:80", "localhost", "[::1]:5", "api.openai.com", "10.0.0.1")] == [
        True, True, True, False, False]
    assert reusable_from(None, "api.openai.com")  # entries from before the field match any host
    assert not reusable_from("127.0.0.1:9", "api.openai.com")
    assert reusable_from("proxy.example:443", "api.openai.com")
    assert reusable_from("api.openai.com", "127.0.0.1:9")
