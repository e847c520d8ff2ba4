"""SSIM (Wang et al. 2004) on luminance, in NumPy: deterministic, no SciPy.

The window is a Gaussian of sigma 1.5, truncated to 11x11 and normalised (the paper's choice);
constants K1 = 0.01, K2 = 0.03 on a 0..255 range. Borders are handled by mirroring (the map has
the image's size, so it can be weighted by a mask). Images are compared at a common frame: the
reference's size, scaled down so that its longer side is at most MAX_SIDE (SSIM is a local
measure; comparing past that size only costs time).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

F64 = npt.NDArray[np.float64]

SIGMA = 1.5
RADIUS = 5  # an 11x11 window
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2
MAX_SIDE = 1024
WHITE = (255, 255, 255, 255)


def _kernel() -> F64:
    x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    k: F64 = np.exp(-(x * x) / (2 * SIGMA * SIGMA))
    out: F64 = k / k.sum()
    return out


KERNEL = _kernel()


def blur(a: F64) -> F64:
    """The separable Gaussian window applied to every pixel (mirrored borders). The kernel is
    symmetric, so each pass adds mirrored pairs before weighting them (half the multiplications)."""
    padded = np.pad(a, RADIUS, mode="symmetric")
    h, w = a.shape
    rows: F64 = padded[RADIUS:RADIUS + h, :] * KERNEL[RADIUS]
    tmp = np.empty_like(rows)
    for i in range(RADIUS):
        np.add(padded[i:i + h, :], padded[2 * RADIUS - i:2 * RADIUS - i + h, :], out=tmp)
        tmp *= KERNEL[i]
        rows += tmp
    out: F64 = rows[:, RADIUS:RADIUS + w] * KERNEL[RADIUS]
    pair = np.empty_like(out)
    for i in range(RADIUS):
        np.add(rows[:, i:i + w], rows[:, 2 * RADIUS - i:2 * RADIUS - i + w], out=pair)
        pair *= KERNEL[i]
        out += pair
    return out


def ssim_map(x: F64, y: F64) -> F64:
    """Per-pixel SSIM of two same-sized luminance arrays (0..255)."""
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + C1) * (2 * sxy + C2)
    den = (mx * mx + my * my + C1) * (sxx + syy + C2)
    return num / den


def frame(size: tuple[int, int]) -> tuple[int, int]:
    """The common comparison size for a reference of `size`: the same, longer side at most MAX_SIDE."""
    w, h = size
    scale = min(1.0, MAX_SIDE / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def luminance(img: Image.Image, size: tuple[int, int]) -> F64:
    """Luminance (ITU-R 601, Pillow's "L") at `size`; transparent pixels are seen over white."""
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("L")
    else:
        flat = img.convert("L")
    if flat.size != size:
        flat = flat.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(flat, dtype=np.float64)


def keep_weights(mask: Image.Image, size: tuple[int, int]) -> F64:
    """How much each pixel is kept by an edit mask (its alpha: 255 kept, 0 edited), 0..1, at `size`."""
    alpha = mask.convert("RGBA").getchannel("A")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(alpha, dtype=np.float64) / 255.0


def masked_score(smap: F64, keep: F64) -> float | None:
    """SSIM averaged over the kept area, counting only windows wholly inside it (so an edit next to
    the border does not lower its neighbours' score); the whole kept area when no window fits.
    None when the mask keeps nothing."""
    inside = blur(keep) >= 1.0 - 1e-9
    weights = keep * inside
    if weights.sum() <= 0:
        weights = keep
    total = float(weights.sum())
    if total <= 0:
        return None
    return float((smap * weights).sum() / total)
