"""Masks: SPEC's geometry, pixel for pixel, against references written as plain loops."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dalle_pipe.imaging import masks
from dalle_pipe.imaging.masks import build_mask, inside, mask_alpha, mask_png

Pixels = set[tuple[int, int]]


# --------------------------------------------------------------------------- references


def reference(width: int, height: int, test: Callable[[float, float], bool]) -> Pixels:
    """Pixels (x, y) whose centre, in fractions of the image ((x+.5)/W, (y+.5)/H), passes ``test``."""
    return {(x, y) for y in range(height) for x in range(width) if test((x + 0.5) / width, (y + 0.5) / height)}


def pixels(arr: np.ndarray[Any, Any]) -> Pixels:
    ys, xs = np.nonzero(arr)
    return set(zip(xs.tolist(), ys.tolist(), strict=True))


def ray_cast(points: Sequence[Sequence[float]], u: float, v: float) -> bool:
    """Even-odd point in polygon, the textbook loop, in fractions."""
    hit = False
    n = len(points)
    for i in range(n):
        (x1, y1), (x2, y2) = points[i], points[(i + 1) % n]
        if (y1 > v) != (y2 > v) and u < (x2 - x1) * (v - y1) / (y2 - y1) + x1:
            hit = not hit
    return hit


def art(arr: np.ndarray[Any, Any]) -> str:
    return "\n".join("".join("#" if v else "." for v in row) for row in arr)


CIRCLE: dict[str, Any] = {"circle": {"center": [0.5, 0.5], "radius": 0.4}}


# --------------------------------------------------------------------------- shapes


def test_circle_radius_04_on_10x10() -> None:
    got = inside([CIRCLE], 10, 10)
    assert art(got) == "\n".join(
        [
            "..........",
            "...####...",
            "..######..",
            ".########.",
            ".########.",
            ".########.",
            ".########.",
            "..######..",
            "...####...",
            "..........",
        ]
    )
    ref = reference(10, 10, lambda u, v: (u * 10 - 5) ** 2 + (v * 10 - 5) ** 2 <= 4**2)
    assert pixels(got) == ref


def test_circle_stays_round_on_100x50() -> None:
    got = inside([CIRCLE], 100, 50)
    # r = 0.4 * min(100, 50) = 20 pixels, centred at (50, 25) pixels
    ref = reference(100, 50, lambda u, v: (u * 100 - 50) ** 2 + (v * 50 - 25) ** 2 <= 20**2)
    assert pixels(got) == ref
    assert got.shape == (50, 100)
    assert int(got[25].sum()) == 40  # 40 pixels wide through the centre...
    assert int(got[:, 50].sum()) == 40  # ...and 40 tall: round, not an ellipse
    assert not got[:, :30].any() and not got[:, 70:].any()


def test_circle_off_centre_and_overhanging() -> None:
    shape = {"circle": {"center": [0.1, 0.9], "radius": 0.3}}
    got = inside([shape], 37, 23)
    ref = reference(37, 23, lambda u, v: (u * 37 - 3.7) ** 2 + (v * 23 - 20.7) ** 2 <= (0.3 * 23) ** 2)
    assert pixels(got) == ref and ref


def test_rect_is_half_open() -> None:
    left = inside([{"rect": {"box": [0, 0, 0.5, 1]}}], 10, 4)
    assert pixels(left) == {(x, y) for x in range(5) for y in range(4)}
    # x0*W = 2.5 is pixel 2's centre: included; x1*W = 7.5 is pixel 7's centre: excluded
    mid = inside([{"rect": {"box": [0.25, 0.25, 0.75, 0.75]}}], 10, 4)
    assert pixels(mid) == {(x, y) for x in range(2, 7) for y in (1, 2)}
    assert inside([{"rect": {"box": [0, 0, 1, 1]}}], 7, 3).all()
    assert not inside([{"rect": {"box": [0.3, 0.3, 0.3, 0.9]}}], 10, 10).any()


def test_adjacent_rects_tile_the_image_without_overlap() -> None:
    a = inside([{"rect": {"box": [0, 0, 0.3, 1]}}], 17, 5)
    b = inside([{"rect": {"box": [0.3, 0, 1, 1]}}], 17, 5)
    assert not (a & b).any() and (a | b).all()


def test_ellipse_inscribed_in_box() -> None:
    box = [0.1, 0.2, 0.9, 0.7]
    got = inside([{"ellipse": {"box": box}}], 40, 30)
    cx, cy, a, b = 0.5, 0.45, 0.4, 0.25

    def test(u: float, v: float) -> bool:
        return ((u - cx) / a) ** 2 + ((v - cy) / b) ** 2 <= 1

    ref = reference(40, 30, test)
    assert pixels(got) == ref
    # fills its box: touches the middle of each side, not the corners
    assert got[13, 4] and got[13, 35] and not got[6, 4] and not got[20, 35]


def test_full_ellipse_on_a_wide_image_and_empty_boxes() -> None:
    got = inside([{"ellipse": {"box": [0, 0, 1, 1]}}], 20, 10)
    ref = reference(20, 10, lambda u, v: ((u - 0.5) / 0.5) ** 2 + ((v - 0.5) / 0.5) ** 2 <= 1)
    assert pixels(got) == ref
    assert not inside([{"ellipse": {"box": [0.5, 0, 0.5, 1]}}], 20, 10).any()


def test_polygon_triangle() -> None:
    pts = [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]
    got = inside([{"polygon": {"points": pts}}], 10, 10)
    assert art(got) == "\n".join(
        [
            "..........",
            ".########.",
            "..######..",
            "..######..",
            "...####...",
            "...####...",
            "....##....",
            "....##....",
            "..........",
            "..........",
        ]
    )
    assert pixels(got) == reference(10, 10, lambda u, v: ray_cast(pts, u, v))


def test_polygon_concave() -> None:
    # an arrow-head / chevron: concave at (0.5, 0.55)
    pts = [[0.05, 0.05], [0.5, 0.55], [0.95, 0.05], [0.5, 0.95]]
    got = inside([{"polygon": {"points": pts}}], 31, 23)
    assert pixels(got) == reference(31, 23, lambda u, v: ray_cast(pts, u, v))
    assert not got[4, 15]  # the notch is outside
    assert got[17, 15]


def test_polygon_self_intersecting_star_uses_even_odd() -> None:
    star = [[0.5, 0.0], [0.8, 1.0], [0.0, 0.35], [1.0, 0.35], [0.2, 1.0]]
    got = inside([{"polygon": {"points": star}}], 41, 41)
    assert pixels(got) == reference(41, 41, lambda u, v: ray_cast(star, u, v))
    assert not got[23, 20]  # the pentagon in the middle is a hole
    assert got[5, 20]  # a point of the star


def test_polygon_equals_rect_with_same_box() -> None:
    poly = inside([{"polygon": {"points": [[0.2, 0.1], [0.7, 0.1], [0.7, 0.8], [0.2, 0.8]]}}], 23, 17)
    rect = inside([{"rect": {"box": [0.2, 0.1, 0.7, 0.8]}}], 23, 17)
    assert (poly == rect).all()


def test_from_alpha_marks_only_fully_transparent_pixels() -> None:
    img = Image.new("RGBA", (6, 4), (10, 20, 30, 255))
    img.putpixel((1, 1), (0, 0, 0, 0))
    img.putpixel((2, 1), (0, 0, 0, 1))  # almost transparent: kept
    img.putpixel((5, 3), (255, 255, 255, 0))
    assert pixels(inside([], 6, 4, from_alpha=img)) == {(1, 1), (5, 3)}
    la = img.convert("LA")
    assert pixels(inside([], 6, 4, from_alpha=la)) == {(1, 1), (5, 3)}
    assert not inside([], 6, 4, from_alpha=img.convert("RGB")).any()  # no alpha: contributes nothing


def test_from_alpha_palette_transparency_and_size_check() -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0])
    pal.putpixel((0, 0), 0)
    pal.info["transparency"] = 0
    assert pixels(inside([], 4, 4, from_alpha=pal)) == {(0, 0)}
    with pytest.raises(ValueError, match="5x4"):
        build_mask(4, 4, from_alpha=Image.new("RGBA", (5, 4)))


def test_union_of_shapes_and_alpha() -> None:
    img = Image.new("RGBA", (20, 10), (0, 0, 0, 255))
    img.putpixel((19, 0), (0, 0, 0, 0))
    shapes = [CIRCLE, {"rect": {"box": [0, 0, 0.1, 1]}}]
    got = inside(shapes, 20, 10, from_alpha=img)
    expected = inside([CIRCLE], 20, 10) | inside(shapes[1:], 20, 10)
    expected[0, 19] = True
    assert (got == expected).all()


# --------------------------------------------------------------------------- the RGBA mask


def test_mask_is_rgba_of_the_requested_size_with_exact_colours() -> None:
    mask = build_mask(100, 50, [CIRCLE])
    assert mask.mode == "RGBA" and mask.size == (100, 50)
    assert mask.getpixel((50, 25)) == (255, 255, 255, 0)  # inside: edit
    assert mask.getpixel((0, 0)) == (255, 255, 255, 255)  # outside: kept
    assert set(mask.get_flattened_data()) == {(255, 255, 255, 0), (255, 255, 255, 255)}
    alpha = np.asarray(mask.getchannel("A"))
    assert pixels(alpha == 0) == pixels(inside([CIRCLE], 100, 50))


def test_invert_edits_everything_but_the_shapes() -> None:
    plain = np.asarray(build_mask(30, 20, [CIRCLE]).getchannel("A")).astype(int)
    inverted = np.asarray(build_mask(30, 20, [CIRCLE], invert=True).getchannel("A")).astype(int)
    assert (inverted == 255 - plain).all()
    assert build_mask(30, 20, [CIRCLE], invert=True).getpixel((15, 10)) == (255, 255, 255, 255)


def test_no_shapes_keeps_everything_and_invert_edits_everything() -> None:
    assert set(build_mask(8, 8).get_flattened_data()) == {(255, 255, 255, 255)}
    assert set(build_mask(8, 8, invert=True, feather=4).get_flattened_data()) == {(255, 255, 255, 0)}


def expected_ramp_alpha(signed_distance: float, feather: float) -> int:
    insideness = min(1.0, max(0.0, 0.5 + float(signed_distance) / feather))  # Python floats: inf, no warning
    return math.floor(255 * (1 - insideness) + 0.5)


def test_feather_ramp_on_a_known_row() -> None:
    feather = 8.0
    mask = build_mask(40, 6, [{"rect": {"box": [0, 0, 0.5, 1]}}], feather=feather)
    alpha = np.asarray(mask)[..., 3]
    row = alpha[3].tolist()
    # pixels 0..19 inside, the edge between 19 and 20; centres are 0.5 from it
    signed = [(20 - x) - 0.5 if x < 20 else -((x - 19) - 0.5) for x in range(40)]
    assert row == [expected_ramp_alpha(d, feather) for d in signed]
    assert row[0] == 0 and row[39] == 255  # far inside / far outside
    assert row[19] == 112 and row[20] == 143  # around 128 at the edge, symmetric
    assert row[19] + row[20] == 255
    assert row[15] == 0 and row[16] > 0 and row[23] < 255 and row[24] == 255  # ramp is `feather` wide
    assert (np.asarray(mask)[..., :3] == 255).all()


def test_feather_up_to_one_pixel_is_a_hard_edge() -> None:
    hard = build_mask(30, 30, [CIRCLE])
    assert build_mask(30, 30, [CIRCLE], feather=1).tobytes() == hard.tobytes()
    assert build_mask(30, 30, [CIRCLE], feather=0.5).tobytes() == hard.tobytes()


def brute_distance(mask: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Distance from each pixel centre to the nearest pixel of the other class (inf if none).

    Against every other-class pixel that touches the class (the nearest one always does:
    a step from it towards the pixel would otherwise be nearer and of the other class too).
    """
    out = np.full(mask.shape, np.inf)
    padded = np.pad(mask, 1, mode="edge")
    touches = np.zeros(mask.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        touches |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] != mask
    for cls in (False, True):
        oy, ox = np.nonzero((mask != cls) & touches)
        if oy.size == 0:
            continue
        py, px = np.nonzero(mask == cls)
        for start in range(0, py.size, 256):
            y, x = py[start : start + 256, None], px[start : start + 256, None]
            best = ((oy[None, :] - y) ** 2 + (ox[None, :] - x) ** 2).min(axis=1)
            out[py[start : start + 256], px[start : start + 256]] = np.sqrt(best)
    return out


