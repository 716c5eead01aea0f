"""Between the pump and the shipper: a bounded queue of lines and the thread that makes records.

The pump must never wait, so `lines()` only appends to a deque and drops (counting) what does
not fit in `max_bytes`; parsing, stack-trace joining and encoding happen here and in the
shipper's thread. Lines a Python child's own SDK already shipped (announced on the channel) are
skipped here, in stream order, before joining.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from sluice import _health
from sluice._capture.lines import has_level, strip_ansi
from sluice._capture.multiline import Group, LineJoiner
from sluice._capture.records import RecordBuilder
from sluice._shipper import Item

__all__ = ["CaptureWorker"]

_EXPECT_LIMIT = 10_000


class CaptureWorker:
    """`lines`/`expect` from the pump (never block); `start(submit)`, then `close(deadline)`."""

    def __init__(
        self,
        builder: RecordBuilder,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        idle_flush_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.builder = builder
        self.max_bytes = max_bytes
        self.idle_flush_s = idle_flush_s
        self._clock = clock
        self._wall = wall_clock
        self._offset = wall_clock() - clock()
        self._queue: collections.deque[tuple[str, str, bytes, float]] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._submit: Callable[[Item], None] | None = None
        self._joiners = {name: LineJoiner(has_level) for name in ("stdout", "stderr")}
        self._expected: dict[str, collections.Counter[bytes]] = {
            "stdout": collections.Counter(), "stderr": collections.Counter()}
        self._expected_order: collections.deque[tuple[str, bytes]] = collections.deque()
        self.lines_dropped = 0
        self.lines_skipped = 0
        self.records = 0
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="sluice-run-capture", daemon=True)

    # -- pump side (never blocks) --------------------------------------------------------------

    def lines(self, stream: str, lines: list[bytes], now_s: float) -> None:
        size = sum(len(line) for line in lines)
        with self._cond:
            if self._queued_bytes + size > self.max_bytes:
                kept: list[bytes] = []
                room = self.max_bytes - self._queued_bytes
                for line in lines:
                    if len(line) <= room:
                        kept.append(line)
                        room -= len(line)
                dropped = len(lines) - len(kept)
                self.lines_dropped += dropped
                _health.increment("capture.lines_dropped", dropped)
                lines = kept
                size = sum(len(line) for line in lines)
            for line in lines:
                self._queue.append(("line", stream, line, now_s))
            self._queued_bytes += size
            self._cond.notify()

    def expect(self, stream: str, data: bytes) -> None:
        with self._cond:
            self._queue.append(("expect", stream, data, 0.0))
            self._cond.notify()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, submit: Callable[[Item], None]) -> None:
        self._submit = submit
        self._thread.start()

    def close(self, deadline: float) -> None:
        """Make records of everything queued until `deadline` (monotonic), then of what the
        joiners hold; lines still queued after that are dropped and counted."""
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - self._clock()) + 0.5)
        with self._cond:
            # Still busy past the deadline: whatever it makes from now on is counted, not sent
            # (the shipper is being shut down).
            self._abandoned = self._thread.is_alive()
            if self._abandoned:
                left = sum(1 for item in self._queue if item[0] == "line")
                self.lines_dropped += left
                self._queue.clear()

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # the capture must never take sluice run down with it
            _health.report_once("capture", "output capture failed; output still reaches the terminal", exc)

    def _loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and not self._closing:
                    pending = any(j.pending for j in self._joiners.values())
                    if not cond.wait(self.idle_flush_s if pending else None):
                        break
                if self._closing and (not self._queue or self._clock() >= self._deadline):
                    left = sum(1 for item in self._queue if item[0] == "line")
                    if left:
                        self.lines_dropped += left
                        _health.increment("capture.lines_dropped", left)
                    self._queue.clear()
                    break
                batch: list[tuple[str, str, bytes, float]] = []
                while self._queue and len(batch) < 256:
                    item = self._queue.popleft()
                    if item[0] == "line":
                        self._queued_bytes -= len(item[2])
                    batch.append(item)
            for kind, stream, data, at in batch:
                if kind == "expect":
                    self._add_expected(stream, data)
                else:
                    self._line(stream, data, at)
            self._flush_idle()
        for stream, joiner in self._joiners.items():
            self._emit(stream, joiner.flush(), self._clock())

    def _add_expected(self, stream: str, data: bytes) -> None:
        counter = self._expected[stream]
        pieces = data.split(b"\n")
        if pieces and pieces[-1] == b"":
            pieces.pop()
        for piece in pieces:
            counter[piece] += 1
            self._expected_order.append((stream, piece))
        while len(self._expected_order) > _EXPECT_LIMIT:
            old_stream, old = self._expected_order.popleft()
            old_counter = self._expected[old_stream]
            if old_counter[old] > 1:
                old_counter[old] -= 1
            else:
                old_counter.pop(old, None)

    def _line(self, stream: str, data: bytes, at: float) -> None:
        joiner = self._joiners[stream]
        counter = self._expected[stream]
        if counter and counter.get(data):
            if counter[data] > 1:
                counter[data] -= 1
            else:
                del counter[data]
            self.lines_skipped += 1
            self._emit(stream, joiner.flush(), at)
            return
        text = strip_ansi(data.decode("utf-8", "replace"))
        self._emit(stream, joiner.feed(text, at), at)

    def _flush_idle(self) -> None:
        now = self._clock()
        for stream, joiner in self._joiners.items():
            if joiner.pending and now - joiner.last_fed_s >= self.idle_flush_s:
                self._emit(stream, joiner.flush(), joiner.last_fed_s)

    def _emit(self, stream: str, groups: list[Group], at: float) -> None:
        if not groups or self._submit is None:
            return
        if self._abandoned:
            self.lines_dropped += sum(len(g.lines) for g in groups)
            return
        for group in groups:
            try:
                item = self.builder(stream, group, (group.started_s or at) + self._offset)
            except Exception as exc:
                _health.report_once("capture_record", "could not make a record of a captured line", exc)
                continue
            self._submit(item)
            self.records += 1
