"""RecordValidator and the pipeline's retry memory, in process.

- A time at or after 2^63 ns cannot be stored: the record (span, data point) is rejected with a
  reason, the rest of the batch kept.
- A batch refused by a later sink after earlier ones stored it is resumed on its retry, never
  stored again by the earlier ones; the memory of such batches is bounded.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import SinkError
from sluice_collector.ingest.decode import decode_request
from sluice_collector.pipeline import Pipeline
from sluice_collector.processors.routing import CategoryRouter, RoutingConfig
from sluice_collector.processors.validate import MAX_TIME_NS, RecordValidator
from sluice_collector.telemetry import ReceiverTelemetry
from sluice_collector.testing import FailingSink, InMemorySink
from tests.otlp_builders import log_record, logs_request


def _batch(signal: Signal, data: bytes) -> Batch:
    return decode_request(signal, data, max_bytes=1 << 30)


def test_log_times_past_2_63_are_rejected_and_the_rest_kept() -> None:
    data = logs_request(
        log_record("ok", time_unix_nano=MAX_TIME_NS),
        log_record("late", time_unix_nano=MAX_TIME_NS + 1),
        log_record("bad ids", trace_id=b"\x01" * 15),
    ).SerializeToString()
    batch = RecordValidator()(_batch(Signal.LOGS, data))
    kept = [r.body.string_value for r in batch.request.resource_logs[0].scope_logs[0].log_records]  # type: ignore[union-attr]
    assert kept == ["ok"]
    assert batch.rejected == 2
    assert batch.rejected_reason == (
        "2 record(s) rejected: a timestamp at or after 2^63 ns (2262-04-11) cannot be stored (1); "
        "trace_id must be 16 bytes and span_id 8 bytes (or empty) (1)")


def test_span_start_end_and_event_times_are_checked() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for name, start, end, event in (("ok", 1, 2, 1), ("start", 2**64 - 1, 2, 1),
                                    ("end", 1, 2**63, 1), ("event", 1, 2, 2**63)):
        span = spans.add(name=name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
                         start_time_unix_nano=start, end_time_unix_nano=end)
        span.events.add(name="e", time_unix_nano=event)
    batch = RecordValidator()(_batch(Signal.TRACES, request.SerializeToString()))
    assert [s.name for s in batch.request.resource_spans[0].scope_spans[0].spans] == ["ok"]  # type: ignore[union-attr]
    assert batch.rejected == 3


def test_metric_points_past_2_63_are_removed_from_their_metric() -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    metric.gauge.data_points.add(time_unix_nano=5, as_int=1)
    metric.gauge.data_points.add(time_unix_nano=2**64 - 1, as_int=2)
    metric.gauge.data_points.add(time_unix_nano=5, start_time_unix_nano=2**63, as_int=3)
    batch = RecordValidator()(_batch(Signal.METRICS, request.SerializeToString()))
    points = batch.request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points  # type: ignore[union-attr]
    assert [p.as_int for p in points] == [1]
    assert batch.rejected == 2
    assert batch.rejected_reason.startswith("2 data point(s) rejected")


def _pipeline(*sinks: InMemorySink, memory: int = 1024) -> Pipeline:
    return Pipeline([RecordValidator(), CategoryRouter(RoutingConfig.default())], list(sinks),
                    ReceiverTelemetry(), resume_memory=memory)


def test_a_retried_batch_resumes_at_the_sink_that_failed() -> None:
    first, later = InMemorySink("first"), FailingSink(times=2)
    pipeline = _pipeline(first, later)
    data = logs_request(log_record("once")).SerializeToString()
    for _ in range(2):
        with pytest.raises(SinkError):
            pipeline.process(_batch(Signal.LOGS, data))
    pipeline.process(_batch(Signal.LOGS, data))
    assert len(first.by_category["app"]) == 1
    assert len(later.by_category["app"]) == 1
    # Done: the same bytes again are new data (the memory was cleared), stored again.
    pipeline.process(_batch(Signal.LOGS, data))
    assert len(first.by_category["app"]) == 2


def test_other_tenants_same_bytes_are_not_a_retry() -> None:
    first, later = InMemorySink("first"), FailingSink(times=1)
    pipeline = _pipeline(first, later)
    data = logs_request(log_record("same")).SerializeToString()
    with pytest.raises(SinkError):
        pipeline.process(decode_request(Signal.LOGS, data, max_bytes=1 << 30, tenant="acme"))
    pipeline.process(decode_request(Signal.LOGS, data, max_bytes=1 << 30, tenant="globex"))
    assert len(first.by_category["app"]) == 2


def test_the_memory_of_refused_batches_is_bounded() -> None:
    first, later = InMemorySink("first"), FailingSink(times=3)
    pipeline = _pipeline(first, later, memory=2)
    requests = [logs_request(log_record(f"r{i}")).SerializeToString() for i in range(3)]
    for data in requests:
        with pytest.raises(SinkError):
            pipeline.process(_batch(Signal.LOGS, data))
    assert len(pipeline._stored) == 2
    for data in requests:
        pipeline.process(_batch(Signal.LOGS, data))
    bodies = [ref[2].body.string_value for ref in first.by_category["app"]]
    # r0 was forgotten (oldest): its retry is stored again; r1 and r2 resume.
    assert sorted(bodies) == ["r0", "r0", "r1", "r2"]
