"""The offline provider: a deterministic local renderer (Pillow + NumPy, no network, no key).

It honours ``size`` ("WxH"; "auto" or absent: the first input's size for edits and
variations, else 1024x1024), ``n``, ``output_format`` (png | jpeg | webp; "jpg" is read
as jpeg; default png), ``output_compression`` (the jpeg/webp quality, default 90) and
``background: transparent`` (the picture's background region gets alpha 0; ignored for
jpeg, which has no alpha).

- generate: a two-colour gradient plus a few shapes, every choice drawn from
  sha256(kind, model, prompt, index). Same request, same bytes (PNG written by a
  fixed encoder: Up filter, zlib level 1, no metadata or timestamp); different prompts, different pixels.
- edit: the first input image (resized with LANCZOS first when the requested size
  differs from its own) is combined with a generated picture through the mask's
  alpha channel: alpha 0 takes the generated pixel, alpha 255 keeps the input
  pixel exactly (bit-identical in a PNG output), values in between blend
  (feathered masks). A mask of another size is resized (nearest) to the output's.
  A mask without an alpha channel marks nothing (as with the API, only
  transparency marks the area to edit). Without a mask the whole picture is a
  blend of the input and a generated picture, so the result stays recognisable.
- variation: the input (at its own size unless a WxH size is asked for) with a
  hue shift and a little noise, both seeded by sha256(input bytes, model, index).

- markup (an edit's guiding strokes): the strokes are drawn, opaque where the markup is,
  into the generated picture before it is combined with the input through the mask
  (without a mask, the 50/50 blend keeps them visible at half strength).

Routes: on the Images route ``revised_prompt`` is None, as GPT image models return none
there; on the Responses route (the request names a mainline model) it is ``[offline] ``
followed by the prompt, and the response has an id ``resp_offline_<12 hex>``, so an offline
run shows where revised prompts will appear. ``usage`` is None; request ids look like
``offline-<12 hex>``.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from .base import BadRequest, GeneratedImage, ImageRequest, ImageResponse, InputFile, JudgeRequest, Verdict

U8 = npt.NDArray[np.uint8]

DEFAULT_SIZE = (1024, 1024)
MAX_SIDE = 8192
DEFAULT_QUALITY = 90
PNG_COMPRESS_LEVEL = 1  # fast; the bytes are still fully determined by the pixels
FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
REVISED_MARK = "[offline] "


def _stream(seed: bytes) -> Iterator[int]:
    """An endless, deterministic stream of bytes derived from seed (sha256 in counter mode)."""
    counter = 0
    while True:
        yield from hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1


class _Draw:
    """Deterministic numbers in [0, 1) from a byte stream."""

    def __init__(self, seed: bytes) -> None:
        self._bytes = _stream(seed)

    def unit(self) -> float:
        b = bytes(next(self._bytes) for _ in range(4))
        return int.from_bytes(b, "big") / 2**32

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.unit()

    def choice(self, k: int) -> int:
        return min(int(self.unit() * k), k - 1)

    def colour(self, *, s: tuple[float, float] = (0.45, 0.9), v: tuple[float, float] = (0.35, 0.95)) -> U8:
        r, g, b = colorsys.hsv_to_rgb(self.unit(), self.uniform(*s), self.uniform(*v))
        return np.array([round(r * 255), round(g * 255), round(b * 255)], dtype=np.uint8)


def render(width: int, height: int, seed: bytes, *, transparent: bool = False) -> U8:
    """The generated picture for seed: an (H, W, 4) uint8 RGBA array.

    A linear two-colour gradient at a seeded angle, then 3 to 6 shapes (circles,
    rectangles, ellipses). With transparent, the gradient (background) has alpha 0
    and the shapes alpha 255; otherwise everything is opaque.
    """
    d = _Draw(seed)
    c0, c1 = d.colour(), d.colour()
    angle = d.uniform(0.0, 2 * np.pi)
    # Gradient parameter t in [0, 255] along the angle, quantised, then a 256-entry
    # palette lookup: one gather instead of float maths per channel.
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    gx = np.float32(np.cos(angle) / np.sqrt(2.0))
    gy = np.float32(np.sin(angle) / np.sqrt(2.0))
    t = (xs * gx)[None, :] + (ys * gy)[:, None]  # within [-0.5, 0.5]
    idx = np.clip((t + np.float32(0.5)) * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]
    palette = np.empty((256, 4), dtype=np.uint8)
    palette[:, :3] = np.round(c0 * (1 - ramp) + c1 * ramp).astype(np.uint8)
    palette[:, 3] = 0 if transparent else 255
    # Work on whole pixels as uint32 (one lookup / store per pixel, not per channel).
    packed = palette.view(np.uint32).reshape(256)
    img32 = packed[idx]

    short = min(width, height)
    for _ in range(3 + d.choice(4)):
        kind = d.choice(3)
        pixel = np.empty(4, dtype=np.uint8)
        pixel[:3] = d.colour(v=(0.5, 1.0))
        pixel[3] = 255
        value = pixel.view(np.uint32)[0]
        cx, cy = d.uniform(0.1, 0.9) * width, d.uniform(0.1, 0.9) * height
        rx = d.uniform(0.06, 0.22) * short
        ry = rx if kind == 0 else d.uniform(0.06, 0.22) * short
        x0, x1 = max(0, int(cx - rx)), min(width, int(cx + rx) + 1)
        y0, y1 = max(0, int(cy - ry)), min(height, int(cy + ry) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        region = img32[y0:y1, x0:x1]
        if kind == 1:  # rectangle: the whole box
            region[...] = value
            continue
        dx = ((np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx)) * np.float32(1 / rx)) ** 2
        dy = ((np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy)) * np.float32(1 / ry)) ** 2
        np.putmask(region, (dx[None, :] + dy[:, None]) <= 1.0, value)
    img: U8 = img32.view(np.uint8).reshape(height, width, 4)
    return img


def parse_size(value: Any) -> tuple[int, int] | None:
    """'WxH' → (W, H); None or 'auto' → None; anything else is a BadRequest."""
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        w, sep, h = value.lower().partition("x")
        if sep and w.isdigit() and h.isdigit():
            width, height = int(w), int(h)
            if 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE:
                return width, height
    raise BadRequest(
        f"offline: invalid size {value!r} (expected WxH, e.g. 1024x1024, or auto)", code="invalid_size"
    )


def _decode(f: InputFile) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(f.data))
        img.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise BadRequest(f"offline: cannot read {f.role} {f.path!r}: {exc}", code="invalid_image") from exc
    return img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _as_rgba(img: Image.Image) -> U8:
    return np.asarray(img.convert("RGBA"), dtype=np.uint8)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(pixels: U8) -> bytes:
    """A minimal 8-bit RGB/RGBA PNG: IHDR, one IDAT, IEND; no metadata, no timestamp.

    Every row uses the "Up" filter (a vectorised difference with the row above) and
    zlib level 1: about 3x faster than Pillow's adaptive filtering for the same
    pixels, and the bytes depend only on the pixels.
    """
    height, width, channels = pixels.shape
    raw = np.ascontiguousarray(pixels).reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), dtype=np.uint8)
    rows[:, 0] = 2  # filter type Up
    rows[0, 0] = 0  # the first row has nothing above it: filter None
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256
    colour_type = 6 if channels == 4 else 2
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", ihdr),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESS_LEVEL)),
            _chunk(b"IEND", b""),
        )
    )


def _encode(pixels: U8, fmt: str, quality: int) -> bytes:
    """Encode an (H, W, 3|4) array. Deterministic: fixed settings, no metadata, no timestamps."""
    if fmt == "png":
        return encode_png(pixels)
    if fmt == "jpeg" and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    pixels = np.ascontiguousarray(pixels)
    img = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    else:
        img.save(buf, "WEBP", quality=quality, method=4, exact=True)
    return buf.getvalue()


def _blend(keep: U8, new: U8, alpha: U8) -> U8:
    """alpha 255 keeps `keep` exactly, 0 takes `new` exactly, in between a rounded blend."""
    a = alpha.astype(np.uint32)[..., None]
    out = (keep.astype(np.uint32) * a + new.astype(np.uint32) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


class OfflineProvider:
    """A deterministic local renderer with the Provider interface."""

    name = "offline"

    def send(self, request: ImageRequest) -> ImageResponse:
        params = request.params
        raw_fmt = str(params.get("output_format") or "png").lower()
        fmt = FORMATS.get(raw_fmt)
        if fmt is None:
            raise BadRequest(
                f"offline: unsupported output_format {raw_fmt!r} (png, jpeg or webp)", code="invalid_format"
            )
        compression = params.get("output_compression")
        quality = DEFAULT_QUALITY if compression is None else max(1, min(100, int(compression)))
        transparent = params.get("background") == "transparent" and fmt != "jpeg"
        size = parse_size(params.get("size"))
        n = request.n
        if not 1 <= n <= 10:
            raise BadRequest(f"offline: n must be between 1 and 10, got {n}", code="invalid_n")

        base_seed = self._seed(request)
        frames: list[U8] = []
        if request.kind == "generate":
            width, height = size or DEFAULT_SIZE
            for i in range(n):
                px = render(width, height, base_seed + i.to_bytes(4, "big"), transparent=transparent)
                frames.append(px if transparent else px[..., :3])
        else:
            if not request.images:
                raise BadRequest(f"offline: {request.kind} needs an input image", code="missing_image")
            first = _decode(request.images[0])
            width, height = size or first.size
            keep_alpha = _has_alpha(first) or transparent
            if first.size != (width, height):
                first = first.convert("RGBA").resize((width, height), Image.Resampling.LANCZOS)
            base = _as_rgba(first)
            if request.kind == "edit":
                alpha = self._mask_alpha(request, width, height)
                strokes = self._markup(request, width, height)
                for i in range(n):
                    gen = render(width, height, base_seed + i.to_bytes(4, "big"), transparent=transparent)
                    if strokes is not None:
                        gen = _blend(gen, strokes, 255 - strokes[..., 3])  # the strokes, drawn into it
                    px = _blend(base, gen, alpha)
                    frames.append(px if keep_alpha else px[..., :3])
            else:
                for i in range(n):
                    px = self._vary(base, base_seed + i.to_bytes(4, "big"))
                    frames.append(px if keep_alpha else px[..., :3])

        # The Responses route (a mainline model is named) returns a revised prompt, clearly marked;
        # the Images route returns none, as GPT image models do there.
        responses = request.mainline_model is not None
        revised = f"{REVISED_MARK}{request.prompt or ''}" if responses and request.kind != "variation" else None
        images = tuple(GeneratedImage(data=_encode(px, fmt, quality), format=fmt, revised_prompt=revised)
                       for px in frames)
        digest = hashlib.sha256(base_seed + fmt.encode()).hexdigest()
        return ImageResponse(images=images, request_id="offline-" + digest[:12], usage=None, rate_headers={},
                             response_id=f"resp_offline_{digest[12:24]}" if responses else None)

    def close(self) -> None:
        return None

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _seed(request: ImageRequest) -> bytes:
        h = hashlib.sha256()
        for part in (request.kind, request.model, request.prompt or ""):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        for f in (*request.images, *((request.mask,) if request.mask else ()),
                  *((request.markup,) if request.markup else ())):
            h.update(f.role.encode())
            h.update(hashlib.sha256(f.data).digest())
        return h.digest()

    @staticmethod
    def _mask_alpha(request: ImageRequest, width: int, height: int) -> U8:
        if request.mask is None:
            # No mask: repaint everything, keeping the input recognisable (a 50/50 blend).
            return np.full((height, width), 128, dtype=np.uint8)
        mask = _decode(request.mask).convert("RGBA").getchannel("A")
        if mask.size != (width, height):
            mask = mask.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(mask, dtype=np.uint8)

    @staticmethod
    def _markup(request: ImageRequest, width: int, height: int) -> U8 | None:
        """The markup's pixels at the output size (nearest), or None without one."""
        if request.markup is None:
            return None
        img = _decode(request.markup).convert("RGBA")
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(img, dtype=np.uint8)

    @staticmethod
    def _vary(base: U8, seed: bytes) -> U8:
        d = _Draw(seed)
        shift = 12 + d.choice(232)  # a visible hue shift, never a full turn
        rgb = Image.fromarray(np.ascontiguousarray(base[..., :3]), "RGB")
        hsv = np.asarray(rgb.convert("HSV"), dtype=np.uint8).copy()
        hsv[..., 0] += np.uint8(shift)  # wraps around: hue is circular
        shifted = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.int16)
        rng = np.random.default_rng(int.from_bytes(seed[:16], "big"))
        noise = rng.integers(-10, 11, size=shifted.shape, dtype=np.int16)
        out = base.copy()
        out[..., :3] = np.clip(shifted + noise, 0, 255).astype(np.uint8)
        return out

    def judge(self, request: JudgeRequest) -> Verdict:
        """Nothing looks at the image offline: "not judged" (it passes offline, never satisfies a real run)."""
        return Verdict(None, "not judged: the offline provider does not look at images")
