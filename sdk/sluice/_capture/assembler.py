"""In the capture process: chunks of output -> lines -> records, on one thread, at its own pace.

- Chunks are split into lines per stream. A line longer than `max_line_bytes` is cut into
  pieces of that size; a partial line (a prompt) becomes a line of its own once its stream has
  been quiet for `partial_flush_s`, so nothing waits forever for a newline.
- After a gap (chunks the pump had to drop, their lines counted there), the partial line before
  it and the torn line after it are dropped rather than glued into a line the program never
  wrote; the torn one is counted here (its newline arrived).
- Lines a Python child's own SDK shipped (announced with `expect`) are skipped, once each, in
  stream order; the rest go through `LineJoiner` (stack traces) and `RecordBuilder` to `submit`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sluice import _health
from sluice._capture.lines import has_level, strip_ansi
from sluice._capture.multiline import Group, LineJoiner
from sluice._capture.records import RecordBuilder
from sluice._shipper import Item

__all__ = ["LineAssembler"]

_EXPECT_LIMIT = 10_000


@dataclass(slots=True)
class _Stream:
    joiner: LineJoiner
    partial: bytearray = field(default_factory=bytearray)
    partial_since_s: float = 0.0
    torn: bool = False  # the next line's start was lost in a gap
    expected: collections.Counter[bytes] = field(default_factory=collections.Counter)


class LineAssembler:
    """`data`/`expect` as frames arrive, `tick` now and then, `finish` at the end."""

    def __init__(
        self,
        builder: RecordBuilder,
        submit: Callable[[Item], None],
        *,
        max_line_bytes: int = 64 * 1024,
        partial_flush_s: float = 0.5,
        idle_flush_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.builder = builder
        self.submit = submit
        self.max_line_bytes = max_line_bytes
        self.partial_flush_s = partial_flush_s
        self.idle_flush_s = idle_flush_s
        self._clock = clock
        self._offset = wall_clock() - clock()
        self._streams = {name: _Stream(LineJoiner(has_level)) for name in ("stdout", "stderr")}
        self._expected_order: collections.deque[tuple[str, bytes]] = collections.deque()
        self.lines_dropped = 0
        self.lines_skipped = 0
        self.records = 0

    # -- input -----------------------------------------------------------------------------------

    def data(self, stream: str, chunk: bytes, *, gap: bool = False, torn: bool = False,
             now_s: float | None = None) -> None:
        now = self._clock() if now_s is None else now_s
        st = self._streams[stream]
        if gap:
            st.partial.clear()  # its newline was in the dropped output, counted by the pump
            st.torn = torn
        if st.partial:
            chunk = bytes(st.partial) + chunk
            st.partial.clear()
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if st.torn:
            if lines:
                lines.pop(0)  # the end of a line whose start was dropped
                self._dropped(1)
                st.torn = False
            else:
                rest = b""  # still inside the torn line
        limit = self.max_line_bytes
        for line in lines:
            if len(line) > limit:
                for start in range(0, len(line), limit):
                    self._line(stream, st, line[start:start + limit], now)
            else:
                self._line(stream, st, line, now)
        while len(rest) > limit:
            self._line(stream, st, rest[:limit], now)
            rest = rest[limit:]
        if rest:
            st.partial += rest
            st.partial_since_s = now

    def expect(self, stream: str, data: bytes) -> None:
        counter = self._streams[stream].expected
        pieces = data.split(b"\n")
        if pieces and pieces[-1] == b"":
            pieces.pop()
        for piece in pieces:
            counter[piece] += 1
            self._expected_order.append((stream, piece))
        while len(self._expected_order) > _EXPECT_LIMIT:
            old_stream, old = self._expected_order.popleft()
            old_counter = self._streams[old_stream].expected
            if old_counter[old] > 1:
                old_counter[old] -= 1
            else:
                old_counter.pop(old, None)

    def tick(self, now_s: float | None = None) -> None:
        """Hand on partial lines and held records whose stream has been quiet long enough."""
        now = self._clock() if now_s is None else now_s
        for name, st in self._streams.items():
            if st.partial and now - st.partial_since_s >= self.partial_flush_s:
                line = bytes(st.partial)
                st.partial.clear()
                self._line(name, st, line, now)
            joiner = st.joiner
            if joiner.pending and now - joiner.last_fed_s >= self.idle_flush_s:
                self._emit(name, joiner.flush(), now)

    def next_tick_s(self, now_s: float | None = None) -> float | None:
        """Seconds until `tick` has something to do, or None when nothing is held."""
        now = self._clock() if now_s is None else now_s
        streams = self._streams.values()
        waits = [st.partial_since_s + self.partial_flush_s - now for st in streams if st.partial]
        waits += [st.joiner.last_fed_s + self.idle_flush_s - now
                  for st in streams if st.joiner.pending]
        return max(0.0, min(waits)) if waits else None

    def finish(self) -> None:
        """End of output: everything held becomes records."""
        now = self._clock()
        for name, st in self._streams.items():
            if st.partial and not st.torn:
                line = bytes(st.partial)
                st.partial.clear()
                self._line(name, st, line, now)
            self._emit(name, st.joiner.flush(), now)

    # -- work -------------------------------------------------------------------------------------

    def _dropped(self, n: int) -> None:
        self.lines_dropped += n
        _health.increment("capture.lines_dropped", n)

    def _line(self, name: str, st: _Stream, data: bytes, at: float) -> None:
        counter = st.expected
        if counter and counter.get(data):
            if counter[data] > 1:
                counter[data] -= 1
            else:
                del counter[data]
            self.lines_skipped += 1
            self._emit(name, st.joiner.flush(), at)
            return
        text = strip_ansi(data.decode("utf-8", "replace"))
        self._emit(name, st.joiner.feed(text, at), at)

    def _emit(self, stream: str, groups: list[Group], at: float) -> None:
        for group in groups:
            try:
                item = self.builder(stream, group, (group.started_s or at) + self._offset)
            except Exception as exc:
                _health.report_once("capture_record", "could not make a record of a captured line", exc)
                continue
            self.submit(item)
            self.records += 1
