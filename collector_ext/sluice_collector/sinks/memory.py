"""`InMemorySink`: the test twin of every sink; keeps what it was given, per category."""

from __future__ import annotations

import threading
from typing import Any

from google.protobuf.message import Message

from sluice_collector.batch import Batch, RecordRef


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
                for category, refs in member.routes.items():
                    bucket = self.by_category.setdefault(category, [])
                    bucket.extend(tuple(_copy(m) for m in ref) for ref in refs)  # type: ignore[misc]

    def force_flush(self, timeout_s: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        self.stopped = True

    def health(self) -> dict[str, Any]:
        return {"state": "ok", "records": sum(len(v) for v in self.by_category.values())}


def _copy(message: Message) -> Message:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
