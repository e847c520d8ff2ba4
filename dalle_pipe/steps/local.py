"""Local steps: masks and transforms, made on this machine with no API call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..imaging import io as imgio
from ..models import parse_size

if TYPE_CHECKING:
    from PIL import Image


def run_local(kind: str, body: Mapping[str, Any], inputs: Mapping[str, Sequence[Path]], fmt: str) -> bytes:
    """Make a local step's image; `inputs` maps a role to its files (first = the one used)."""
    if kind == "mask":
        return _mask(body, inputs)
    if kind == "markup":
        return _markup(body, inputs)
    from ..imaging import transforms

    first = imgio.load(inputs["image"][0]) if "image" in inputs else None
    quality = body.get("quality")
    if kind == "resize":
        assert first is not None
        size = parse_size(body["size"])
        assert size is not None
        img = transforms.resize(first, size, body.get("fit", "contain"), body.get("color"))
    elif kind == "pad":
        assert first is not None
        img = transforms.pad(first, aspect=body.get("aspect"), size=parse_size(body["size"]) if "size" in body
                             else None, color=body.get("color", "#ffffff"))
    elif kind == "crop":
        assert first is not None
        x0, y0, x1, y1 = body["box"]
        img = transforms.crop(first, (x0, y0, x1, y1))
    elif kind == "convert":
        assert first is not None
        img = first
    elif kind == "composite":
        assert first is not None
        background = imgio.load(inputs["background"][0])
        pos = body.get("position", [0.5, 0.5])
        img = transforms.composite(background, first, position=(pos[0], pos[1]), scale=body.get("scale"))
    else:
        raise ValueError(f"not a local step: {kind}")
    return imgio.encode(img, fmt, quality=quality if isinstance(quality, int) else None)


def _mask(body: Mapping[str, Any], inputs: Mapping[str, Sequence[Path]]) -> bytes:
    from ..imaging import masks  # numpy loads only when a mask is made

    alpha: Image.Image | None = None
    if "from_alpha" in inputs:
        alpha = imgio.load(inputs["from_alpha"][0])
        width, height = alpha.size
    elif "size_of" in inputs:
        info = imgio.probe(inputs["size_of"][0])
        width, height = info.width, info.height
    else:
        size = parse_size(body["size"])
        assert size is not None
        width, height = size
    img = masks.build_mask(width, height, body.get("shapes", []), from_alpha=alpha,
                           invert=bool(body.get("invert", False)), feather=float(body.get("feather", 0)))
    return imgio.encode(img, "png")


def _markup(body: Mapping[str, Any], inputs: Mapping[str, Sequence[Path]]) -> bytes:
    from ..imaging import markup

    if "size_of" in inputs:
        info = imgio.probe(inputs["size_of"][0])
        width, height = info.width, info.height
    else:
        size = parse_size(body["size"])
        assert size is not None
        width, height = size
    return markup.markup_png(width, height, body)
