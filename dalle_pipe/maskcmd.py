"""`dalle-pipe mask`: the mask step's geometry from the command line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import store
from .imaging import io as imgio
from .imaging import masks


def make_mask(image: Path, out: Path, shapes: Sequence[dict[str, Any]], *, from_alpha: Path | None = None,
              invert: bool = False, feather: float = 0.0) -> tuple[int, int]:
    """Write an RGBA PNG mask the size of `image`; returns its size."""
    info = imgio.probe(image)
    alpha = imgio.load(from_alpha) if from_alpha is not None else None
    if alpha is not None and alpha.size != (info.width, info.height):
        alpha = alpha.resize((info.width, info.height))
    img = masks.build_mask(info.width, info.height, shapes, from_alpha=alpha, invert=invert, feather=feather)
    store.atomic_write_bytes(out, imgio.encode(img, "png"))
    return info.width, info.height
