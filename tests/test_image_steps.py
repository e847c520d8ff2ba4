"""Image steps through `dalle-pipe run`: reference lists, chaining, legacy servers, the mask command."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fakeapi import FakeOpenAI
from PIL import Image
from test_run import by_task, invoke, make_project, manifest

KEY = "sk-test-images-0123456789"




def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url}


def png(path: Path, size: tuple[int, int], color: tuple[int, int, int, int], exif_rotate: bool = False) -> None:
    img = Image.new("RGBA", size, color)
    if exif_rotate:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 CW on display
        img.convert("RGB").save(path.with_suffix(".jpg"), exif=exif)
        return
    img.save(path)


def test_edit_with_reference_images_uploads_them_all_and_masks_the_first(tmp_path: Path, api: FakeOpenAI) -> None:
    root = tmp_path / "p"
    root.mkdir()
    png(root / "logo.png", (1024, 1024), (255, 0, 0, 255))
    png(root / "texture.png", (512, 512), (0, 255, 0, 255))
    recipe = """\
version: 1
name: refs
model: gpt-image-1.5
steps:
  - id: base
    generate: {prompt: "a plain tote bag", size: 1024x1024}
  - id: cut
    mask: {size_of: {step: base}, shapes: [{rect: {box: [0.25, 0.25, 0.75, 0.75]}}]}
  - id: branded
    edit:
      image: [{step: base}, logo.png, texture.png]
      mask: {step: cut}
      prompt: "print the logo on the bag using the texture"
      input_fidelity: high
  - id: again
    edit:
      image: {step: branded}
      prompt: "same bag, evening light"
"""
    make_project(root, recipe)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    edits = [q for q in api.image_requests if q.path == "/v1/images/edits"]
    assert len(edits) == 2
    first = edits[0]
    out = root / "out" / "refs"
    assert [f.data for f in first.images] == [(out / "base.png").read_bytes(), (root / "logo.png").read_bytes(),
                                              (root / "texture.png").read_bytes()]
    assert first.mask is not None and first.mask.data == (out / "cut.png").read_bytes()
    assert first.fields["input_fidelity"] == ["high"]
    # an edit's output is the input of the next edit
    assert [f.data for f in edits[1].images] == [(out / "branded.png").read_bytes()]
    m = by_task(manifest(root, "refs"))
    assert [i["role"] for i in m["branded@#0"]["inputs"]] == ["image", "image", "image", "mask"]
    assert [i["path"] for i in m["branded@#0"]["inputs"]] == ["base.png", "logo.png", "texture.png", "cut.png"]


def test_legacy_dalle2_edit_and_variation_and_revised_prompt_chaining(tmp_path: Path, api: FakeOpenAI) -> None:
    root = tmp_path / "p"
    root.mkdir()
    png(root / "photo.png", (512, 512), (10, 20, 30, 255))
    recipe = """\
version: 1
name: legacy
steps:
  - id: hero
    generate: {model: dall-e-3, prompt: "a lighthouse", size: 1024x1024}
  - id: hole
    mask: {size: 512x512, shapes: [{circle: {center: [0.5, 0.5], radius: 0.25}}]}
  - id: patched
    edit:
      model: dall-e-2
      image: photo.png
      mask: {step: hole}
      prompt: "{{ steps.hero.revised_prompt }}, as a patch"
      size: 512x512
  - id: variants
    variation: {model: dall-e-2, image: photo.png, n: 2, size: 256x256}
"""
    make_project(root, recipe)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    m = by_task(manifest(root, "legacy"))
    revised = m["hero@#0"]["revised_prompt"]
    assert revised
    assert m["patched@#0"]["prompt"] == f"{revised}, as a patch"
    edit = next(q for q in api.image_requests if q.path == "/v1/images/edits")
    assert edit.fields["model"] == ["dall-e-2"] and edit.fields["prompt"] == [f"{revised}, as a patch"]
    assert edit.images[0].data == (root / "photo.png").read_bytes()
    var = next(q for q in api.image_requests if q.path == "/v1/images/variations")
    assert var.fields["n"] == ["2"] and var.fields["size"] == ["256x256"]
    for i in (0, 1):
        e = m[f"variants@#{i}"]
        assert e["path"] == f"variants-{i}.png"
        with Image.open(root / "out" / "legacy" / e["path"]) as img:
            assert img.size == (256, 256)


def test_exif_rotated_input_is_uploaded_upright(tmp_path: Path, api: FakeOpenAI) -> None:
    root = tmp_path / "p"
    root.mkdir()
    img = Image.new("RGB", (300, 200), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(root / "side.jpg", exif=exif)
    recipe = """\
version: 1
name: exif
model: gpt-image-2
steps:
  - id: fix
    edit: {image: side.jpg, prompt: "clean background", size: 1024x1024}
"""
    make_project(root, recipe)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    sent = api.last.images[0].data
    with Image.open(io.BytesIO(sent)) as up:
        assert up.size == (200, 300)


def test_mask_command_writes_the_seed_circle(tmp_path: Path) -> None:
    src = tmp_path / "product.png"
    Image.new("RGB", (100, 50), "white").save(src)
    r = invoke(tmp_path, "mask", "product.png", "-o", "mask.png", "--circle", "0.5,0.5,0.4", "--invert")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "wrote mask.png (100x50)"
    with Image.open(tmp_path / "mask.png") as m:
        assert m.mode == "RGBA" and m.size == (100, 50)
        a = np.asarray(m)
    ys, xs = np.mgrid[0:50, 0:100]
    inside = (xs + 0.5 - 50) ** 2 + (ys + 0.5 - 25) ** 2 <= (0.4 * 50) ** 2
    # inverted: the circle is kept (opaque white), everything else is to be edited (transparent)
    assert (a[inside] == [255, 255, 255, 255]).all()
    assert (a[~inside] == [255, 255, 255, 0]).all()
    bad = invoke(tmp_path, "mask", "product.png", "-o", "m2.png", "--circle", "0.5,0.5")
    assert bad.exit_code == 2
    assert "error: --circle '0.5,0.5': expected 3 numbers" in bad.output
