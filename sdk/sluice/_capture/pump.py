"""The one thread between the child's output and the terminal: read, pass through, forward.

Never hurting the child is the point of its shape:

- it always reads: bytes go to the terminal first, exactly as read (no re-encoding, no newline
  translation: the ptys are raw on output), then the same chunk goes to the capture process as
  one frame, which never blocks (`frames.FrameWriter`: a full pipe means a dropped, counted chunk);
- the only thing it ever waits for is the terminal itself, which would have slowed the program
  just the same without sluice;
- it does no per-line work, and nothing else in its process competes for the GIL (the main
  thread sleeps in `sigtimedwait`): parsing happens in the capture process;
- when the terminal side is a closed pipe (`sluice run … | head -1`), it closes its end of the
  child's pipe, so the program gets EPIPE/SIGPIPE as it would have.

The private channel from a Python child (see `channel`) is drained right after every read of a
stream and its announcements are forwarded first, so they always reach the capture process
before the line they announce.
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
from dataclasses import dataclass

from sluice import _health
from sluice._capture.channel import KIND_LOGGED, KIND_NO_SDK, FrameReader
from sluice._capture.frames import DATA, EXPECT, STREAMS, FrameWriter

__all__ = ["OutputStream", "Pump", "widen_pipe"]

_READ_SIZE = 256 * 1024
_F_SETPIPE_SZ = 1031  # Linux


@dataclass(slots=True)
class OutputStream:
    """One captured stream: where it is read from and where its bytes are passed on to."""

    name: str                 # "stdout" or "stderr"
    read_fd: int              # pipe read end or pty master
    out_fd: int | None        # the terminal side (our fd 1 or 2), None to capture only
    is_pty: bool = False
    open: bool = True


def widen_pipe(fd: int, size: int = 1024 * 1024) -> None:
    """Ask for a bigger pipe buffer (a burst then never waits for a thread's turn); the kernel caps
    it at /proc/sys/fs/pipe-max-size (1 MiB by default) for unprivileged users."""
    for attempt in (size, 1024 * 1024):
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, attempt)
            return
        except OSError:
            continue


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
    """Run `start()`; call `child_exited()` when the child is gone, then `join`."""

    def __init__(
        self,
        streams: list[OutputStream],
        writer: FrameWriter,
        *,
        channel_fd: int | None = None,
        on_notice: Callable[[str], None] | None = None,
        quiet_after_exit_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.streams = streams
        self.writer = writer
        self.channel_fd = channel_fd
        self._announcements = FrameReader()
        self._on_notice = on_notice
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
        writer = self.writer
        watching_writer = False
        last_data = self._clock()
        while any(s.open for s in self.streams):
            now = self._clock()
            if self._exited_at is not None:
                assert self._deadline is not None
                if now >= self._deadline or now - max(last_data, self._exited_at) >= self.quiet_after_exit_s:
                    return
            if bool(writer.pending) != watching_writer:
                watching_writer = bool(writer.pending) and not writer.closed
                if watching_writer:
                    poller.register(writer.fd, select.POLLOUT)
                else:
                    poller.unregister(writer.fd)
            timeout_ms = 50 if self._exited_at is not None else None
            for fd, _event in poller.poll(timeout_ms):
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 64)
                elif fd == writer.fd:
                    writer.flush_pending()
                elif fd == self.channel_fd:
                    if not self._drain_channel():
                        poller.unregister(fd)
                else:
                    stream = by_fd[fd]
                    if self._read(stream):
                        last_data = self._clock()
                    else:
                        poller.unregister(fd)
                        self._close(stream)

    def _read(self, stream: OutputStream) -> bool:
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
        keep_reading = True
        if stream.out_fd is not None:
            try:
                _write_all(stream.out_fd, data)
            except BrokenPipeError:
                # Whoever reads our output is gone: let the child find out as it would have.
                stream.out_fd = None
                keep_reading = False
            except OSError:
                stream.out_fd = None  # the terminal went away: keep capturing
        try:
            if self.channel_fd is not None:
                self._drain_channel()
            self.writer.send(DATA, STREAMS[stream.name], data)
        except Exception as exc:  # capture trouble must never stop the pass-through
            _health.report_once("capture_forward",
                                "output capture stopped; output still reaches the terminal", exc)
            self.writer.closed = True
        return keep_reading

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
            for kind, payload in self._announcements.feed(data):
                if kind == KIND_LOGGED and payload and payload[0] in (1, 2):
                    self.writer.send(EXPECT, payload[0], payload[1:])
                elif kind == KIND_NO_SDK and self._on_notice is not None:
                    self._on_notice(payload.decode("utf-8", "replace"))

    def _close(self, stream: OutputStream) -> None:
        if stream.open:
            stream.open = False
            with contextlib.suppress(OSError):
                os.close(stream.read_fd)
