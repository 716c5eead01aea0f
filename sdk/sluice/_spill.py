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

The files hold records as the app made them, before the receiver masks anything, and the default
directory is under the shared `/tmp` with a name anyone can predict. So the directory is made
0700 and each file 0600, and a directory that already exists but is not this user's own private
one — a symbolic link, owned by another user, or writable by group or others — is refused: a
spill there would hand the records to whoever made it, and its files could be forged records
we would replay. Refusing is warned once and counted (`spill.refused`), like a full disk: the
records are then dropped, which `SLUICE_SPILL_DIR` pointing at a private directory avoids. A
directory of ours that others can merely read (made 0755 by an older sluice) is tightened.
"""

from __future__ import annotations

import contextlib
import os
import stat
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


def _unsafe(directory: Path, *, create: bool) -> str | None:
    """Why `directory` must not hold spill files (None: it is this user's private directory).

    With `create`, a missing directory is made 0700 (its missing parents with the usual mode).
    Judged on `lstat`, so a symbolic link is never followed to somewhere else; files in a
    directory that others could read are made 0600 when the directory is tightened."""
    if create:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700, parents=True)
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return None if not create else "vanished while it was created"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return f"is owned by another user (uid {info.st_uid}, this process runs as uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)
        for path in directory.iterdir():
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600, follow_symlinks=False)
    return None


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

    def _safe(self, *, create: bool) -> bool:
        """Whether spill files may be written to or read from the directory; warned once if not."""
        why = _unsafe(self.directory, create=create)
        if why is None:
            return True
        _health.report_once(
            "spill_unsafe", f"spill directory {self.directory} {why}, so audit/security records are "
            "not spilled there (they are dropped when the receiver cannot take them); set "
            "SLUICE_SPILL_DIR (spill_dir) to a directory only this user can write")
        return False

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
            if not self._safe(create=True):
                _health.increment("spill.refused", len(entries))
                return False
            stem = f"{time.time_ns():020d}-{os.getpid()}"
            tmp = self.directory / f"{stem}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with open(os.open(tmp, flags, 0o600), "wb") as fh:
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
        """Take the oldest spill file for sending: rename it so nobody else takes it, and parse it.
        Nothing is taken from a directory another user could have written records into."""
        if not self.directory.exists() or not self._safe(create=False):
            return None
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
