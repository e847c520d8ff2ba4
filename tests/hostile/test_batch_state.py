"""A hand-edited or damaged batch state stops every batch command with exit 2 naming the file:
skipping it would forget requests already queued in a batch and pay for them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI
from test_batch import CATALOG, SIMPLE, cli
from test_run import make_project

from dalle_pipe.engine import batch as batch_mod


def _submitted(tmp_path: Path, api: FakeOpenAI) -> tuple[Path, Path]:
    root = make_project(tmp_path / "p", SIMPLE, CATALOG)
    api.batch_api.hold = True
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    (state,) = sorted(batch_mod.states_dir(root / "out" / "cat").glob("*.json"))
    return root, state


def _edit(state: Path, change: Any) -> None:
    doc = json.loads(state.read_text())
    change(doc)
    state.write_text(json.dumps(doc))


CASES = {
    "not JSON": (lambda s: s.write_text("{half"), "not valid JSON"),
    "a list": (lambda s: s.write_text("[]"), "not a JSON object"),
    "requests a list": (lambda s: _edit(s, lambda d: d.update(requests=[])), "requests: has the wrong type (list)"),
    "a request a string": (lambda s: _edit(s, lambda d: d["requests"].update({k: "x" for k in d["requests"]})),
                           "not an object"),
    "fingerprint a number": (
        lambda s: _edit(s, lambda d: [r.update(fingerprint=7) for r in d["requests"].values()]),
        ".fingerprint: has the wrong type (int)"),
    "paths missing": (lambda s: _edit(s, lambda d: [r.pop("paths") for r in d["requests"].values()]),
                      ".paths: missing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", [("batch", "status"), ("batch", "collect"), ("run", "--batch"), ("run",)])
def test_a_damaged_batch_state_is_exit_2_naming_the_file_and_nothing_is_sent(
        tmp_path: Path, api: FakeOpenAI, case: str, command: tuple[str, ...]) -> None:
    root, state = _submitted(tmp_path, api)
    damage, reason = CASES[case]
    damage(state)
    damaged = state.read_bytes()
    api.clear()
    r = cli(root, api, *command, "recipe.yaml")
    assert r.exit_code == 2, r.output
    assert "not a valid dalle-pipe batch state" in r.output and state.name in r.output, r.output
    assert reason in r.output, r.output
    assert "Traceback" not in r.output
    assert [q for q in api.requests if q.method == "POST"] == []
    assert state.read_bytes() == damaged
    assert not (root / "out" / "cat" / "mug").exists()
