"""Mask geometry checked without drawing a pixel: what `validate` and `dalle-pipe mask` refuse.

Coordinates are fractions of the width and height, from the top-left, so the image is the
square [0, 1] x [0, 1] whatever its size. A shape may overhang the image; a shape that lies
entirely outside it marks nothing, and is almost always a pixel value written as a fraction
(`center: [512, 512]`). The tests here are conservative: a shape is called "outside" only when
it is outside for every image size (a circle's radius is a fraction of min(W, H), so in
fractions of the width it is at most `r`).

Pure Python: no numpy, so planning never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

COORDINATE_LIMIT: Final = 100.0  # shapes may overhang the image, within reason
PIXEL_LIKE: Final = 16.0  # a coordinate this large was most likely meant in pixels
UNITS: Final = "coordinates are fractions of the width and height, from 0 to 1"

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class GeometryIssue:
    """A problem with a mask's geometry; `path` is relative to the mask body (`("shapes", 0, "circle")`)."""

    path: PathKey
    message: str
    hint: str | None = None
    marks_nothing: bool = False  # a shape that marks no pixel, or a mask that leaves nothing to edit


def check_mask(shapes: Sequence[Any], *, invert: bool = False, from_alpha: bool = False,
               allow_empty: bool = False) -> list[GeometryIssue]:
    """Every geometry problem of a mask: numbers out of range, shapes off the image, nothing to edit.

    With `allow_empty`, shapes that mark nothing and a mask that leaves nothing to edit pass;
    numbers out of range never do.
    """
    issues: list[GeometryIssue] = []
    covers = False  # some shape covers all of the image
    for i, shape in enumerate(shapes):
        found = _shape_issue(shape, ("shapes", i))
        if found is None:
            covers = covers or _covers_image(shape)
        elif not (allow_empty and found.marks_nothing):
            issues.append(found)
    if issues or allow_empty:
        return issues
    if not shapes and not from_alpha and not invert:
        issues.append(GeometryIssue((), "the mask leaves nothing to edit: it has no shapes",
                                    "add shapes, in fractions of the width and height, or from_alpha",
                                    marks_nothing=True))
    elif invert and covers and not from_alpha:
        issues.append(GeometryIssue(("invert",), "the mask leaves nothing to edit: a shape covers the whole "
                                    "image, and invert keeps all of it", "drop invert, or make the shape smaller",
                                    marks_nothing=True))
    return issues


def _shape_issue(shape: Any, at: PathKey) -> GeometryIssue | None:
    """The first problem of one shape; None when it is fine (or malformed: the schema says that)."""
    if not isinstance(shape, Mapping) or len(shape) != 1:
        return None
    ((kind, body),) = shape.items()
    if not isinstance(body, Mapping):
        return None
    where = (*at, kind)
    if kind == "circle":
        return _circle(body, where)
    if kind in ("ellipse", "rect"):
        return _box(kind, body, where)
    if kind == "polygon":
        return _polygon(body, where)
    return None


def _numbers(value: Any, count: int | None = None) -> list[float] | None:
    if not isinstance(value, list | tuple) or (count is not None and len(value) != count):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) for v in value]


def _range_issue(values: Sequence[float], where: PathKey, what: str) -> GeometryIssue | None:
    for v in values:
        if not math.isfinite(v):
            return GeometryIssue(where, f"{what} {_show(values)} is not a finite number", UNITS)
    far = [v for v in values if abs(v) > COORDINATE_LIMIT]
    if far:
        return GeometryIssue(where, f"{what} {_show(values)} is far outside the image: {UNITS}",
                             _pixel_hint(far[0]))
    return None


def _pixel_hint(value: float) -> str:
    if value >= PIXEL_LIKE:
        return f"for pixels, divide by the image's size: {_num(value)} of {_num(_side(value))} is " \
               f"{_num(value / _side(value))}"
    return "shapes may overhang the image, but must touch it"


def _side(value: float) -> float:
    """A plausible image side for a pixel value: the next of 1024, 1536, 2048, ... at least as large."""
    side = 1024.0
    while side < value:
        side += 512.0
    return side


