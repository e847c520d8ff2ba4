"""Edits through the Batch API (issue 13.7): the JSON form of /v1/images/edits, inputs uploaded once
through the Files API, collected exactly as a direct run records them, and the fall-back to direct
edits when a server refuses the form. The real SDK over HTTP against FakeOpenAI, through the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI
from PIL import Image, ImageDraw
from test_batch import KEY, cli, collect_all, images, stable, states
from test_run import by_task, make_project, manifest

CATALOG = "sku,name\nmug,ceramic mug\nboard,cutting board\nlamp,brass lamp\n"

# beach: two shared project files (one upload each for every row); both: a batched generation's
# output (wave 2, one upload per row) and the shared product photo again (no new upload).
RECIPE = """\
version: 1
name: cat
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: beach
    edit:
      image: product.png
      mask: mask.png
      prompt: "A {{ item.name }} on a tropical beach"
  - id: both
    edit:
      image: [{step: hero}, product.png]
      prompt: "The {{ item.name }} twice"
"""

EDITS_ONLY = """\
version: 1
name: cat
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}"}
steps:
  - id: beach
    edit:
      image: product.png
      mask: mask.png
      prompt: "A {{ item.name }} on a tropical beach"
"""

FALLBACK = "edits sent directly, at the synchronous price: the server refused JSON edits in a batch"


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def project(root: Path, recipe: str) -> Path:
    make_project(root, recipe, CATALOG)
    Image.new("RGB", (256, 256), (200, 120, 40)).save(root / "product.png")
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    ImageDraw.Draw(mask).ellipse((64, 64, 192, 192), fill=(255, 255, 255, 0))
    mask.save(root / "mask.png")
    return root


def vision_uploads(api: FakeOpenAI) -> list[bytes]:
    return [q.files[0].data for q in api.requests
            if q.method == "POST" and q.path == "/v1/files" and q.fields["purpose"] == ["vision"]]


def batch_lines(api: FakeOpenAI, endpoint: str) -> list[dict[str, Any]]:
    """The JSONL lines of every uploaded batch file for this endpoint."""
    out = []
    for q in api.requests:
        if q.method == "POST" and q.path == "/v1/files" and q.fields["purpose"] == ["batch"]:
            for text in q.files[0].data.decode().splitlines():
                line = json.loads(text)
                if line["url"] == endpoint:
                    out.append(line)
    return out


def file_data(api: FakeOpenAI, file_id: str) -> bytes:
    data = api.batch_api.files[file_id]["data"]
    assert isinstance(data, bytes)
    return data


def test_edits_go_in_batches_inputs_uploaded_once_collected_as_a_direct_run(tmp_path: Path,
                                                                            api: FakeOpenAI) -> None:
    root = project(tmp_path / "batched", RECIPE)
    shutil.copytree(root, tmp_path / "direct")

    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert "submitted 6 request(s) in 2 batch(es)" in r.output  # hero (generations), beach (edits)
    assert [d["endpoint"] for d in states(root)] == ["/v1/images/generations", "/v1/images/edits"]
    assert [q for q in api.requests if q.path.startswith("/v1/images/")] == []  # nothing direct
    product, mask = (root / "product.png").read_bytes(), (root / "mask.png").read_bytes()
    # once each, for three rows: the bytes a direct call sends
    assert sorted(vision_uploads(api)) == sorted([product, mask])

    lines = batch_lines(api, "/v1/images/edits")
    assert len(lines) == 3
    edits = next(d for d in states(root) if d["endpoint"] == "/v1/images/edits")
    for line in lines:
        body = line["body"]
        assert line["method"] == "POST" and line["custom_id"] in edits["requests"]
        assert set(body) == {"n", "size", "quality", "prompt", "model", "images", "mask"}
        assert (body["model"], body["n"], body["size"], body["quality"]) == ("gpt-image-2", 1, "1024x1024", "low")
        assert [file_data(api, i["file_id"]) for i in body["images"]] == [product]
        assert file_data(api, body["mask"]["file_id"]) == mask
        req = edits["requests"][line["custom_id"]]
        assert body["prompt"] == req["prompt"] and req["endpoint"] == "/v1/images/edits"
        assert [i["role"] for i in req["inputs"]] == ["image", "mask"]
    remembered = json.loads((root / "out/cat/.dalle-pipe/batch-uploads.json").read_text())
    (server,) = remembered["servers"].values()
    assert sorted(server["files"]) == sorted(hashlib.sha256(b).hexdigest() for b in (product, mask))
    assert server["refused"] is None

    # wave 1 lands; wave 2 sends `both`: each row's hero uploaded once, the product photo not again
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 1 and "submitted 3 request(s) in 1 batch(es)" in r.output, r.output
    heroes = [(root / f"out/cat/{k}/hero.png").read_bytes() for k in ("mug", "board", "lamp")]
    assert sorted(vision_uploads(api)) == sorted([product, mask, *heroes])
    both = [ln for ln in batch_lines(api, "/v1/images/edits") if ln["body"]["prompt"].startswith("The ")]
    assert len(both) == 3
    assert all(len(ln["body"]["images"]) == 2 and "mask" not in ln["body"] for ln in both)
    assert sorted(file_data(api, ln["body"]["images"][0]["file_id"]) for ln in both) == sorted(heroes)
    assert {file_data(api, ln["body"]["images"][1]["file_id"]) for ln in both} == {product}
    r = collect_all(root, api)
    assert r.exit_code == 0, r.output
    assert [q for q in api.requests if q.path.startswith("/v1/images/")] == []

    # the same recipe, run directly: the same files, and the same manifest entries at twice the cost
    other = tmp_path / "direct"
    r = cli(other, api, "run", "recipe.yaml")
    assert r.exit_code == 0, r.output
    sent = [q for q in api.requests if q.path == "/v1/images/edits"]
    assert len(sent) == 6 and {q.images[0].data for q in sent if q.mask is not None} == {product}
    by_prompt = {q.params["prompt"]: q for q in sent}
    for line in batch_lines(api, "/v1/images/edits"):  # each line: the direct call's fields and files
        q = by_prompt[line["body"]["prompt"]]
        fields = {k: str(v) for k, v in line["body"].items() if k not in ("images", "mask")}
        assert fields == q.params
        assert [file_data(api, i["file_id"]) for i in line["body"]["images"]] == [f.data for f in q.images]
        assert (file_data(api, line["body"]["mask"]["file_id"]) if "mask" in line["body"] else None) == \
            (q.mask.data if q.mask is not None else None)
    assert images(root / "out/cat") == images(other / "out/cat")
    batched, plain = manifest(root, "cat"), manifest(other, "cat")
    assert stable(batched) == stable(plain)
    for key, e in by_task(batched).items():
        d = by_task(plain)[key]
        assert e["cost_usd"] == pytest.approx(d["cost_usd"] / 2, abs=1e-6) and e["cost_usd"] > 0
        if e["step"] != "hero":
            assert e["endpoint"] == d["endpoint"] == "/v1/images/edits"
            assert e["inputs"] == d["inputs"] and e["params"] == d["params"]
            assert e["fingerprint"] == d["fingerprint"] and e["status"] == "generated"


def test_plan_prices_gpt_edits_at_half_in_the_batch_column(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", RECIPE + """\
  - id: old
    edit: {model: dall-e-2, image: product.png, mask: mask.png, prompt: "A {{ item.name }}", size: 256x256,
           quality: standard}
