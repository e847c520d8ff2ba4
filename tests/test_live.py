"""A live smoke test against the real OpenAI API: `pytest -m live` with OPENAI_API_KEY set.

Never run by default (pyproject's addopts deselect the `live` marker) and skipped without a key.
It makes one low-quality 1024x1024 image, one masked edit of it, and one Responses-route image,
for well under $0.10 (about $0.02-0.03 at the published prices; `--max-cost 0.10` enforces the
limit), and checks the files, the manifest, the cost recorded, and that a rerun sends nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from test_run import by_task, invoke, manifest

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY (a real, paid API call)"),
]

LIMIT_USD = 0.10

IMAGES = """\
version: 1
name: live
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items: [{id: apple}]
steps:
  - id: hero
    generate: {prompt: "a red apple on a plain white table, studio light"}
  - id: spot
    mask: {size_of: {step: hero}, shapes: [{circle: {center: [0.5, 0.5], radius: 0.3}}]}
  - id: green
    edit: {image: {step: hero}, mask: {step: spot}, prompt: "a green apple on a plain white table"}
"""

RESPONSES = """\
version: 1
name: live-responses
provider: {name: openai, api: responses, model: gpt-5-mini}
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items: [{id: pear}]
steps:
  - id: hero
    generate: {prompt: "a yellow pear on a plain white table, studio light"}
"""


def _env() -> dict[str, str]:  # api.openai.com, never a stand-in
    return {"OPENAI_API_KEY": os.environ["OPENAI_API_KEY"], "OPENAI_BASE_URL": None}  # type: ignore[dict-item]


def test_live_images_edit_and_responses_route(tmp_path: Path) -> None:
    root = tmp_path / "live"
    root.mkdir()
    (root / "images.yaml").write_text(IMAGES)
    (root / "responses.yaml").write_text(RESPONSES)
    spent = 0.0
    for recipe, name, made in (("images.yaml", "live", 3), ("responses.yaml", "live-responses", 1)):
        r = invoke(root, "run", recipe, "--max-cost", str(LIMIT_USD - spent), env=_env())
        assert r.exit_code == 0, r.output
        assert f"{name}: {made} generated, 0 up to date, 0 failed" in r.output
        entries = by_task(manifest(root, name))
        for e in entries.values():
            img = Image.open(root / "out" / name / e["path"])
            assert img.size == (1024, 1024)
            if e["provider"] == "local":
                continue
            assert e["status"] == "generated" and e["request_id"]
            assert e["cost_usd"] is not None and e["cost_usd"] > 0
            spent += e["cost_usd"]
        if name == "live-responses":
            e = entries["hero@pear#0"]
            assert e["endpoint"] == "/v1/responses" and e["mainline_model"] == "gpt-5-mini" and e["response_id"]
            assert e["revised_prompt"]
        else:
            assert entries["green@apple#0"]["inputs"][1]["role"] == "mask"
        before = (root / "out" / name / "manifest.json").read_bytes()
        again = invoke(root, "run", recipe, env=_env())
        assert again.exit_code == 0, again.output
        assert f"{name}: 0 generated, {made} up to date" in again.output  # a rerun sends nothing
        assert (root / "out" / name / "manifest.json").read_bytes() == before
    assert 0 < spent < LIMIT_USD
