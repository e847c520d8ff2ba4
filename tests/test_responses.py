"""The Responses route end to end: `dalle-pipe run` with `provider: {name: openai, api: responses, model: ...}`,
the real SDK over HTTP against tests/fakeapi.py (the image_generation tool)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI, RecordedRequest
from PIL import Image
from test_run import by_task, invoke, make_project, manifest

KEY = "sk-test-responses-7c1d9e0b2a"

RECIPE = """\
version: 1
name: shots
provider: {name: openai, api: responses, model: gpt-5.1}
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}", where: "item.active == 'yes'"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "Same product on a beach. Before: {{ steps.hero.revised_prompt }}"
"""


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        server.revise = lambda prompt, i: f"[call {i}] {prompt}, photographed in soft daylight"
        yield server


def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url}


def run(root: Path, api: FakeOpenAI, *args: str, target: str = "recipe.yaml") -> Any:
    return invoke(root, "run", target, *args, env=env(api))


def calls(api: FakeOpenAI) -> list[RecordedRequest]:
    return [q for q in api.image_requests if q.path == "/v1/responses"]


def by_response_id(api: FakeOpenAI) -> dict[str, dict[str, Any]]:
    return {q.response["id"]: q.response for q in calls(api) if q.response is not None}


def image_call(response: dict[str, Any]) -> dict[str, Any]:
    return next(o for o in response["output"] if o["type"] == "image_generation_call")


def data_url_bytes(url: str) -> bytes:
    head, _, payload = url.partition(",")
    assert head == "data:image/png;base64", head
    return base64.b64decode(payload, validate=True)


def test_every_entry_carries_the_revised_prompt_the_server_returned(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    r = run(root, api)
    assert r.exit_code == 0, r.output
    sent = calls(api)
    assert len(sent) == 4 and not [q for q in api.image_requests if q.path.startswith("/v1/images")]
    answers = by_response_id(api)
    m = manifest(root)
    api_entries = [e for e in m["entries"] if e["step"] in ("hero", "beach")]
    assert len(api_entries) == 4
    for e in api_entries:
        answer = answers[e["response_id"]]
        assert e["revised_prompt"] == image_call(answer)["revised_prompt"]
        assert e["revised_prompt"].startswith("[call ")
        assert e["endpoint"] == "/v1/responses"
        assert e["provider"] == "openai" and e["model"] == "gpt-image-2" and e["mainline_model"] == "gpt-5.1"
        assert e["usage"]["usage"] == answer["usage"]  # the mainline model's usage
        assert e["usage"]["tool_usage"]["image_gen"] == answer["tool_usage"]["image_gen"]
        assert e["cost_usd"] is not None and e["cost_usd"] > 0
        assert e["request_id"] and e["attempts"] == 1 and e["possible_duplicate_charge"] is False
    for q in sent:
        body = q.json
        assert body is not None and body["model"] == "gpt-5.1"
        assert body["tool_choice"] == {"type": "image_generation"}
        tool = body["tools"][0]
        assert tool["type"] == "image_generation" and tool["model"] == "gpt-image-2"  # always named
        assert tool["size"] == "1024x1024" and tool["quality"] == "low" and "n" not in tool
    # the revised prompt chains into the next step's prompt
    m2 = by_task(m)
    assert m2["beach@mug#0"]["prompt"] == f"Same product on a beach. Before: {m2['hero@mug#0']['revised_prompt']}"
    # a rerun sends nothing
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0 and "0 generated" in r.output, r.output
    assert calls(api) == []


def test_an_edit_sends_the_mask_and_image_on_disk_as_data_urls(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    r = run(root, api, "--items", "mug")
    assert r.exit_code == 0, r.output
    out = root / "out" / "shots" / "mug"
    edit = next(q for q in calls(api) if q.json and q.json["tools"][0]["action"] == "edit")
    assert edit.json is not None
    tool = edit.json["tools"][0]
    assert data_url_bytes(tool["input_image_mask"]["image_url"]) == (out / "bg_mask.png").read_bytes()
    images = [p for p in edit.json["input"][0]["content"] if p["type"] == "input_image"]
    assert [data_url_bytes(p["image_url"]) for p in images] == [(out / "hero.png").read_bytes()]
    generate = next(q for q in calls(api) if q is not edit)
    assert generate.json is not None and generate.json["tools"][0]["action"] == "generate"
    assert "input_image_mask" not in generate.json["tools"][0]


def test_a_mask_file_from_disk_is_sent_byte_for_byte(tmp_path: Path, api: FakeOpenAI) -> None:
    root = tmp_path / "p"
    root.mkdir()
    Image.new("RGB", (256, 256), (30, 60, 90)).save(root / "photo.png")
    mask = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    mask.paste((0, 0, 0, 0), (64, 64, 192, 192))
    mask.save(root / "hole.png", optimize=True)  # any encoder settings: what is on disk is what goes
    recipe = """\
