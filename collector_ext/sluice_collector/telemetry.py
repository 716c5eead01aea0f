"""The receiver's own metrics (Prometheus) — counters per batch, never a log line per record.

One `ReceiverTelemetry` per receiver owns a private registry, so several receivers (tests, or
`--workers`) never collide. Components add their own metrics on `telemetry.registry` with the
`sluice_` prefix and a `sink`/`target`/`detector` label as fits.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WRITE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ReceiverTelemetry:
    """Counters and gauges of the ingest path, shared by the server, pipeline and sinks."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sluice_requests", "Export requests by signal and outcome (grpc status name).",
            ["signal", "outcome"], registry=r,
        )
        self.received = Counter(
            "sluice_records_received", "Records decoded from Export requests.", ["signal"],
            registry=r,
        )
        self.rejected = Counter(
            "sluice_records_rejected",
            "Records refused: reported as partial_success or refused with the whole request.",
            ["signal", "reason"], registry=r,
        )
        self.dropped = Counter(
            "sluice_records_dropped", "Records removed on purpose (e.g. masking action drop).",
            ["signal", "reason"], registry=r,
        )
        self.accepted = Counter(
            "sluice_records_accepted",
            "Records acknowledged to the client (every sink took them), by signal and the "
            "category routing gave them (metrics: data points).",
            ["signal", "category"], registry=r,
        )
        self.written = Counter(
            "sluice_records_written", "Records a sink took durably.",
            ["signal", "category", "sink"], registry=r,
        )
        self.bytes_written = Counter(
            "sluice_bytes_written", "Bytes a sink wrote.", ["sink", "category"], registry=r,
        )
        self.write_seconds = Histogram(
            "sluice_sink_write_seconds", "Time a sink took to consume one batch.", ["sink"],
            buckets=WRITE_BUCKETS_S, registry=r,
        )
        self.sink_errors = Counter(
            "sluice_sink_errors", "Batches a sink could not take, by kind (disk_full, unavailable).",
            ["sink", "kind"], registry=r,
        )
        self.rotations = Counter(
            "sluice_file_rotations", "Rotated files.", ["category"], registry=r,
        )
        self.retention_removed = Counter(
            "sluice_retention_removed_files", "Rotated files removed by retention.",
            ["category", "reason"], registry=r,
        )
        self.inflight_batches = Gauge(
            "sluice_queue_batches", "Export requests being processed.", registry=r,
        )
        self.inflight_bytes = Gauge(
            "sluice_queue_bytes", "Encoded bytes of Export requests being processed.", registry=r,
        )
        self.torn_lines = Counter(
            "sluice_file_torn_lines", "Torn last lines (a crash inside a write) moved to <file>.torn.",
            ["category"], registry=r,
        )
        self.masked = Counter(
            "sluice_masked_values", "Values masked, per detector.", ["detector"], registry=r,
        )
