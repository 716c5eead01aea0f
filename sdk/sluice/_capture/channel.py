"""The private pipe from a Python child to `sluice run`: how capture and the in-process SDK coexist.

A Python program under `sluice run` runs the SDK (the bootstrap's `sluice.init()`), whose logging
bridge ships every `logging` record with its trace context, `extra=` fields and exception. The
same record usually also reaches the terminal through a `logging.StreamHandler` (basicConfig's,
a framework's), and so `sluice run` would capture and ship it a second time, poorer. To ship each
record once, the bridge's copy wins:

- in the child, `install()` wraps `logging.StreamHandler.emit`: when a handler writes a record the
  bridge ships to fd 1 or 2, the text is first announced on this pipe (`L` frame: stream fd and
  the exact bytes), then written as usual — the terminal gets the same bytes as without sluice;
- `sluice run` reads the pipe right after each read of the stream, so an announcement always
  arrives before the line it announces (the child wrote it first), and it passes the matching
  line through to the terminal without shipping it. Everything else the program writes — print(),
  uncaught tracebacks, warnings, C extensions, subprocesses — is captured as for any program.

Matching is by exact line content per stream (a multiset, bounded), so threads writing in any
order cannot confuse it; a line announced but never written ages out.

An interpreter that cannot import sluice (`sluice run -- /other/python app.py`) sends an `N`
frame from the bootstrap, and `sluice run` says once, on its own stderr, why that program is
captured but not instrumented.

Frames: one kind byte, a 4-byte big-endian length, the payload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["ENV_FD", "KIND_LOGGED", "KIND_NO_SDK", "FrameReader", "frame", "install"]

ENV_FD = "SLUICE_RUN_CHANNEL_FD"
KIND_LOGGED = b"L"
KIND_NO_SDK = b"N"
_HEADER = struct.Struct(">cI")
_MAX_FRAME = 64 * 1024 * 1024


def frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Parent side: bytes in as they arrive, whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self.broken:
            return
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buffer)
            if size > _MAX_FRAME or kind not in (KIND_LOGGED, KIND_NO_SDK):
                self.broken = True  # not our protocol: ignore the pipe from now on
                self._buffer.clear()
                return
            end = _HEADER.size + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size:end])
            del self._buffer[:end]
            yield kind, payload


# -- child side ----------------------------------------------------------------------------------

_channel_fd: int | None = None


def _write(data: bytes) -> bool:
    global _channel_fd  # noqa: PLW0603 - one pipe per process
    fd = _channel_fd
    if fd is None:
        return False
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError:  # sluice run has gone: stop announcing, never fail the program
        _channel_fd = None
        with contextlib.suppress(OSError):
            os.close(fd)
        return False
    return True


def _console_fd(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except Exception:
        return None
    return fd if fd in (1, 2) else None


def _bridge_ships(record: logging.LogRecord) -> bool:
    """Whether the sluice bridge ships `record` (see `sluice._logbridge.ships`)."""
    from sluice import _runtime
    from sluice._logbridge import ships

    handle = _runtime.current()
    if handle is None or not handle.settings.capture_logs:
        return False
    return ships(record)


class _Announcing:
    """Stands in for a handler's console stream during one emit: announce, then write."""

    def __init__(self, stream: Any, fd: int) -> None:
        self._stream = stream
        self._fd = fd

    def write(self, text: str) -> Any:
        try:
            data = text.encode(getattr(self._stream, "encoding", None) or "utf-8",
                               getattr(self._stream, "errors", None) or "strict")
        except Exception:
            data = b""
        if data:
            _write(frame(KIND_LOGGED, bytes([self._fd]) + data))
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install() -> bool:
    """In the child, after `sluice.init()`: take the pipe named by `$SLUICE_RUN_CHANNEL_FD` (and
    hide it from grandchildren) and start announcing console log lines. False when not under
    `sluice run`."""
    global _channel_fd  # noqa: PLW0603
    raw = os.environ.pop(ENV_FD, None)
    if raw is None or _channel_fd is not None:
        return False
    try:
        fd = int(raw)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return False
    _channel_fd = fd
    original = logging.StreamHandler.emit

    def emit(self: logging.StreamHandler[Any], record: logging.LogRecord) -> None:
        stream = self.stream
        fd = _console_fd(stream) if _channel_fd is not None else None
        try:
            announce = fd is not None and _bridge_ships(record)
        except Exception:
            announce = False
        if not announce:
            original(self, record)
            return
        assert fd is not None
        proxy = _Announcing(stream, fd)
        try:
            self.stream = proxy
        except AttributeError:  # a read-only stream (logging.lastResort's): write it unannounced
            original(self, record)
            return
        try:
            original(self, record)
        finally:
            if self.stream is proxy:
                self.stream = stream

    emit.__wrapped__ = original  # type: ignore[attr-defined]
    logging.StreamHandler.emit = emit  # type: ignore[method-assign,assignment]
    return True