def brute_feather(mask: np.ndarray[Any, Any], feather: float) -> np.ndarray[Any, Any]:
    dist = brute_distance(mask)
    out = np.empty(mask.shape, dtype=np.uint8)
    for (y, x), d in np.ndenumerate(dist):
        if math.isinf(d) or feather <= 0:
            out[y, x] = 0 if mask[y, x] else 255
        else:
            signed = d - 0.5 if mask[y, x] else 0.5 - d
            out[y, x] = expected_ramp_alpha(signed, feather)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 24),
    st.integers(1, 24),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 60.0),
)
def test_feather_matches_a_brute_force_distance(w: int, h: int, density: float, seed: int, feather: float) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < density
    assert (masks.feather_alpha(mask, feather) == brute_feather(mask, feather)).all()


SHAPES = [
    {"circle": {"center": [0.4, 0.45], "radius": 0.3}},
    {"polygon": {"points": [[0.7, 0.1], [0.98, 0.5], [0.75, 0.9]]}},
    {"rect": {"box": [0.0, 0.85, 0.3, 1.0]}},
]


@pytest.mark.parametrize(
    ("size", "shapes", "feather", "tiled"),
    [
        ((240, 180), SHAPES, 3.0, True),
        ((240, 180), SHAPES, 12.0, False),  # solved as one window: cheaper here
        ((500, 400), [{"circle": {"center": [0.3, 0.6], "radius": 0.04}}], 20.0, True),
    ],
)
def test_feather_on_tiles_matches_brute_force(
    size: tuple[int, int], shapes: list[dict[str, Any]], feather: float, tiled: bool
) -> None:
    """Masks large enough that only the tiles near their edges are solved."""
    area = inside(shapes, *size)
    solved = masks._Solved(area, math.ceil((feather + 1) / 2))
    assert (len(solved.origins) > 1) == tiled
    assert (masks.feather_alpha(area, feather) == brute_feather(area, feather)).all()


