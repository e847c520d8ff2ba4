"""Edit masks, exactly as the README's "Masks and local steps" defines them, vectorised with NumPy.

Geometry (W x H pixels; coordinates are fractions of W and H from the top-left):

* Pixel ``(x, y)`` is tested at its centre ``px = x + 0.5``, ``py = y + 0.5`` (in
  pixels; the documented ``((x+.5)/W, (y+.5)/H)`` scaled by W and H). All comparisons are
  made in pixel units, fractions multiplied by W (x) or H (y) first.
* ``circle: {center: [cx, cy], radius: r}`` — r is a fraction of ``min(W, H)``, so the
  circle stays round: inside when ``(px - cx*W)^2 + (py - cy*H)^2 <= (r*min(W, H))^2``
  (boundary included).
* ``ellipse: {box: [x0, y0, x1, y1]}`` — the ellipse inscribed in the box: with centre
  ``(ex, ey) = ((x0+x1)*W/2, (y0+y1)*H/2)`` and semi-axes ``a = (x1-x0)*W/2``,
  ``b = (y1-y0)*H/2``, inside when ``((px-ex)/a)^2 + ((py-ey)/b)^2 <= 1`` (boundary
  included; a box of zero width or height is empty).
* ``rect: {box: [x0, y0, x1, y1]}`` — half-open: ``x0*W <= px < x1*W`` and
  ``y0*H <= py < y1*H``. Two rects sharing an edge never overlap, and
  ``[0, 0, 1, 1]`` is the whole image.
* ``polygon: {points: [[x, y], ...]}`` (≥ 3 points, closed automatically) — even-odd
  rule by ray casting (a self-intersecting star has a hole in the middle): a pixel is
  inside when a ray from its centre to the right crosses an odd number of edges, an
  edge ``(xi, yi)-(xj, yj)`` being crossed when ``(yi > py) != (yj > py)`` and
  ``px < (xj-xi)*(py-yi)/(yj-yi) + xi``.
* ``from_alpha``: the pixels of that image whose alpha is 0 (fully transparent); an
  image without transparency contributes nothing.

Shapes and ``from_alpha`` are unioned, then ``invert``, then ``feather``. Box
coordinates need ``x0 <= x1`` and ``y0 <= y1``; coordinates may lie outside 0..1
(shapes may overhang the image).

Feather PX is a linear ramp centred on the edge: with ``d`` the signed distance from
the edge (> 0 inside), ``insideness = clip(0.5 + d/PX, 0, 1)``. ``d`` comes from an
exact Euclidean distance transform on pixel centres: for an inside pixel,
``d = dist(nearest outside pixel centre) - 0.5``; for an outside pixel,
``d = 0.5 - dist(nearest inside pixel centre)`` (the edge lies half-way between
two pixel centres, so across a straight edge the two neighbours get ``d = ±0.5``).
The image border is not an edge. ``PX <= 1`` therefore gives the same hard edge as
no feather.

Output: an RGBA image; inside (the area to edit) = ``(255, 255, 255, 0)``, outside
(kept) = ``(255, 255, 255, 255)``, feathered pixels ``(255, 255, 255, A)`` with
``A = round_half_up(255 * (1 - insideness))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
from PIL import Image

from dalle_pipe.imaging.geometry import COORDINATE_LIMIT
from dalle_pipe.imaging.io import MAX_PIXELS, encode_mask_png, has_alpha

Shape = dict[str, Any]
BoolArray = npt.NDArray[np.bool_]

SHAPE_KINDS: Final = ("circle", "ellipse", "rect", "polygon")


# --------------------------------------------------------------------------- validation


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


def _coordinate(value: object, where: str) -> float:
    number = _number(value, where)
    if abs(number) > COORDINATE_LIMIT:
        raise ValueError(f"{where}: {number} is too far out (fractions of the image, |value| <= {COORDINATE_LIMIT:g})")
    return number


def _numbers(value: object, count: int, where: str) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != count:
        raise ValueError(f"{where}: expected a list of {count} numbers, got {value!r}")
    return [_coordinate(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _box(body: Mapping[str, Any], where: str) -> tuple[float, float, float, float]:
    _keys(body, {"box"}, where)
    x0, y0, x1, y1 = _numbers(body["box"], 4, f"{where}.box")
    if x0 > x1 or y0 > y1:
        raise ValueError(f"{where}.box: expected [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1, got {body['box']!r}")
    return x0, y0, x1, y1


def _keys(body: object, required: set[str], where: str) -> None:
    if not isinstance(body, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {body!r}")
    missing = required - set(body)
    unknown = set(body) - required
    if missing:
        raise ValueError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"mask {name} must be a positive integer, got {value!r}")
    if width * height > MAX_PIXELS:
        raise ValueError(f"mask {width}x{height} is too large ({width * height} pixels; limit {MAX_PIXELS})")


def split_shape(shape: Mapping[str, Any], where: str = "shape") -> tuple[str, Mapping[str, Any]]:
    """(kind, body) of a one-key shape mapping; ValueError when it is not one."""
    if not isinstance(shape, Mapping) or len(shape) != 1:
        raise ValueError(f"{where}: expected exactly one of {', '.join(SHAPE_KINDS)}, got {shape!r}")
    ((kind, body),) = shape.items()
    if kind not in SHAPE_KINDS:
        raise ValueError(f"{where}: unknown shape {kind!r} (expected one of {', '.join(SHAPE_KINDS)})")
    if not isinstance(body, Mapping):
        raise ValueError(f"{where}.{kind}: expected a mapping, got {body!r}")
    return kind, body


# --------------------------------------------------------------------------- rasterisers


def _centres(n: int) -> npt.NDArray[np.float64]:
    return np.arange(n, dtype=np.float64) + 0.5


def _quadric(u2: npt.NDArray[np.float64], v2: npt.NDArray[np.float64], limit: float) -> BoolArray:
    """``u2[x] + v2[y] <= limit`` for every pixel, a band of rows at a time (bounded memory)."""
    out = np.zeros((v2.size, u2.size), dtype=bool)
    rows = np.nonzero(v2 <= limit)[0]
    if rows.size:
        step = max(1, (1 << 20) // u2.size)
        for start in range(int(rows[0]), int(rows[-1]) + 1, step):
            stop = min(start + step, int(rows[-1]) + 1)
            np.less_equal(u2[None, :] + v2[start:stop, None], limit, out=out[start:stop])
    return out


def _circle(body: Mapping[str, Any], width: int, height: int, where: str) -> BoolArray:
    _keys(body, {"center", "radius"}, where)
    cx, cy = _numbers(body["center"], 2, f"{where}.center")
    r = _coordinate(body["radius"], f"{where}.radius")
    if r < 0:
        raise ValueError(f"{where}.radius: must be >= 0, got {body['radius']!r}")
    ccx, ccy, rr = cx * width, cy * height, r * min(width, height)
    dx = _centres(width) - ccx
    dy = _centres(height) - ccy
    return _quadric(dx * dx, dy * dy, rr * rr)


def _ellipse(body: Mapping[str, Any], width: int, height: int, where: str) -> BoolArray:
    x0, y0, x1, y1 = _box(body, where)
    a, b = (x1 - x0) * width / 2, (y1 - y0) * height / 2
    if a <= 0 or b <= 0:
        return np.zeros((height, width), dtype=bool)
    ex, ey = (x0 + x1) * width / 2, (y0 + y1) * height / 2
    with np.errstate(over="ignore"):  # a sliver of an ellipse: far pixels overflow to inf, outside
        u = (_centres(width) - ex) / a
        v = (_centres(height) - ey) / b
        return _quadric(u * u, v * v, 1.0)


def _rect(body: Mapping[str, Any], width: int, height: int, where: str) -> BoolArray:
    x0, y0, x1, y1 = _box(body, where)
    px, py = _centres(width), _centres(height)
    cols = (x0 * width <= px) & (px < x1 * width)
    rows = (y0 * height <= py) & (py < y1 * height)
    return rows[:, None] & cols[None, :]


def _polygon(body: Mapping[str, Any], width: int, height: int, where: str) -> BoolArray:
    _keys(body, {"points"}, where)
    raw = body["points"]
    if not isinstance(raw, list | tuple) or len(raw) < 3:
        raise ValueError(f"{where}.points: expected a list of at least 3 [x, y] points, got {raw!r}")
    pts = [_numbers(p, 2, f"{where}.points[{i}]") for i, p in enumerate(raw)]
    xi = np.array([p[0] * width for p in pts], dtype=np.float64)
    yi = np.array([p[1] * height for p in pts], dtype=np.float64)
    xj, yj = np.roll(xi, -1), np.roll(yi, -1)
    py = _centres(height)[:, None]  # (H, 1) against (E,) edges
    crosses = (yi > py) != (yj > py)  # (H, E)
    rows, edges = np.nonzero(crosses)
    ex0, ey0, ex1, ey1 = xi[edges], yi[edges], xj[edges], yj[edges]
    c = (ex1 - ex0) * (py[rows, 0] - ey0) / (ey1 - ey0) + ex0  # where each edge crosses its row
    # The ray from pixel x misses crossing c exactly when c <= px = x + 0.5, i.e. x >= ceil(c - 0.5).
    # Every row crosses an even number of edges, so the parity of the crossings at or left of a
    # pixel equals the parity of those to its right: toggle at ceil(c - 0.5) and take a running sum.
    first = np.clip(np.ceil(c - 0.5), 0, width).astype(np.intp)
    toggles = np.zeros((height, width + 1), dtype=bool)
    np.logical_xor.at(toggles, (rows, first), True)
    return np.logical_xor.accumulate(toggles[:, :width], axis=1)


_RASTERISERS: Final[dict[str, Callable[[Mapping[str, Any], int, int, str], BoolArray]]] = {
    "circle": _circle,
    "ellipse": _ellipse,
    "rect": _rect,
    "polygon": _polygon,
}


def transparent_area(img: Image.Image) -> BoolArray:
    """(H, W) booleans: True where the image is fully transparent (alpha 0)."""
    if not has_alpha(img):
        return np.zeros((img.height, img.width), dtype=bool)
    rgba = img if img.mode in ("RGBA", "LA") else img.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint8)
    transparent: BoolArray = alpha == 0
    return transparent


def inside(shapes: Sequence[Shape], width: int, height: int, *, from_alpha: Image.Image | None = None) -> BoolArray:
    """(H, W) booleans: the union of the shapes and of from_alpha's transparent pixels."""
    _check_size(width, height)
    out = np.zeros((height, width), dtype=bool)
    for i, shape in enumerate(shapes):
        where = f"shapes[{i}]"
        kind, body = split_shape(shape, where)
        out |= _RASTERISERS[kind](body, width, height, f"{where}.{kind}")
    if from_alpha is not None:
        if from_alpha.size != (width, height):
            raise ValueError(
                f"from_alpha image is {from_alpha.width}x{from_alpha.height}, the mask is {width}x{height}"
            )
        out |= transparent_area(from_alpha)
    return out


