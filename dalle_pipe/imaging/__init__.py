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

_LAZY = {
    "Shape": "masks", "build_mask": "masks", "inside": "masks", "mask_alpha": "masks", "mask_png": "masks",
    "composite": "transforms", "convert": "transforms", "crop": "transforms",
    "pad": "transforms", "parse_color": "transforms", "resize": "transforms",
}


def __getattr__(name: str) -> object:
    """masks and transforms (and numpy with them) load on first use: a no-op rerun never needs them."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dalle_pipe.imaging.{_LAZY[name]}"), name)
    raise AttributeError(name)

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
    "to_rgba_png",
]
