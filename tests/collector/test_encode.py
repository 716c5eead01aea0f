"""Line encoders of the file sink: the JSON shape of logs, spans and metrics, and text lines."""

from __future__ import annotations

import json
import time
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from sluice_collector.batch import Batch, Signal
from sluice_collector.encode import encode_routes, json_lines, rfc3339, text_lines
from tests.otlp_builders import key_values, log_record, logs_request

T0 = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
TRACE = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SPAN = bytes.fromhex("a1a2a3a4a5a6a7a8")


def routed(signal: Signal, request: Any, category: str, received: int = T0 + 5) -> Batch:
    batch = Batch(signal, request, received)
    batch.routes = {category: batch.records()}
    return batch


def decode(lines: list[bytes]) -> list[dict[str, Any]]:
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    return [json.loads(line) for line in lines]


def test_rfc3339_is_utc_with_nanoseconds() -> None:
    assert rfc3339(T0) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000000Z"


def test_log_record_has_every_documented_field_with_its_type() -> None:
    rec = log_record(
        "user logged in", severity=17, trace_id=TRACE, span_id=SPAN, time_unix_nano=T0,
        attributes={"user.id": "u1", "count": 3, "ok": True, "ratio": 0.5, "tags": ["a", 1],
                    "nested": {"k": "v"}, "raw": b"\x00\x01", "empty": ""},
    )
    rec.observed_time_unix_nano = T0 + 1000
    rec.event_name = "AUTH_LOGIN"
    rec.flags = 1
    rec.dropped_attributes_count = 2
    request = logs_request(rec, service="checkout", scope="app.auth",
                           resource={"host.name": "h1"})
    request.resource_logs[0].scope_logs[0].scope.version = "1.2"
    request.resource_logs[0].scope_logs[0].scope.attributes.extend(key_values({"lib": "x"}))
    [line] = decode(json_lines(routed(Signal.LOGS, request, "security"), "security",
                               routed(Signal.LOGS, request, "security").routes["security"]))
    assert line == {
        "timestamp": "2023-11-14T22:13:20.123456789Z",
        "observed_timestamp": "2023-11-14T22:13:20.123457789Z",
        "severity": "ERROR",
        "severity_number": 17,
        "body": "user logged in",
        "category": "security",
        "service.name": "checkout",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "attributes": {"user.id": "u1", "count": 3, "ok": True, "ratio": 0.5, "tags": ["a", 1],
                       "nested": {"k": "v"}, "raw": "AAE=", "empty": ""},
        "resource": {"service.name": "checkout", "host.name": "h1"},
        "scope": {"name": "app.auth", "version": "1.2", "attributes": {"lib": "x"}},
        "event_name": "AUTH_LOGIN",
        "flags": 1,
        "dropped_attributes_count": 2,
    }


def test_log_without_times_ids_or_severity_uses_fallbacks_and_empty_ids() -> None:
    """No time → observed time → batch receive time; absent (or all-zero) ids are ""."""
    no_time = log_record({"structured": [1, 2]}, severity=0, time_unix_nano=0, trace_id=bytes(16))
    observed_only = log_record("b", severity=0, severity_text="notice", time_unix_nano=0)
    observed_only.observed_time_unix_nano = T0
    batch = routed(Signal.LOGS, logs_request(no_time, observed_only), "app", received=T0 + 7)
    first, second = decode(json_lines(batch, "app", batch.routes["app"]))
    assert first["timestamp"] == first["observed_timestamp"] == rfc3339(T0 + 7)
    assert first["body"] == {"structured": [1, 2]}
    assert first["severity"] == "UNSPECIFIED"
    assert first["trace_id"] == first["span_id"] == ""
    assert "event_name" not in first
    assert "dropped_attributes_count" not in first
    assert second["timestamp"] == second["observed_timestamp"] == rfc3339(T0)
    assert second["severity"] == "NOTICE"


def test_resource_and_scope_are_shared_across_records_of_a_batch() -> None:
    """Two resources in one batch: each record carries its own resource's attributes."""
    request = logs_request(log_record("a"), service="one")
    other = logs_request(log_record("b"), service="two")
    request.resource_logs.extend(other.resource_logs)
    batch = routed(Signal.LOGS, request, "app")
    lines = decode(json_lines(batch, "app", batch.routes["app"]))
    assert [(x["body"], x["service.name"], x["resource"]["service.name"]) for x in lines] == [
        ("a", "one", "one"), ("b", "two", "two")]


