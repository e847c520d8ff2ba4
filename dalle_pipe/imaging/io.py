"""Safe image reading and encoding.

Every image the tool reads goes through :func:`probe` (header only) or :func:`load`
(full decode). Both refuse decompression bombs, files Pillow cannot identify, and
truncated or corrupt files, with an :class:`ImageInputError` that says what is wrong
with the file. Both report the image the way a viewer shows it: after its EXIF
orientation (a JPEG tagged "rotate 90°" reports swapped width and height, and
:func:`load` returns it upright).

Decompression bombs: an image of more than :data:`MAX_PIXELS` pixels (8192 x 8192)
is refused before anything is decoded. Pillow's own guard (``Image.MAX_IMAGE_PIXELS``,
a warning above it and an error above twice it) is honoured too, and both of its
signals are turned into :class:`ImageInputError` inside a ``warnings.catch_warnings``
block, so that ``pytest -W error`` or a user's warning filters cannot turn a big
image into a crash. Python 3.11's warning filters are process-global, so those
blocks are serialised by a lock.
"""

from __future__ import annotations

import io
import mmap
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dalle_pipe.errors import DallePipeError

MAX_PIXELS: Final = 8192 * 8192
"""Decompression-bomb limit: images with more pixels than this are refused unread."""

OPEN_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""The Pillow plugins allowed to identify a file (no EPS/PDF/PSD/... and no Ghostscript)."""

MIME_TYPES: Final = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
}
EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tiff"}
ENCODE_FORMATS: Final = ("png", "jpeg", "webp")
DEFAULT_QUALITY: Final = 90

_ORIENTATION_TAG: Final = 0x0112
_SWAPPING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PIL_LOCK = threading.RLock()


if TYPE_CHECKING:  # Pillow loads at the first image read (a no-op rerun reads none)
    import numpy as np
    import numpy.typing as npt
    from PIL import Image


class ImageInputError(DallePipeError):
    """An input file is not an image we can use: unreadable, unknown, truncated, too large.

    ``message`` is ``"<path>: <reason>"``; ``reason`` and ``path`` are kept apart for
    callers that report the path themselves.
    """

    def __init__(self, path: Path | str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint)
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe` learns from a file's header.

    ``width``/``height`` are after EXIF orientation; ``orientation`` is the EXIF tag
    (1 = none) and ``bytes`` the file size.
    """

    format: str  # "png" | "jpeg" | "webp" | "gif" | "bmp" | "tiff" (lower-case; MPO is "jpeg")
    width: int
    height: int
    bytes: int
    has_alpha: bool
    mode: str
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def mime(self) -> str:
        return MIME_TYPES.get(self.format, "application/octet-stream")


# --------------------------------------------------------------------------- guards


def _too_large(path: Path, pixels: int | None) -> ImageInputError:
    count = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return ImageInputError(
        path,
        f"image is too large to decode safely ({count}; limit {MAX_PIXELS})",
        "a possible decompression bomb; images over 8192x8192 are refused",
    )


def _pixels_from_message(text: str) -> int | None:
    match = re.search(r"\((\d+) pixels\)", text)
    return int(match.group(1)) if match else None


