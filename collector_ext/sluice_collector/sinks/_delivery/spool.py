"""`DiskSpool`: a bounded on-disk FIFO of byte records for destinations that may be down.

Remote sinks (syslog, forward) acknowledge a batch to the client as soon as its records are
here, so the spool is the durability boundary: records are written (and flushed to the OS) in
one `write` per batch, survive a restart, and leave only when the sender acknowledges them.

Layout of `directory`:

    n-<first seq>.seg   segments of ordinary records, oldest first
    p-<first seq>.seg   segments of protected records (e.g. audit), oldest first
    acked               the highest sequence number acknowledged (all lower ones are done too)

Each record is `seq (u64) | length (u32) | crc32 (u32) | payload`. One global sequence number
orders both queues, so readers get records in append order however they were split; keeping
protected records in their own files means the size cap can be enforced by deleting whole
ordinary segments, oldest first, without ever rewriting a file. A torn tail (a crash in the
middle of a write) fails its checksum and is cut off on open.

When an append would pass `max_bytes`, the oldest ordinary segments are dropped (and counted);
if that is not enough, the ordinary records of the new batch are dropped; protected records are
never dropped — if they cannot fit, `append` raises `SpoolFull` and writes nothing, so the
caller can refuse the batch and have the client retry.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sluice_collector.errors import SluiceReceiverError

_HEADER = struct.Struct("<QII")
HEADER_BYTES = _HEADER.size
_ACKED_FILE = "acked"


class SpoolFull(SluiceReceiverError):
    """Protected records did not fit even after every ordinary record was dropped."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    seq: int
    data: bytes
    protected: bool


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: `stored` new records kept, `dropped` records lost to the size cap
    (old ordinary records evicted plus new ordinary records that did not fit)."""

    stored: int
    dropped: int


class _Segment:
    __slots__ = ("count", "first_seq", "last_seq", "path", "size")

    def __init__(self, path: Path, first_seq: int) -> None:
        self.path = path
        self.first_seq = first_seq
        self.last_seq = first_seq - 1
        self.count = 0
        self.size = 0


class _Queue:
    """The segments of one kind, with a read cursor at the first unacknowledged record."""

    def __init__(self, prefix: str, protected: bool) -> None:
        self.prefix = prefix
        self.protected = protected
        self.segments: deque[_Segment] = deque()
        self.offset = 0  # byte offset of the cursor in segments[0]
        self.consumed = 0  # records of segments[0] before the cursor
        self.writer: int | None = None  # fd of the open tail segment
        # Where the last peek stopped (seq, segment first seq, end offset): a sender asking for
        # records after that seq resumes there instead of re-reading what it already sent.
        self.hint: tuple[int, int, int] | None = None

    def live(self) -> int:
        return sum(s.count for s in self.segments) - self.consumed

    def close_writer(self) -> None:
        if self.writer is not None:
            os.close(self.writer)
            self.writer = None


class DiskSpool:
    """A bounded, persistent, ordered queue of byte records; safe to share between threads."""

    def __init__(
        self, directory: Path, max_bytes: int, *, segment_bytes: int | None = None,
        fsync: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # Eviction works in whole segments; small ones keep the loss of one eviction small.
        self.segment_bytes = segment_bytes or min(max(max_bytes // 16, 4096), 4 * 1024 * 1024)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queues = (_Queue("n", False), _Queue("p", True))
        self._acked = 0
        self._next_seq = 1
        self._closed = False
        # Running totals since this process opened the spool.
        self.appended_total = 0
        self.dropped_total = 0
        self.acked_total = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    # -- opening ----------------------------------------------------------------------------
    def _recover(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._acked = int((self.directory / _ACKED_FILE).read_text().strip() or 0)
        highest = self._acked
        for queue in self._queues:
            paths = sorted(self.directory.glob(f"{queue.prefix}-*.seg"))
            for path in paths:
                try:
                    first = int(path.stem.split("-", 1)[1])
                except ValueError:
                    continue
                segment = _Segment(path, first)
                self._scan(segment)
                if segment.count == 0 or segment.last_seq <= self._acked:
                    path.unlink(missing_ok=True)
                    continue
                queue.segments.append(segment)
                highest = max(highest, segment.last_seq)
            if queue.segments:
                self._skip_acked(queue)
        self._next_seq = highest + 1

    def _scan(self, segment: _Segment) -> None:
        """Count the valid records of a segment; cut off anything after the first bad one."""
        good = 0
        with segment.path.open("rb") as f:
            data = f.read()
        offset = 0
        while offset + HEADER_BYTES <= len(data):
            seq, length, crc = _HEADER.unpack_from(data, offset)
            end = offset + HEADER_BYTES + length
            if end > len(data) or zlib.crc32(data[offset + HEADER_BYTES:end]) != crc:
                break
            segment.count += 1
            segment.last_seq = seq
            offset = end
            good = end
        if good != len(data):
            os.truncate(segment.path, good)
        segment.size = good

    def _skip_acked(self, queue: _Queue) -> None:
        head = queue.segments[0]
        for seq, _, end in _read_records(head.path, 0, headers_only=True):
            if seq > self._acked:
                break
            queue.offset = end
            queue.consumed += 1

    # -- writing ----------------------------------------------------------------------------
    def append(self, records: Sequence[bytes], protected: bool | Sequence[bool] = False) -> AppendResult:
        """Store `records` after everything already stored; see the module docstring for the cap."""
        flags = [protected] * len(records) if isinstance(protected, bool) else list(protected)
        if len(flags) != len(records):
            raise ValueError("protected must be a bool or one bool per record")
        if not records:
            return AppendResult(0, 0)
        with self._lock:
            if self._closed:
                raise SluiceReceiverError(f"spool {self.directory} is closed")
            new_protected = sum(HEADER_BYTES + len(r) for r, p in zip(records, flags, strict=True) if p)
            held_protected = sum(s.size for s in self._queues[1].segments)
            if held_protected + new_protected > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.directory} is full: {held_protected + new_protected} bytes of "
                    f"protected records would pass max_bytes={self.max_bytes}"
                )
            new_total = sum(HEADER_BYTES + len(r) for r in records)
            dropped = self._evict(new_total)
            keep = list(zip(records, flags, strict=True))
            if self._size() + new_total > self.max_bytes:
                # Still too big: the new ordinary records give way, the protected ones fit.
                dropped += sum(1 for _, p in keep if not p)
                keep = [(r, p) for r, p in keep if p]
            parts: dict[bool, list[bytes]] = {False: [], True: []}
            for data, is_protected in keep:
                seq = self._next_seq
                self._next_seq += 1
                parts[is_protected].append(_HEADER.pack(seq, len(data), zlib.crc32(data)) + data)
            for queue in self._queues:
                if parts[queue.protected]:
                    self._write(queue, parts[queue.protected])
            self.appended_total += len(keep)
            self.dropped_total += dropped
            if keep:
                self._ready.notify_all()
            return AppendResult(len(keep), dropped)

    def _write(self, queue: _Queue, chunks: list[bytes]) -> None:
        tail = queue.segments[-1] if queue.segments else None
        if tail is None or queue.writer is None or tail.size >= self.segment_bytes:
            queue.close_writer()
            first = _HEADER.unpack_from(chunks[0])[0]
            tail = _Segment(self.directory / f"{queue.prefix}-{first:020d}.seg", first)
            queue.segments.append(tail)
            queue.writer = os.open(tail.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        data = b"".join(chunks)
        view = memoryview(data)
        while view:
            written = os.write(queue.writer, view)
            view = view[written:]
        if self.fsync:
            os.fsync(queue.writer)
        tail.size += len(data)
        tail.count += len(chunks)
        tail.last_seq = _HEADER.unpack_from(chunks[-1])[0]

    def _size(self) -> int:
        return sum(s.size for q in self._queues for s in q.segments)

    def _evict(self, incoming: int) -> int:
        """Drop whole ordinary segments, oldest first, until `incoming` more bytes fit."""
        queue = self._queues[0]
        dropped = 0
        while queue.segments and self._size() + incoming > self.max_bytes:
            head = queue.segments.popleft()
            if not queue.segments:
                queue.close_writer()
            dropped += head.count - queue.consumed
            queue.offset = 0
            queue.consumed = 0
            head.path.unlink(missing_ok=True)
        return dropped

    # -- reading ----------------------------------------------------------------------------
    def peek(
        self, max_records: int = 512, max_bytes: int = 1024 * 1024, *, after_seq: int = 0
    ) -> list[SpoolRecord]:
        """The oldest unacknowledged records with `seq > after_seq`, in append order.

        Records stay until `ack`ed; a sender that has sent some but not yet acknowledged them
        passes the last sent seq as `after_seq`. At least one record is returned when any is
        stored, however large it is.
        """
        with self._lock:
            out: list[SpoolRecord] = []
            size = 0
            streams = [self._iter_queue(q, after_seq) for q in self._queues]
            for record, queue, segment_first, end in heapq.merge(*streams, key=lambda r: r[0].seq):
                if out and (len(out) >= max_records or size + len(record.data) > max_bytes):
                    break
                out.append(record)
                size += len(record.data)
                queue.hint = (record.seq, segment_first, end)
            return out

    def _iter_queue(
        self, queue: _Queue, after_seq: int
    ) -> Iterator[tuple[SpoolRecord, _Queue, int, int]]:
        segments = list(queue.segments)
        start_index, start_offset = 0, queue.offset
        # Resume where the previous peek stopped instead of re-reading sent records.
        if queue.hint is not None and self._acked < queue.hint[0] <= after_seq:
            for index, segment in enumerate(segments):
                if segment.first_seq == queue.hint[1]:
                    start_index = index
                    start_offset = queue.hint[2] if index else max(queue.hint[2], queue.offset)
                    break
        for index in range(start_index, len(segments)):
            segment = segments[index]
            offset = start_offset if index == start_index else 0
            for seq, data, end in _read_records(segment.path, offset):
                if seq > after_seq:
                    yield SpoolRecord(seq, data, queue.protected), queue, segment.first_seq, end

    def ack(self, through_seq: int) -> int:
        """Mark every record with `seq <= through_seq` delivered; returns how many were freed."""
        with self._lock:
            if through_seq <= self._acked:
                return 0
            freed = 0
            for queue in self._queues:
                while queue.segments:
                    head = queue.segments[0]
                    if head.last_seq <= through_seq:
                        freed += head.count - queue.consumed
                        queue.segments.popleft()
                        if not queue.segments:
                            queue.close_writer()
                        head.path.unlink(missing_ok=True)
                        queue.offset = 0
                        queue.consumed = 0
                        continue
                    for seq, _, end in _read_records(head.path, queue.offset, headers_only=True):
                        if seq > through_seq:
                            break
                        queue.offset = end
                        queue.consumed += 1
                        freed += 1
                    break
            self._acked = through_seq
            self._write_acked()
            self.acked_total += freed
            if not self._pending():
                self._ready.notify_all()
            return freed

    def _write_acked(self) -> None:
        path = self.directory / _ACKED_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(self._acked))
        os.replace(tmp, path)

    def _pending(self) -> int:
        return sum(q.live() for q in self._queues)

    # -- waiting and state ------------------------------------------------------------------
    def wait_for_records(self, timeout_s: float | None, *, after_seq: int = 0) -> bool:
        """Block until a record with `seq > after_seq` is stored (True), or the timeout passes
        or the spool closes (False)."""
        with self._ready:
            return self._ready.wait_for(
                lambda: self._closed or any(
                    q.segments and q.segments[-1].last_seq > after_seq for q in self._queues
                ),
                timeout_s,
            ) and not self._closed

    def wait_until_empty(self, timeout_s: float | None) -> bool:
        """Block until every record is acknowledged (True) or the timeout passes."""
        with self._ready:
            return self._ready.wait_for(lambda: not self._pending() or self._closed, timeout_s) \
                and not self._pending()

    @property
    def pending(self) -> int:
        """Records stored and not yet acknowledged."""
        with self._lock:
            return self._pending()

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in segments (acknowledged records count until their segment goes)."""
        with self._lock:
            return self._size()

    def close(self) -> None:
        """Close file handles; stored records stay on disk for the next open. Idempotent."""
        with self._lock:
            self._closed = True
            for queue in self._queues:
                queue.close_writer()
            self._ready.notify_all()


def _read_records(
    path: Path, offset: int, *, headers_only: bool = False
) -> Iterator[tuple[int, bytes, int]]:
    """(seq, payload, end offset) from `offset` to the end of a segment file."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        position = offset
        while True:
            header = f.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                return
            seq, length, _ = _HEADER.unpack(header)
            if headers_only:
                f.seek(length, os.SEEK_CUR)
                data = b""
            else:
                data = f.read(length)
                if len(data) < length:
                    return
            position += HEADER_BYTES + length
            yield seq, data, position


__all__ = ["HEADER_BYTES", "AppendResult", "DiskSpool", "SpoolFull", "SpoolRecord"]