def test_missing_service_name_is_unknown_service() -> None:
    request = logs_request(log_record("a"))
    del request.resource_logs[0].resource.attributes[:]
    batch = routed(Signal.LOGS, request, "app")
    [line] = decode(json_lines(batch, "app", batch.routes["app"]))
    assert line["service.name"] == "unknown_service"
    assert line["resource"] == {}


def test_span_line_shape() -> None:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": "api"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "flask"
    span = ss.spans.add(
        trace_id=TRACE, span_id=SPAN, parent_span_id=bytes.fromhex("b1b2b3b4b5b6b7b8"),
        name="GET /users", kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 2_500_000,
    )
    span.attributes.extend(key_values({"http.route": "/users"}))
    span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    span.status.message = "boom"
    event = span.events.add(name="exception", time_unix_nano=T0 + 1)
    event.attributes.extend(key_values({"exception.type": "ValueError"}))
    link = span.links.add(trace_id=TRACE, span_id=bytes.fromhex("c1c2c3c4c5c6c7c8"))
    link.attributes.extend(key_values({"why": "retry"}))
    batch = routed(Signal.TRACES, request, "traces")
    [line] = decode(json_lines(batch, "traces", batch.routes["traces"]))
    assert line == {
        "timestamp": rfc3339(T0),
        "name": "GET /users",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "parent_span_id": "b1b2b3b4b5b6b7b8",
        "kind": "server",
        "start_time": rfc3339(T0),
        "end_time": rfc3339(T0 + 2_500_000),
        "duration_ms": 2.5,
        "status": {"code": "error", "message": "boom"},
        "category": "traces",
        "service.name": "api",
        "attributes": {"http.route": "/users"},
        "events": [{"name": "exception", "time": rfc3339(T0 + 1),
                    "attributes": {"exception.type": "ValueError"}}],
        "links": [{"trace_id": TRACE.hex(), "span_id": "c1c2c3c4c5c6c7c8",
                   "attributes": {"why": "retry"}}],
        "resource": {"service.name": "api"},
        "scope": {"name": "flask", "version": "", "attributes": {}},
    }


def _metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(key_values({"service.name": "api"}))
    sm = rm.scope_metrics.add()
    sm.scope.name = "meter"
    gauge = sm.metrics.add(name="queue.depth", description="items", unit="1")
    p = gauge.gauge.data_points.add(time_unix_nano=T0, as_int=7)
    p.attributes.extend(key_values({"queue": "a"}))
    counter = sm.metrics.add(name="requests", unit="{request}")
    counter.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    counter.sum.is_monotonic = True
    cp = counter.sum.data_points.add(start_time_unix_nano=T0 - 10**9, time_unix_nano=T0, as_double=1.5)
    ex = cp.exemplars.add(time_unix_nano=T0, as_double=1.0, trace_id=TRACE, span_id=SPAN)
    ex.filtered_attributes.extend(key_values({"user": "u"}))
    hist = sm.metrics.add(name="latency", unit="ms")
    hist.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    hist.histogram.data_points.add(time_unix_nano=T0, count=3, sum=12.0, min=1.0, max=8.0,
                                   bucket_counts=[1, 2, 0], explicit_bounds=[5.0, 10.0])
    exp = sm.metrics.add(name="size")
    ep = exp.exponential_histogram.data_points.add(time_unix_nano=T0, count=2, sum=3.0, scale=1,
                                                   zero_count=0)
    ep.positive.offset = 1
    ep.positive.bucket_counts.extend([1, 1])
    summary = sm.metrics.add(name="rt")
    sp = summary.summary.data_points.add(time_unix_nano=T0, count=4, sum=10.0)
    sp.quantile_values.add(quantile=0.5, value=2.0)
    return request


def test_metric_lines_one_per_metric_with_type_specific_fields() -> None:
    batch = routed(Signal.METRICS, _metrics_request(), "metrics")
    gauge, counter, hist, exp, summary = decode(json_lines(batch, "metrics", batch.routes["metrics"]))
    assert gauge == {
        "timestamp": rfc3339(T0), "name": "queue.depth", "description": "items", "unit": "1",
        "type": "gauge", "category": "metrics", "service.name": "api",
        "points": [{"attributes": {"queue": "a"}, "start_time": "", "time": rfc3339(T0),
                    "value": 7, "exemplars": []}],
        "resource": {"service.name": "api"},
        "scope": {"name": "meter", "version": "", "attributes": {}},
    }
    assert counter["type"] == "sum"
    assert counter["temporality"] == "cumulative"
    assert counter["monotonic"] is True
    assert counter["points"][0]["value"] == 1.5
    assert counter["points"][0]["start_time"] == rfc3339(T0 - 10**9)
    assert counter["points"][0]["exemplars"] == [{
        "time": rfc3339(T0), "value": 1.0, "trace_id": TRACE.hex(), "span_id": SPAN.hex(),
        "filtered_attributes": {"user": "u"}}]
    assert hist["type"] == "histogram"
    assert hist["temporality"] == "delta"
    point = hist["points"][0]
    assert (point["count"], point["sum"], point["min"], point["max"]) == (3, 12.0, 1.0, 8.0)
    assert point["bucket_counts"] == [1, 2, 0]
    assert point["explicit_bounds"] == [5.0, 10.0]
    assert exp["type"] == "exponential_histogram"
    assert exp["points"][0]["positive"] == {"offset": 1, "bucket_counts": [1, 1]}
    assert exp["points"][0]["scale"] == 1
    assert summary["type"] == "summary"
    assert summary["points"][0]["quantile_values"] == [{"quantile": 0.5, "value": 2.0}]


