"""The one thread between the child's output and the terminal: read, pass through, split lines.

Never hurting the child is the point of its shape:

- it always reads: bytes go to the terminal first, exactly as read (no re-encoding, no newline
  translation: the ptys are raw on output), then split into lines for the capture queue, which
  never blocks — when the queue is full, lines are dropped and counted (`LineSink.lines`);
- the only thing it ever waits for is the terminal itself, which would have slowed the program
  just the same without sluice;
- when the terminal side is a closed pipe (`sluice run … | head -1`), it closes its end of the
  child's pipe, so the program gets EPIPE/SIGPIPE as it would have;
- a line longer than `max_line_bytes` is cut into pieces of that size, and a partial line
  (a prompt) is handed on as a line of its own once the stream has been quiet for
  `partial_flush_s`, so nothing waits forever for a newline.

The private channel from a Python child (see `channel`) is drained right after every read of a
stream, so an announcement is always delivered before the line it announces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sluice._capture.channel import KIND_LOGGED, KIND_NO_SDK, FrameReader

__all__ = ["LineSink", "OutputStream", "Pump"]

_READ_SIZE = 256 * 1024
_F_SETPIPE_SZ = 1031  # Linux


class LineSink(Protocol):
    """Where complete lines go (the capture worker); every method returns at once."""

    def lines(self, stream: str, lines: list[bytes], now_s: float) -> None: ...

    def expect(self, stream: str, data: bytes) -> None: ...


@dataclass(slots=True)
class OutputStream:
    """One captured stream: where it is read from and where its bytes are passed on to."""

    name: str                 # "stdout" or "stderr"
    read_fd: int              # pipe read end or pty master
    out_fd: int | None        # the terminal side (our fd 1 or 2), None to capture only
    is_pty: bool = False
    partial: bytearray = field(default_factory=bytearray)
    partial_since_s: float = 0.0
    open: bool = True


def widen_pipe(fd: int, size: int = 1024 * 1024) -> None:
    """Ask for a bigger pipe buffer, so a burst never waits for this thread's next turn on the GIL."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # someone made the terminal side non-blocking: wait, as the child would
            select.select([], [fd], [], 1.0)
            continue
        except InterruptedError:
            continue
        view = view[written:]


class Pump:
    """Run `run()` on a thread; call `child_exited()` when the child is gone, then `join`."""

    def __init__(
        self,
        streams: list[OutputStream],
        sink: LineSink,
        *,
        channel_fd: int | None = None,
        on_notice: Callable[[bytes, bytes], None] | None = None,
        max_line_bytes: int = 64 * 1024,
        partial_flush_s: float = 0.5,
        quiet_after_exit_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.streams = streams
        self.sink = sink
        self.channel_fd = channel_fd
        self._frames = FrameReader()
        self._on_notice = on_notice
        self.max_line_bytes = max_line_bytes
        self.partial_flush_s = partial_flush_s
        self.quiet_after_exit_s = quiet_after_exit_s
        self._clock = clock
        self._exited_at: float | None = None
        self._deadline: float | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.bytes_read = 0
        self.thread = threading.Thread(target=self.run, name="sluice-run-pump", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def child_exited(self, deadline: float) -> None:
        """The child is gone: read on until every stream ends, is quiet for a moment, or `deadline`."""
        self._exited_at = self._clock()
        self._deadline = deadline
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def join(self, timeout_s: float) -> None:
        self.thread.join(max(0.0, timeout_s))

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        finally:
            for stream in self.streams:
                self._flush_partial(stream, self._clock())
                self._close(stream)
            for fd in (self.channel_fd, self._wake_r, self._wake_w):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _loop(self) -> None:
        poller = select.poll()
        by_fd: dict[int, OutputStream] = {}
        for stream in self.streams:
            by_fd[stream.read_fd] = stream
            poller.register(stream.read_fd, select.POLLIN)
        if self.channel_fd is not None:
            os.set_blocking(self.channel_fd, False)
            poller.register(self.channel_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        last_data = self._clock()
        while any(s.open for s in self.streams):
            now = self._clock()
            if self._exited_at is not None:
                assert self._deadline is not None
                if now >= self._deadline or now - max(last_data, self._exited_at) >= self.quiet_after_exit_s:
                    return
            timeout_s = self._timeout(now)
            events = poller.poll(None if timeout_s is None else max(1, int(timeout_s * 1000)))
            now = self._clock()
            for fd, _event in events:
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 64)
                    continue
                if fd == self.channel_fd:
                    if not self._drain_channel():
                        poller.unregister(fd)
                    continue
                stream = by_fd[fd]
                if not self._read(stream, now):
                    poller.unregister(fd)
                    self._close(stream)
                else:
                    last_data = now
            for stream in self.streams:
                if stream.partial and now - stream.partial_since_s >= self.partial_flush_s:
                    self._flush_partial(stream, now)

    def _timeout(self, now: float) -> float | None:
        waits = [s.partial_since_s + self.partial_flush_s - now for s in self.streams if s.partial]
        if self._exited_at is not None:
            waits.append(0.05)
        return max(0.0, min(waits)) if waits else None

    def _read(self, stream: OutputStream, now: float) -> bool:
        try:
            data = os.read(stream.read_fd, _READ_SIZE)
        except InterruptedError:
            return True
        except OSError as exc:
            if exc.errno == errno.EIO:  # pty master: the child side is closed
                return False
            raise
        if not data:
            return False
        self.bytes_read += len(data)
        if stream.out_fd is not None:
            try:
                _write_all(stream.out_fd, data)
            except BrokenPipeError:
                # Whoever reads our output is gone: let the child find out as it would have.
                stream.out_fd = None
                self._split(stream, data, now)
                return False
            except OSError:
                stream.out_fd = None  # the terminal went away: keep capturing
        if self.channel_fd is not None:
            self._drain_channel()
        self._split(stream, data, now)
        return True

    def _split(self, stream: OutputStream, data: bytes, now: float) -> None:
        if stream.partial:
            data = bytes(stream.partial) + data
            stream.partial.clear()
        lines = data.split(b"\n")
        rest = lines.pop()
        limit = self.max_line_bytes
        if any(len(line) > limit for line in lines):
            lines = [piece for line in lines for piece in _pieces(line, limit)]
        while len(rest) > limit:
            lines.append(rest[:limit])
            rest = rest[limit:]
        if rest:
            stream.partial += rest
            stream.partial_since_s = now
        if lines:
            self.sink.lines(stream.name, lines, now)

    def _flush_partial(self, stream: OutputStream, now: float) -> None:
        if stream.partial:
            line = bytes(stream.partial)
            stream.partial.clear()
            self.sink.lines(stream.name, [line], now)

    def _drain_channel(self) -> bool:
        assert self.channel_fd is not None
        while True:
            try:
                data = os.read(self.channel_fd, _READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            for kind, payload in self._frames.feed(data):
                if kind == KIND_LOGGED and payload:
                    name = "stdout" if payload[0] == 1 else "stderr"
                    self.sink.expect(name, payload[1:])
                elif kind == KIND_NO_SDK and self._on_notice is not None:
                    self._on_notice(kind, payload)

    def _close(self, stream: OutputStream) -> None:
        if stream.open:
            stream.open = False
            with contextlib.suppress(OSError):
                os.close(stream.read_fd)


def _pieces(line: bytes, limit: int) -> list[bytes]:
    return [line[i:i + limit] for i in range(0, len(line), limit)] if len(line) > limit else [line]