# --------------------------------------------------------------------------- distance transform


def _run_distance(m: BoolArray, cap: int) -> npt.NDArray[np.float32]:
    """Distance along the last axis to the nearest pixel of the other class, at most ``cap``.

    From run boundaries: a run of equal pixels starting at s has an other-class pixel at
    s - 1 (when s > 0), and one ending at e has one at e + 1 (when e < n - 1). float32
    holds these small integers exactly and is the fastest type here.
    """
    n = m.shape[-1]
    idx = np.arange(n, dtype=np.float32)
    change = np.zeros(m.shape, dtype=bool)
    np.not_equal(m[..., 1:], m[..., :-1], out=change[..., 1:])  # change[..., i]: i - 1 and i differ
    start = np.where(change, idx, np.float32(-cap))
    np.maximum.accumulate(start, axis=-1, out=start)
    left = idx - start + 1
    end = np.full(m.shape, np.float32(n + cap), dtype=np.float32)
    np.copyto(end[..., :-1], idx[:-1], where=change[..., 1:])
    rev = end[..., ::-1]
    np.minimum.accumulate(rev, axis=-1, out=rev)
    right = end + 1 - idx
    np.minimum(left, right, out=left)
    return np.minimum(left, np.float32(cap), out=left)


def _column_pass_shifts(g2: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.integer[Any]]:
    """min over |dy| <= radius of g2[..., y + dy, :] + dy^2, along axis -2."""
    dtype = np.uint16 if 2 * radius * radius < 65535 else np.int32
    g: npt.NDArray[np.integer[Any]] = g2.astype(dtype)
    d = g.copy()
    height = g.shape[-2]
    buf = np.empty_like(g)
    for dy in range(1, min(radius, height - 1) + 1):
        step = g.dtype.type(dy * dy)
        n = height - dy
        np.add(g[..., dy:, :], step, out=buf[..., :n, :])
        np.minimum(d[..., :n, :], buf[..., :n, :], out=d[..., :n, :])
        np.add(g[..., :n, :], step, out=buf[..., :n, :])
        np.minimum(d[..., dy:, :], buf[..., :n, :], out=d[..., dy:, :])
    return d