def test_text_line_has_timestamp_level_logger_function_message() -> None:
    rec = log_record("line one\nline two\r\nthree", severity=13, time_unix_nano=T0,
                     attributes={"code.function.name": "login"})
    batch = routed(Signal.LOGS, logs_request(rec, scope="app.auth"), "app")
    [line] = text_lines(batch, "app", batch.routes["app"])
    assert line == (
        b"2023-11-14T22:13:20.123456789Z | WARN | app.auth | login | "
        b"line one\\nline two\\r\\nthree\n"
    )


def test_text_logger_falls_back_to_attribute_and_function_to_code_function() -> None:
    rec = log_record("hi", time_unix_nano=T0,
                     attributes={"logger.name": "legacy", "code.function": "old_fn"})
    batch = routed(Signal.LOGS, logs_request(rec, scope=""), "app")
    [line] = text_lines(batch, "app", batch.routes["app"])
    assert line == b"2023-11-14T22:13:20.123456789Z | INFO | legacy | old_fn | hi\n"


def test_text_format_keeps_spans_as_json() -> None:
    batch = routed(Signal.METRICS, _metrics_request(), "metrics")
    lines = text_lines(batch, "metrics", batch.routes["metrics"])
    assert json.loads(lines[0])["name"] == "queue.depth"


def test_encode_routes_encodes_every_category_in_order() -> None:
    request = logs_request(log_record("a"), log_record("b"), log_record("c"))
    batch = Batch(Signal.LOGS, request, time.time_ns())
    refs = batch.records()
    batch.routes = {"app": [refs[0], refs[2]], "error": [refs[1]]}
    out = encode_routes(batch)
    assert {c: [json.loads(x)["body"] for x in lines] for c, lines in out.items()} == {
        "app": ["a", "c"], "error": ["b"]}


def test_text_format_cannot_be_forged_through_severity_text() -> None:
    """A client-chosen severity_text with a newline must not start a second, fake line."""
    rec = log_record("hello", severity=0, severity_text="info\n2099-01-01T00:00:00Z | ERROR | forged",
                     time_unix_nano=T0)
    batch = routed(Signal.LOGS, logs_request(rec), "app")
    [line] = text_lines(batch, "app", batch.routes["app"])
    assert line.count(b"\n") == 1
    assert b"INFO\\n2099" in line


def test_trace_url_template_adds_a_clickable_link_to_records_with_a_trace() -> None:
    from sluice_collector.encode import BatchCache

    batch = routed(Signal.LOGS, logs_request(log_record("in trace", trace_id=b"\x01" * 16, span_id=b"\x02" * 8),
                                             log_record("no trace")), "app")
    cache = BatchCache()
    cache.trace_url = "http://localhost:16686/trace/{trace_id}"
    lines = decode(json_lines(batch, "app", batch.routes["app"], cache=cache))
    assert lines[0]["trace_url"] == "http://localhost:16686/trace/" + "01" * 16
    assert "trace_url" not in lines[1]


def test_lines_hold_no_more_memory_than_their_bytes() -> None:
    """A batch's lines all live until they are written, so each must cost about its length:
    orjson's own result kept ≥ 4 KiB of buffer per line (16 KiB for these), which made one
    59 MiB request hold 853 MiB of lines."""
    import tracemalloc

    records = [log_record("x" * 300 + f" {i}", attributes={"seq": i}) for i in range(2000)]
    batch = Batch(Signal.LOGS, logs_request(*records), time.time_ns())
    batch.routes = {"app": batch.records()}
    tracemalloc.start()
    try:
        lines = json_lines(batch, "app", batch.routes["app"])
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(len(line) for line in lines)
    assert held < 1.5 * size + 64 * 1024, (held, size)
