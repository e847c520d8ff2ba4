"""`dalle-pipe mask` as users see it: units in --help, exit 2 with one clear line, PNG only, --allow-empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_pipe.cli import main


@pytest.fixture
def photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (1024, 768), "white").save(tmp_path / "photo.png")
    return tmp_path


def mask(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["mask", "photo.png", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["-o", "m.png", "--circle", "512,512,400"],
                 "error: --circle 512,512,400: center [512, 512] is far outside the image: coordinates are "
                 "fractions of the width and height, from 0 to 1 (for pixels, divide by the image's size: 512 of "
                 "1024 is 0.5)\n", id="pixels-for-fractions"),
    pytest.param(["-o", "m.png", "--circle", "0.5,0.5,400"],
                 "error: --circle 0.5,0.5,400: radius 400 is far larger than the image: the radius is a fraction "
                 "of min(width, height) (for pixels, divide by the image's size: 400 of 1024 is 0.391)\n",
                 id="radius-in-pixels"),
    pytest.param(["-o", "m.png", "--circle", "3,3,0.5"],
                 "error: --circle 3,3,0.5: the circle (center [3, 3], radius 0.5) lies entirely outside the "
                 "image (coordinates are fractions of the width and height, from 0 to 1; a shape may overhang the "
                 "image, but must touch it; or pass --allow-empty)\n", id="off-the-image"),
    pytest.param(["-o", "m.png", "--rect", "0.8,0.1,0.2,0.9"],
                 "error: --rect 0.8,0.1,0.2,0.9: box [0.8, 0.1, 0.2, 0.9] is not [x0, y0, x1, y1] with x0 <= x1 "
                 "and y0 <= y1 (write the top-left corner first, then the bottom-right)\n", id="box-backwards"),
    pytest.param(["-o", "m.png"],
                 "error: the mask leaves nothing to edit: it has no shapes (add shapes, in fractions of the width "
                 "and height, or from_alpha; or pass --allow-empty)\n", id="no-shapes"),
    pytest.param(["-o", "m.png", "--rect", "0,0,1,1", "--invert"],
                 "error: the mask leaves nothing to edit: a shape covers the whole image, and invert keeps all of "
                 "it (drop invert, or make the shape smaller; or pass --allow-empty)\n", id="inverted-everything"),
    pytest.param(["-o", "m.png", "--circle", "0.5,0.5,0.0001"],
                 "error: the mask leaves nothing to edit: every pixel of the 1024x768 image is kept (check the "
                 "shapes: they are in fractions of the width and height; or pass --allow-empty)\n",
                 id="too-small-to-mark-a-pixel"),
    pytest.param(["-o", "m.jpg", "--circle", "0.5,0.5,0.4"],
                 "error: -o m.jpg: a mask is an RGBA PNG; JPEG has no alpha channel (name it m.png)\n", id="jpeg"),
    pytest.param(["-o", "m.webp", "--circle", "0.5,0.5,0.4"],
                 "error: -o m.webp: a mask is an RGBA PNG (name it m.png)\n", id="webp"),
    pytest.param(["-o", "m.png", "--circle", "nan,0.5,0.4"],
                 "error: --circle nan,0.5,0.4: center [nan, 0.5] is not a finite number (coordinates are fractions "
                 "of the width and height, from 0 to 1)\n", id="nan"),
    pytest.param(["-o", "m.png", "--circle", "0.5,0.5"],
                 "error: --circle '0.5,0.5': expected 3 numbers\n", id="too-few-numbers"),
])
def test_bad_masks_exit_2_with_one_line_and_write_nothing(photo: Path, args: list[str], expected: str) -> None:
    assert mask(*args) == (2, "", expected)
    assert sorted(p.name for p in photo.iterdir()) == ["photo.png"]


def test_allow_empty_writes_a_mask_that_keeps_everything(photo: Path) -> None:
    assert mask("-o", "m.png", "--circle", "3,3,0.5", "--allow-empty") == (0, "wrote m.png (1024x768)\n", "")
    with Image.open(photo / "m.png") as m:
        assert m.mode == "RGBA" and m.size == (1024, 768)
        assert (np.asarray(m) == 255).all()


def test_a_shape_partly_off_the_image_is_fine(photo: Path) -> None:
    assert mask("-o", "m.png", "--circle", "1,0.5,0.25")[0] == 0
    with Image.open(photo / "m.png") as m:
        alpha = np.asarray(m)[:, :, 3]
    assert alpha[384, 1023] == 0 and alpha[384, 0] == 255  # the right edge is to be edited, the left kept


def test_help_gives_every_options_units() -> None:
    text = CliRunner().invoke(main, ["mask", "--help"]).stdout
    flat = " ".join(text.split())
    for needle in ("--circle CX,CY,R A circle: centre CX,CY in fractions of the width and height; radius R in "
                   "fractions of min(width, height)",
                   "--ellipse X0,Y0,X1,Y1 The ellipse inside the box from X0,Y0 (top-left) to X1,Y1 (bottom-right), "
                   "in fractions of the width and height.",
                   "--rect X0,Y0,X1,Y1 A rectangle from X0,Y0 (top-left) to X1,Y1",
                   "--polygon X,Y,X,Y,... A polygon through at least 3 points X,Y, in fractions of the width and "
                   "height.",
                   "--feather PX Soften the edge: a linear ramp PX pixels wide",
                   "-o, --output OUT.png The mask to write: a PNG (JPEG has no alpha channel).",
                   "--allow-empty Write the mask even if it leaves nothing to edit."):
        assert needle in flat, needle
