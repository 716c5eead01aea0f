"""The clock file timestamps come from, which need not be this process's.

Ages of files (retention) and the period of a file found at start-up are differences of mtimes
and "now": both must be read on one clock. A write's mtime is stamped by the kernel — or by an
NFS server with its own time — while `time.time` is this process's (stepped since, or faked by
libfaketime in tests). `fs_now` asks the file system itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

Clock = Callable[[], float]

CLOCK_PROBE = ".sluice-clock"


def fs_now(directory: Path) -> float:
    """The file system's own "now" under `directory`: the mtime a file there gets this instant.

    Why: file ages are differences of mtimes, so they must be measured on the clock that set
    them, which is the kernel's (or an NFS server's), not necessarily this process's `time.time`
    (a process under libfaketime, a clock stepped since the files were written). A tiny hidden
    probe file is written and its mtime read back (a write, not `utime`: the write is what
    stamps log files, and libfaketime fakes `utime(NULL)` but not the kernel's stamp of a write);
    hidden files are never log files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(directory / CLOCK_PROBE, flags, 0o640)
    try:
        os.write(fd, b"\n")
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def file_clock(directory: Path, clock: Clock) -> Clock:
    """The clock file mtimes under `directory` come from. With the real clock it is probed
    (`fs_now`, falling back to `clock` while the directory cannot be written); an injected test
    clock is taken to be the one the test stamps its files with."""
    if clock is not time.time:
        return clock

    def now() -> float:
        try:
            return fs_now(directory)
        except OSError:
            return clock()
    return now
