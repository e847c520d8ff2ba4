"""Input images are decoded whole before anything is sent: short or corrupt pixel data is refused at validate."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from front_util import KEY, invoke, png, png_chunk, scanlines, tree, write

from dalle_pipe.imaging.io import ImageInputError, check_decodes, probe

RECIPE = """version: 1
name: t
steps:
  - id: beach
    edit:
      image: photos/mug.png
      prompt: a tropical beach
"""


def _adam7(width: int, height: int) -> bytes:
    """Interlaced pixel data: each of the seven passes' scanlines, filter byte 0."""
    out = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            out += scanlines(w, h, 0x40)
    return out


def _corrupt_zlib(width: int, height: int) -> bytes:
    data = bytearray(zlib.compress(scanlines(width, height)))
    data[len(data) // 2] ^= 0xFF  # the stream no longer inflates (or its checksum fails); every CRC is right
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", bytes(data))
            + png_chunk(b"IEND", b""))


CASES = {
    "half the scanlines": (png(64, 64, scanlines(64, 32)),
                           "image file is truncated or corrupt (PNG pixel data holds 6176 of 12352 bytes)"),
    "no pixel data at all": (png(64, 64, b""),
                             "image file is truncated or corrupt (PNG pixel data holds 0 of 12352 bytes)"),
    "a bad filter byte": (png(8, 8, scanlines(8, 7) + b"\x07" + b"\x00" * 24),
                          "image file is corrupt (bad PNG filter type 7)"),
    "more data than the header says": (png(8, 8, scanlines(8, 9)),
                                       "image file is corrupt (more pixel data than the PNG header says)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_png_whose_chunks_are_sound_but_pixels_are_not_is_refused_at_validate(
        tmp_path: Path, api: FakeOpenAI, case: str) -> None:
    data, reason = CASES[case]
    root = write(tmp_path / "p", {"recipe.yaml": RECIPE, "photos/mug.png": data})
    probe(root / "photos" / "mug.png")  # the header alone says nothing is wrong
    before = tree(root)
    for command in ("validate", "run"):
        r = invoke(root, command, "recipe.yaml", env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
        assert (r.exit_code, r.stderr) == (2, f"recipe.yaml:6:14: steps[0].edit.image: input image "
                                              f"'photos/mug.png': {reason}\n")
    assert api.requests == []
    assert tree(root) == before


def test_a_png_whose_compressed_stream_is_corrupt_is_refused(tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": RECIPE, "photos/mug.png": _corrupt_zlib(64, 64)})
    r = invoke(root, "validate", "recipe.yaml")
    assert r.exit_code == 2
    assert r.stderr.startswith("recipe.yaml:6:14: steps[0].edit.image: input image 'photos/mug.png': "
                               "image file is truncated or corrupt (")
    assert api.requests == []


def test_sound_pngs_pass_interlaced_included(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(png(37, 23, scanlines(37, 23)))
    interlaced = tmp_path / "interlaced.png"
    interlaced.write_bytes(png(37, 23, _adam7(37, 23), interlace=1))
    for path in (good, interlaced):
        check_decodes(path)
        assert probe(path, decode=True).size == (37, 23)


def test_the_verdict_is_cached_by_stat_and_an_edited_file_is_decoded_again(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(png(16, 16, scanlines(16, 16)))
    check_decodes(path)
    path.write_bytes(png(16, 16, scanlines(16, 8)))  # another size: another stat
    with pytest.raises(ImageInputError, match="PNG pixel data holds 392 of 784 bytes"):
        check_decodes(path)
    with pytest.raises(ImageInputError, match="PNG pixel data holds 392 of 784 bytes"):
        check_decodes(path)  # the cached verdict
