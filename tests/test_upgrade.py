"""Upgrades pay nothing: a project made by the code on main before the engine redesign stays up to date."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fakeapi import FakeOpenAI
from test_run import invoke

FIXTURE = Path(__file__).parent / "data" / "upgrade_main"


def test_upgrading_from_the_previous_manifest_pays_nothing(tmp_path: Path, api: FakeOpenAI) -> None:
    root = tmp_path / "p"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("make_fixture.py"))
    before = json.loads((root / "out/shots/manifest.json").read_text())
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"}
    r = invoke(root, "run", "recipe.yaml", env=env)
    assert r.exit_code == 0, r.output
    assert api.image_requests == []
    assert "0 generated, 8 up to date" in r.output
    after = json.loads((root / "out/shots/manifest.json").read_text())
    assert [e["sha256"] for e in after["entries"]] == [e["sha256"] for e in before["entries"]]
    assert all(e["status"] == "up_to_date" for e in after["entries"])
    assert after["format"] == 2
    # --check agrees, and plan shows nothing to make
    assert invoke(root, "run", "--check", "recipe.yaml", env=env).exit_code == 0
