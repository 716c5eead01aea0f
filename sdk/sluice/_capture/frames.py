"""The pipe from `sluice run` (the pump) to its capture process (the sink), and its frames.

Why a second process at all: passing the program's bytes through must not wait for Python's GIL.
When parsing, encoding and sending ran on threads of the same process, the pump thread waited up
to a switch interval (5 ms) for the GIL after every read, the pipe filled, and a program flooding
its output ran an order of magnitude slower under sluice than without it (bench/run_capture.py).
Now the `sluice run` process only reads, writes to the terminal and forwards each chunk as one
frame; the capture process does everything else at its own pace.

The pump never waits for the sink either: the pipe is non-blocking and as large as the kernel
allows, a frame that does not fit is dropped (its lines counted: one per newline in it), and the
next data frame of that stream carries `GAP` — plus `TORN` when it starts in the middle of a
line — so the sink discards what the gap tore instead of gluing two halves together.
A frame partly written stays pending and is completed before anything else is sent.

Frame: kind (1 byte), stream (1: stdout, 2: stderr, 0: none), flags (1 byte), big-endian
payload length (4 bytes), payload. Kinds: `C` config (JSON, first), `D` a chunk of output, `E` the
text of lines a Python child's SDK shipped itself (see `channel`), `X` close (JSON: the time
left to finish).
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import time
from collections.abc import Iterator

__all__ = ["CLOSE", "CONFIG", "DATA", "EXPECT", "GAP", "TORN", "FrameWriter", "read_frames"]

HEADER = struct.Struct(">cBBI")
CONFIG, DATA, EXPECT, CLOSE = b"C", b"D", b"E", b"X"
GAP = 1   # output of this stream was dropped just before this chunk
TORN = 2  # ...and not at a line boundary: this chunk starts inside a line whose start was dropped
STREAMS = {"stdout": 1, "stderr": 2}
NAMES = {1: "stdout", 2: "stderr"}


def pack(kind: bytes, stream: int, flags: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, stream, flags, len(payload)) + payload


def read_frames(buffer: bytearray) -> Iterator[tuple[bytes, int, int, bytes]]:
    """Take every whole frame off the front of `buffer`."""
    while len(buffer) >= HEADER.size:
        kind, stream, flags, size = HEADER.unpack_from(buffer)
        end = HEADER.size + size
        if len(buffer) < end:
            return
        payload = bytes(buffer[HEADER.size:end])
        del buffer[:end]
        yield kind, stream, flags, payload


class FrameWriter:
    """The pump's end: `send` never blocks; what cannot be sent is dropped and counted."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.pending = b""
        self.lines_dropped = 0
        self.bytes_dropped = 0
        self.closed = False
        self._gap = {1: 0, 2: 0}

    def flush_pending(self) -> None:
        if self.pending and not self.closed:
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            except OSError:  # the sink has gone: nothing more can be shipped
                self.closed = True
                return
            self.pending = self.pending[written:]

    def send(self, kind: bytes, stream: int, payload: bytes) -> bool:
        self.flush_pending()
        if not self.closed and not self.pending:
            flags = self._gap.get(stream, 0) if kind == DATA else 0
            frame = pack(kind, stream, flags, payload)
            try:
                written = os.write(self.fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:
                self.closed = True
                written = 0
            if written:
                self.pending = frame[written:]
                if kind == DATA:
                    self._gap[stream] = 0
                return True
        if kind == DATA:
            self._gap[stream] = GAP if payload.endswith(b"\n") else GAP | TORN
            self.lines_dropped += payload.count(b"\n")
            self.bytes_dropped += len(payload)
        return False

    def close(self, payload: bytes, deadline: float) -> None:
        """Finish the pending frame, send `X`, close the pipe: waits, but not past `deadline`."""
        if not self.closed:
            frame = pack(CLOSE, 0, 0, payload)
            data = self.pending + frame
            while data and time.monotonic() < deadline:
                try:
                    written = os.write(self.fd, data)
                except BlockingIOError:
                    select.select([], [self.fd], [], max(0.0, min(0.1, deadline - time.monotonic())))
                    continue
                except OSError:
                    break
                data = data[written:]
            self.pending = b""
            self.closed = True
        with contextlib.suppress(OSError):
            os.close(self.fd)
