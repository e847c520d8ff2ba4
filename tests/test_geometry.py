"""Mask geometry checked without pixels: conservative (never a false "off the image"), agreeing with the raster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dalle_pipe.imaging.geometry import check_mask
from dalle_pipe.imaging.masks import inside


def circle(cx: float, cy: float, r: float) -> dict[str, Any]:
    return {"circle": {"center": [cx, cy], "radius": r}}


@pytest.mark.parametrize("shape", [
    circle(1.2, 0.5, 0.3), circle(-0.1, -0.1, 0.2), circle(0.5, 0.5, 5),
    {"rect": {"box": [-1, -1, 0.1, 0.1]}}, {"ellipse": {"box": [0.2, 0.5, 3, 3]}},
    {"polygon": {"points": [[-1, 0.5], [0.5, -1], [2, 2]]}},
])
def test_a_shape_partly_on_the_image_is_fine(shape: dict[str, Any]) -> None:
    assert check_mask([shape]) == []
    assert inside([shape], 200, 200).any()  # and it does mark pixels


def test_an_ellipse_whose_box_overlaps_but_whose_curve_misses_is_off() -> None:
    shape = {"ellipse": {"box": [0.9, 0.9, 3, 3]}}
    (issue,) = check_mask([shape])
    assert issue.message == "the ellipse (box [0.9, 0.9, 3, 3]) lies entirely outside the image"
    assert not inside([shape], 300, 200).any()


@pytest.mark.parametrize(("width", "height"), [(100, 100), (400, 100), (100, 400)])
def test_off_the_image_is_off_for_every_aspect(width: int, height: int) -> None:
    # the radius is a fraction of min(W, H): in fractions of the longer side the circle is smaller
    near = circle(1.25, 0.5, 0.3)
    assert check_mask([near]) == []
    off = circle(1.31, 0.5, 0.3)
    (issue,) = check_mask([off])
    assert issue.path == ("shapes", 0, "circle") and issue.marks_nothing
    assert not inside([off], width, height).any()


def test_nothing_to_edit_and_allow_empty() -> None:
    assert [i.message for i in check_mask([])] == ["the mask leaves nothing to edit: it has no shapes"]
    assert check_mask([], from_alpha=True) == [] and check_mask([], invert=True) == []
    whole = {"rect": {"box": [0, 0, 1, 1]}}
    (issue,) = check_mask([whole], invert=True)
    assert issue.path == ("invert",)
    assert np.all(inside([whole], 64, 48))
    assert check_mask([], allow_empty=True) == [] and check_mask([circle(5, 5, 0.1)], allow_empty=True) == []
    # numbers out of range are never allowed
    assert [i.path for i in check_mask([circle(512, 512, 0.4)], allow_empty=True)] == [
        ("shapes", 0, "circle", "center")]
