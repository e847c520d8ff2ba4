"""Markup: visible strokes on a transparent canvas, the `markup` of a GPT Image 2.5 edit.

The geometry is the mask's (see masks.py): coordinates are fractions of the canvas's
width and height from the top-left; a circle's radius is a fraction of min(W, H).
Shapes: ``circle``, ``ellipse``, ``rect``, ``polygon`` and ``arrow: {from: [x, y], to:
[x, y]}`` (a line with a filled arrowhead at ``to``). Strokes are ``width`` pixels wide
in ``color``; closed shapes are also filled when ``fill`` is true. Everything else stays
fully transparent (0, 0, 0, 0), so a markup always has transparent pixels unless the
strokes cover the whole canvas. Drawn with Pillow's ImageDraw: the same input gives the
same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageDraw

from dalle_pipe.imaging.io import MAX_PIXELS, ImageInputError, encode, load

MARKUP_KINDS: Final = ("circle", "ellipse", "rect", "polygon", "arrow")
DEFAULT_COLOR: Final = "#ff0000"
DEFAULT_WIDTH: Final = 8.0
MAX_WIDTH: Final = 256.0
COORDINATE_LIMIT: Final = 100.0
Point = tuple[float, float]


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if abs(value) > COORDINATE_LIMIT:
        raise ValueError(f"{where}: {value!r} is far outside the image (fractions are 0..1)")
    return float(value)


def _point(value: object, where: str) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{where}: expected [x, y], got {value!r}")
    return _number(value[0], f"{where}[0]"), _number(value[1], f"{where}[1]")


def _box(body: Mapping[str, Any], where: str) -> tuple[float, float, float, float]:
    box = body.get("box")
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise ValueError(f"{where}.box: expected [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = (_number(v, f"{where}.box[{i}]") for i, v in enumerate(box))
    if x0 > x1 or y0 > y1:
        raise ValueError(f"{where}.box: needs x0 <= x1 and y0 <= y1, got {list(box)!r}")
    return x0, y0, x1, y1


def _split(shape: object, where: str) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(shape, Mapping) or len(shape) != 1:
        raise ValueError(f"{where}: expected exactly one of {', '.join(MARKUP_KINDS)}, got {shape!r}")
    ((kind, body),) = shape.items()
    if kind not in MARKUP_KINDS:
        raise ValueError(f"{where}: unknown shape {kind!r} (expected one of {', '.join(MARKUP_KINDS)})")
    if not isinstance(body, Mapping):
        raise ValueError(f"{where}.{kind}: expected a mapping, got {body!r}")
    return str(kind), body


def parse_rgba(color: str) -> tuple[int, int, int, int]:
    """The stroke colour (``#rgb``, ``#rrggbb``, ``#rrggbbaa``); it must be visible (alpha > 0)."""
    from dalle_pipe.imaging.transforms import parse_color

    rgba = parse_color(color)
    if rgba[3] == 0:
        raise ValueError(f"color {color!r} is fully transparent: a markup's strokes must be visible")
    return rgba


def draw_markup(
    width: int,
    height: int,
    shapes: Sequence[Mapping[str, Any]],
    *,
    color: str = DEFAULT_COLOR,
    stroke: float = DEFAULT_WIDTH,
    fill: bool = False,
) -> Image.Image:
    """An RGBA canvas of width x height, transparent but for the shapes' strokes."""
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise ValueError(f"markup size {width}x{height} is not a usable image size")
    if isinstance(stroke, bool) or not isinstance(stroke, int | float) or not 0 < stroke <= MAX_WIDTH:
        raise ValueError(f"width {stroke!r}: expected a number of pixels above 0 and at most {MAX_WIDTH:g}")
    if not shapes:
        raise ValueError("a markup needs at least one shape")
    rgba = parse_rgba(color)
    w = max(1, round(stroke))
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    inner = rgba if fill else None

    def xy(p: Point) -> tuple[float, float]:
        return p[0] * width, p[1] * height

    for i, shape in enumerate(shapes):
        where = f"shapes[{i}]"
        kind, body = _split(shape, where)
        where = f"{where}.{kind}"
        if kind == "circle":
            cx, cy = xy(_point(body.get("center"), f"{where}.center"))
            r = _number(body.get("radius"), f"{where}.radius") * min(width, height)
            if r < 0:
                raise ValueError(f"{where}.radius: must be >= 0")
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=inner, outline=rgba, width=w)
        elif kind in ("ellipse", "rect"):
            x0, y0, x1, y1 = _box(body, where)
            box = (x0 * width, y0 * height, x1 * width - 1, y1 * height - 1)
            if box[2] < box[0] or box[3] < box[1]:
                continue  # narrower than a pixel: nothing to draw
            if kind == "ellipse":
                draw.ellipse(box, fill=inner, outline=rgba, width=w)
            else:
                draw.rectangle(box, fill=inner, outline=rgba, width=w)
        elif kind == "polygon":
            raw = body.get("points")
            if not isinstance(raw, list | tuple) or len(raw) < 3:
                raise ValueError(f"{where}.points: expected a list of at least 3 [x, y] points, got {raw!r}")
            pts = [xy(_point(p, f"{where}.points[{j}]")) for j, p in enumerate(raw)]
            draw.polygon(pts, fill=inner, outline=rgba, width=w)
        else:
            _arrow(draw, xy(_point(body.get("from"), f"{where}.from")), xy(_point(body.get("to"), f"{where}.to")),
                   rgba, w)
    return img


def _arrow(draw: ImageDraw.ImageDraw, tail: Point, head: Point, rgba: tuple[int, int, int, int], w: int) -> None:
    """A line from tail to head, ending in a filled arrowhead whose size grows with the width."""
    dx, dy = head[0] - tail[0], head[1] - tail[1]
    length = math.hypot(dx, dy)
    if length == 0:
        return
    ux, uy = dx / length, dy / length
    size = min(length, max(12.0, 4.0 * w))
    base = (head[0] - ux * size, head[1] - uy * size)
    half = size * 0.5
    left = (base[0] - uy * half, base[1] + ux * half)
    right = (base[0] + uy * half, base[1] - ux * half)
    draw.line((tail, base), fill=rgba, width=w)
    draw.polygon((head, left, right), fill=rgba)


def markup_png(width: int, height: int, body: Mapping[str, Any]) -> bytes:
    """A markup step's PNG from its body (shapes, color, width, fill)."""
    img = draw_markup(width, height, body.get("shapes") or [], color=str(body.get("color", DEFAULT_COLOR)),
                      stroke=body.get("width", DEFAULT_WIDTH), fill=bool(body.get("fill", False)))
    return encode(img, "png")


def has_transparency(img: Image.Image) -> bool:
    """True when some pixel is fully transparent."""
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return False
    alpha = img.convert("RGBA").getchannel("A")
    return alpha.getextrema()[0] == 0


def prepare_markup(path: Path, first_size: tuple[int, int] | None) -> bytes:
    """The markup as sent: a PNG the size of the first image with some transparent pixels.

    Raises ImageInputError naming the file when it is not one (checked before paying).
    """
    img = load(path)
    if first_size is not None and img.size != first_size:
        raise ImageInputError(path, f"markup is {img.width}x{img.height}, the first input image is "
                                    f"{first_size[0]}x{first_size[1]}",
                              "a markup must be the size of the first image; use a markup step with size_of")
    if not has_transparency(img):
        raise ImageInputError(path, "markup has no transparent pixels",
                              "a markup is a transparent PNG with strokes on it; a markup step draws one")
    if img.format == "PNG" and img.mode == "RGBA":
        return path.read_bytes()
    return encode(img.convert("RGBA"), "png")
