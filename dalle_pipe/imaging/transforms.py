"""Local image steps: resize, pad, crop, convert, composite. No API call, no file I/O.

Every function takes and returns Pillow images, never changes its input, and returns
RGB or RGBA: RGBA when the input has any transparency or the step adds some (a
transparent pad colour, a composite onto a transparent background), RGB otherwise.
Resampling is LANCZOS (Pillow premultiplies alpha while resizing, so transparent
pixels do not bleed colour). Rounding of fractions to pixels is half-up.
Size limits: no output may exceed :data:`dalle_pipe.imaging.io.MAX_PIXELS` pixels.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, Final, Literal

from PIL import Image

from dalle_pipe.imaging.io import (
    DEFAULT_QUALITY,
    MAX_PIXELS,
    flatten,
    has_alpha,
    normalize_format,
    normalize_mode,
)

Fit = Literal["contain", "cover", "stretch"]
FITS: Final = ("contain", "cover", "stretch")
RGBA = tuple[int, int, int, int]

NAMED_COLORS: Final[dict[str, RGBA]] = {
    "transparent": (0, 0, 0, 0),
    "white": (255, 255, 255, 255),
    "black": (0, 0, 0, 255),
}
_HEX = re.compile(r"#([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")


def parse_color(s: str) -> RGBA:
    """``#rgb``, ``#rgba``, ``#rrggbb``, ``#rrggbbaa``, ``transparent``, ``white`` or ``black`` → RGBA.

    ``transparent`` is ``(0, 0, 0, 0)``, as in CSS. ValueError otherwise.
    """
    if not isinstance(s, str):
        raise ValueError(f"invalid colour {s!r}: expected a string")
    text = s.strip()
    named = NAMED_COLORS.get(text.lower())
    if named is not None:
        return named
    match = _HEX.fullmatch(text)
    if not match:
        raise ValueError(f"invalid colour {s!r}: use #rgb, #rrggbb, #rrggbbaa, transparent, white or black")
    digits = match.group(1)
    if len(digits) <= 4:
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 6:
        digits += "ff"
    r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return (r, g, b, a)


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def _check_size(size: tuple[int, int], what: str = "size") -> tuple[int, int]:
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise ValueError(f"{what} must be two positive integers (width, height), got {size!r}")
    width, height = int(size[0]), int(size[1])
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what} {width}x{height} is too large ({width * height} pixels; limit {MAX_PIXELS})")
    return width, height


def _canvas(img: Image.Image, size: tuple[int, int], color: RGBA) -> Image.Image:
    """A canvas for ``img``: RGBA when the image or the colour has transparency, else RGB."""
    if img.mode == "RGBA" or color[3] < 255:
        return Image.new("RGBA", size, color)
    return Image.new("RGB", size, color[:3])


def _paste_centred(canvas: Image.Image, img: Image.Image) -> Image.Image:
    """Put ``img`` in the middle of ``canvas``, replacing what is under it (its alpha kept)."""
    x = (canvas.width - img.width) // 2
    y = (canvas.height - img.height) // 2
    canvas.paste(img.convert(canvas.mode), (x, y))
    return canvas


def resize(img: Image.Image, size: tuple[int, int], fit: Fit = "contain", color: str | None = None) -> Image.Image:
    """Resize to exactly ``size`` (width, height).

    - ``contain``: scale to fit inside, keep the aspect, centre on a canvas of ``color``
      (the bars); ``color`` defaults to transparent when the image has transparency,
      else white. (The recipe's "transparent for png" default is the caller's: pass
      ``"transparent"``.) The image's own pixels are kept, alpha included.
    - ``cover``: scale to fill, keep the aspect, crop the overflow equally from both
      sides (one resampling step, from the matching centred box of the source).
    - ``stretch``: scale to ``size``, aspect not kept.
    """
    width, height = _check_size(size)
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    src = normalize_mode(img)
    w, h = src.size
    if fit == "stretch":
        return src.resize((width, height), Image.Resampling.LANCZOS)
    if fit == "cover":
        target = Fraction(width, height)
        if Fraction(w, h) > target:  # source is wider: crop its sides
            crop_w = h * target
            box = (float((w - crop_w) / 2), 0.0, float((w + crop_w) / 2), float(h))
        else:  # source is taller: crop top and bottom
            crop_h = w / target
            box = (0.0, float((h - crop_h) / 2), float(w), float((h + crop_h) / 2))
        return src.resize((width, height), Image.Resampling.LANCZOS, box=box)
    scale = min(Fraction(width, w), Fraction(height, h))
    inner = (max(1, min(width, _round(float(w * scale)))), max(1, min(height, _round(float(h * scale)))))
    fitted = src if inner == (w, h) else src.resize(inner, Image.Resampling.LANCZOS)
    default = "transparent" if src.mode == "RGBA" else "white"
    return _paste_centred(_canvas(src, (width, height), parse_color(color or default)), fitted)


def _parse_aspect(aspect: str) -> Fraction:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[:/x]\s*(\d+(?:\.\d+)?)\s*", str(aspect))
    if not match:
        raise ValueError(f"aspect must look like 'W:H' (e.g. '16:9'), got {aspect!r}")
    num, den = Fraction(match.group(1)), Fraction(match.group(2))
    if num <= 0 or den <= 0:
        raise ValueError(f"aspect must have positive sides, got {aspect!r}")
    return num / den


def pad(
    img: Image.Image,
    *,
    aspect: str | None = None,
    size: tuple[int, int] | None = None,
    color: str = "#ffffff",
) -> Image.Image:
    """Centre the image, unscaled, on a canvas of ``color``.

    With ``aspect`` ("W:H"), the canvas is the smallest one of that aspect containing the
    image (the added side rounded up to a whole pixel). With ``size``, the canvas is
    that size, and must be at least the image's (ValueError otherwise: resize first).
    Exactly one of them. An odd leftover pixel goes to the right / bottom.
    """
    if (aspect is None) == (size is None):
        raise ValueError("pad takes exactly one of aspect or size")
    src = normalize_mode(img)
    w, h = src.size
    if aspect is not None:
        ratio = _parse_aspect(aspect)
        too_narrow = Fraction(w, h) < ratio  # then widen, else heighten
        wanted = (math.ceil(h * ratio), h) if too_narrow else (w, math.ceil(w / ratio))
        canvas_size = _check_size((max(w, wanted[0]), max(h, wanted[1])), "padded size")
    else:
        assert size is not None
        canvas_size = _check_size(size)
        if canvas_size[0] < w or canvas_size[1] < h:
            raise ValueError(
                f"cannot pad a {w}x{h} image to {canvas_size[0]}x{canvas_size[1]}: it is smaller (resize first)"
            )
    return _paste_centred(_canvas(src, canvas_size, parse_color(color)), src)


def crop(img: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """Crop to ``box`` = [x0, y0, x1, y1], fractions of width and height (0 <= x0 < x1 <= 1).

    Pixel box: columns ``round(x0*W)`` to ``round(x1*W)`` (end excluded), rows alike,
    rounding half up. ValueError when it would be empty.
    """
    if not isinstance(box, tuple | list) or len(box) != 4:
        raise ValueError(f"box must be [x0, y0, x1, y1], got {box!r}")
    values = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"box must hold 4 finite numbers, got {box!r}")
        values.append(float(v))
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {box!r}")
    src = normalize_mode(img)
    w, h = src.size
    pixels = (_round(x0 * w), _round(y0 * h), _round(x1 * w), _round(y1 * h))
    if pixels[2] <= pixels[0] or pixels[3] <= pixels[1]:
        raise ValueError(f"box {box!r} is empty on a {w}x{h} image (pixels {pixels})")
    return src.crop(pixels)


def convert(img: Image.Image, fmt: str, quality: int | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """Prepare an image for ``fmt`` (png, jpeg/jpg, webp); returns (image, encode options).

    The image is what the file will hold (jpeg: transparency flattened onto white, RGB;
    png/webp: RGB or RGBA), the options are keyword arguments for
    :func:`dalle_pipe.imaging.io.encode`: ``data = encode(image, **options)``.
    ``quality`` (1..100, default 90) applies to jpeg and webp; it is refused for png.
    """
    name = normalize_format(fmt)
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
        if name == "png":
            raise ValueError("quality applies to jpeg and webp, not png")
    out = flatten(img) if name == "jpeg" else normalize_mode(img)
    options: dict[str, Any] = {"fmt": name}
    if name != "png":
        options["quality"] = quality if quality is not None else DEFAULT_QUALITY
    return out, options


def composite(
    background: Image.Image,
    cutout: Image.Image,
    *,
    position: tuple[float, float] = (0.5, 0.5),
    scale: float | None = None,
) -> Image.Image:
    """Lay ``cutout`` over ``background``, alpha respected, its centre at ``position``.

    ``position`` is in fractions of the background (x, y); ``scale`` is the cutout's
    width as a fraction of the background's width (aspect kept; None keeps its pixel
    size). The top-left corner is rounded half up; parts outside the background are
    clipped. The result has the background's size, and is RGBA when the background has
    transparency (Porter-Duff "over"), else RGB.
    """
    if not isinstance(position, tuple | list) or len(position) != 2:
        raise ValueError(f"position must be [x, y], got {position!r}")
    px, py = (float(v) for v in position)
    if not (math.isfinite(px) and math.isfinite(py)):
        raise ValueError(f"position must be finite, got {position!r}")
    base = normalize_mode(background)
    top = normalize_mode(cutout).convert("RGBA")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < math.inf:
            raise ValueError(f"scale must be a number > 0, got {scale!r}")
        new_w = max(1, _round(base.width * scale))
        new_h = max(1, _round(top.height * new_w / top.width))
        _check_size((new_w, new_h), "scaled cutout")
        if (new_w, new_h) != top.size:
            top = top.resize((new_w, new_h), Image.Resampling.LANCZOS)
    x = _round(px * base.width - top.width / 2)
    y = _round(py * base.height - top.height / 2)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(top, (x, y))
    out = Image.alpha_composite(base.convert("RGBA"), layer)
    return out if has_alpha(base) else out.convert("RGB")