def _tile_any(b: BoolArray, tile: int) -> BoolArray:
    h, w = b.shape
    th, tw = -(-h // tile), -(-w // tile)
    if (th * tile, tw * tile) != (h, w):
        padded = np.zeros((th * tile, tw * tile), dtype=bool)
        padded[:h, :w] = b
        b = padded
    return cast(BoolArray, b.reshape(th, tile, tw, tile).any(axis=(1, 3)))


def _dilate(b: BoolArray, k: int) -> BoolArray:
    """Grow True cells by k cells (Chebyshev distance)."""
    out = b.copy()
    for _ in range(k):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        rows = grown.copy()
        grown[:, 1:] |= rows[:, :-1]
        grown[:, :-1] |= rows[:, 1:]
        out = grown
    return out


_CELL: Final = 8  # resolution of the "near an edge" map, in pixels
_TILES: Final = (16, 32, 64, 128, 256, 512)


class _Solved:
    """Capped squared distances to the other class, computed only near the edges.

    Separable, as in Felzenszwalb & Huttenlocher: ``g`` is the distance along the row to
    the nearest other-class pixel (exact, from run boundaries), ``v`` the same along the
    column, and ``d^2(x, y) = min(v^2, min over y' of g(x, y')^2 + (y - y')^2)``; a row
    y' whose pixel in column x is of the other class gives a term >= (y - y')^2 >= v^2, so
    including it changes nothing. Values are capped at ``cap^2``, so only rows within
    ``cap`` matter, and the minimum over y' is ``2 * cap`` shifted minimums.

    The image is cut in square tiles; only those with an edge pixel (one with a
    4-neighbour of the other class) within ``cap + 1`` pixels need work. Each is solved
    in a window reaching ``cap`` pixels past it on every side, all windows at once, as one
    stack. The mask is padded by repeating its border pixels, which adds no edge and
    changes no distance, so every window has the same shape and its tile sits at
    ``[cap, cap + tile)`` both ways. Every other pixel's value is ``cap^2``.
    """

    def __init__(self, mask: BoolArray, cap: int) -> None:
        height, width = mask.shape
        self.shape = (height, width)
        edges = np.zeros((height, width), dtype=bool)
        np.not_equal(mask[:, 1:], mask[:, :-1], out=edges[:, :-1])
        edges[:-1, :] |= mask[1:, :] != mask[:-1, :]
        cells = _tile_any(edges, _CELL)
        near = _dilate(cells, min(-(-(cap + 1) // _CELL), max(cells.shape)))
        # the cheapest tiling (work ~ pixels x passes), or one window: the whole image, unpadded
        best: tuple[int, int, BoolArray | None] = (height * width * (10 + 4 * cap), 0, None)
        for tile in _TILES:
            active = _tile_any(near, tile // _CELL)
            side = tile + 2 * cap
            cost = int(active.sum()) * (side * side * 10 + side * tile * 4 * cap)
            if cost < best[0]:
                best = (cost, tile, active)
        _, tile, chosen = best
        self.tile: int
        self.origins: list[tuple[int, int]]
        if chosen is None:
            self.tile = max(height, width)
            self.origins = [(0, 0)]
            windows, pad = mask[None], 0
            inner_y, inner_x = slice(0, height), slice(0, width)
        else:
            self.tile = tile
            ty, tx = np.nonzero(chosen)
            self.origins = list(zip((ty * tile).tolist(), (tx * tile).tolist(), strict=True))
            side, (th, tw), pad = tile + 2 * cap, chosen.shape, cap
            padded = np.pad(mask, ((pad, th * tile - height + pad), (pad, tw * tile - width + pad)), mode="edge")
            windows = np.lib.stride_tricks.sliding_window_view(padded, (side, side))[ty * tile, tx * tile]
            inner_y = inner_x = slice(pad, pad + tile)
        g = _run_distance(windows, cap)[:, :, inner_x]  # along rows, tile columns only
        v = _run_distance(np.swapaxes(windows[:, :, inner_x], 1, 2), cap)
        v = np.swapaxes(v, 1, 2)[:, inner_y, :]  # along columns (tile columns), then the tile rows
        d = _column_pass_shifts(g * g, cap)[:, inner_y, :]
        self.inside: BoolArray = windows[:, inner_y, inner_x]
        self.d2 = np.minimum(d, v * v).astype(np.int64)
        np.minimum(self.d2, cap * cap, out=self.d2)

    def places(self) -> list[tuple[slice, slice, slice, slice]]:
        """(image rows, image cols, tile rows, tile cols) of each solved tile, cut at the image border."""
        height, width = self.shape
        out = []
        for ya, xa in self.origins:
            h, w = min(self.tile, height - ya), min(self.tile, width - xa)
            out.append((slice(ya, ya + h), slice(xa, xa + w), slice(0, h), slice(0, w)))
        return out


def squared_distance_to_other(mask: BoolArray, cap: int) -> npt.NDArray[np.int32]:
    """min(d^2, cap^2), d the exact Euclidean distance from each pixel centre to the nearest other-class one.

    Only pixels within ``cap`` of the edge need work: the image is cut in tiles, and each
    tile near an edge is solved in a window reaching ``cap`` pixels past it (the nearest
    other-class pixel, when closer than ``cap``, lies inside it); the windows are solved
    together, as one stack. Every other pixel is ``cap^2``.
    """
    cap = max(1, int(cap))
    solved = _Solved(mask, cap)
    out = np.full(mask.shape, cap * cap, dtype=np.int32)
    for i, (iy, ix, wy, wx) in enumerate(solved.places()):
        out[iy, ix] = solved.d2[i, wy, wx]
    return out


def _feather_table(feather: float, cap: int) -> npt.NDArray[np.uint8]:
    """alpha[d2 * 2 + is_inside] for d2 in 0..cap^2, exact in float64."""
    dist = np.sqrt(np.arange(cap * cap + 1, dtype=np.float64))
    table = np.empty((cap * cap + 1, 2), dtype=np.uint8)
    for cls, sign in ((0, -1.0), (1, 1.0)):
        ins = np.clip(0.5 + sign * (dist - 0.5) / feather, 0.0, 1.0)
        table[:, cls] = np.floor(255.0 * (1.0 - ins) + 0.5).astype(np.uint8)
    return table.reshape(-1)


def feather_alpha(mask: BoolArray, feather: float) -> npt.NDArray[np.uint8]:
    """The mask's alpha: 0 inside, 255 outside; with ``feather`` > 0, a ramp across the edge."""
    alpha = np.full(mask.shape, 255, dtype=np.uint8)
    alpha[mask] = 0
    # feather <= 1: every pixel centre is at least 0.5 from the edge, so the ramp is already flat
    if feather <= 1 or mask.all() or not mask.any():
        return alpha
    # insideness saturates once |d| >= feather/2, i.e. once the distance is >= (feather + 1)/2;
    # no distance inside the image reaches H + W, so a cap of H + W is exact everywhere
    cap = min(math.ceil((feather + 1) / 2), sum(mask.shape))
    solved = _Solved(mask, cap)
    table = _feather_table(feather, cap)
    ramp = table[solved.d2 * 2 + solved.inside]
    for i, (iy, ix, wy, wx) in enumerate(solved.places()):
        alpha[iy, ix] = ramp[i, wy, wx]
    return alpha


# --------------------------------------------------------------------------- masks


def mask_alpha(
    width: int,
    height: int,
    shapes: Sequence[Shape] = (),
    *,
    from_alpha: Image.Image | None = None,
    invert: bool = False,
    feather: float = 0,
) -> npt.NDArray[np.uint8]:
    """The mask's alpha channel as an (H, W) uint8 array: 0 = edit, 255 = keep."""
    f = _number(feather, "feather")
    if f < 0:
        raise ValueError(f"feather must be >= 0, got {feather!r}")
    area = inside(shapes, width, height, from_alpha=from_alpha)
    if invert:
        np.logical_not(area, out=area)
    return feather_alpha(area, f)


def build_mask(
    width: int,
    height: int,
    shapes: Sequence[Shape] = (),
    *,
    from_alpha: Image.Image | None = None,
    invert: bool = False,
    feather: float = 0,
) -> Image.Image:
    """The RGBA mask: inside (edit) = (255,255,255,0), outside (keep) = (255,255,255,255).

    ``from_alpha`` must be ``width`` x ``height`` (ValueError otherwise); callers that
    size the mask from it pass its size.
    """
    alpha = mask_alpha(width, height, shapes, from_alpha=from_alpha, invert=invert, feather=feather)
    white = Image.new("L", (width, height), 255)
    return Image.merge("RGBA", (white, white, white, Image.fromarray(alpha)))


def mask_png(
    width: int,
    height: int,
    shapes: Sequence[Shape] = (),
    *,
    from_alpha: Image.Image | None = None,
    invert: bool = False,
    feather: float = 0,
) -> bytes:
    """:func:`build_mask`, encoded: RGBA PNG bytes, by the fast mask encoder."""
    alpha = mask_alpha(width, height, shapes, from_alpha=from_alpha, invert=invert, feather=feather)
    return encode_mask_png(alpha)
