"""`dalle-pipe markup`: the markup step's strokes from the command line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import store
from .errors import UsageError
from .imaging import io as imgio
from .imaging import markup
from .maskcmd import parse_floats, parse_shapes


def make_markup(image: Path, out: Path, shapes: Sequence[dict[str, Any]], *, color: str, width: float,
                fill: bool) -> tuple[int, int]:
    """Write a transparent PNG the size of `image` with the shapes' strokes; returns its size.

    Bad geometry, colour or width, or an output that is not .png, is a UsageError: nothing is written.
    """
    if out.suffix.lower() != ".png":
        raise UsageError(f"-o {out}: a markup is a PNG (it needs an alpha channel)", "name the output *.png")
    if not shapes:
        raise UsageError("no shape given", "add --circle, --ellipse, --rect, --polygon or --arrow")
    info = imgio.probe(image)
    try:
        img = markup.draw_markup(info.width, info.height, shapes, color=color, stroke=width, fill=fill)
    except ValueError as exc:
        raise UsageError(str(exc), "coordinates are fractions of the width and height (0..1)") from None
    store.atomic_write_bytes(out, imgio.encode(img, "png"))
    return info.width, info.height


def parse_markup_shapes(circle: Sequence[str], ellipse: Sequence[str], rect: Sequence[str], polygon: Sequence[str],
                        arrow: Sequence[str]) -> list[dict[str, Any]]:
    """The shapes of `dalle-pipe markup`'s options: the mask command's, plus --arrow X0,Y0,X1,Y1."""
    shapes = [shape for _, shape in parse_shapes(circle, ellipse, rect, polygon)]
    for text in arrow:
        x0, y0, x1, y1 = parse_floats(text, 4, "--arrow")
        shapes.append({"arrow": {"from": [x0, y0], "to": [x1, y1]}})
    return shapes
