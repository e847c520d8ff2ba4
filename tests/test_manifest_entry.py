"""The manifest boundary: typed entries; a wrong type is exit 2 naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_run import invoke, make_project

from dalle_pipe.store.manifest import Entry


def test_an_entry_round_trips_and_keeps_fields_it_does_not_know() -> None:
    doc = {"step": "hero", "key": "mug", "index": 0, "path": "mug/hero.png", "sha256": "a" * 64,
           "status": "generated", "endpoint_host": "api.openai.com", "warnings": ["w"]}
    entry = Entry.from_json(doc)
    assert entry.extra == {"endpoint_host": "api.openai.com", "warnings": ["w"]}
    out = entry.to_json()
    assert {k: out[k] for k in doc} == doc
    assert list(out)[:4] == ["step", "key", "index", "path"] and list(out)[-4:-2] == ["status", "error"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("index", "0", "index: is a string, not an integer"),
    ("approved", 1, "approved: is an integer, not true/false"),
    ("sha256", ["x"], "sha256: is a list, not a string or null"),
])
def test_a_wrong_type_is_refused(field: str, value: object, message: str) -> None:
    doc = {"step": "hero", "key": "mug", "index": 0, "path": "mug/hero.png", "status": "generated", field: value}
    with pytest.raises(ValueError, match=message):
        Entry.from_json(doc)


def test_a_run_on_a_manifest_with_a_wrong_type_exits_2_naming_the_file_and_the_field(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert invoke(root, "run", "--offline", "recipe.yaml", env={"DALLE_PIPE_NO_REPORT": "1"}).exit_code == 0
    path = root / "out/shots/manifest.json"
    doc = json.loads(path.read_text())
    doc["entries"][2]["width"] = "1024"
    path.write_text(json.dumps(doc))
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 2
    assert "manifest.json: not a valid dalle-pipe manifest: entries[2].width: is a string, not an integer or null" \
        in r.output
    assert "Traceback" not in r.output
