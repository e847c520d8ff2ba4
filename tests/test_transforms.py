"""Local transforms: output sizes, modes and a few exact pixels."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dalle_pipe.imaging import io as imgio
from dalle_pipe.imaging.transforms import composite, convert, crop, pad, parse_color, resize

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def two_halves(
    size: tuple[int, int], left: tuple[int, int, int] = RED, right: tuple[int, int, int] = BLUE
) -> Image.Image:
    img = Image.new("RGB", size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


# --------------------------------------------------------------------------- colours


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("#f00", (255, 0, 0, 255)),
        ("#F00A", (255, 0, 0, 0xAA)),
        ("#12ab3C", (0x12, 0xAB, 0x3C, 255)),
        ("#12ab3c80", (0x12, 0xAB, 0x3C, 0x80)),
        ("transparent", (0, 0, 0, 0)),
        ("White", (255, 255, 255, 255)),
        (" black ", (0, 0, 0, 255)),
    ],
)
def test_parse_color(text: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_color(text) == rgba


@pytest.mark.parametrize("text", ["red", "#12", "#12345", "#ggg", "rgb(0,0,0)", "", "#1234567"])
def test_parse_color_refuses_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid colour .*#rgb, #rrggbb, #rrggbbaa, transparent, white or black"):
        parse_color(text)


# --------------------------------------------------------------------------- resize


def test_resize_contain_letterboxes_on_white_for_opaque_images() -> None:
    out = resize(Image.new("RGB", (200, 100), RED), (100, 100))
    assert out.size == (100, 100) and out.mode == "RGB"
    assert out.getpixel((50, 10)) == WHITE  # bar
    assert out.getpixel((50, 50)) == RED
    assert out.getpixel((0, 25)) == RED and out.getpixel((99, 74)) == RED  # image is rows 25..74
    assert out.getpixel((50, 24)) == WHITE and out.getpixel((50, 75)) == WHITE


def test_resize_contain_keeps_transparency_and_takes_a_colour() -> None:
    rgba = Image.new("RGBA", (100, 200), (*RED, 255))
    out = resize(rgba, (100, 100))
    assert out.mode == "RGBA" and out.getpixel((5, 50)) == (0, 0, 0, 0)  # transparent bars
    assert out.getpixel((50, 50)) == (*RED, 255)
    black = resize(Image.new("RGB", (100, 200), RED), (100, 100), color="#000")
    assert black.mode == "RGB" and black.getpixel((5, 50)) == (0, 0, 0)
    clear = resize(Image.new("RGB", (100, 200), RED), (100, 100), "contain", "transparent")
    assert clear.mode == "RGBA" and clear.getpixel((5, 50)) == (0, 0, 0, 0)
    assert clear.getpixel((50, 50)) == (*RED, 255)


def test_resize_cover_fills_and_crops_the_centre() -> None:
    # 200x100: left half red, right half blue; covering 50x50 keeps the centre 100x100
    out = resize(two_halves((200, 100)), (50, 50), "cover")
    assert out.size == (50, 50)
    assert out.getpixel((5, 25)) == RED and out.getpixel((45, 25)) == BLUE
    tall = resize(two_halves((100, 300)), (60, 20), "cover")
    assert tall.size == (60, 20) and tall.getpixel((5, 10)) == RED and tall.getpixel((55, 10)) == BLUE


def test_resize_stretch_and_errors() -> None:
    out = resize(Image.new("RGB", (30, 10), BLUE), (7, 40), "stretch")
    assert out.size == (7, 40) and out.getpixel((3, 20)) == BLUE
    with pytest.raises(ValueError, match="fit"):
        resize(out, (10, 10), "squash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        resize(out, (0, 10))
    with pytest.raises(ValueError, match="too large"):
        resize(out, (10000, 10000))


def test_resize_converts_palette_and_grey_images() -> None:
    grey = Image.new("L", (20, 10), 100)
    out = resize(grey, (10, 10))
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (100, 100, 100)


# --------------------------------------------------------------------------- pad


def test_pad_to_aspect_centres_on_the_smallest_canvas() -> None:
    out = pad(Image.new("RGB", (100, 50), RED), aspect="1:1")
    assert out.size == (100, 100)
    assert out.getpixel((50, 10)) == WHITE and out.getpixel((50, 25)) == RED and out.getpixel((50, 74)) == RED
    assert out.getpixel((50, 75)) == WHITE
    assert pad(Image.new("RGB", (100, 50)), aspect="1:2").size == (100, 200)
    assert pad(Image.new("RGB", (50, 100)), aspect="16:9").size == (178, 100)  # ceil(100 * 16 / 9)
    assert pad(Image.new("RGB", (160, 90)), aspect="16:9").size == (160, 90)  # already there


def test_pad_to_size_and_colour() -> None:
    out = pad(Image.new("RGB", (100, 50), RED), size=(120, 60), color="#00ff0080")
    assert out.size == (120, 60) and out.mode == "RGBA"
    assert out.getpixel((5, 30)) == (0, 255, 0, 0x80)
    assert out.getpixel((10, 5)) == (*RED, 255) and out.getpixel((109, 54)) == (*RED, 255)
    assert out.getpixel((110, 30)) == (0, 255, 0, 0x80)
    odd = pad(Image.new("RGB", (10, 10), RED), size=(13, 10))
    assert odd.getpixel((0, 0)) == WHITE and odd.getpixel((1, 0)) == RED and odd.getpixel((11, 0)) == WHITE


def test_pad_errors() -> None:
    img = Image.new("RGB", (100, 50))
    with pytest.raises(ValueError, match="smaller"):
        pad(img, size=(90, 90))
    with pytest.raises(ValueError, match="exactly one"):
        pad(img)
    with pytest.raises(ValueError, match="exactly one"):
        pad(img, aspect="1:1", size=(200, 200))
    with pytest.raises(ValueError, match="W:H"):
        pad(img, aspect="square")
    with pytest.raises(ValueError, match="invalid colour"):
        pad(img, aspect="1:1", color="teal")


# --------------------------------------------------------------------------- crop


def gradient(width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height))
    for y in range(height):
        for x in range(width):
            img.putpixel((x, y), (x * 20, y * 20, 7))
    return img


def test_crop_rounds_fractions_half_up() -> None:
    out = crop(gradient(10, 10), (0.25, 0.25, 0.75, 0.75))  # 2.5 -> 3, 7.5 -> 8
    assert out.size == (5, 5)
    assert out.getpixel((0, 0)) == (60, 60, 7) and out.getpixel((4, 4)) == (140, 140, 7)
    assert crop(gradient(10, 10), [0, 0, 1, 0.5]).size == (10, 5)  # type: ignore[arg-type]


def test_crop_errors() -> None:
    img = gradient(10, 10)
    with pytest.raises(ValueError, match="0 <= x0 < x1 <= 1"):
        crop(img, (0.5, 0, 0.2, 1))
    with pytest.raises(ValueError, match="0 <= x0 < x1 <= 1"):
        crop(img, (0, 0, 1.5, 1))
    with pytest.raises(ValueError, match="empty"):
        crop(img, (0.5, 0, 0.52, 1))
    with pytest.raises(ValueError, match="4 finite numbers"):
        crop(img, (0, 0, float("nan"), 1))


# --------------------------------------------------------------------------- convert


def test_convert_to_jpeg_flattens_onto_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (*BLUE, 255))
    img, options = convert(rgba, "jpg")
    assert img.mode == "RGB" and options == {"fmt": "jpeg", "quality": 90}
    assert img.getpixel((5, 5)) == WHITE and img.getpixel((0, 0)) == BLUE
    decoded = Image.open(io.BytesIO(imgio.encode(img, **options)))
    assert decoded.format == "JPEG" and decoded.size == (8, 8)


def test_convert_png_and_webp_keep_alpha() -> None:
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 40))
    img, options = convert(rgba, "PNG")
    assert img.mode == "RGBA" and options == {"fmt": "png"}
    assert Image.open(io.BytesIO(imgio.encode(img, **options))).getpixel((1, 1)) == (10, 20, 30, 40)
    img, options = convert(rgba, "webp", 75)
    assert img.mode == "RGBA" and options == {"fmt": "webp", "quality": 75}
    assert Image.open(io.BytesIO(imgio.encode(img, **options))).format == "WEBP"


def test_convert_errors() -> None:
    img = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match="png, jpeg or webp"):
        convert(img, "gif", None)
    with pytest.raises(ValueError, match="1 to 100"):
        convert(img, "jpeg", 0)
    with pytest.raises(ValueError, match="not png"):
        convert(img, "png", 80)


# --------------------------------------------------------------------------- composite


def half_transparent_cutout(size: int = 10) -> Image.Image:
    cut = Image.new("RGBA", (size, size), (*RED, 255))
    cut.paste((0, 0, 0, 0), (size // 2, 0, size, size))  # right half fully transparent
    return cut


def test_composite_centres_the_cutout_and_respects_alpha() -> None:
    out = composite(Image.new("RGB", (100, 100), WHITE), half_transparent_cutout())
    assert out.size == (100, 100) and out.mode == "RGB"
    assert out.getpixel((45, 45)) == RED and out.getpixel((49, 54)) == RED  # top-left at (45, 45)
    assert out.getpixel((44, 50)) == WHITE and out.getpixel((52, 50)) == WHITE  # transparent half


def test_composite_position_scale_and_clipping() -> None:
    bg = Image.new("RGB", (200, 100), WHITE)
    cut = Image.new("RGBA", (10, 5), (*RED, 255))
    out = composite(bg, cut, position=(0.25, 0.5), scale=0.1)  # 20x10 with its centre at (50, 50): (40, 45)
    assert out.getpixel((40, 45)) == RED and out.getpixel((59, 54)) == RED
    assert out.getpixel((39, 50)) == WHITE and out.getpixel((60, 50)) == WHITE
    assert out.getpixel((50, 44)) == WHITE and out.getpixel((50, 55)) == WHITE
    corner = composite(bg, Image.new("RGBA", (10, 10), (*BLUE, 255)), position=(0, 0))  # top-left at (-5, -5)
    assert corner.getpixel((0, 0)) == BLUE and corner.getpixel((4, 4)) == BLUE and corner.getpixel((5, 5)) == WHITE
    assert bg.getpixel((0, 0)) == WHITE  # inputs are not modified


def test_composite_blends_partial_alpha_and_keeps_background_alpha() -> None:
    bg = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    cut = Image.new("RGBA", (10, 10), (*BLUE, 128))
    out = composite(bg, cut)
    assert out.mode == "RGBA" and out.getpixel((5, 5)) == (*BLUE, 128)
    grey = composite(Image.new("RGB", (10, 10), WHITE), Image.new("RGBA", (2, 2), (0, 0, 0, 128)))
    assert grey.getpixel((5, 5)) == (127, 127, 127)
    with pytest.raises(ValueError, match="scale"):
        composite(bg, cut, scale=0)
