"""`InMemorySink`: the test twin of every sink; keeps what it was given, per category.

Its variants stand in for destinations that misbehave, without mocks: `FailingSink` refuses
batches (a destination that is down), `BlockingSink` holds them until released (one that hangs).
"""

from __future__ import annotations

import threading
from typing import Any

from google.protobuf.message import Message

from sluice_collector.batch import Batch, RecordRef
from sluice_collector.errors import SinkError


class InMemorySink:
    """Records every routed record (as copies, so later in-place changes do not leak in)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._lock = threading.Lock()
        self.batches: list[Batch] = []
        self.by_category: dict[str, list[RecordRef]] = {}
        self.started = False
        self.stopped = False

    def start(self) -> None:
        self.started = True

    def consume(self, batch: Batch) -> None:
        with self._lock:
            for member in batch.family():
                self.batches.append(member)
                # A ref's resource and scope messages hold every record under them: copied once
                # per batch and shared by its refs, not once per record (that was quadratic: a
                # 1,060-record 64 MiB request took 24 GB).
                copies: dict[int, Message] = {}
                for category, refs in member.routes.items():
                    bucket = self.by_category.setdefault(category, [])
                    bucket.extend(tuple(_copy_once(m, copies) for m in ref)  # type: ignore[misc]
                                  for ref in refs)

    def force_flush(self, timeout_s: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        self.stopped = True

    def health(self) -> dict[str, Any]:
        return {"state": "ok", "records": sum(len(v) for v in self.by_category.values())}


def _copy_once(message: Message, copies: dict[int, Message]) -> Message:
    """A copy of `message`, the same one each time within one batch (`copies`)."""
    clone = copies.get(id(message))
    if clone is None:
        clone = copies[id(message)] = type(message)()
        clone.CopyFrom(message)
    return clone


class FailingSink(InMemorySink):
    """A destination that is down: refuses the first `times` batches (every batch when `times`
    is None) with `SinkError`, as a sink that cannot take data does, then keeps what it is
    given like `InMemorySink`. Put it after the file sink to see what a refused-but-partly-
    stored batch does (`Receiver(extra_sinks=...)`, `testing.start_receiver(extra_sinks=...)`).
    """

    def __init__(self, name: str = "failing", *, times: int | None = None,
                 retry_after_s: float = 1.0) -> None:
        super().__init__(name)
        self.times = times
        self.retry_after_s = retry_after_s
        self.refused = 0

    def refuse_next(self, n: int) -> None:
        """Refuse the next `n` batches (after those it was already going to refuse)."""
        with self._lock:
            self.times = max(self.times or 0, self.refused) + n

    def consume(self, batch: Batch) -> None:
        with self._lock:
            failing = self.times is None or self.refused < self.times
            if failing:
                self.refused += 1
        if failing:
            raise SinkError(f"{self.name}: refusing a batch on purpose", self.retry_after_s)
        super().consume(batch)


class BlockingSink(InMemorySink):
    """A destination that hangs: `consume` waits until `release()` is called, so a test can hold
    requests in flight for as long as it needs, deterministically. `wait_for_waiting(n)` returns
    once `n` batches are held."""

    def __init__(self, name: str = "blocking") -> None:
        super().__init__(name)
        self._released = threading.Event()
        self._changed = threading.Condition(self._lock)
        self.waiting = 0

    def consume(self, batch: Batch) -> None:
        with self._changed:
            self.waiting += 1
            self._changed.notify_all()
        try:
            self._released.wait()
        finally:
            with self._changed:
                self.waiting -= 1
        super().consume(batch)

    def wait_for_waiting(self, n: int, timeout_s: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.waiting >= n, timeout_s)

    def release(self) -> None:
        self._released.set()

    def shutdown(self) -> None:
        self._released.set()  # never hold up a receiver's stop
        super().shutdown()
