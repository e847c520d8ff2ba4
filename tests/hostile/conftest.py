"""Fixtures for hostile cases (the helpers live in diskfaults.py).

- ``disk_faults``: raise ``OSError(ENOSPC | EROFS | EIO | ...)`` from the store's file layer
  (``dalle_pipe.store.inject_faults``: every image, manifest, journal, index, object and rescue
  write goes through it), for writes to paths you choose, after as many successful ones as you
  say. Nothing of the openai SDK is touched.
- ``small_disk``: mount a tmpfs of a given size (default 2 MB) and unmount it afterwards. Needs
  root and a kernel that lets us mount; the test is skipped, saying why, where mounting is refused.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from diskfaults import DiskFaults, SmallDisk, mount_refused, run

from dalle_pipe import store


@pytest.fixture
def disk_faults() -> Iterator[DiskFaults]:
    """Inject disk errors at the file layer for the duration of the test."""
    faults = DiskFaults()
    with store.inject_faults(faults):
        yield faults


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., SmallDisk]]:
    """``small_disk(size="2m")`` mounts a tmpfs of that size under ``tmp_path`` and returns it;
    every disk mounted is unmounted after the test (lazily if busy)."""
    mounted: list[Path] = []

    def mount(size: str = "2m") -> SmallDisk:
        target = tmp_path / f"disk{len(mounted)}"
        target.mkdir()
        reason = mount_refused(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)])
        if reason is not None:
            pytest.skip(reason)
        mounted.append(target)
        st = os.statvfs(target)
        return SmallDisk(path=target, size=st.f_blocks * st.f_frsize)

    yield mount
    for target in reversed(mounted):
        try:
            run(["umount", str(target)])
        except subprocess.CalledProcessError:
            subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False, timeout=30)
