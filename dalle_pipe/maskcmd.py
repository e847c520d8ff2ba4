"""`dalle-pipe mask` and `dalle-pipe markup`: the mask and markup steps' geometry from the command line.

Bad input is a UsageError (exit 2, one line), never a traceback: numbers that are not
fractions, a shape entirely off the image, a mask that leaves nothing to edit (unless
`allow_empty`), an output that is not a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import store
from .errors import UsageError
from .imaging import io as imgio
from .imaging import markup
from .imaging.geometry import check_mask

Shape = dict[str, Any]


def parse_shapes(circle: Sequence[str] = (), ellipse: Sequence[str] = (), rect: Sequence[str] = (),
                 polygon: Sequence[str] = ()) -> list[tuple[str, Shape]]:
    """(option as typed, shape) for each --circle/--ellipse/--rect/--polygon value."""
    shapes: list[tuple[str, Shape]] = []
    for text in circle:
        cx, cy, r = parse_floats(text, 3, "--circle")
        shapes.append((f"--circle {text}", {"circle": {"center": [cx, cy], "radius": r}}))
    for kind, values in (("ellipse", ellipse), ("rect", rect)):
        for text in values:
            shapes.append((f"--{kind} {text}", {kind: {"box": parse_floats(text, 4, f"--{kind}")}}))
    for text in polygon:
        pts = parse_floats(text, None, "--polygon")
        if len(pts) < 6 or len(pts) % 2:
            raise UsageError(f"--polygon {text!r}: expected at least 3 X,Y pairs")
        shapes.append((f"--polygon {text}", {"polygon": {"points": [pts[i:i + 2] for i in range(0, len(pts), 2)]}}))
    return shapes


def parse_floats(text: str, count: int | None, name: str) -> list[float]:
    """The comma-separated numbers of one option value; a UsageError naming the option when they are not."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected numbers separated by commas") from None
    if count is not None and len(values) != count:
        raise UsageError(f"{name} {text!r}: expected {count} numbers")
    return values


def check_output(out: Path) -> None:
    """A mask is an RGBA PNG: refuse any other file name before doing any work."""
    if out.suffix.lower() != ".png":
        why = "; JPEG has no alpha channel" if out.suffix.lower() in (".jpg", ".jpeg") else ""
        raise UsageError(f"-o {out}: a mask is an RGBA PNG{why}", f"name it {out.with_suffix('.png').name}")


def make_mask(image: Path, out: Path, shapes: Sequence[tuple[str, Shape]], *, from_alpha: Path | None = None,
              invert: bool = False, feather: float = 0.0, allow_empty: bool = False) -> tuple[int, int]:
    """Write an RGBA PNG mask the size of `image`; returns its size."""
    check_output(out)
    issues = check_mask([s for _, s in shapes], invert=invert, from_alpha=from_alpha is not None,
                        allow_empty=allow_empty)
    if issues:
        issue = issues[0]
        where = f"{shapes[int(issue.path[1])][0]}: " if issue.path[:1] == ("shapes",) else ""
        hint = issue.hint
        if issue.marks_nothing:
            hint = f"{hint}; or pass --allow-empty" if hint else "pass --allow-empty to write it anyway"
        raise UsageError(f"{where}{issue.message}", hint)
    from .imaging import masks  # numpy loads only when a mask is made

    info = imgio.probe(image)
    alpha = imgio.load(from_alpha) if from_alpha is not None else None
    if alpha is not None and alpha.size != (info.width, info.height):
        alpha = alpha.resize((info.width, info.height))
    try:
        pixels = masks.mask_alpha(info.width, info.height, [s for _, s in shapes], from_alpha=alpha,
                                  invert=invert, feather=feather)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not allow_empty and bool((pixels == 255).all()):
        raise UsageError(f"the mask leaves nothing to edit: every pixel of the {info.width}x{info.height} image "
                         "is kept", "check the shapes: they are in fractions of the width and height; "
                         "or pass --allow-empty")
    store.atomic_write_bytes(out, imgio.encode_mask_png(pixels))
    return info.width, info.height


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
