"""The batch flow after decoding — mask → validate → classify → derive → sinks — as a loop.

Stages are plain callables over a batch (`processors/`); sinks (`sinks/`) take the routed
batch, with the batches a stage derived from it (`Batch.derived`) in the same call. An Export
is acknowledged only after every sink has returned from `consume`, i.e. its
records are written and flushed to the OS or held in a sink's on-disk spool. Admission (how
many batches may run at once) is the ingest core's job, before decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import DiskFullError, SinkError
from sluice_collector.sinks.base import Sink
from sluice_collector.telemetry import ReceiverTelemetry

Stage = Callable[[Batch], Batch]
# The time each sink took and its failures are counted here, once, for every sink alike.


class Pipeline:
    """Runs stages and sinks on the calling thread; many request threads call it at once."""

    def __init__(self, stages: Sequence[Stage], sinks: Sequence[Sink], telemetry: ReceiverTelemetry) -> None:
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.telemetry = telemetry

    def process(self, batch: Batch) -> Batch:
        """Run every stage, then hand the batch to every sink; raise SinkError to refuse it."""
        signal = batch.signal.value
        self.telemetry.received.labels(signal).inc(batch.record_count())
        for stage in self.stages:
            batch = stage(batch)
        if batch.rejected:
            self.telemetry.rejected.labels(signal, "invalid").inc(batch.rejected)
        if batch.dropped:
            self.telemetry.dropped.labels(signal, "masking").inc(batch.dropped)
        if not batch.routes and not batch.derived:
            return batch
        for sink in self.sinks:
            started = time.perf_counter()
            try:
                sink.consume(batch)
            except SinkError as exc:
                kind = "disk_full" if isinstance(exc, DiskFullError) else "unavailable"
                self.telemetry.sink_errors.labels(sink.name, kind).inc()
                raise
            self.telemetry.write_seconds.labels(sink.name).observe(time.perf_counter() - started)
        self._count_accepted(batch)
        return batch

    def _count_accepted(self, batch: Batch) -> None:
        """Every sink took the batch (and what was derived from it): it will be acknowledged.
        Counted by the routed category."""
        accepted = self.telemetry.accepted
        for member in batch.family():
            signal = member.signal.value
            if member.signal is Signal.METRICS:  # records are data points, routes hold metrics
                for category in member.routes:
                    accepted.labels(signal, category).inc(member.record_count())
                continue
            for category, refs in member.routes.items():
                if refs:
                    accepted.labels(signal, category).inc(len(refs))