version: 1
name: fix
provider: {name: openai, api: responses, model: gpt-5.1}
model: gpt-image-1.5
params: {background: opaque}
steps:
  - id: patched
    edit:
      image: photo.png
      mask: hole.png
      prompt: "fill the hole with moss"
      input_fidelity: high
      output_format: webp
      output_compression: 80
      moderation: low
"""
    make_project(root, recipe)
    r = run(root, api)
    assert r.exit_code == 0, r.output
    body = calls(api)[0].json
    assert body is not None
    tool = body["tools"][0]
    assert data_url_bytes(tool["input_image_mask"]["image_url"]) == (root / "hole.png").read_bytes()
    assert tool == {"type": "image_generation", "model": "gpt-image-1.5", "action": "edit",
                    "input_fidelity": "high", "output_format": "webp", "output_compression": 80,
                    "background": "opaque", "moderation": "low",
                    "input_image_mask": tool["input_image_mask"]}
    e = by_task(manifest(root, "fix"))["patched@#0"]
    assert e["path"] == "patched.webp" and e["format"] == "webp"
    with Image.open(root / "out" / "fix" / e["path"]) as img:
        assert img.size == (256, 256)  # size auto: the input's


def test_n_images_are_n_calls_under_one_task(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = """\
version: 1
name: many
provider: {name: openai, api: responses, model: gpt-5.1}
model: gpt-image-2
throttle: {concurrency: 1, max_retries: 3}
steps:
  - id: shot
    generate: {prompt: "a ceramic mug with steam rising", n: 3, size: 1024x1536, safety_identifier: user-42}
"""
    root = make_project(tmp_path / "p", recipe)
    api.script(["ok", ("500",), "ok", "ok"])
    r = run(root, api)
    assert r.exit_code == 0, r.output
    sent = calls(api)
    assert len(sent) == 4  # 3 images, one retried after a 500
    for q in sent:
        assert q.json is not None and q.json["safety_identifier"] == "user-42"  # top level, not in the tool
        assert "safety_identifier" not in q.json["tools"][0] and "n" not in q.json["tools"][0]
    m = by_task(manifest(root, "many"))
    entries = [m[f"shot@#{i}"] for i in range(3)]
    assert [e["index"] for e in entries] == [0, 1, 2]
    assert [e["path"] for e in entries] == ["shot-0.png", "shot-1.png", "shot-2.png"]
    assert len({e["response_id"] for e in entries}) == 3
    assert len({e["revised_prompt"] for e in entries}) == 3
    assert len({e["sha256"] for e in entries}) == 3
    answers = by_response_id(api)
    for e in entries:
        assert e["revised_prompt"] == image_call(answers[e["response_id"]])["revised_prompt"]
        assert e["status"] == "generated" and e["params"]["n"] == 3
        assert e["attempts"] == 4 and e["possible_duplicate_charge"] is False  # the task's, summed
        with Image.open(root / "out" / "many" / e["path"]) as img:
            assert img.size == (1024, 1536)
    api.clear()
    assert run(root, api).exit_code == 0
    assert calls(api) == []


def test_a_refusal_is_a_200_with_a_failed_call_recorded_and_never_retried(tmp_path: Path,
                                                                         api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    api.script([("moderation",)])
    r = run(root, api, "--items", "mug")
    assert r.exit_code == 1
    m = by_task(manifest(root))
    hero = m["hero@mug#0"]
    assert hero["status"] == "failed" and hero["attempts"] == 1
    assert hero["error"]["type"] == "refused"
    assert hero["error"]["code"] == "moderation_blocked" and hero["error"]["status"] == 200
    assert m["beach@mug#0"]["status"] == "skipped"
    assert len(calls(api)) == 1


def test_a_failed_call_among_n_keeps_the_images_that_landed_and_a_rerun_pays_only_for_the_rest(
    tmp_path: Path, api: FakeOpenAI
) -> None:
    recipe = """\
version: 1
name: many
provider: {name: openai, api: responses, model: gpt-5.1}
model: gpt-image-2
throttle: {concurrency: 1}
steps:
  - id: shot
    generate: {prompt: "a leather wallet on marble", n: 3}
