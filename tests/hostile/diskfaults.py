"""Helpers of the hostile fixtures (see conftest.py): disk errors at the file layer, a real small disk.

- ``disk_faults``: raise ``OSError(ENOSPC | EROFS | EIO | ...)`` from the store's file layer
  (``dalle_pipe.store.inject_faults``: every image, manifest, journal, index, object and rescue
  write goes through it), for writes to paths you choose, after as many successful ones as you
  say. Nothing of the openai SDK is touched.
- ``small_disk``: mount a tmpfs of a given size (default 2 MB) and unmount it afterwards. Needs
  root and a kernel that lets us mount; the test is skipped, saying why, where mounting is refused.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dalle_pipe import store

PathMatch = str | Callable[[Path], bool] | None


@dataclass
class _Rule:
    err: int
    where: PathMatch
    op: str
    after: int
    times: int | None
    seen: int = 0
    raised: int = 0

    def matches(self, op: str, path: Path) -> bool:
        if op != self.op and self.op != "any":
            return False
        if self.where is None:
            return True
        if callable(self.where):
            return self.where(path)
        return self.where in path.as_posix()


@dataclass
class DiskFaults:
    """The controller of the ``disk_faults`` fixture.

    ``fail(errno.ENOSPC, where="out/", after=2)`` lets the first two matching writes through,
    then raises ``OSError(ENOSPC)`` for every later one (``times`` limits how many). ``where``
    is a substring of the written path (POSIX form) or a predicate; ``op`` is ``"write"``,
    ``"fsync"`` or ``"any"``. ``ops`` lists every ``(op, path)`` the file layer reported;
    ``raised`` every error raised.
    """

    rules: list[_Rule] = field(default_factory=list)
    ops: list[tuple[str, Path]] = field(default_factory=list)
    raised: list[OSError] = field(default_factory=list)

    def fail(
        self, err: int, *, where: PathMatch = None, op: str = "write", after: int = 0, times: int | None = None
    ) -> None:
        self.rules.append(_Rule(err=err, where=where, op=op, after=after, times=times))

    def clear(self) -> None:
        """Let every write through again (the disk was freed)."""
        self.rules.clear()

    def __call__(self, op: str, path: Path) -> None:
        self.ops.append((op, path))
        for rule in self.rules:
            if not rule.matches(op, path):
                continue
            rule.seen += 1
            if rule.seen > rule.after and (rule.times is None or rule.raised < rule.times):
                rule.raised += 1
                exc = OSError(rule.err, os.strerror(rule.err), str(path))
                self.raised.append(exc)
                raise exc


@dataclass
class SmallDisk:
    """A mounted tmpfs: ``path`` is its root, ``size`` its size in bytes."""

    path: Path
    size: int

    def remount(self, options: str) -> None:
        """``mount -o remount,<options>`` (e.g. ``"ro"`` to make it read-only, ``"rw"`` back)."""
        run(["mount", "-o", f"remount,{options}", str(self.path)])

    def fill(self, leave: int = 0) -> None:
        """Write a filler file until at most ``leave`` bytes are free."""
        free = store.free_bytes(self.path)
        with open(self.path / "filler.bin", "ab") as f:
            chunk = b"\0" * 65536
            while free > leave:
                try:
                    f.write(chunk[: max(1, min(len(chunk), free - leave))])
                    f.flush()
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        break
                    raise
                free = store.free_bytes(self.path)

    def free(self) -> int:
        return store.free_bytes(self.path)


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)


def mount_refused(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return f"no {cmd[0]} command on this machine"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI and developers run as root here)"
    try:
        run(cmd)
    except subprocess.CalledProcessError as exc:
        return f"the kernel refused to mount a tmpfs: {(exc.stderr or exc.stdout).strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run mount: {exc}"
    return None
