"""Build real OTLP protobuf requests for tests, without an SDK in between."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(key_values(value))
        return out
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def log_record(body: Any = "hello", *, severity: int = 9, attributes: dict[str, Any] | None = None,
               trace_id: bytes = b"", span_id: bytes = b"", time_unix_nano: int = 1_700_000_000_000_000_000,
               severity_text: str = "") -> LogRecord:
    rec = LogRecord(
        time_unix_nano=time_unix_nano, severity_number=severity, severity_text=severity_text,  # type: ignore[arg-type]
        body=any_value(body), trace_id=trace_id, span_id=span_id,
    )
    rec.attributes.extend(key_values(attributes or {}))
    return rec


def logs_request(*records: LogRecord, service: str = "svc", scope: str = "test.scope",
                 resource: dict[str, Any] | None = None) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(key_values({"service.name": service, **(resource or {})}))
    sl = rl.scope_logs.add()
    sl.scope.name = scope
    sl.log_records.extend(records)
    return request


def span(name: str = "GET /", *, kind: int = 2, attributes: dict[str, Any] | None = None,
         trace_id: bytes = b"\x11" * 16, span_id: bytes = b"\x22" * 8,
         start_unix_nano: int = 1_700_000_000_000_000_000, duration_ns: int = 12_500_000,
         status_code: int = 0) -> Span:
    """A span (kind 2 = SERVER) with the given attributes."""
    out = Span(name=name, kind=kind, trace_id=trace_id, span_id=span_id,  # type: ignore[arg-type]
               start_time_unix_nano=start_unix_nano, end_time_unix_nano=start_unix_nano + duration_ns)
    out.status.code = status_code  # type: ignore[assignment]
    out.attributes.extend(key_values(attributes or {}))
    return out


def spans_request(*spans: Span, service: str = "svc", scope: str = "test.scope",
                  resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": service, **(resource or {})}))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    ss.spans.extend(spans)
    return request