def test_squared_distance_is_exact_and_capped() -> None:
    area = inside([CIRCLE, {"rect": {"box": [0.05, 0.05, 0.2, 0.9]}}], 120, 90)
    dist2 = np.rint(brute_distance(area) ** 2)
    for cap in (1, 4, 9, 30, 400):
        got = masks.squared_distance_to_other(area, cap)
        assert (got == np.minimum(dist2, cap * cap)).all(), cap


def test_huge_feather_is_exact_and_bounded() -> None:
    area = inside([CIRCLE], 30, 20)
    assert (masks.feather_alpha(area, 1e9) == brute_feather(area, 1e9)).all()


# --------------------------------------------------------------------------- properties


coord = st.floats(-0.2, 1.2, allow_nan=False)


@st.composite
def shapes_strategy(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(masks.SHAPE_KINDS))
    if kind == "circle":
        return {"circle": {"center": [draw(coord), draw(coord)], "radius": draw(st.floats(0, 0.8))}}
    if kind in ("rect", "ellipse"):
        x0, x1 = sorted((draw(coord), draw(coord)))
        y0, y1 = sorted((draw(coord), draw(coord)))
        return {kind: {"box": [x0, y0, x1, y1]}}
    n = draw(st.integers(3, 7))
    return {"polygon": {"points": [[draw(coord), draw(coord)] for _ in range(n)]}}