""")
    r = cli(root, api, "plan", "recipe.yaml", "--json")
    assert r.exit_code == 0, r.output
    rows = {s["step"]: s for s in json.loads(r.output)["recipes"][0]["steps"]}
    for step in ("beach", "both"):
        assert rows[step]["cost_usd"] > 0
        assert rows[step]["batch_cost_usd"] == pytest.approx(rows[step]["cost_usd"] / 2, abs=2e-6)
    assert rows["old"]["cost_usd"] > 0  # dall-e-2 has no JSON edits: it goes direct, at full price
    assert rows["old"]["batch_cost_usd"] == rows["old"]["cost_usd"]


def test_a_resubmitted_edit_is_not_uploaded_again(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", EDITS_ONLY)
    api.batch_api.fail = lambda line: ("500",) if "mug" in line["body"]["prompt"] else None
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 1 and "2 image(s) landed, 1 request(s) failed" in r.output, r.output
    assert len(vision_uploads(api)) == 2
    api.batch_api.fail = None
    api.clear()
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0 and "submitted 1 request(s) in 1 batch(es)" in r.output, r.output
    assert vision_uploads(api) == []  # the same bytes: their file ids are remembered
    (line,) = batch_lines(api, "/v1/images/edits")
    assert line["body"]["prompt"] == "A ceramic mug on a tropical beach"
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert manifest(root, "cat")["counts"]["failed"] == 0


def test_edit_lines_refused_fall_back_to_direct_edits(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", EDITS_ONLY)
    api.batch_api.json_edits = False  # a server whose batches take no JSON edits: 400 on each line
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    r = cli(root, api, "batch", "collect", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert (f"{FALLBACK} (HTTP 400 invalid_value: 'image' must be a file: a JSON body cannot carry one.)"
            in r.output)
    assert "0 request(s) failed" in r.output and "3 generated" in r.output
    sent = [q for q in api.requests if q.path == "/v1/images/edits"]
    assert len(sent) == 3 and all(q.mask is not None for q in sent)  # made directly, multipart
    m = by_task(manifest(root, "cat"))
    assert {e["status"] for e in m.values()} == {"generated"}
    assert all(e["endpoint"] == "/v1/images/edits" and e["error"] is None for e in m.values())
    # remembered: the next run sends its edits directly at once, and says so
    (root / "products.csv").write_text(CATALOG + "vase,glass vase\n")
    api.clear()
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert "the server refused JSON edits in a batch earlier" in r.output and "batch-uploads.json" in r.output
    assert [q.path for q in api.requests] == ["/v1/images/edits"]
    assert by_task(manifest(root, "cat"))["beach@vase#0"]["status"] == "generated"


def test_an_upload_refused_falls_back_to_direct_edits_at_once(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", EDITS_ONLY)
    api.batch_api.refuse_purposes = {"vision"}
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert (f"  note: {FALLBACK} (could not upload an input image: HTTP 400 invalid_value: "
            "Invalid value for 'purpose': 'vision'.)\n" in r.output)
    assert "3 generated" in r.output and "submitted" not in r.output
    assert len([q for q in api.requests if q.path == "/v1/images/edits"]) == 3
    assert [d for d in states(root) if d["endpoint"] == "/v1/images/edits"] == []
    assert manifest(root, "cat")["counts"]["generated"] == 3


def test_the_stand_in_knows_the_json_edit_fields_in_strict_mode(api: FakeOpenAI) -> None:
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=api.base_url, max_retries=0)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    image_id = client.files.create(file=("a.png", buf.getvalue(), "image/png"), purpose="vision").id
    good = {"model": "gpt-image-2", "prompt": "p", "images": [{"file_id": image_id}], "quality": "low"}
    bodies = [good, {**good, "image": image_id}, {**good, "images": [{"file_id": "file-nope"}]}]
    rows = [json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/edits", "body": b})
            for i, b in enumerate(bodies)]
    batch_file = client.files.create(file=("in.jsonl", "\n".join(rows).encode(), "application/jsonl"),
                                     purpose="batch")
    batch = client.batches.create(input_file_id=batch_file.id, endpoint="/v1/images/edits",
                                  completion_window="24h")
    batch = client.batches.retrieve(batch.id)
    assert batch.request_counts is not None and batch.request_counts.completed == 1
    assert batch.error_file_id is not None
    errors = {json.loads(x)["custom_id"]: json.loads(x)["response"]["body"]["error"]
              for x in client.files.content(batch.error_file_id).text.splitlines()}
    assert errors["c1"]["code"] == "unknown_parameter" and errors["c1"]["param"] == "image"
    assert errors["c2"]["message"] == "Invalid file id for 'image': 'file-nope'."
    client.close()


def test_batch_uploads_json_names_a_server_without_its_credentials() -> None:
    from dalle_pipe.engine.batch.edits import server_name

    assert server_name("https://user:sk-secret@proxy.example:8443/v1/?key=sk-secret") == \
        "https://proxy.example:8443/v1"
    assert server_name("https://api.openai.com/v1/") == "https://api.openai.com/v1"


def test_an_edits_batch_refused_at_creation_falls_back_on_the_next_run(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", EDITS_ONLY)
    api.batch_api.refuse_endpoints = {"/v1/images/edits"}
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert (f"  note: {FALLBACK} (could not create a batch: HTTP 400 invalid_value: Invalid 'endpoint' or "
            "'completion_window'.)\n  note: 3 edit(s) wait for the next `run --batch` or `batch collect`\n"
            in r.output)
    assert [d["status"] for d in states(root)] == ["abandoned"]
    assert [q for q in api.requests if q.path == "/v1/images/edits"] == []
    api.clear()
    r = cli(root, api, "run", "--batch", "recipe.yaml")
    assert r.exit_code == 0 and "3 generated" in r.output, r.output
    assert "refused JSON edits in a batch earlier" in r.output
    assert [q.path for q in api.requests] == ["/v1/images/edits"] * 3
