"""One run per ``output_dir``: an advisory ``flock`` the kernel drops when the process dies.

The one file lock of dalle-pipe: runs, shards and the review page's writers all take a RunLock."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from dalle_pipe.errors import LockedError

from ._fs import LOCK_NAME, _makedirs, state_dir


class RunLock:
    """Context manager holding ``flock(LOCK_EX | LOCK_NB)`` on ``output_dir/.dalle-pipe/lock``.

    Raises :class:`~dalle_pipe.errors.LockedError` at once (unless ``wait``) when another process,
    or another ``RunLock`` in this process, holds it. The holder's pid is written into the
    file for people to read; it is never trusted. The file itself is never deleted (deleting a
    flock file races with the next opener). ``acquire``/``release`` work without ``with`` too.

    ``name`` picks another lock file in ``.dalle-pipe/`` (a shard's own lock,
    ``lock.shard-1-of-4``); ``shared`` takes ``LOCK_SH`` instead, so that several holders
    coexist while an exclusive holder excludes them all (shards share the folder's lock; a
    whole run takes it alone). ``wait`` blocks until the lock is free instead of raising (Ctrl-C
    still interrupts the wait): writers that only need to take turns, such as the review page.
    """

    def __init__(self, output_dir: Path, name: str | None = None, *, shared: bool = False,
                 wait: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.path = state_dir(self.output_dir) / (name or LOCK_NAME)
        self.shared = shared
        self.wait = wait
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        _makedirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"another dalle-pipe run is using {self.output_dir}", hint="wait for it to finish"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if not self.shared:  # a shared holder leaves the file to the others
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if not self.shared:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
