"""The batch flow after decoding — mask → validate → classify → derive → sinks — as a loop.

Stages are plain callables over a batch (`processors/`); sinks (`sinks/`) take the routed
batch, with the batches a stage derived from it (`Batch.derived`) in the same call. An Export
is acknowledged only after every sink has returned from `consume`, i.e. its
records are written and flushed to the OS or held in a sink's on-disk spool. Admission (how
many batches may run at once) is the ingest core's job, before decoding.

"Refused" means nothing kept twice. Sinks run in order — the files first (the record of truth),
then syslog and forward (spooled), then the index — and each one makes its own write all or
nothing. When a later sink fails, the batch is refused (retryable) although earlier sinks have
stored it; the client then retries the same bytes. So the pipeline remembers, for a batch it
refused after some sinks had taken it, which sinks those were, keyed by a digest of the request
as received (signal, tenant and body: what a retry repeats exactly). The retry skips
them and resumes with the sink that failed. A batch is thus stored at most once per sink
however often it is retried — and, once a retry gets through, exactly once.

The memory is per receiver process and bounded (`RESUME_MEMORY` batches, least recently
refused forgotten first); a digest is only computed while some refused batch is remembered or
when a sink fails, so the common path costs nothing. A retry that lands on another process (a
restart, another `--workers` worker on a new connection) is not recognised and is stored again
by the sinks that had it — the same bound as a lost acknowledgement.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import DiskFullError, SinkError
from sluice_collector.sinks.base import Sink
from sluice_collector.telemetry import ReceiverTelemetry

Stage = Callable[[Batch], Batch]
# The time each sink took and its failures are counted here, once, for every sink alike.
RESUME_MEMORY = 1024  # refused batches whose partial storage is remembered


def batch_key(batch: Batch) -> bytes:
    """What identifies a retry of `batch`: a digest of the request as it was received."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{batch.signal.value}\0{batch.tenant}\0".encode())
    h.update(batch.body)
    return h.digest()


class Pipeline:
    """Runs stages and sinks on the calling thread; many request threads call it at once."""

    def __init__(self, stages: Sequence[Stage], sinks: Sequence[Sink], telemetry: ReceiverTelemetry,
                 *, resume_memory: int = RESUME_MEMORY) -> None:
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.telemetry = telemetry
        self._resume_memory = resume_memory
        # batch key → indices (in self.sinks) of the sinks that already hold that batch
        self._stored: OrderedDict[bytes, frozenset[int]] = OrderedDict()
        self._lock = threading.Lock()

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
        key = b""
        done: frozenset[int] = frozenset()
        if self._stored:  # only while a refused batch awaits its retry
            key = batch_key(batch)
            with self._lock:
                done = self._stored.get(key, frozenset())
            if done:
                self.telemetry.resumed.labels(signal).inc()
        taken = set(done)
        for index, sink in enumerate(self.sinks):
            if index in taken:
                continue  # stored by an earlier attempt of this very request
            started = time.perf_counter()
            try:
                sink.consume(batch)
            except Exception as exc:
                if isinstance(exc, SinkError):
                    kind = "disk_full" if isinstance(exc, DiskFullError) else "unavailable"
                else:
                    kind = "error"  # a bug of ours; the ingest core answers it as retryable
                self.telemetry.sink_errors.labels(sink.name, kind).inc()
                if taken:
                    self._remember(key or batch_key(batch), frozenset(taken))
                raise
            taken.add(index)
            self.telemetry.write_seconds.labels(sink.name).observe(time.perf_counter() - started)
        if done:
            with self._lock:
                self._stored.pop(key, None)
        self._count_accepted(batch)
        return batch

    def _remember(self, key: bytes, taken: frozenset[int]) -> None:
        with self._lock:
            self._stored[key] = taken
            self._stored.move_to_end(key)
            while len(self._stored) > self._resume_memory:
                self._stored.popitem(last=False)

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
