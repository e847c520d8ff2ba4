"""The local checks on constructed pixels: SSIM scores, the kept area of a mask, transparency, size, format."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_pipe.checks import CheckResult, checks_pass
from dalle_pipe.checks.local import (
    fingerprint,
    planned_fingerprint,
    run_local,
    run_planned,
    similar_score,
    transparent_fraction,
    unchanged_score,
)
from dalle_pipe.checks.ssim import blur, masked_score, ssim_map
from dalle_pipe.config.checks import CheckImage, CheckSpec, ImageSpec, PlannedCheck

AT = ("steps", 0, "checks", 0)
SIZE = 128


def noise(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a, "RGB")


def edit_mask(box: tuple[int, int, int, int], size: int = SIZE) -> Image.Image:
    """An edit mask: transparent (edited) inside box, opaque white (kept) elsewhere."""
    a = np.full((size, size, 4), 255, dtype=np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1, 3] = 0
    return Image.fromarray(a, "RGBA")


def spec(kind: str, **kw: object) -> CheckSpec:
    return CheckSpec(kind, kind, "error", AT, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SSIM


def test_identical_images_score_exactly_one() -> None:
    src = rgb(noise())
    assert similar_score(src, src) == 1.0
    assert unchanged_score(src, src, edit_mask((40, 40, 88, 88))) == 1.0


def test_the_window_is_a_normalised_gaussian_and_blur_keeps_a_constant() -> None:
    flat = np.full((20, 30), 7.0)
    assert np.allclose(blur(flat), 7.0, rtol=0, atol=1e-12)
    assert ssim_map(flat, flat).shape == (20, 30)


def test_an_inverted_image_scores_far_below_a_noisy_copy() -> None:
    base = noise()
    noisy = np.clip(base.astype(int) + np.random.default_rng(1).integers(-8, 9, base.shape), 0, 255)
    near = similar_score(rgb(noisy.astype(np.uint8)), rgb(base))
    far = similar_score(rgb(255 - base), rgb(base))
    assert 0.9 < near < 1.0
    assert far < 0.0
    assert similar_score(rgb(noisy.astype(np.uint8)), rgb(base)) == near  # deterministic


def test_an_edit_confined_to_the_editable_region_keeps_a_perfect_score() -> None:
    base = noise()
    edited = base.copy()
    edited[40:88, 40:88] = 255 - edited[40:88, 40:88]
    mask = edit_mask((40, 40, 88, 88))
    assert unchanged_score(rgb(edited), rgb(base), mask) == 1.0
    assert unchanged_score(rgb(edited), rgb(base)) == pytest.approx(0.7221, abs=1e-4)  # no mask: all of it


def test_a_change_in_the_kept_region_lowers_the_score_below_the_threshold() -> None:
    base = noise()
    edited = base.copy()
    edited[0:30, 0:30] = 0  # a corner the mask keeps
    result = run_local(spec("unchanged", min=0.97), rgb(edited), "png",
                       {"from": rgb(base), "outside": edit_mask((40, 40, 88, 88))})
    assert result.score == pytest.approx(0.9255, abs=1e-4)
    assert (result.passed, result.reason) == (False, f"SSIM {result.score:.4f} against the source over the "
                                                      "kept area, below 0.97")


def test_images_are_compared_at_the_sources_size() -> None:
    base = noise()
    big = rgb(base).resize((256, 256), Image.Resampling.NEAREST)
    assert unchanged_score(big, rgb(base)) == pytest.approx(1.0, abs=0.05)
    assert unchanged_score(big, rgb(base)) != 1.0


def test_a_mask_that_keeps_nothing_fails_with_a_reason() -> None:
    result = run_local(spec("unchanged", min=0.5), rgb(noise()), "png",
                       {"from": rgb(noise()), "outside": edit_mask((0, 0, SIZE, SIZE))})
    assert (result.passed, result.score, result.reason) == (False, None, "the mask keeps no pixel: nothing to compare")


def test_masked_score_counts_only_windows_inside_the_kept_area() -> None:
    smap = np.ones((40, 40))
    smap[:, 21:] = 0.0  # an edit of columns 26.. lowers the scores up to 5 px into the kept side
    keep = np.zeros((40, 40))
    keep[:, :26] = 1.0
    assert masked_score(smap, keep) == 1.0
    narrow = np.zeros((40, 40))
    narrow[:, 18:22] = 1.0  # no whole window fits: the whole kept area counts
    assert masked_score(smap, narrow) == 0.75  # columns 18..20 of 18..21
    assert masked_score(smap, np.zeros((40, 40))) is None


def test_similar_passes_and_fails_on_min() -> None:
    base = rgb(noise())
    ok = run_local(spec("similar", min=0.6), base, "png", {"to": base})
    bad = run_local(spec("similar", min=0.6), rgb(noise(2)), "png", {"to": base})
    assert (ok.passed, ok.score, ok.reason) == (True, 1.0, "SSIM 1.0000 against the reference, at least 0.6")
    assert bad.passed is False and bad.score is not None and bad.score < 0.1


# --------------------------------------------------------------------------- size, format, transparent


def test_transparent_fraction_counts_only_fully_transparent_pixels() -> None:
    a = np.zeros((10, 10, 4), dtype=np.uint8)
    a[..., 3] = 255
    a[:3, :, 3] = 0  # 30 pixels fully transparent
    a[3, :, 3] = 1  # 10 nearly transparent: not counted
    img = Image.fromarray(a, "RGBA")
    assert transparent_fraction(img) == 0.3
    assert transparent_fraction(rgb(noise())) == 0.0
    low = run_local(spec("transparent", min=0.2), img, "png", {})
    high = run_local(spec("transparent", min=0.5, max=0.9), img, "png", {})
    assert (low.passed, low.score, low.reason) == (True, 0.3, "30.0% of the pixels are fully transparent "
                                                               "(at least 20.0%)")
    assert (high.passed, high.reason) == (False, "30.0% of the pixels are fully transparent "
                                                 "(needs at least 50.0% and at most 90.0%)")


def test_size_and_format() -> None:
    img = rgb(noise())
    assert run_local(spec("size", size=(128, 128)), img, "png", {}).to_json() == {
        "name": "size", "kind": "size", "severity": "error", "passed": True, "score": None, "reason": "128x128",
        "cost_usd": 0.0, "fingerprint": None}
    assert run_local(spec("size", size=(1024, 1024)), img, "png", {}).reason == "128x128, not 1024x1024"
    assert run_local(spec("format", format="png"), img, "jpeg", {}).reason == "jpeg, not png"
    assert run_local(spec("format", format="png"), img, "png", {}).passed is True


def test_run_planned_reads_the_files(tmp_path: Path) -> None:
    base = noise()
    rgb(base).save(tmp_path / "source.png")
    edited = base.copy()
    edited[50:70, 50:70] = 0
    rgb(edited).save(tmp_path / "out.png")
    edit_mask((40, 40, 88, 88)).save(tmp_path / "mask.png")
    check = PlannedCheck(spec("unchanged", min=0.99, source=ImageSpec(AT, step="hero"),
                              region=ImageSpec(AT, step="keep")),
                         images=(CheckImage("from", step="hero"), CheckImage("outside", step="keep")))
    paths = {"hero": tmp_path / "source.png", "keep": tmp_path / "mask.png"}
    result = run_planned(check, tmp_path / "out.png", lambda image: paths[str(image.step)])
    assert (result.passed, result.score) == (True, 1.0)
    shas = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
            for name in ("out.png", "source.png", "mask.png")}
    assert result.fingerprint == fingerprint(check.spec, shas["out.png"],
                                             [("from", shas["source.png"]), ("outside", shas["mask.png"])])
    assert result.fingerprint != fingerprint(check.spec, shas["out.png"],
                                             [("from", shas["mask.png"]), ("outside", shas["source.png"])])
    stricter = PlannedCheck(replace(check.spec, min=0.999), images=check.images)
    assert planned_fingerprint(stricter, tmp_path / "out.png", lambda i: paths[str(i.step)]) != result.fingerprint


# --------------------------------------------------------------------------- results


def test_results_round_trip_and_reduce() -> None:
    ok = CheckResult("size", "size", True, None, "1024x1024", 0.0)
    warn = CheckResult("look", "ask", False, None, "the handle is cut off", 0.0012, "warn", "ab" * 32)
    unjudged = CheckResult("same", "ask", None, None, "not judged", 0.0)
    assert CheckResult.from_json(warn.to_json()) == warn
    assert CheckResult.from_json({"name": "x", "kind": "size", "passed": "yes"}) is None
    assert checks_pass([ok, warn], offline=False) is True  # a warn check only annotates
    assert checks_pass([ok, unjudged], offline=True) is True
    assert checks_pass([ok, unjudged], offline=False) is False  # "not judged" never satisfies a real run
    assert checks_pass([CheckResult("size", "size", False, None, "", 0.0)], offline=True) is False
