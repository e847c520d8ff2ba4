"""Edit masks, exactly as SPEC "Masks" defines them, vectorised with NumPy.

Geometry (W x H pixels; coordinates are fractions of W and H from the top-left):

* Pixel ``(x, y)`` is tested at its centre ``px = x + 0.5``, ``py = y + 0.5`` (in
  pixels; SPEC's ``((x+.5)/W, (y+.5)/H)`` scaled by W and H). All comparisons are
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
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from dalle_pipe.imaging.io import MAX_PIXELS, has_alpha

Shape = dict[str, Any]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

SHAPE_KINDS: Final = ("circle", "ellipse", "rect", "polygon")

# Above this feather radius the column pass uses Felzenszwalb's lower envelope
# (cost independent of the radius) instead of 2R shifted minimums.
_SHIFT_PASS_MAX_RADIUS: Final = 24


# --------------------------------------------------------------------------- validation


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


def _numbers(value: object, count: int, where: str) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != count:
        raise ValueError(f"{where}: expected a list of {count} numbers, got {value!r}")
    return [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]


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


def _circle(body: Mapping[str, Any], width: int, height: int, where: str) -> BoolArray:
    _keys(body, {"center", "radius"}, where)
    cx, cy = _numbers(body["center"], 2, f"{where}.center")
    r = _number(body["radius"], f"{where}.radius")
    if r < 0:
        raise ValueError(f"{where}.radius: must be >= 0, got {body['radius']!r}")
    ccx, ccy, rr = cx * width, cy * height, r * min(width, height)
    dx = _centres(width) - ccx
    dy = _centres(height) - ccy
    return (dx * dx)[None, :] + (dy * dy)[:, None] <= rr * rr


def _ellipse(body: Mapping[str, Any], width: int, height: int, where: str) -> BoolArray:
    x0, y0, x1, y1 = _box(body, where)
    a, b = (x1 - x0) * width / 2, (y1 - y0) * height / 2
    if a <= 0 or b <= 0:
        return np.zeros((height, width), dtype=bool)
    ex, ey = (x0 + x1) * width / 2, (y0 + y1) * height / 2
    u = (_centres(width) - ex) / a
    v = (_centres(height) - ey) / b
    return (u * u)[None, :] + (v * v)[:, None] <= 1.0


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
    first = np.clip(np.ceil(c - 0.5), 0, width).astype(np.int64)
    toggles = np.bincount(rows * (width + 1) + first, minlength=height * (width + 1))
    counts = np.cumsum(toggles.reshape(height, width + 1)[:, :width], axis=1)
    return (counts & 1).astype(bool)


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
    alpha = np.asarray(rgba.getchannel("A"))
    return alpha == 0


def inside(
    shapes: Sequence[Shape], width: int, height: int, *, from_alpha: Image.Image | None = None
) -> BoolArray:
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


def _run_distance(m: BoolArray, cap: int) -> IntArray:
    """Distance along the last axis to the nearest pixel of the other class, at most ``cap``."""
    n = m.shape[-1]
    idx = np.arange(n, dtype=np.int32)
    change = m[..., 1:] != m[..., :-1]  # change[..., i]: pixels i and i + 1 differ
    # start of each pixel's run; a run starting at s > 0 has an opposite pixel at s - 1
    starts = np.zeros(m.shape, dtype=np.int32)
    np.multiply(change, idx[1:], out=starts[..., 1:])
    np.maximum.accumulate(starts, axis=-1, out=starts)
    left = np.where(starts > 0, idx - starts + 1, cap)
    # end of each pixel's run; a run ending at e < n - 1 has an opposite pixel at e + 1
    ends = np.full(m.shape, n - 1, dtype=np.int32)
    ends[..., :-1] = np.where(change, idx[:-1], n - 1)
    ends = np.minimum.accumulate(ends[..., ::-1], axis=-1)[..., ::-1]
    right = np.where(ends < n - 1, ends + 1 - idx, cap)
    return np.minimum(np.minimum(left, right), cap).astype(np.int64)


def _column_pass_shifts(g2: IntArray, radius: int) -> IntArray:
    """min over |dy| <= radius of g2[..., y + dy, :] + dy^2 (axis -2), for values below radius^2."""
    dtype = np.uint16 if int(g2.max(initial=0)) + radius * radius < 65535 else np.int64
    g = g2.astype(dtype)
    d = g.copy()
    height = g.shape[-2]
    buf = np.empty_like(g)
    for dy in range(1, min(radius, height - 1) + 1):
        step = dtype(dy * dy)
        n = height - dy
        np.add(g[..., dy:, :], step, out=buf[..., :n, :])
        np.minimum(d[..., :n, :], buf[..., :n, :], out=d[..., :n, :])
        np.add(g[..., :n, :], step, out=buf[..., :n, :])
        np.minimum(d[..., dy:, :], buf[..., :n, :], out=d[..., dy:, :])
    return d.astype(np.int64)


def _column_pass_envelope(g2: IntArray) -> IntArray:
    """Felzenszwalb & Huttenlocher's 1-D squared distance transform along axis 0, all columns at once."""
    n, m = g2.shape
    f = g2.astype(np.float64)
    cols = np.arange(m)
    v = np.zeros((n, m), dtype=np.int64)  # positions of the parabolas in the lower envelope
    z = np.empty((n + 1, m), dtype=np.float64)  # boundaries between them
    z[0] = -np.inf
    z[1] = np.inf
    k = np.zeros(m, dtype=np.int64)
    s = np.empty(m, dtype=np.float64)
    for q in range(1, n):
        fq = f[q] + q * q
        active = cols
        while active.size:
            ka = k[active]
            va = v[ka, active]
            sa = (fq[active] - (f[va, active] + va * va)) / (2.0 * (q - va))
            s[active] = sa
            pop = sa <= z[ka, active]
            active = active[pop]
            k[active] -= 1
        k += 1
        v[k, cols] = q
        z[k, cols] = s
        z[k + 1, cols] = np.inf
    out = np.empty((n, m), dtype=np.int64)  # read the envelope back
    k[:] = 0
    for q in range(n):
        active = cols[z[k + 1, cols] < q]
        while active.size:
            k[active] += 1
            active = active[z[k[active] + 1, active] < q]
        vk = v[k, cols]
        out[q] = (q - vk) ** 2 + g2[vk, cols]
    return out


