"""A bounded on-disk queue for audit and security records the receiver could not take yet.

Those categories are evidence: losing them because a receiver restarted is not acceptable, but
neither is unbounded growth. Each spill is one file of length-prefixed `(scope name, encoded
LogRecord)` pairs, written with a single `write` and renamed into place so a crash never leaves a
half file that would be replayed. Files are replayed oldest first once the receiver answers again;
a file is claimed by renaming it first, so a forked sibling never sends the same file twice.

A file may start with the encoded `Resource` its records were made under (`_RESOURCE_MAGIC`, then
the length-prefixed resource). The directory is shared by every process of a service — an app, its
forked workers, each `sluice run` — so a record replayed by another process must keep its own
resource (`process.pid`, and under `sluice run` the `user.id` of the run), not take the replayer's.
Files without the header (older ones) are replayed under the replayer's resource, as before.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sluice import _health
from sluice._wire import varint

__all__ = ["Claimed", "SpillQueue"]

_SUFFIX = ".spill"
# 0xFF can start no headerless file in practice: that byte would begin the varint length of a
# scope name of 127 + 128·k characters.
_RESOURCE_MAGIC = b"\xffsluice-resource\n"


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


class Claimed(NamedTuple):
    """A spill file taken for sending: where it is now, its records and their resource (if kept)."""

    path: Path
    entries: list[tuple[str, bytes]]
    resource: bytes | None


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

    def put(self, entries: Sequence[tuple[str, bytes]], resource: bytes | None = None) -> bool:
        """Write one spill file (with `resource`, the encoded `Resource` body, when given); False
        (and counted) when over budget or the disk refuses."""
        if not entries:
            return True
        chunks: list[bytes] = []
        if resource is not None:
            chunks += [_RESOURCE_MAGIC, varint(len(resource)), resource]
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

    def claim(self) -> Claimed | None:
        """Take the oldest spill file for sending: rename it so nobody else takes it, and parse it."""
        for path in self._files():
            claimed = path.with_name(f"{path.name}.sending-{os.getpid()}")
            try:
                path.rename(claimed)
                data = claimed.read_bytes()
            except OSError:
                continue
            entries: list[tuple[str, bytes]] = []
            resource: bytes | None = None
            pos = 0
            try:
                if data.startswith(_RESOURCE_MAGIC):
                    n, pos = _read_varint(data, len(_RESOURCE_MAGIC))
                    resource = data[pos:pos + n]
                    if len(resource) != n:
                        raise IndexError
                    pos += n
                while pos < len(data):
                    n, pos = _read_varint(data, pos)
                    scope = data[pos:pos + n].decode("utf-8", "replace")
                    pos += n
                    n, pos = _read_varint(data, pos)
                    entries.append((scope, data[pos:pos + n]))
                    pos += n
            except IndexError:
                _health.report_once("spill_corrupt", f"spill file {path} is truncated; kept what parsed")
            return Claimed(claimed, entries, resource)
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
