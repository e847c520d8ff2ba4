"""Local transform steps and `fit: resize`, through `dalle-pipe run --offline`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_run import by_task, invoke, make_project, manifest

RECIPE = """\
version: 1
name: tf
model: gpt-image-2
params: {size: 1024x1024}
steps:
  - id: bg
    generate: {prompt: "a sunny beach", size: 1536x1024}
  - id: square
    pad: {image: {step: bg}, aspect: "1:1", color: "#000000"}
  - id: small
    resize: {image: {step: square}, size: 256x256}
  - id: top
    crop: {image: {step: small}, box: [0, 0, 1, 0.5]}
  - id: jpeg
    convert: {image: {step: small}, format: jpeg, quality: 80}
  - id: placed
    composite: {background: {step: bg}, image: cutout.png, position: [0.25, 0.5], scale: 0.1}
  - id: hole
    mask: {size: 512x512, shapes: [{rect: {box: [0.25, 0.25, 0.75, 0.75]}}]}
  - id: patched
    edit: {image: {step: bg}, mask: {step: hole}, fit: resize, prompt: "a boat", size: 1536x1024}
"""


def test_transforms_make_the_sizes_and_formats_they_promise(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    Image.new("RGBA", (100, 100), (255, 0, 0, 255)).save(root / "cutout.png")
    make_project(root, RECIPE)
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    m = by_task(manifest(root, "tf"))
    sizes = {k.split("@")[0]: (e["width"], e["height"], e["format"]) for k, e in m.items()}
    assert sizes == {
        "bg": (1536, 1024, "png"), "square": (1536, 1536, "png"), "small": (256, 256, "png"),
        "top": (256, 128, "png"), "jpeg": (256, 256, "jpeg"), "placed": (1536, 1024, "png"),
        "hole": (512, 512, "png"), "patched": (1536, 1024, "png"),
    }
    assert m["jpeg@#0"]["path"] == "jpeg.jpg"
    out = root / "out" / "tf"
    sq = np.asarray(Image.open(out / "square.png").convert("RGB"))
    assert (sq[0, 0] == [0, 0, 0]).all() and (sq[-1, -1] == [0, 0, 0]).all()  # padded with the colour
    placed = np.asarray(Image.open(out / "placed.png").convert("RGB"))
    # the cutout (153 px wide = 0.1 x 1536) is centred at x = 384, y = 512
    assert (placed[512, 384] == [255, 0, 0]).all()
    assert not (placed[512, 1100] == [255, 0, 0]).all()
    # the 512x512 mask was resized to the image: pixels outside the stretched rect are kept exactly
    bg = np.asarray(Image.open(out / "bg.png").convert("RGBA"))
    patched = np.asarray(Image.open(out / "patched.png").convert("RGBA"))
    assert np.array_equal(bg[:200], patched[:200])
    assert not np.array_equal(bg[400:600, 500:1000], patched[400:600, 500:1000])
    assert invoke(root, "run", "--offline", "recipe.yaml").output.startswith("tf: 0 generated, 8 up to date")


def test_background_is_a_request_parameter_outside_composite(tmp_path: Path) -> None:
    recipe = """\
version: 1
name: bgparam
model: gpt-image-2
steps:
  - id: cutout
    generate: {prompt: "a mug", size: 1024x1024, background: transparent, output_format: png}
  - id: solid
    edit: {image: {step: cutout}, prompt: "same mug", background: opaque}
"""
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    m = by_task(manifest(root, "bgparam"))
    assert m["cutout@#0"]["params"]["background"] == "transparent"
    assert m["solid@#0"]["params"]["background"] == "opaque"
    with Image.open(root / "out" / "bgparam" / "cutout.png") as img:
        assert img.mode == "RGBA" and img.getextrema()[3][0] == 0  # some pixels are transparent