@settings(max_examples=80, deadline=None)
@given(st.lists(shapes_strategy(), max_size=4), st.integers(1, 40), st.integers(1, 40), st.floats(0, 12))
def test_invert_twice_is_the_original_and_union_commutes(
    shapes: list[dict[str, Any]], w: int, h: int, feather: float
) -> None:
    area = inside(shapes, w, h)
    assert (inside(list(reversed(shapes)), w, h) == area).all()
    union = np.zeros((h, w), dtype=bool)
    for shape in shapes:
        union |= inside([shape], w, h)
    assert (union == area).all()
    plain = mask_alpha(w, h, shapes, feather=feather).astype(int)
    inverted = mask_alpha(w, h, shapes, invert=True, feather=feather).astype(int)
    twice = masks.feather_alpha(~~area, feather)
    assert (twice == plain).all()
    assert np.abs(inverted + plain - 255).max(initial=0) <= (1 if feather > 1 else 0)


# --------------------------------------------------------------------------- encoding and validation


def test_mask_png_decodes_to_build_mask() -> None:
    data = mask_png(64, 48, [CIRCLE], invert=True, feather=6)
    assert data[12:16] == b"IHDR" and data[25] == 6  # colour type 6: RGBA
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (64, 48)
    assert img.tobytes() == build_mask(64, 48, [CIRCLE], invert=True, feather=6).tobytes()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"square": {}}, "unknown shape 'square'"),
        ({"circle": {"center": [0.5, 0.5]}}, "missing radius"),
        ({"circle": {"center": [0.5], "radius": 0.1}}, "list of 2 numbers"),
        ({"circle": {"center": [0.5, 0.5], "radius": -1}}, "radius: must be >= 0"),
        ({"circle": {"center": [0.5, True], "radius": 0.1}}, "expected a number"),
        ({"circle": {"center": [0.5, float("nan")], "radius": 0.1}}, "finite"),
        ({"rect": {"box": [0.5, 0, 0.1, 1]}}, "x0 <= x1"),
        ({"ellipse": {"box": [0, 0, 1]}}, "list of 4 numbers"),
        ({"polygon": {"points": [[0, 0], [1, 1]]}}, "at least 3"),
        ({"rect": {"box": [0, 0, 1, 1], "extra": 1}}, "unknown key"),
        ({"rect": {"box": [0, 0, 1, 1]}, "circle": {}}, "exactly one"),
    ],
)
def test_bad_shapes_are_refused_clearly(shape: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        inside([shape], 10, 10)
    assert "shapes[0]" in str(err.value) or "exactly one" in str(err.value)


def test_bad_sizes_and_feather() -> None:
    with pytest.raises(ValueError, match="width"):
        build_mask(0, 10)
    with pytest.raises(ValueError, match="too large"):
        build_mask(10000, 10000)
    with pytest.raises(ValueError, match="feather"):
        build_mask(10, 10, feather=-1)