"""
    root = make_project(tmp_path / "p", recipe)
    api.script(["ok", ("moderation",)])
    r = run(root, api)
    assert r.exit_code == 1
    assert len(calls(api)) == 2  # the third call is not made after a refusal
    m = by_task(manifest(root, "many"))
    first = m["shot@#0"]
    assert first["status"] == "failed" and first["sha256"] and first["response_id"]
    assert first["error"]["code"] == "moderation_blocked"
    landed = (root / "out" / "many" / "shot-0.png").read_bytes()
    assert m["shot@#1"]["status"] == m["shot@#2"]["status"] == "failed"
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert len(calls(api)) == 2  # only the two missing images
    m = by_task(manifest(root, "many"))
    assert [m[f"shot@#{i}"]["status"] for i in range(3)] == ["generated"] * 3
    assert (root / "out" / "many" / "shot-0.png").read_bytes() == landed


def test_changing_the_mainline_model_makes_the_images_again(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = """\
version: 1
name: one
provider: {name: openai, api: responses, model: gpt-5.1}
model: gpt-image-2
steps:
  - id: shot
    generate: {prompt: "a wooden cutting board with fresh vegetables, overhead shot"}
"""
    root = make_project(tmp_path / "p", recipe)
    assert run(root, api).exit_code == 0
    before = by_task(manifest(root, "one"))["shot@#0"]
    (root / "recipe.yaml").write_text(recipe.replace("gpt-5.1", "gpt-5.2"))
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert len(calls(api)) == 1 and calls(api)[0].json["model"] == "gpt-5.2"  # type: ignore[index]
    after = by_task(manifest(root, "one"))["shot@#0"]
    assert after["fingerprint"] != before["fingerprint"] and after["mainline_model"] == "gpt-5.2"
    assert after["endpoint"] == "/v1/responses"
    history = list((root / "out" / "one" / ".dalle-pipe" / "history").rglob("shot.png"))
    assert len(history) == 1  # the paid image it replaced is kept


def test_images_route_and_responses_route_do_not_share_images(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = RECIPE.replace("provider: {name: openai, api: responses, model: gpt-5.1}\n", "")
    root = make_project(tmp_path / "p", recipe)
    assert run(root, api, "--items", "mug", "--only", "hero").exit_code == 0
    (root / "recipe.yaml").write_text(RECIPE)
    api.clear()
    assert run(root, api, "--items", "mug", "--only", "hero").exit_code == 0
    assert len(calls(api)) == 1


@pytest.mark.parametrize(
    "change,message",
    [
        ("model: gpt-image-2\n", None),
        ("model: dall-e-3\n", "dall-e-3 cannot be the Responses API image_generation tool model"),
        ("model: gpt-image-2\nparams: {style: vivid}\n", "style is not accepted by the Responses API"),
        ("model: gpt-image-2\nparams: {response_format: b64_json}\n", "response_format is not accepted by the"),
        ("model: gpt-image-2\nparams: {n: 11}\n", "params.n: must be at most 10"),
    ],
)
def test_validate_checks_the_route_before_anything_is_paid(tmp_path: Path, api: FakeOpenAI, change: str,
                                                           message: str | None) -> None:
    recipe = f"""\
version: 1
name: v
provider: {{name: openai, api: responses, model: gpt-5.1}}
{change}steps:
  - id: shot
    generate: {{prompt: "a mug"}}
"""
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "validate", "recipe.yaml", env=env(api))
    if message is None:
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2 and message in r.output, r.output
    r = run(root, api)
    assert r.exit_code == 2 and calls(api) == []


@pytest.mark.parametrize(
    "provider,where,message",
    [
        ("{name: openai, api: responses}", "recipe.yaml:3:11: provider:", "needs the mainline model"),
        ("{name: openai, api: responses, model: gpt-image-2}", "recipe.yaml:3:49: provider.model:",
         "gpt-image-2 is an image model"),
    ],
)
def test_validate_needs_a_mainline_model(tmp_path: Path, api: FakeOpenAI, provider: str, where: str,
                                         message: str) -> None:
    recipe = f"""\
version: 1
name: v
provider: {provider}
steps:
  - id: shot
    generate: {{prompt: "a mug"}}
"""
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "validate", "recipe.yaml", env=env(api))
    assert r.exit_code == 2
    assert where in r.output and message in r.output, r.output


def test_offline_previews_a_responses_recipe(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    r = invoke(root, "run", "--offline", "recipe.yaml", env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert r.exit_code == 0, r.output
    assert calls(api) == []


def test_the_key_appears_nowhere(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    api.script([("moderation",), ("500",), ("noimage",)])
    r = run(root, api, "--json")
    seen = r.output
    for path in root.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    assert KEY not in seen and KEY[-10:] not in seen


def test_sizes_from_the_tool_land_on_disk(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE.replace("size: 1024x1024", "size: 1536x1024"))
    assert run(root, api, "--items", "mug").exit_code == 0
    for name in ("hero.png", "beach.png"):
        with Image.open(io.BytesIO((root / "out" / "shots" / "mug" / name).read_bytes())) as img:
            assert img.size == (1536, 1024)
