"""A bounded on-disk queue for audit and security records the receiver could not take yet.

Those categories are evidence: losing them because a receiver restarted is not acceptable, but
neither is unbounded growth. Each spill is one file of length-prefixed `(scope name, encoded
LogRecord)` pairs, written with a single `write` and renamed into place so a crash never leaves a
half file that would be replayed. Files are replayed oldest first once the receiver answers again;
a file is claimed by renaming it first, so a forked sibling never sends the same file twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from sluice import _health
from sluice._wire import varint

__all__ = ["SpillQueue"]

_SUFFIX = ".spill"


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


class SpillQueue:
    """Files under `directory`, never more than `max_bytes` in total (newer spills are refused beyond it)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))
        except OSError:
            return []

    def size_bytes(self) -> int:
        total = 0
        for path in self._files():
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def __len__(self) -> int:
        return len(self._files())

    def put(self, entries: Sequence[tuple[str, bytes]]) -> bool:
        """Write one spill file; False (and counted) when over budget or the disk refuses."""
        if not entries:
            return True
        chunks: list[bytes] = []
        for scope, record in entries:
            name = scope.encode("utf-8", "replace")
            chunks += [varint(len(name)), name, varint(len(record)), record]
        data = b"".join(chunks)
        try:
            if self.size_bytes() + len(data) > self.max_bytes:
                _health.increment("spill.refused", len(entries))
                _health.report_once("spill_full", f"spill directory {self.directory} is full; dropping")
                return False
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = f"{time.time_ns():020d}-{os.getpid()}"
            tmp = self.directory / f"{stem}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(self.directory / f"{stem}{_SUFFIX}")
        except OSError as exc:
            _health.report_once("spill_write", f"cannot write spill file under {self.directory}", exc)
            _health.increment("spill.refused", len(entries))
            return False
        _health.increment("spill.written", len(entries))
        return True

    def claim(self) -> tuple[Path, list[tuple[str, bytes]]] | None:
        """Take the oldest spill file for sending: rename it so nobody else takes it, and parse it."""
        for path in self._files():
            claimed = path.with_name(f"{path.name}.sending-{os.getpid()}")
            try:
                path.rename(claimed)
                data = claimed.read_bytes()
            except OSError:
                continue
            entries: list[tuple[str, bytes]] = []
            pos = 0
            try:
                while pos < len(data):
                    n, pos = _read_varint(data, pos)
                    scope = data[pos:pos + n].decode("utf-8", "replace")
                    pos += n
                    n, pos = _read_varint(data, pos)
                    entries.append((scope, data[pos:pos + n]))
                    pos += n
            except IndexError:
                _health.report_once("spill_corrupt", f"spill file {path} is truncated; kept what parsed")
            return claimed, entries
        return None

    def done(self, claimed: Path) -> None:
        """The claimed file was delivered: delete it."""
        with contextlib.suppress(OSError):
            claimed.unlink()

    def release(self, claimed: Path) -> None:
        """Delivery failed: put the file back under its original name so it is retried."""
        original = claimed.with_name(claimed.name.split(".sending-")[0])
        with contextlib.suppress(OSError):
            claimed.rename(original)
