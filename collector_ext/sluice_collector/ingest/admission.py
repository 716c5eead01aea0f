"""Back-pressure: a bounded set of requests in flight, by count and by bytes.

Over either bound a request is refused at once with `Overloaded` (the front door answers
gRPC UNAVAILABLE with RetryInfo, HTTP 429 with Retry-After) instead of queueing: the receiver
never grows memory without bound, and a client that is told to come back keeps its data. The
first request is always admitted, whatever its size, so one request larger than
`queue.max_bytes` (but within `max_request_bytes`) still gets through an idle receiver.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sluice_collector import memory
from sluice_collector.configreader import Section
from sluice_collector.errors import Overloaded
from sluice_collector.telemetry import ReceiverTelemetry

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """`queue`: the in-flight bounds of the ingest core (shared by every front door)."""

    max_requests: int = 64
    max_bytes: int = 256 * MiB
    retry_after_s: float = 1.0
    # Admitted batches decoded, processed and stored at the same time in one process; the rest
    # wait their turn (admitted, holding no more than their bytes). See `IngestCore.export`.
    max_processing: int = 1

    @classmethod
    def from_section(cls, q: Section) -> QueueConfig:
        max_requests = q.get_int("max_requests", 64, minimum=1)
        return cls(
            max_requests=max_requests,
            max_bytes=q.get_size("max_bytes", 256 * MiB, minimum=1024),
            retry_after_s=q.get_duration("retry_after_s", 1.0),
            max_processing=q.get_int("max_processing", 1, minimum=1, maximum=max(1, max_requests)),
        )


class Slot:
    """One admitted request's place in the in-flight set; `release` gives it back (once)."""

    __slots__ = ("_admission", "nbytes")

    def __init__(self, admission: Admission, nbytes: int) -> None:
        self._admission: Admission | None = admission
        self.nbytes = nbytes

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release(self.nbytes)


class Admission:
    """The in-flight set. `admit` is a context manager held for the whole request; `reserve`
    takes a place that the caller hands on (e.g. from an event loop to a worker thread)."""

    def __init__(self, queue: QueueConfig, telemetry: ReceiverTelemetry) -> None:
        self.queue = queue
        self.telemetry = telemetry
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._requests = 0
        self._bytes = 0
        self._since_trim = 0  # request bytes since memory was last handed back (memory.py)
        self._closed = False

    @contextlib.contextmanager
    def admit(self, nbytes: int) -> Iterator[None]:
        """Hold a place for one request of `nbytes` bytes; raise `Overloaded` when full."""
        slot = self.reserve(nbytes)
        try:
            yield
        finally:
            slot.release()

    def reserve(self, nbytes: int) -> Slot:
        """Take a place for one request of `nbytes` bytes, at once or never: raise `Overloaded`
        when full. Never blocks, so an event loop may call it."""
        with self._lock:
            if self._closed:
                raise Overloaded("receiver is shutting down", self.queue.retry_after_s)
            if self._requests and (
                self._requests >= self.queue.max_requests
                or self._bytes + nbytes > self.queue.max_bytes
            ):
                raise Overloaded(
                    f"receiver is at capacity ({self._requests} requests, {self._bytes} bytes "
                    "in flight); retry later",
                    self.queue.retry_after_s,
                )
            self._requests += 1
            self._bytes += nbytes
            self._publish()
        return Slot(self, nbytes)

    def _release(self, nbytes: int) -> None:
        trim = False
        with self._lock:
            self._requests -= 1
            self._bytes -= nbytes
            self._since_trim += nbytes
            self._publish()
            if not self._requests:
                self._idle.notify_all()
                # Idle again after big requests: give their memory back to the OS.
                trim = self._since_trim >= memory.TRIM_AFTER_BYTES
                if trim:
                    self._since_trim = 0
        if trim:
            memory.trim_soon()

    def _publish(self) -> None:
        self.telemetry.inflight_batches.set(self._requests)
        self.telemetry.inflight_bytes.set(self._bytes)

    def close(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for the in-flight ones; True when all finished in time."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closed = True
            while self._requests:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True
