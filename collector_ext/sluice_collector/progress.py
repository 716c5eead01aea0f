"""Progress of long CLI work (`logs export`, `index rebuild`, `audit verify`) on stderr.

Shown only when stderr is a terminal and the environment is not CI (`CI` set) or a dumb
terminal: pipes, log files and CI output get nothing, so scripts read the same output as before.
The bar is tqdm's (records or bytes done, rate, ETA when the total is known); the work itself
only calls `advance`, which costs next to nothing when the bar is off.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["Progress", "enabled", "uncompressed_size"]


def enabled(stream: IO[str] | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and not os.environ.get("CI") and os.environ.get("TERM", "") != "dumb"


def uncompressed_size(path: Path) -> int:
    """Bytes a reader of `path` will see: the file size, or for .gz the size in its trailer
    (modulo 4 GiB, as gzip stores it; good enough for an estimate)."""
    try:
        size = path.stat().st_size
        if path.name.endswith(".gz") and size >= 18:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                return int(struct.unpack("<I", fh.read(4))[0])
    except (OSError, gzip.BadGzipFile):
        return 0
    return size


class Progress:
    """`with Progress("indexing", total=..., unit="B") as p: p.advance(records=n, nbytes=m)`.

    `unit` is what the bar counts ("B" for bytes, "records"); the other quantity is shown beside it.
    """

    def __init__(self, description: str, *, total: int | None = None, unit: str = "B",
                 stream: IO[str] | None = None, min_interval_s: float = 0.25) -> None:
        self.unit = unit
        self.records = 0
        self.nbytes = 0
        self._bar: Any = None
        if enabled(stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total or None, desc=description, unit=unit, unit_scale=True,
                unit_divisor=1024 if unit == "B" else 1000, file=stream or sys.stderr,
                leave=False, dynamic_ncols=True, mininterval=min_interval_s,
            )

    def advance(self, records: int = 0, nbytes: int = 0) -> None:
        self.records += records
        self.nbytes += nbytes
        bar = self._bar
        if bar is None:
            return
        if self.unit == "B":
            bar.set_postfix_str(f"{self.records:,} records", refresh=False)
            bar.update(nbytes)
        else:
            bar.set_postfix_str(_size(self.nbytes), refresh=False)
            bar.update(records)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"
