"""The local checks: size, format, transparent, unchanged, similar. Free, deterministic, no network.

Each takes the decoded image under test (and the images the check names, by role) and gives
a CheckResult with the measured score. `unchanged` and `similar` are SSIM on luminance (see
ssim.py): `unchanged` over the pixels a mask keeps, at the source's size; `similar` over the
whole picture, at the reference's size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.checks import CheckImage, CheckSpec, PlannedCheck
from ..imaging.io import load
from .result import CheckResult

if TYPE_CHECKING:  # NumPy and SSIM load only when a check measures pixels (a rerun reads cached results)
    from PIL import Image

Resolve = Callable[[CheckImage], Path]  # a check's image (an earlier step's output, or a file) -> its path
DIGITS = 4
METHOD_VERSION = 1  # bump when a measurement changes, so cached results are measured again


def run_local(spec: CheckSpec, image: Image.Image, fmt: str, inputs: Mapping[str, Image.Image]) -> CheckResult:
    """One local check of `image` (encoded as `fmt`); `inputs` holds the images it names by role."""
    if spec.kind == "size":
        assert spec.size is not None
        want, got = spec.size, image.size
        return _result(spec, got == want, None, f"{_wh(got)}" + ("" if got == want else f", not {_wh(want)}"))
    if spec.kind == "format":
        return _result(spec, fmt == spec.format, None, fmt if fmt == spec.format else f"{fmt}, not {spec.format}")
    if spec.kind == "transparent":
        share = transparent_fraction(image)
        ok = (spec.min is None or share >= spec.min) and (spec.max is None or share <= spec.max)
        bounds = " and ".join(x for x in (f"at least {_pct(spec.min)}" if spec.min is not None else "",
                                          f"at most {_pct(spec.max)}" if spec.max is not None else "") if x)
        return _result(spec, ok, share, f"{_pct(share)} of the pixels are fully transparent "
                       f"({'' if ok else 'needs '}{bounds})")
    if spec.kind == "unchanged":
        score = unchanged_score(image, inputs["from"], inputs.get("outside"))
        if score is None:
            return _result(spec, False, None, "the mask keeps no pixel: nothing to compare")
        where = "over the kept area" if "outside" in inputs else "over the whole image"
        return _compare(spec, score, f"SSIM {score:.{DIGITS}f} against the source {where}")
    if spec.kind == "similar":
        score = similar_score(image, inputs["to"])
        return _compare(spec, score, f"SSIM {score:.{DIGITS}f} against the reference")
    raise ValueError(f"{spec.kind} is not a local check")


def fingerprint(spec: CheckSpec, image_sha256: str, inputs: Sequence[tuple[str, str]]) -> str:
    """A local check's cache key: what it measures and against what (kind, bounds, the image's and
    each named image's sha256 by role). Equal keys give equal results, so a rerun need not decode."""
    text = json.dumps({"v": METHOD_VERSION, "kind": spec.kind, "size": spec.size, "format": spec.format,
                       "min": spec.min, "max": spec.max, "image": image_sha256, "inputs": [list(i) for i in inputs]},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def planned_fingerprint(check: PlannedCheck, image_path: Path, resolve: Resolve) -> str:
    """The cache key of a planned local check on an image file (hashes the files; decodes nothing)."""
    return fingerprint(check.spec, _sha256(image_path), [(i.role, _sha256(resolve(i))) for i in check.images])


def run_planned(check: PlannedCheck, image_path: Path, resolve: Resolve) -> CheckResult:
    """A planned local check on an image file; the images it names are found with `resolve`."""
    image = load(image_path)
    fmt = (image.format or "").lower()
    inputs: dict[str, Image.Image] = {i.role: load(resolve(i)) for i in check.images}
    result = run_local(check.spec, image, {"jpg": "jpeg"}.get(fmt, fmt), inputs)
    return replace(result, fingerprint=planned_fingerprint(check, image_path, resolve))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def transparent_fraction(image: Image.Image) -> float:
    """The share of pixels whose alpha is 0 (0.0 for an image without alpha)."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return 0.0
    import numpy as np

    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return round(float((alpha == 0).mean()), 6)


def unchanged_score(image: Image.Image, source: Image.Image, mask: Image.Image | None = None) -> float | None:
    """SSIM of `image` against `source` over what `mask` keeps (its opaque pixels), at the source's size."""
    import numpy as np

    from . import ssim

    size = ssim.frame(source.size)
    smap = ssim.ssim_map(ssim.luminance(image, size), ssim.luminance(source, size))
    keep = ssim.keep_weights(mask, size) if mask is not None else np.ones((size[1], size[0]))
    score = ssim.masked_score(smap, keep)
    return None if score is None else round(score, 6)


def similar_score(image: Image.Image, reference: Image.Image) -> float:
    """Global SSIM of `image` against `reference`, at the reference's size."""
    from . import ssim

    size = ssim.frame(reference.size)
    return round(float(ssim.ssim_map(ssim.luminance(image, size), ssim.luminance(reference, size)).mean()), 6)


def _compare(spec: CheckSpec, score: float, text: str) -> CheckResult:
    assert spec.min is not None
    ok = score >= spec.min
    return _result(spec, ok, score, f"{text}, {'at least' if ok else 'below'} {spec.min:g}")


def _result(spec: CheckSpec, passed: bool, score: float | None, reason: str) -> CheckResult:
    return CheckResult(spec.name, spec.kind, passed, score, reason, 0.0, spec.severity)


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _pct(share: float | None) -> str:
    return f"{(share or 0.0) * 100:.1f}%"
