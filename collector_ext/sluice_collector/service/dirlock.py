"""One receiver per `files.directory`.

Two receivers writing one directory would each think they own its rotation sequence, its audit
chain heads and its query index; the second one's index maintenance broke the first one's
SQLite WAL (a query then failed with "disk I/O error" and acknowledged records never reached
the index). `sluice index rebuild` under a running receiver loses every later record the same
way. So the directory is claimed with an exclusive `flock` on a hidden file in it, held for the
life of the receiver — by the supervisor with `--workers`, whose workers share the directory
by design (their shared files are coordinated by locks of their own). The kernel drops the lock
when the process dies, SIGKILL included, so a crash never leaves the directory claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".sluice-receiver.lock"


class DirectoryInUse(Exception):
    """Another process holds the directory."""


class DirectoryLock:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, what: str = "another receiver") -> None:
        """Claim the directory or raise DirectoryInUse naming the holder's pid."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryInUse(
                f"files.directory {self.directory} is in use by {what} (pid {holder}); "
                "stop it first, or give this one a directory of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