def _distance_sq_block(mask: BoolArray, cap: int) -> IntArray:
    """min(squared distance to the other class, cap^2) for a stack of images (..., h, w)."""
    g = _run_distance(mask, cap)  # along rows
    v = _run_distance(np.swapaxes(mask, -1, -2), cap)  # along columns
    g2 = g * g
    if cap <= _SHIFT_PASS_MAX_RADIUS:
        d = _column_pass_shifts(g2, cap)
    else:
        h, w = mask.shape[-2:]
        flat = np.moveaxis(g2.reshape(-1, h, w), 1, 0).reshape(h, -1)
        d = np.moveaxis(_column_pass_envelope(flat).reshape(h, -1, w), 0, 1).reshape(g2.shape)
    np.minimum(d, np.swapaxes(v * v, -1, -2), out=d)
    return np.minimum(d, cap * cap)


def _tile_any(b: BoolArray, tile: int) -> BoolArray:
    h, w = b.shape
    th, tw = -(-h // tile), -(-w // tile)
    padded = np.zeros((th * tile, tw * tile), dtype=bool)
    padded[:h, :w] = b
    return padded.reshape(th, tile, tw, tile).any(axis=(1, 3))


def _dilate(b: BoolArray, k: int) -> BoolArray:
    out = b.copy()
    for _ in range(k):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        out = grown
    return out


def squared_distance_to_other(mask: BoolArray, cap: int) -> IntArray:
    """min(d^2, cap^2), d the exact Euclidean distance from each pixel centre to the nearest other-class one.

    Only pixels within ``cap`` of the edge need work: the image is cut in tiles and
    each tile near an edge is solved in a window reaching ``cap`` pixels past it
    (the nearest other-class pixel, if closer than ``cap``, lies inside it); the
    windows are solved together, as one stack. Every other pixel is ``cap^2``.
    """
    height, width = mask.shape
    cap = max(1, cap)
    tile = max(32, 2 * cap)
    wh, ww = min(height, tile + 2 * cap), min(width, tile + 2 * cap)
    if wh == height and ww == width:
        return _distance_sq_block(mask, cap)
    # tiles holding a pixel that has a 4-neighbour of the other class, then those within cap of one
    edges = np.zeros((height, width), dtype=bool)
    edges[:, :-1] = mask[:, 1:] != mask[:, :-1]
    edges[:-1, :] |= mask[1:, :] != mask[:-1, :]
    active = _dilate(_tile_any(edges, tile), -(-(cap + 1) // tile))
    ty, tx = np.nonzero(active)
    out = np.full((height, width), cap * cap, dtype=np.int64)
    if ty.size == 0:
        return out
    if ty.size * wh * ww >= height * width:
        return _distance_sq_block(mask, cap)
    y0, x0 = ty * tile, tx * tile
    oy = np.clip(y0 - cap, 0, height - wh)
    ox = np.clip(x0 - cap, 0, width - ww)
    windows = np.lib.stride_tricks.sliding_window_view(mask, (wh, ww))[oy, ox]
    solved = _distance_sq_block(windows, cap)
    for i in range(ty.size):
        ya, xa = int(y0[i]), int(x0[i])
        yb, xb = min(ya + tile, height), min(xa + tile, width)
        wy, wx = ya - int(oy[i]), xa - int(ox[i])
        out[ya:yb, xa:xb] = solved[i, wy : wy + yb - ya, wx : wx + xb - xa]
    return out


def feather_alpha(mask: BoolArray, feather: float) -> npt.NDArray[np.uint8]:
    """Alpha for a feathered edge: 0 far inside, 255 far outside, ~128 on the edge."""
    if feather <= 0:
        return np.where(mask, np.uint8(0), np.uint8(255)).astype(np.uint8)
    # insideness saturates once |d| >= feather/2, i.e. distance >= (feather + 1)/2
    cap = math.ceil((feather + 1) / 2)
    d2 = squared_distance_to_other(mask, cap)
    # alpha as a function of (squared distance, class): a lookup table, exact in float64
    dist = np.sqrt(np.arange(cap * cap + 1, dtype=np.float64))
    table = np.empty((cap * cap + 1, 2), dtype=np.uint8)
    for cls, sign in ((0, -1.0), (1, 1.0)):
        signed = sign * (dist - 0.5)
        ins = np.clip(0.5 + signed / feather, 0.0, 1.0)
        table[:, cls] = np.floor(255.0 * (1.0 - ins) + 0.5).astype(np.uint8)
    return table.reshape(-1)[d2 * 2 + mask]


# --------------------------------------------------------------------------- masks


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
    f = _number(feather, "feather")
    if f < 0:
        raise ValueError(f"feather must be >= 0, got {feather!r}")
    area = inside(shapes, width, height, from_alpha=from_alpha)
    if invert:
        np.logical_not(area, out=area)
    alpha = Image.fromarray(feather_alpha(area, f))
    white = Image.new("L", (width, height), 255)
    return Image.merge("RGBA", (white, white, white, alpha))


def shape_from_args(kind: str, text: str) -> Shape:
    """A shape from the command line's ``--circle CX,CY,R`` style arguments.

    ``circle`` takes 3 numbers, ``ellipse`` and ``rect`` 4, ``polygon`` an even count
    of at least 6 (x, y pairs). ValueError with a clear message otherwise.
    """
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError as exc:
        raise ValueError(f"--{kind} {text!r}: expected comma-separated numbers") from exc
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"--{kind} {text!r}: numbers must be finite")
    if kind == "circle":
        if len(values) != 3:
            raise ValueError(f"--circle {text!r}: expected CX,CY,R")
        return {"circle": {"center": values[:2], "radius": values[2]}}
    if kind in ("ellipse", "rect"):
        if len(values) != 4:
            raise ValueError(f"--{kind} {text!r}: expected X0,Y0,X1,Y1")
        return {kind: {"box": values}}
    if kind == "polygon":
        if len(values) < 6 or len(values) % 2:
            raise ValueError(f"--polygon {text!r}: expected at least 3 X,Y pairs")
        return {"polygon": {"points": [values[i : i + 2] for i in range(0, len(values), 2)]}}
    raise ValueError(f"unknown shape {kind!r} (expected one of {', '.join(SHAPE_KINDS)})")