@contextmanager
def _guarded(path: Path) -> Iterator[None]:
    """Run Pillow code on ``path``, turning every way it can fail into ImageInputError."""
    from PIL import Image, UnidentifiedImageError

    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(path, _pixels_from_message(str(exc))) from exc
        except FileNotFoundError as exc:
            raise ImageInputError(path, "file not found") from exc
        except IsADirectoryError as exc:
            raise ImageInputError(path, "is a directory, not an image file") from exc
        except PermissionError as exc:
            raise ImageInputError(path, "permission denied") from exc
        except UnidentifiedImageError as exc:
            raise ImageInputError(
                path,
                "not an image Pillow can read",
                "supported: " + ", ".join(f.lower() for f in OPEN_FORMATS),
            ) from exc
        except MemoryError as exc:
            raise ImageInputError(path, "not enough memory to decode this image") from exc
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError) as exc:
            raise ImageInputError(path, f"image file is truncated or corrupt ({exc})") from exc


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageInputError(path, f"image has an empty size ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise _too_large(path, width * height)


def _format_name(im: Image.Image) -> str:
    fmt = (im.format or "").lower()
    return "jpeg" if fmt == "mpo" else fmt


def has_alpha(img: Image.Image) -> bool:
    """True when the image has an alpha channel or a transparent palette/colour key."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


# --------------------------------------------------------------------------- structure checks


def _walk_png(path: Path) -> bytes | None:
    """Check every PNG chunk's CRC up to IEND (no decompression); return eXIf data if any."""
    exif: bytes | None = None
    with path.open("rb") as fh:
        if fh.read(8) != _PNG_SIGNATURE:
            raise ImageInputError(path, "image file is truncated or corrupt (bad PNG signature)")
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise ImageInputError(path, "image file is truncated (PNG ends before IEND)")
            length, ctype = struct.unpack(">I4s", head)
            if length > 0x7FFFFFFF:
                raise ImageInputError(path, "image file is corrupt (bad PNG chunk length)")
            data = fh.read(length)
            crc = fh.read(4)
            if len(data) < length or len(crc) < 4:
                raise ImageInputError(path, f"image file is truncated (inside a PNG {_chunk_name(ctype)} chunk)")
            if zlib.crc32(ctype + data) != struct.unpack(">I", crc)[0]:
                raise ImageInputError(path, f"image file is corrupt (CRC error in a {_chunk_name(ctype)} chunk)")
            if ctype == b"eXIf" and exif is None:
                exif = data
            if ctype == b"IEND":
                return exif


_PNG_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7: Final = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP: Final = 1 << 20


def _png_rows(width: int, height: int, bits: int, interlaced: bool) -> list[tuple[int, int]]:
    """(bytes per scanline with its filter byte, scanlines) of each pass of a PNG's pixel data."""
    def row(w: int) -> int:
        return 1 + (w * bits + 7) // 8

    if not interlaced:
        return [(row(width), height)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            passes.append((row(w), h))
    return passes


def _check_png_pixels(path: Path) -> None:
    """Inflate a PNG's IDAT stream (in steps, keeping nothing) and check it holds exactly the
    scanlines its header promises, each with a valid filter byte."""
    header: bytes | None = None
    inflate = zlib.decompressobj()
    rows: list[tuple[int, int]] = []
    seg, left, pos_in_row = 0, 0, 0  # current pass, scanlines left in it, offset in the scanline
    total = 0

    def feed(data: bytes) -> None:
        nonlocal seg, left, pos_in_row, total
        i = 0
        while i < len(data):
            if seg >= len(rows):
                raise ImageInputError(path, "image file is corrupt (more pixel data than the PNG header says)")
            length = rows[seg][0]
            if pos_in_row == 0 and data[i] > 4:
                raise ImageInputError(path, f"image file is corrupt (bad PNG filter type {data[i]})")
            take = min(length - pos_in_row, len(data) - i)
            i += take
            pos_in_row += take
            total += take
            if pos_in_row == length:
                pos_in_row = 0
                left -= 1
                if left == 0:
                    seg += 1
                    left = rows[seg][1] if seg < len(rows) else 0

    with path.open("rb") as fh:
        fh.seek(8)
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"IHDR":
                header = fh.read(length)
                width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
                rows = _png_rows(width, height, _PNG_CHANNELS.get(color, 4) * depth, interlace == 1)
                left = rows[0][1] if rows else 0
                fh.seek(4, io.SEEK_CUR)
                continue
            if ctype == b"IEND":
                break
            if ctype != b"IDAT":
                fh.seek(length + 4, io.SEEK_CUR)
                continue
            data = fh.read(length)
            fh.seek(4, io.SEEK_CUR)
            while data:
                feed(inflate.decompress(data, _INFLATE_STEP))
                data = inflate.unconsumed_tail
    feed(inflate.flush())
    expected = sum(n * count for n, count in rows)
    if header is None:
        raise ImageInputError(path, "image file is corrupt (no PNG header)")
    if not inflate.eof or total < expected:
        raise ImageInputError(path, f"image file is truncated or corrupt (PNG pixel data holds {total} of "
                                    f"{expected} bytes)")


def _chunk_name(ctype: bytes) -> str:
    return ctype.decode("latin-1", "replace")


def _check_jpeg(path: Path) -> None:
    """Walk the JPEG segments to the first scan and make sure an EOI marker follows it."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        pos = 2  # after SOI
        while pos < size:
            if data[pos] != 0xFF:
                raise ImageInputError(path, "image file is corrupt (bad JPEG segment)")
            while pos < size and data[pos] == 0xFF:  # marker prefix and fill bytes
                pos += 1
            if pos >= size:
                break
            marker = data[pos]
            pos += 1
            if marker == 0xD9:  # EOI before any scan
                return
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
                continue
            if pos + 2 > size:
                break
            length = (data[pos] << 8) | data[pos + 1]
            if marker == 0xDA:  # SOS: entropy-coded data follows; EOI ends the image
                if data.find(b"\xff\xd9", pos + length) >= 0:
                    return
                break
            pos += length
        raise ImageInputError(path, "image file is truncated (JPEG has no end-of-image marker)")


def _check_webp(path: Path, file_size: int) -> None:
    with path.open("rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise ImageInputError(path, "image file is corrupt (bad WebP header)")
    riff_size = struct.unpack("<I", head[4:8])[0]
    if riff_size + 8 > file_size:
        raise ImageInputError(path, f"image file is truncated ({file_size} of {riff_size + 8} bytes)")


def _orientation(im: Image.Image) -> int:
    from PIL import Image

    # Image.getexif itself: PngImageFile.getexif decodes the pixels when no eXIf came before them
    value = Image.Image.getexif(im).get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --------------------------------------------------------------------------- public API


def probe(path: Path, *, decode: bool = False) -> ImageInfo:
    """Read an image's header (no pixel decode) and check the file is complete.

    PNG: every chunk's CRC is checked up to IEND; JPEG: an end-of-image marker must
    follow the first scan; WebP: the RIFF size must fit the file. Other formats are
    checked by :func:`load` only. With `decode`, the pixels are decoded whole too (see
    :func:`check_decodes`): a PNG whose chunks are sound but whose pixel data is short or
    corrupt is refused.
    """
    from PIL import Image

    path = Path(path)
    if decode:
        check_decodes(path)
    with _guarded(path):
        file_size = path.stat().st_size
        with Image.open(path, formats=OPEN_FORMATS) as im:
            _check_pixels(path, im.size)
            fmt = _format_name(im)
            if fmt == "png":
                exif = _walk_png(path)
                if exif is not None and "exif" not in im.info:
                    im.info["exif"] = exif  # an eXIf chunk after IDAT: read it without decoding
            elif fmt == "jpeg":
                _check_jpeg(path)
            elif fmt == "webp":
                _check_webp(path, file_size)
            orientation = _orientation(im)
            width, height = im.size
            info = ImageInfo(
                format=fmt,
                width=height if orientation in _SWAPPING_ORIENTATIONS else width,
                height=width if orientation in _SWAPPING_ORIENTATIONS else height,
                bytes=file_size,
                has_alpha=has_alpha(im),
                mode=im.mode,
                orientation=orientation,
            )
    return info


_DECODED_MAX = 4096
_decoded: dict[tuple[str, int, int, int, int], ImageInputError | None] = {}
_DECODED_LOCK = threading.Lock()


def check_decodes(path: Path) -> None:
    """Decode every pixel of the image once, keeping nothing; raise ImageInputError when it fails.

    The verdict is cached by the file's identity and stat (device, inode, size, mtime), so a
    catalog naming one input a thousand times decodes it once, and an edited file again."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        with _guarded(path):
            path.stat()  # raises the readable error
        raise
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _DECODED_LOCK:
        if key in _decoded:
            known = _decoded[key]
            if known is not None:
                raise known
            return
    from PIL import Image

    error: ImageInputError | None = None
    try:
        with _guarded(path), Image.open(path, formats=OPEN_FORMATS) as im:
            _check_pixels(path, im.size)
            if _format_name(im) == "png":
                # Pillow fills short pixel data with black, silently. Inflating the stream and
                # checking every scanline is the whole decode's work, minus unfiltering.
                _check_png_pixels(path)
            else:
                im.load()
    except ImageInputError as exc:
        error = exc
    with _DECODED_LOCK:
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[key] = error
    if error is not None:
        raise error


def load(path: Path) -> Image.Image:
    """Fully decode an image (first frame), EXIF orientation applied; same checks as probe."""
    from PIL import Image, ImageOps

    path = Path(path)
    with _guarded(path):
        im = Image.open(path, formats=OPEN_FORMATS)
        try:
            _check_pixels(path, im.size)
            im.load()
            out = ImageOps.exif_transpose(im)  # a new image, independent of the file
            out.format = _format_name(im).upper() or None
        finally:
            im.close()
    return out


def normalize_mode(img: Image.Image) -> Image.Image:
    """The image as RGB, or RGBA when it has any transparency (16-bit/float scaled to 8-bit)."""
    if img.mode in ("RGB", "RGBA"):
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        import numpy as np  # imported here: most commands never need numpy
        from PIL import Image

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    return img.convert("RGBA" if has_alpha(img) else "RGB")


def _check_quality(quality: int | None) -> None:
    if quality is not None and (isinstance(quality, bool) or not 1 <= quality <= 100):
        raise ValueError(f"quality must be an integer from 1 to 100, not {quality!r}")


def normalize_format(fmt: str) -> str:
    """'png' | 'jpeg' | 'webp' from any spelling ('JPG', 'jpeg', 'PNG', ...); ValueError otherwise."""
    name = fmt.strip().lower()
    name = "jpeg" if name == "jpg" else name
    if name not in ENCODE_FORMATS:
        raise ValueError(f"cannot encode {fmt!r}: use png, jpeg or webp")
    return name


def flatten(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite an image with transparency onto an opaque colour (white by default); RGB out."""
    img = normalize_mode(img)
    if img.mode == "RGB":
        return img
    from PIL import Image

    base = Image.new("RGBA", img.size, (*background, 255))
    return Image.alpha_composite(base, img).convert("RGB")


def _is_white_rgb(img: Image.Image) -> bool:
    extrema = img.getextrema()
    return all(band == (255, 255) for band in extrema[:3])


def encode(img: Image.Image, fmt: str, *, quality: int | None = None, compress_level: int = 6) -> bytes:
    """Encode as png, jpeg or webp.

    png keeps RGBA (or RGB when there is no transparency), ignores ``quality``; an RGBA
    image whose colour is white everywhere (a mask) goes through :func:`encode_mask_png`;
    jpeg drops alpha onto white; webp keeps alpha. ``quality`` defaults to 90.
    EXIF is not written (orientation has been applied); an ICC profile is kept.
    """
    import numpy as np  # imported here: most commands never need numpy

    name = normalize_format(fmt)
    _check_quality(quality)
    options: dict[str, object] = {}
    icc = img.info.get("icc_profile")
    if isinstance(icc, bytes) and icc:
        options["icc_profile"] = icc
    buf = io.BytesIO()
    if name == "png":
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be 0..9, not {compress_level}")
        if img.mode == "RGBA" and not options and _is_white_rgb(img):  # a mask: the fast, exact path
            return encode_mask_png(np.asarray(img.getchannel("A"), dtype=np.uint8))
        normalize_mode(img).save(buf, "PNG", compress_level=compress_level, **options)
    elif name == "jpeg":
        flatten(img).save(buf, "JPEG", quality=quality or DEFAULT_QUALITY, **options)
    else:
        normalize_mode(img).save(buf, "WEBP", quality=quality or DEFAULT_QUALITY, **options)
    return buf.getvalue()


def _png_chunk(ctype: bytes, data: bytes | memoryview) -> bytes:
    head = struct.pack(">I", len(data)) + ctype
    crc = zlib.crc32(data, zlib.crc32(ctype))
    return head + bytes(data) + struct.pack(">I", crc)


def encode_mask_png(alpha: npt.NDArray[np.uint8], *, level: int = 6) -> bytes:
    """An RGBA PNG that is white everywhere, with ``alpha`` (an (H, W) uint8 array) as alpha.

    The fast path for masks: scanlines use PNG's "Up" filter (a mask's rows mostly
    repeat, so they filter to zeros) and zlib's run-length strategy, several times
    faster than Pillow's adaptive filtering for the same size. Decodes to exactly
    ``(255, 255, 255, alpha)``.
    """
    import numpy as np  # imported here: most commands never need numpy

    if alpha.ndim != 2 or alpha.dtype != np.uint8 or alpha.size == 0:
        raise ValueError("alpha must be a non-empty 2-D uint8 array")
    height, width = alpha.shape
    raw = np.zeros((height, 4 * width + 1), dtype=np.uint8)
    raw[1:, 0] = 2  # filter type Up for every row but the first (None)
    pixels = raw[:, 1:].reshape(height, width, 4)
    pixels[0, :, :3] = 255  # colour: 255 in row 0, then unchanged (0 after the Up filter)
    pixels[0, :, 3] = alpha[0]
    np.subtract(alpha[1:], alpha[:-1], out=pixels[1:, :, 3])  # modulo 256, as PNG wants
    packer = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = packer.compress(raw.data) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return b"".join((_PNG_SIGNATURE, _png_chunk(b"IHDR", ihdr), _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")))


def _upload_name(path: Path, fmt: str) -> str:
    return f"{path.stem or 'image'}.{EXTENSIONS.get(fmt, fmt)}"


def prepare_upload(path: Path, *, allowed_formats: set[str], as_png: bool = False) -> tuple[bytes, str, str]:
    """Bytes to upload, their MIME type and a file name (extension matching the real format).

    The file is sent as-is when its format is in ``allowed_formats`` (png, jpeg, webp...)
    and it needs no EXIF rotation. Otherwise it is decoded (EXIF applied) and
    re-encoded: as PNG when ``as_png``; else in its own format when allowed, then
    png, webp, jpeg (quality 95), the first one allowed. With ``as_png`` only a PNG
    file is passed through as-is.
    """
    path = Path(path)
    allowed = {"jpeg" if f.lower() == "jpg" else f.lower() for f in allowed_formats}
    if not allowed and not as_png:
        raise ValueError("allowed_formats is empty")
    info = probe(path)
    passthrough = info.format in allowed and (not as_png or info.format == "png")
    if passthrough and info.orientation == 1:
        with _guarded(path):
            data = path.read_bytes()
        return data, MIME_TYPES[info.format], _upload_name(path, info.format)
    img = load(path)
    if as_png:
        target = "png"
    elif info.format in allowed and info.format in ENCODE_FORMATS:
        target = info.format
    else:
        target = next((f for f in ENCODE_FORMATS if f in allowed), "")
        if not target:
            raise ImageInputError(
                path, f"{info.format} is not accepted here", "accepted: " + ", ".join(sorted(allowed))
            )
    data = encode(img, target, quality=95 if target == "jpeg" else None)
    return data, MIME_TYPES[target], _upload_name(path, target)


def mask_to_rgba(img: Image.Image) -> Image.Image:
    """Any mask image as RGBA: alpha 0 = the area to edit.

    An image with transparency keeps its alpha (and colours). An image without
    transparency is read by its luminance: black = edit (alpha 0), white = keep
    (alpha 255), grey = in between; its colour becomes white, as in the masks
    ``build_mask`` writes.
    """
    if has_alpha(img):
        return img if img.mode == "RGBA" else img.convert("RGBA")
    from PIL import Image

    lum = normalize_mode(img).convert("L")
    white = Image.new("L", img.size, 255)
    return Image.merge("RGBA", (white, white, white, lum))


def to_rgba_png(path: Path) -> bytes:
    """Mask conversion: any mask image file → RGBA PNG bytes (see :func:`mask_to_rgba`)."""
    path = Path(path)
    return encode(mask_to_rgba(load(path)), "png")
