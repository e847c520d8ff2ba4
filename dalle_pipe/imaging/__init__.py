"""Pure image code: safe reading and encoding, edit masks, local transforms. No network.

- :mod:`dalle_pipe.imaging.io`: ``probe``, ``load``, ``encode``, ``prepare_upload``,
  ``to_rgba_png``, ``encode_mask_png``, ``ImageInfo``, ``ImageInputError``, ``MAX_PIXELS``.
- :mod:`dalle_pipe.imaging.masks`: ``inside``, ``build_mask``, ``mask_png``, ``mask_alpha``.
- :mod:`dalle_pipe.imaging.transforms`: ``resize``, ``pad``, ``crop``, ``convert``,
  ``composite``, ``parse_color``.
"""

from __future__ import annotations

from dalle_pipe.imaging.io import (
    MAX_PIXELS,
    ImageInfo,
    ImageInputError,
    encode,
    encode_mask_png,
    load,
    prepare_upload,
    probe,
    to_rgba_png,
)
from dalle_pipe.imaging.masks import Shape, build_mask, inside, mask_alpha, mask_png, shape_from_args
from dalle_pipe.imaging.transforms import composite, convert, crop, pad, parse_color, resize

__all__ = [
    "MAX_PIXELS",
    "ImageInfo",
    "ImageInputError",
    "Shape",
    "build_mask",
    "composite",
    "convert",
    "crop",
    "encode",
    "encode_mask_png",
    "inside",
    "load",
    "mask_alpha",
    "mask_png",
    "pad",
    "parse_color",
    "prepare_upload",
    "probe",
    "resize",
    "shape_from_args",
    "to_rgba_png",
]
