"""The offline provider: deterministic, honours size/n/format/background, edits only the masked area."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dalle_pipe.providers.base import BadRequest, ImageRequest, InputFile
from dalle_pipe.providers.offline import OfflineProvider, encode_png, render

P = OfflineProvider()


def gen(
    prompt: str = "a sleek electric car at night", model: str = "gpt-image-2", **params: Any
) -> ImageRequest:
    return ImageRequest(kind="generate", model=model, prompt=prompt, params=params)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode(data))


def to_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def noise(h: int, w: int, c: int = 3, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def circle_mask(h: int, w: int, cx: float = 0.5, cy: float = 0.5, r: float = 0.3) -> np.ndarray:
    """RGBA mask: alpha 0 inside the circle (the area to edit), opaque white elsewhere."""
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx + 0.5) / w - cx) ** 2 + ((yy + 0.5) / h - cy) ** 2 <= r**2
    m = np.full((h, w, 4), 255, dtype=np.uint8)
    m[inside, 3] = 0
    return m


def image_file(data: bytes, role: str = "image") -> InputFile:
    return InputFile(role=role, path=f"{role}.png", data=data, filename=f"{role}.png", mime="image/png")  # type: ignore[arg-type]


def edit(
    images: list[bytes], mask: bytes | None, prompt: str = "a beach at sunset", **params: Any
) -> ImageRequest:
    return ImageRequest(
        kind="edit",
        model="gpt-image-2",
        prompt=prompt,
        params=params,
        images=tuple(image_file(d) for d in images),
        mask=image_file(mask, "mask") if mask is not None else None,
    )


# -- generate ------------------------------------------------------------------------------------------


def test_generate_is_deterministic() -> None:
    a = P.send(gen(size="512x512", n=2))
    b = P.send(gen(size="512x512", n=2))
    assert [i.data for i in a.images] == [i.data for i in b.images]
    assert a.request_id == b.request_id
    assert a.request_id is not None and re.fullmatch(r"offline-[0-9a-f]{12}", a.request_id)
    assert a.usage is None and a.rate_headers == {}
    assert all(i.revised_prompt is None for i in a.images)


def test_different_prompts_models_and_indexes_give_different_pixels() -> None:
    one = pixels(P.send(gen("a cat", size="256x256")).images[0].data)
    two = pixels(P.send(gen("a dog", size="256x256")).images[0].data)
    three = pixels(P.send(gen("a cat", model="gpt-image-1.5", size="256x256")).images[0].data)
    pair = P.send(gen("a cat", size="256x256", n=2)).images
    assert not np.array_equal(one, two)
    assert not np.array_equal(one, three)
    assert not np.array_equal(pixels(pair[0].data), pixels(pair[1].data))


def test_size_and_n_are_honoured() -> None:
    resp = P.send(gen(size="640x480", n=3))
    assert len(resp.images) == 3
    for image in resp.images:
        img = decode(image.data)
        assert img.size == (640, 480) and img.mode == "RGB" and img.format == "PNG"


@pytest.mark.parametrize("size", [None, "auto"])
def test_default_size_is_1024_square(size: str | None) -> None:
    params = {} if size is None else {"size": size}
    assert decode(P.send(gen(**params)).images[0].data).size == (1024, 1024)


@pytest.mark.parametrize(
    "fmt,expected,magic",
    [
        ("png", "png", b"\x89PNG"),
        ("jpeg", "jpeg", b"\xff\xd8\xff"),
        ("jpg", "jpeg", b"\xff\xd8\xff"),
        ("webp", "webp", b"RIFF"),
    ],
)
def test_output_format(fmt: str, expected: str, magic: bytes) -> None:
    image = P.send(gen(size="128x96", output_format=fmt)).images[0]
    assert image.format == expected
    assert image.data.startswith(magic)
    assert decode(image.data).size == (128, 96)


def test_output_compression_changes_jpeg_quality() -> None:
    low = P.send(gen(size="256x256", output_format="jpeg", output_compression=10)).images[0].data
    high = P.send(gen(size="256x256", output_format="jpeg", output_compression=95)).images[0].data
    assert len(low) < len(high)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background(fmt: str) -> None:
    img = decode(P.send(gen(size="256x256", background="transparent", output_format=fmt)).images[0].data)
    assert img.mode == "RGBA"
    alpha = np.asarray(img)[..., 3]
    assert (alpha == 0).any(), "the background is transparent"
    assert (alpha == 255).any(), "the shapes are opaque"
    assert (alpha == 0).mean() > 0.2


def test_transparent_jpeg_is_flattened() -> None:
    img = decode(P.send(gen(size="64x64", background="transparent", output_format="jpeg")).images[0].data)
    assert img.mode == "RGB"


def test_bad_parameters_are_bad_requests() -> None:
    with pytest.raises(BadRequest):
        P.send(gen(size="big"))
    with pytest.raises(BadRequest):
        P.send(gen(output_format="gif"))
    with pytest.raises(BadRequest):
        P.send(gen(n=11))
    with pytest.raises(BadRequest):
        P.send(edit([b"not an image"], None))


# -- edit ----------------------------------------------------------------------------------------------


def test_edit_keeps_every_pixel_outside_the_mask_exactly() -> None:
    h, w = 192, 256
    src = noise(h, w)
    mask = circle_mask(h, w)
    out = pixels(P.send(edit([to_png(src)], to_png(mask))).images[0].data)
    assert out.shape == src.shape
    keep = mask[..., 3] == 255
    assert np.array_equal(out[keep], src[keep])
    changed = (out[~keep] != src[~keep]).any(axis=-1)
    assert changed.mean() > 0.9


def test_edit_of_rgba_input_keeps_alpha_too() -> None:
    h, w = 64, 80
    src = noise(h, w, 4, seed=3)
    mask = circle_mask(h, w, r=0.25)
    out = pixels(P.send(edit([to_png(src)], to_png(mask))).images[0].data)
    keep = mask[..., 3] == 255
    assert out.shape == (h, w, 4)
    assert np.array_equal(out[keep], src[keep])


def test_edit_is_deterministic_and_depends_on_the_prompt() -> None:
    src, mask = to_png(noise(64, 64)), to_png(circle_mask(64, 64))
    a = P.send(edit([src], mask, prompt="beach")).images[0].data
    b = P.send(edit([src], mask, prompt="beach")).images[0].data
    c = P.send(edit([src], mask, prompt="snow")).images[0].data
    assert a == b and a != c


def test_feathered_mask_blends_and_keeps_opaque_pixels() -> None:
    src = noise(32, 32)
    mask = np.full((32, 32, 4), 255, dtype=np.uint8)
    mask[:, :8, 3] = 0  # edit
    mask[:, 8:16, 3] = 128  # half-way: a blend
    out = pixels(P.send(edit([to_png(src)], to_png(mask))).images[0].data)
    assert np.array_equal(out[:, 16:], src[:, 16:])
    assert not np.array_equal(out[:, :8], src[:, :8])


def test_edit_without_mask_repaints_but_stays_recognisable() -> None:
    src = np.zeros((64, 64, 3), dtype=np.uint8)
    src[:, 32:] = 255  # half black, half white
    out = pixels(P.send(edit([to_png(src)], None)).images[0].data).astype(int)
    assert (out != src).any(axis=-1).mean() > 0.9
    assert out[:, 32:].mean() > out[:, :32].mean() + 60  # still brighter where the input was


def test_edit_size_auto_uses_input_and_explicit_size_resizes() -> None:
    src, mask = to_png(noise(60, 90)), to_png(circle_mask(60, 90))
    assert decode(P.send(edit([src], mask, size="auto")).images[0].data).size == (90, 60)
    assert decode(P.send(edit([src], mask, size="180x120", n=2)).images[1].data).size == (180, 120)


def test_edit_reference_images_change_the_result() -> None:
    src, mask = to_png(noise(48, 48)), to_png(circle_mask(48, 48))
    alone = P.send(edit([src], mask)).images[0].data
    with_ref = P.send(edit([src, to_png(noise(48, 48, seed=9))], mask)).images[0].data
    assert alone != with_ref


# -- variation -----------------------------------------------------------------------------------------


def variation(data: bytes, **params: Any) -> ImageRequest:
    return ImageRequest(
        kind="variation", model="dall-e-2", prompt=None, params=params, images=(image_file(data),)
    )


def test_variation_differs_keeps_size_and_is_deterministic() -> None:
    yy, xx = np.mgrid[0:128, 0:128]
    src = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    data = to_png(src)
    resp = P.send(variation(data, n=2))
    outs = [pixels(i.data) for i in resp.images]
    for out in outs:
        assert out.shape == src.shape
        assert not np.array_equal(out, src)
    assert not np.array_equal(outs[0], outs[1])
    assert [i.data for i in P.send(variation(data, n=2)).images] == [i.data for i in resp.images]
    assert decode(P.send(variation(data, size="256x256")).images[0].data).size == (256, 256)


# -- the PNG writer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_encode_png_round_trips(channels: int) -> None:
    arr = noise(37, 53, channels)
    assert np.array_equal(pixels(encode_png(arr)), arr)
    strided = noise(37, 53, 4)[..., :channels]
    assert np.array_equal(pixels(encode_png(strided)), strided)


def test_render_is_pure() -> None:
    assert np.array_equal(render(100, 50, b"seed"), render(100, 50, b"seed"))
    assert not np.array_equal(render(100, 50, b"seed"), render(100, 50, b"other"))