def _circle(body: Mapping[str, Any], where: PathKey) -> GeometryIssue | None:
    center, radius = _numbers(body.get("center"), 2), body.get("radius")
    if center is None or not isinstance(radius, int | float) or isinstance(radius, bool):
        return None
    r = float(radius)
    found = _range_issue(center, (*where, "center"), "center")
    if found is not None:
        return found
    if not math.isfinite(r) or r > COORDINATE_LIMIT:
        return GeometryIssue((*where, "radius"), f"radius {_num(r)} is far larger than the image: the radius is "
                             "a fraction of min(width, height)", _pixel_hint(r) if math.isfinite(r) else None)
    if r <= 0:
        return GeometryIssue((*where, "radius"), f"radius {_num(r)} marks nothing", "use a radius above 0",
                             marks_nothing=True)
    cx, cy = center
    dx, dy = max(-cx, 0.0, cx - 1), max(-cy, 0.0, cy - 1)
    if dx * dx + dy * dy >= r * r:
        return _outside("circle", where, f"center {_show(center)}, radius {_num(r)}", [*center, r])
    return None


def _box(kind: str, body: Mapping[str, Any], where: PathKey) -> GeometryIssue | None:
    box = _numbers(body.get("box"), 4)
    if box is None:
        return None
    found = _range_issue(box, (*where, "box"), "box")
    if found is not None:
        return found
    x0, y0, x1, y1 = box
    if x0 > x1 or y0 > y1:
        return GeometryIssue((*where, "box"), f"box {_show(box)} is not [x0, y0, x1, y1] with x0 <= x1 and "
                             "y0 <= y1", "write the top-left corner first, then the bottom-right")
    if x0 == x1 or y0 == y1:
        return GeometryIssue((*where, "box"), f"box {_show(box)} has no area: the {kind} marks nothing",
                             "x1 must be greater than x0, and y1 than y0", marks_nothing=True)
    if x0 >= 1 or y0 >= 1 or x1 <= 0 or y1 <= 0 or (kind == "ellipse" and _ellipse_off(box)):
        return _outside(kind, (*where, "box"), f"box {_show(box)}", box)
    return None


def _ellipse_off(box: Sequence[float]) -> bool:
    """Whether the ellipse inscribed in `box` misses the image (exact for every size: both scale alike)."""
    x0, y0, x1, y1 = box
    ex, ey, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    du = max((0 - ex) / a, 0.0, (ex - 1) / a)  # from the centre to the image, in semi-axes
    dv = max((0 - ey) / b, 0.0, (ey - 1) / b)
    return du * du + dv * dv >= 1


def _polygon(body: Mapping[str, Any], where: PathKey) -> GeometryIssue | None:
    raw = body.get("points")
    if not isinstance(raw, list | tuple):
        return None
    points = [_numbers(p, 2) for p in raw]
    if any(p is None for p in points) or len(points) < 3:
        return None
    pts = [p for p in points if p is not None]
    flat = [v for p in pts for v in p]
    for i, p in enumerate(pts):
        found = _range_issue(p, (*where, "points", i), "point")
        if found is not None:
            return found
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if min(xs) == max(xs) or min(ys) == max(ys):
        return GeometryIssue((*where, "points"), "the points lie on one line: the polygon marks nothing",
                             "give at least 3 points that are not in a line", marks_nothing=True)
    if min(xs) >= 1 or min(ys) >= 1 or max(xs) <= 0 or max(ys) <= 0:
        return _outside("polygon", (*where, "points"), "every point", flat)
    return None


def _outside(kind: str, where: PathKey, what: str, values: Sequence[float]) -> GeometryIssue:
    big = [v for v in values if v >= PIXEL_LIKE]
    hint = _pixel_hint(big[0]) if big else f"{UNITS}; a shape may overhang the image, but must touch it"
    return GeometryIssue(where, f"the {kind} ({what}) lies entirely outside the image", hint, marks_nothing=True)


def _covers_image(shape: Mapping[str, Any]) -> bool:
    """Whether a shape certainly covers the whole image (for any size): rects only."""
    body = shape.get("rect")
    box = _numbers(body.get("box"), 4) if isinstance(body, Mapping) else None
    return box is not None and box[0] <= 0 and box[1] <= 0 and box[2] >= 1 and box[3] >= 1


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def _show(values: Sequence[float]) -> str:
    return "[" + ", ".join(_num(v) for v in values) + "]"
