"""Disk trouble: which OS errors mean "the disk cannot take more", free space, and a pre-run check."""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The errors that mean the output disk cannot take what the run writes: full (ENOSPC), over quota
#: (EDQUOT), read-only (EROFS), or failing (EIO). After one of these no new request is sent.
DISK_ERRNOS: frozenset[int] = frozenset(
    e for e in (errno_mod.ENOSPC, errno_mod.EROFS, errno_mod.EIO, getattr(errno_mod, "EDQUOT", None)) if e
)

_MB = 1_000_000

#: The margin the pre-run check adds to its estimate: 10 % of it, at least this much.
MIN_MARGIN_BYTES = 16 * _MB

#: Half-bytes per pixel of the upper bound per format: 4 bytes (8 halves) for PNG and WebP (4
#: channels stored raw: what lossless coders fall back to on noise), 4.5 bytes for JPEG (4:4:4 at
#: quality 100 on noise measures 4.1 bytes a pixel, more than the raw RGB); plus 2 % for block,
#: chunk and row-filter overhead and 64 KB of headers and metadata.
_HALF_BYTES_PER_PIXEL = {"png": 8, "webp": 8, "jpeg": 9, "jpg": 9}
_OVERHEAD_FIXED = 64 * 1024

#: The pixels an image of unknown size (``size: auto``) is counted as: the largest answer of the
#: shipped ``auto`` models (1536x1024). Callers that know better pass ``unknown_pixels``.
AUTO_PIXELS = 1536 * 1024


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an ``OSError`` whose errno says the
    disk is full, over quota, read-only or failing."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in DISK_ERRNOS:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _disk_oserror(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None and cur.errno in DISK_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


@dataclass(frozen=True)
class DiskError:
    """A disk error seen while writing ``what`` (e.g. "the manifest") at ``path``."""

    errno: int
    path: str
    what: str

    @classmethod
    def from_exception(cls, exc: BaseException, *, what: str, path: str | os.PathLike[str] | None = None) -> DiskError:
        """The value for ``exc`` (see :func:`is_disk_error`; ``ValueError`` when it is not one).
        ``path`` defaults to the exception's ``filename``."""
        err = _disk_oserror(exc)
        if err is None or err.errno is None:
            raise ValueError(f"not a disk error: {exc!r}")
        where = path if path is not None else err.filename
        return cls(errno=err.errno, path=os.fspath(where) if where is not None else "", what=what)

    @property
    def code(self) -> str:
        """The errno's symbolic name: ``"ENOSPC"``."""
        return errno_mod.errorcode.get(self.errno, str(self.errno))

    @property
    def reason(self) -> str:
        """What the errno means, in words: ``"no space left on the device"``."""
        return _REASONS.get(self.errno) or os.strerror(self.errno)

    def message(self) -> str:
        """``"no space left on the device while writing the manifest (out/manifest.json) [ENOSPC]"``."""
        where = f" ({self.path})" if self.path else ""
        return f"{self.reason} while writing {self.what}{where} [{self.code}]"


_REASONS = {
    errno_mod.ENOSPC: "no space left on the device",
    errno_mod.EROFS: "the file system is read-only",
    errno_mod.EIO: "the disk reported an input/output error",
}
if hasattr(errno_mod, "EDQUOT"):
    _REASONS[errno_mod.EDQUOT] = "the disk quota is exceeded"


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the output folder may not exist yet)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged user may still write on the file system holding ``path`` (or its
    nearest existing ancestor): ``f_bavail * f_frsize``."""
    st = os.statvfs(_existing(Path(path)))
    return st.f_bavail * st.f_frsize


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing ancestor)."""
    p = _existing(Path(path))
    while not os.path.ismount(p) and p.parent != p:
        p = p.parent
    return p


def margin_for(needed_bytes: int) -> int:
    """The default margin on top of an estimate: 10 % of it, at least :data:`MIN_MARGIN_BYTES`."""
    return max(needed_bytes // 10, MIN_MARGIN_BYTES)


def format_mb(n: int) -> str:
    """Bytes as megabytes with one decimal (decimal MB, like ``df -H``): ``"12.3 MB"``."""
    return f"{n / _MB:.1f} MB"


def check_free_space(
    output_dir: str | os.PathLike[str], needed_bytes: int, margin: int | None = None
) -> str | None:
    """None when the file system of ``output_dir`` has ``needed_bytes`` plus ``margin`` (default
    :func:`margin_for`) free; else the message, with the figures::

        not enough free space: this run needs about 40.2 MB (plus a 16.0 MB margin), 2.1 MB free on /mnt/out

    Also None when the free space cannot be read (``statvfs`` refused): the check never blocks a
    run on a guess; the disk errors of the run itself still stop it.
    """
    if needed_bytes <= 0:
        return None
    extra = margin_for(needed_bytes) if margin is None else max(margin, 0)
    try:
        free = free_bytes(output_dir)
    except OSError:
        return None
    if free >= needed_bytes + extra:
        return None
    return (
        f"not enough free space: this run needs about {format_mb(needed_bytes)} "
        f"(plus a {format_mb(extra)} margin), {format_mb(free)} free on {mount_point(output_dir)}"
    )


def image_bytes_bound(
    width: int | None, height: int | None, fmt: str | None, *, unknown_pixels: int = AUTO_PIXELS
) -> int:
    """A conservative upper bound of the file size of one ``width`` x ``height`` image in ``fmt``
    (``png``, ``jpeg``/``jpg``, ``webp``; unknown formats count as PNG): 4 bytes a pixel (PNG,
    WebP) or 4.5 (JPEG), plus 2 % and 64 KB. An unknown size counts as
    ``unknown_pixels``. Real answers are far smaller: a 1024x1024 PNG is 1-3 MB, its bound 4.3 MB
    (4.9 MB for JPEG)."""
    pixels = width * height if width and height and width > 0 and height > 0 else unknown_pixels
    raw = pixels * _HALF_BYTES_PER_PIXEL.get((fmt or "png").lower(), 8) // 2
    return raw + raw // 50 + _OVERHEAD_FIXED


def bytes_for_images(
    images: Iterable[tuple[int | None, int | None, str | None]], *, unknown_pixels: int = AUTO_PIXELS
) -> int:
    """The sum of :func:`image_bytes_bound` over ``(width, height, format)`` triples: what a run that
    makes these images may write. The paid-answer store holds an answer's bytes only until it is
    placed, so add one :func:`image_bytes_bound` per request in flight for it."""
    return sum(image_bytes_bound(w, h, f, unknown_pixels=unknown_pixels) for w, h, f in images)
