"""Safe reading and encoding: probe, load, encode, prepare_upload, mask conversion."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_pipe.errors import EXIT_INVALID, DallePipeError
from dalle_pipe.imaging import io as imgio
from dalle_pipe.imaging.io import ImageInputError, encode, load, prepare_upload, probe, to_rgba_png

ORIENTATION = 0x0112


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_header_only(width: int, height: int, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its IDAT is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def save(img: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    img.save(path, fmt, **options)
    return path


def marked(width: int = 40, height: int = 20) -> Image.Image:
    """Blue, with a red 10x10 block in the top-left corner."""
    img = Image.new("RGB", (width, height), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    return img


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return exif


def near(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


# --------------------------------------------------------------------------- probe


def test_probe_png_jpeg_webp(tmp_path: Path) -> None:
    png = save(Image.new("RGBA", (30, 20), (1, 2, 3, 4)), tmp_path / "a.png", "PNG")
    info = probe(png)
    assert (info.format, info.width, info.height, info.has_alpha, info.mode) == ("png", 30, 20, True, "RGBA")
    assert info.bytes == png.stat().st_size and info.mime == "image/png" and info.orientation == 1
    jpg = save(Image.new("RGB", (31, 21)), tmp_path / "b.jpg", "JPEG")
    info = probe(jpg)
    assert (info.format, info.size, info.has_alpha, info.mode) == ("jpeg", (31, 21), False, "RGB")
    webp = save(Image.new("RGBA", (16, 8)), tmp_path / "c.webp", "WEBP")
    info = probe(webp)
    assert (info.format, info.size, info.has_alpha) == ("webp", (16, 8), True)
    grey = save(Image.new("L", (5, 5)), tmp_path / "d.png", "PNG")
    assert probe(grey).has_alpha is False and probe(grey).mode == "L"


def test_probe_palette_transparency_counts_as_alpha(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 255, 255])
    path = save(pal, tmp_path / "p.png", "PNG", transparency=0)
    assert probe(path).has_alpha is True


def test_exif_rotated_jpeg_reports_swapped_size_and_load_applies_it(tmp_path: Path) -> None:
    path = save(marked(), tmp_path / "rotated.jpg", "JPEG", exif=exif_orientation(6), quality=95)
    info = probe(path)
    assert (info.width, info.height, info.orientation) == (20, 40, 6)
    img = load(path)
    assert img.size == (20, 40)
    # orientation 6: shown rotated 90° clockwise, so the top-left block ends up top-right
    assert near(img.getpixel((15, 4)), (255, 0, 0)) and near(img.getpixel((4, 4)), (0, 0, 255))
    assert ORIENTATION not in img.getexif()


def test_exif_orientation_in_a_png_after_its_pixels(tmp_path: Path) -> None:
    data = io.BytesIO()
    marked().save(data, "PNG")
    raw = data.getvalue()
    exif = exif_orientation(6).tobytes()
    at = raw.rindex(b"IEND") - 4
    path = tmp_path / "late-exif.png"
    path.write_bytes(raw[:at] + chunk(b"eXIf", exif) + raw[at:])
    assert probe(path).size == (20, 40)
    img = load(path)
    assert img.size == (20, 40) and img.getpixel((15, 4)) == (255, 0, 0)


def test_probe_does_not_decode_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(Image.new("RGB", (64, 64)), tmp_path / "x.png", "PNG")

    def refuse(self: Image.Image) -> None:
        raise AssertionError("probe decoded the image")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", refuse)
    assert probe(path).size == (64, 64)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (100_000, 100_000),  # Pillow's own DecompressionBombError (> 2 x its limit)
        (10_000, 10_000),  # Pillow's DecompressionBombWarning range: must not escape as a warning
        (9_000, 9_000),  # below Pillow's limit, above ours
    ],
)
def test_decompression_bombs_are_refused(tmp_path: Path, width: int, height: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(width, height))
    filters_before = list(warnings.filters)
    for reader in (probe, load, to_rgba_png):
        with pytest.raises(ImageInputError, match="too large to decode safely") as err:
            reader(path)
        assert f"{width * height} pixels; limit {imgio.MAX_PIXELS}" in err.value.message
        assert err.value.path == path
    assert warnings.filters == filters_before


def test_the_limit_itself_is_allowed_in_a_header(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(8192, 8192))
    with pytest.raises(ImageInputError, match=r"truncated|corrupt") as err:
        load(path)  # refused for its missing pixels, not its size
    assert "too large" not in err.value.message


def test_non_image_and_missing_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello, I am not a PNG")
    with pytest.raises(ImageInputError, match="not an image Pillow can read") as err:
        probe(text)
    assert isinstance(err.value, DallePipeError) and err.value.exit_code == EXIT_INVALID
    assert err.value.reason == "not an image Pillow can read" and str(text) in err.value.format()
    with pytest.raises(ImageInputError, match="not an image Pillow can read"):
        load(text)
    with pytest.raises(ImageInputError, match="file not found"):
        probe(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="directory"):
        probe(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError):
        probe(empty)


def test_formats_outside_the_allowed_plugins_are_refused(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8)), tmp_path / "x.pcx", "PCX")
    with pytest.raises(ImageInputError, match="not an image Pillow can read"):
        probe(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_refused(tmp_path: Path, fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    whole = io.BytesIO()
    noisy.save(whole, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) * 2 // 3])
    with pytest.raises(ImageInputError, match="truncated"):
        probe(path)
    with pytest.raises(ImageInputError):
        load(path)


def test_png_with_a_bad_crc_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageInputError, match="corrupt"):
        probe(path)


def test_jpeg_with_trailing_data_is_complete(tmp_path: Path) -> None:
    buf = io.BytesIO()
    marked().save(buf, "JPEG")
    path = tmp_path / "motion.jpg"
    path.write_bytes(buf.getvalue() + b"\x00" * 5000 + b"ftypmp42 a video after the image")
    assert probe(path).size == (40, 20)


# --------------------------------------------------------------------------- encode


def test_encode_png_keeps_rgba_and_jpeg_drops_alpha_onto_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (10, 200, 30, 255))
    png = Image.open(io.BytesIO(encode(rgba, "png")))
    assert png.format == "PNG" and png.mode == "RGBA" and png.getpixel((1, 1)) == (10, 200, 30, 255)
    assert png.getpixel((5, 5)) == (0, 0, 0, 0)
    jpeg = Image.open(io.BytesIO(encode(rgba, "jpg", quality=95)))
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB" and near(jpeg.getpixel((6, 6)), (255, 255, 255), 3)
    webp = Image.open(io.BytesIO(encode(rgba, "webp")))
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    grey = Image.open(io.BytesIO(encode(Image.new("L", (4, 4), 7), "png")))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (7, 7, 7)


def test_encode_errors() -> None:
    img = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match="png, jpeg or webp"):
        encode(img, "gif")
    with pytest.raises(ValueError, match="1 to 100"):
        encode(img, "jpeg", quality=101)


def test_mask_png_encoder_is_exact() -> None:
    alpha = np.random.default_rng(3).integers(0, 256, (37, 53), dtype=np.uint8)
    alpha[10:20] = 255
    decoded = Image.open(io.BytesIO(imgio.encode_mask_png(alpha)))
    assert decoded.mode == "RGBA" and decoded.size == (53, 37)
    rgba = np.asarray(decoded)
    assert (rgba[..., :3] == 255).all() and (rgba[..., 3] == alpha).all()
    # encode() takes the same path for white RGBA images, with the same pixels
    white = Image.merge("RGBA", (*[Image.new("L", (53, 37), 255)] * 3, Image.fromarray(alpha)))
    assert encode(white, "png") == imgio.encode_mask_png(alpha)


# --------------------------------------------------------------------------- uploads and masks


def test_prepare_upload_sends_allowed_files_as_they_are(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (8, 8)), tmp_path / "shot.png", "PNG")
    data, mime, name = prepare_upload(path, allowed_formats={"png", "jpeg", "webp"})
    assert data == path.read_bytes() and mime == "image/png" and name == "shot.png"
    jpg = save(marked(), tmp_path / "photo.png", "JPEG")  # a JPEG named .png
    data, mime, name = prepare_upload(jpg, allowed_formats={"png", "jpg"})
    assert data == jpg.read_bytes() and mime == "image/jpeg" and name == "photo.jpg"


def test_prepare_upload_rotates_and_re_encodes(tmp_path: Path) -> None:
    rotated = save(marked(), tmp_path / "r.jpg", "JPEG", exif=exif_orientation(6), quality=95)
    data, mime, name = prepare_upload(rotated, allowed_formats={"png", "jpeg"})
    img = Image.open(io.BytesIO(data))
    assert (mime, name, img.format, img.size) == ("image/jpeg", "r.jpg", "JPEG", (20, 40))
    assert ORIENTATION not in img.getexif()
    bmp = save(marked(), tmp_path / "b.bmp", "BMP")
    data, mime, name = prepare_upload(bmp, allowed_formats={"png", "jpeg", "webp"})
    assert (mime, name, Image.open(io.BytesIO(data)).format) == ("image/png", "b.png", "PNG")
    data, mime, name = prepare_upload(rotated, allowed_formats={"jpeg"}, as_png=True)
    img = Image.open(io.BytesIO(data))
    assert (mime, name, img.format, img.size) == ("image/png", "r.png", "PNG", (20, 40))
    with pytest.raises(ImageInputError, match="bmp is not accepted here"):
        prepare_upload(bmp, allowed_formats={"gif"})


def test_to_rgba_png_keeps_alpha_or_reads_luminance(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (6, 6), (255, 255, 255, 255))
    rgba.putpixel((2, 2), (255, 255, 255, 0))
    path = save(rgba, tmp_path / "m.png", "PNG")
    out = Image.open(io.BytesIO(to_rgba_png(path)))
    assert out.format == "PNG" and out.mode == "RGBA" and out.getpixel((2, 2)) == (255, 255, 255, 0)
    grey = Image.new("L", (6, 6), 255)
    grey.putpixel((1, 1), 0)
    grey.putpixel((3, 3), 128)
    gpath = save(grey, tmp_path / "g.png", "PNG")
    out = Image.open(io.BytesIO(to_rgba_png(gpath)))
    assert out.mode == "RGBA"
    assert out.getpixel((1, 1)) == (255, 255, 255, 0)  # black: edit
    assert out.getpixel((3, 3)) == (255, 255, 255, 128)
    assert out.getpixel((0, 0)) == (255, 255, 255, 255)  # white: keep
