"""The one interface every destination implements.

A sink takes whole routed batches. `consume` returns only once the batch is durable from the
receiver's point of view — written and flushed to the OS (files), or sent or held in the sink's
own bounded on-disk spool (syslog, forward) — because the receiver acknowledges the Export as
soon as every sink has returned. A sink that cannot take a batch raises `SinkError`; the receiver
then answers the client with a retryable status and acknowledges nothing.

A sink for a remote destination never raises just because the destination is down: it spools.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sluice_collector.batch import Batch


@runtime_checkable
class Sink(Protocol):
    """A destination for routed batches. Lifecycle: start → consume* → force_flush → shutdown."""

    name: str

    def start(self) -> None:
        """Open files/sockets/spools. Called before the receiver starts listening."""

    def consume(self, batch: Batch) -> None:
        """Take every routed record of `batch` and of the batches derived from it
        (`batch.family()`: a trace batch may bring a LOGS batch of access records) this sink is
        responsible for, all or nothing where the sink can; raise SinkError."""

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Push out anything buffered; True when everything got out in time."""

    def shutdown(self) -> None:
        """Drain and release resources. Idempotent; called after the receiver stops listening."""

    def health(self) -> dict[str, Any]:
        """A JSON-able snapshot for /healthz: at least {"state": "ok"|"degraded"|"down"}."""
