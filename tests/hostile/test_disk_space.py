"""Disk errors are told apart from other OS errors; the free-space check gives exact figures; a real
small disk that fills up or turns read-only raises errors classified as disk errors."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diskfaults import DiskFaults, SmallDisk
from PIL import Image

from dalle_pipe import store
from dalle_pipe.store import DiskError, ObjectStore
from dalle_pipe.store.diskspace import MIN_MARGIN_BYTES, format_mb

FP = "c" * 64


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT])
def test_full_read_only_failing_and_over_quota_disks_are_disk_errors(err: int) -> None:
    assert store.is_disk_error(OSError(err, os.strerror(err), "/out/a.png"))


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EACCES, "Permission denied"),
        FileNotFoundError(errno.ENOENT, "No such file"),
        OSError("no errno"),
        ValueError("not an OS error"),
    ],
)
def test_other_errors_are_not_disk_errors(exc: BaseException) -> None:
    assert not store.is_disk_error(exc)


def test_a_disk_error_wrapped_in_another_error_is_found() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/manifest.json")
        except OSError as inner:
            raise RuntimeError("could not write the manifest") from inner
    except RuntimeError as outer:
        assert store.is_disk_error(outer)
        value = DiskError.from_exception(outer, what="the manifest")
    assert value == DiskError(errno=errno.ENOSPC, path="/out/manifest.json", what="the manifest")


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (errno.ENOSPC, "no space left on the device while writing hero@mug (out/hero/mug.png) [ENOSPC]"),
        (errno.EROFS, "the file system is read-only while writing hero@mug (out/hero/mug.png) [EROFS]"),
        (errno.EIO, "the disk reported an input/output error while writing hero@mug (out/hero/mug.png) [EIO]"),
        (errno.EDQUOT, "the disk quota is exceeded while writing hero@mug (out/hero/mug.png) [EDQUOT]"),
    ],
)
def test_disk_error_values_say_what_was_being_written_where(err: int, message: str) -> None:
    value = DiskError.from_exception(OSError(err, os.strerror(err), "out/hero/mug.png"), what="hero@mug")
    assert (value.errno, value.path, value.what) == (err, "out/hero/mug.png", "hero@mug")
    assert value.message() == message


def test_disk_error_value_takes_an_explicit_path_and_refuses_other_errors() -> None:
    value = DiskError.from_exception(OSError(errno.EIO, "I/O error"), what="the journal", path=Path("o/j"))
    assert value.message() == "the disk reported an input/output error while writing the journal (o/j) [EIO]"
    assert DiskError.from_exception(OSError(errno.EIO, "I/O error"), what="x").message() == (
        "the disk reported an input/output error while writing x [EIO]"
    )
    with pytest.raises(ValueError, match="not a disk error"):
        DiskError.from_exception(OSError(errno.EACCES, "Permission denied"), what="x")


def test_image_bounds_are_raw_pixels_plus_overhead() -> None:
    assert store.image_bytes_bound(1024, 1024, "png") == 4 * 1024 * 1024 * 51 // 50 + 65536
    assert store.image_bytes_bound(1024, 1024, "webp") == 4 * 1024 * 1024 * 51 // 50 + 65536
    jpeg_raw = 9 * 1024 * 1024 // 2
    assert store.image_bytes_bound(1024, 1024, "jpeg") == jpeg_raw + jpeg_raw // 50 + 65536 == 4_878_499
    assert store.image_bytes_bound(1024, 1024, "JPG") == store.image_bytes_bound(1024, 1024, "jpeg")
    assert store.image_bytes_bound(None, None, "png") == store.image_bytes_bound(1536, 1024, "png")
    assert store.image_bytes_bound(None, None, None, unknown_pixels=100) == 400 + 8 + 65536
    assert store.bytes_for_images([(1024, 1024, "png"), (1536, 1024, "jpeg")]) == (
        store.image_bytes_bound(1024, 1024, "png") + store.image_bytes_bound(1536, 1024, "jpeg")
    )
    assert store.bytes_for_images([]) == 0


def test_image_bounds_hold_for_noise_that_does_not_compress() -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(256, 384, 4), dtype=np.uint8)
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("png", "RGBA", {}),
        ("webp", "RGBA", {"lossless": True}),
        ("jpeg", "RGB", {"quality": 100, "subsampling": 0}),
    ]
    for fmt, mode, save in cases:
        buf = io.BytesIO()
        Image.fromarray(pixels[:, :, : len(mode)], mode).save(buf, fmt.upper(), **save)
        assert len(buf.getvalue()) <= store.image_bytes_bound(384, 256, fmt), fmt


def test_the_margin_is_a_tenth_of_the_estimate_and_at_least_16_mb() -> None:
    assert store.margin_for(1_000_000) == MIN_MARGIN_BYTES == 16_000_000
    assert store.margin_for(1_000_000_000) == 100_000_000


def test_no_estimate_needs_no_space(tmp_path: Path) -> None:
    assert store.check_free_space(tmp_path, 0) is None


def test_a_free_space_that_cannot_be_read_does_not_block_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(path: object) -> os.statvfs_result:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "statvfs", refused)
    assert store.check_free_space(tmp_path, 10**15) is None


def test_free_space_of_a_folder_not_made_yet_is_its_disk_s(tmp_path: Path) -> None:
    assert store.mount_point(tmp_path / "out" / "shots") == store.mount_point(tmp_path)
    assert abs(store.free_bytes(tmp_path / "out" / "shots") - store.free_bytes(tmp_path)) < 50_000_000


# -- a real small disk -------------------------------------------------------------------------------


def test_the_free_space_check_gives_exact_figures(small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("2m")
    free = disk.free()
    assert 1_900_000 < free <= 2 * 1024 * 1024
    assert store.free_bytes(disk.path / "out" / "shots") == free
    assert store.mount_point(disk.path / "out" / "shots") == disk.path

    assert store.check_free_space(disk.path / "out", 1_000_000, margin=free - 1_000_000) is None
    message = store.check_free_space(disk.path / "out", 1_000_000, margin=free - 999_999)
    assert message == (
        f"not enough free space: this run needs about 1.0 MB (plus a {format_mb(free - 999_999)} margin), "
        f"{format_mb(free)} free on {disk.path}"
    )
    assert store.check_free_space(disk.path, 1_500_000) == (
        f"not enough free space: this run needs about 1.5 MB (plus a 16.0 MB margin), "
        f"{free / 1e6:.1f} MB free on {disk.path}"
    )


def test_a_disk_that_fills_up_raises_a_disk_error_and_keeps_earlier_answers(
    small_disk: Callable[..., SmallDisk],
) -> None:
    disk = small_disk("2m")
    out = disk.path / "out"
    objects = ObjectStore(out)
    first = objects.put(os.urandom(600_000), task="hero@1", fingerprint=FP, index=0)
    second = objects.put(os.urandom(600_000), task="hero@2", fingerprint=FP, index=0)
    with pytest.raises(OSError) as info:
        objects.put(os.urandom(1_200_000), task="hero@3", fingerprint=FP, index=0)

    assert info.value.errno == errno.ENOSPC
    assert store.is_disk_error(info.value)
    assert DiskError.from_exception(info.value, what="hero@3").message().startswith(
        "no space left on the device while writing hero@3"
    )
    fresh = ObjectStore(out)
    assert fresh.pending() == [first, second]
    assert fresh.scan().corrupt == [] and fresh.scan().orphans == []
    assert [p.name for p in out.rglob("*.dp-tmp")] == []  # no temp file eats the space left


def test_manifest_writes_on_a_full_disk_raise_a_disk_error_and_keep_the_old_file(
    small_disk: Callable[..., SmallDisk],
) -> None:
    disk = small_disk("1m")
    path = disk.path / "manifest.json"
    store.atomic_write_json(path, {"entries": []})
    disk.fill()
    with pytest.raises(OSError) as info:
        store.atomic_write_chunks(path, ["x" * 100_000 for _ in range(20)])
    assert store.is_disk_error(info.value)
    assert path.read_text() == '{\n  "entries": []\n}\n'
    assert sorted(p.name for p in disk.path.iterdir()) == ["filler.bin", "manifest.json"]


def test_a_disk_turned_read_only_raises_a_disk_error(small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("2m")
    objects = ObjectStore(disk.path / "out")
    kept = objects.put(b"before", task="a@1", fingerprint=FP, index=0)
    disk.remount("ro")
    try:
        with pytest.raises(OSError) as info:
            objects.put(b"after", task="a@2", fingerprint=FP, index=0)
        assert info.value.errno == errno.EROFS
        assert store.is_disk_error(info.value)
        assert ObjectStore(disk.path / "out").pending() == [kept]
    finally:
        disk.remount("rw")


def test_injected_faults_hit_only_the_matching_writes_after_the_allowed_ones(
    tmp_path: Path, disk_faults: DiskFaults
) -> None:
    disk_faults.fail(errno.ENOSPC, where="/shots/", after=2)
    for name in ("a.png", "b.png"):
        store.atomic_write_bytes(tmp_path / "shots" / name, b"ok")
    store.atomic_write_bytes(tmp_path / "other" / "c.png", b"ok")
    with pytest.raises(OSError, match="No space left on device"):
        store.atomic_write_bytes(tmp_path / "shots" / "d.png", b"lost")
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == ["a.png", "b.png"]
    assert [str(e) for e in disk_faults.raised] == [
        f"[Errno {errno.ENOSPC}] No space left on device: '{tmp_path / 'shots' / 'd.png'}'"
    ]
