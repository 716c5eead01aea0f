"""An app that uses the official OpenTelemetry Python OTLP exporters configured only by the standard
variables — `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` (grpc | http/protobuf),
`OTEL_EXPORTER_OTLP_COMPRESSION` — and sends the same logs, spans and metrics every time it
runs: fixed timestamps and ids, so what two receivers store from two runs can be compared line
by line. Run as `python tests/e2e/otlp_exporter_app.py`; exits non-zero if an export failed.

The records carry secrets and personal data (to be masked) and land in every built-in category.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

T0 = 1_764_000_000_000_000_000  # 2025-11-24T16:00:00Z; the receiver stores what it is given
SECRETS = ("hunter2", "alice@example.com", "4111 1111 1111 1111", "s3cr3t-b34r3r-t0k3n-value",
           "carol@example.net")


class CountingIds(IdGenerator):
    """The same trace and span ids on every run."""

    def __init__(self) -> None:
        self._next = 0

    def generate_trace_id(self) -> int:
        self._next += 1
        return 0x4BF92F3577B34DA6A3CE929D00000000 + self._next

    def generate_span_id(self) -> int:
        self._next += 1
        return 0x00F067AA0B000000 + self._next


def exporters() -> tuple[SpanExporter, LogRecordExporter, MetricExporter]:
    """The official exporters for the protocol the environment names; no arguments, as an app
    configured by OTEL_* variables builds them."""
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # type: ignore[assignment]
            OTLPLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter(), OTLPLogExporter(), OTLPMetricExporter()


FAILURES: list[str] = []


class Checked:
    """An exporter that notes every failed export (the SDK's processors only log them)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def export(self, batch: Any) -> Any:
        result = self.inner.export(batch)
        if result.name != "SUCCESS":
            FAILURES.append(f"{type(self.inner).__name__}: {result.name}")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> int:
    span_exporter, log_exporter, metric_exporter = exporters()
    resource = Resource.create({"service.name": "checkout", "service.instance.id": "checkout-1",
                                "deployment.environment": "prod"})
    tracer_provider = TracerProvider(resource=resource, id_generator=CountingIds())
    tracer_provider.add_span_processor(SimpleSpanProcessor(Checked(span_exporter)))  # type: ignore[arg-type]
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(Checked(log_exporter)))  # type: ignore[arg-type]
    tracer = tracer_provider.get_tracer("shop.checkout", "1.2.0")
    logger = logger_provider.get_logger("shop.checkout")

    request_span = tracer.start_span(
        "POST /checkout", kind=trace.SpanKind.SERVER, start_time=T0,
        attributes={"http.request.method": "POST", "url.path": "/checkout",
                    "http.request.header.authorization": "Bearer s3cr3t-b34r3r-t0k3n-value"},
    )
    context = trace.set_span_in_context(request_span)
    db_span = tracer.start_span("SELECT orders", context=context, start_time=T0 + 1_000,
                                attributes={"db.system.name": "postgresql", "retry": 2})
    db_span.add_event("rows", {"count": 3}, timestamp=T0 + 2_000)
    db_span.end(end_time=T0 + 5_000)

    def emit(offset: int, body: object, severity: SeverityNumber, text: str,
             attributes: dict[str, object]) -> None:
        logger.emit(timestamp=T0 + offset, observed_timestamp=T0 + offset, context=context,
                    severity_number=severity, severity_text=text, body=body,  # type: ignore[arg-type]
                    attributes=attributes)  # type: ignore[arg-type]

    emit(10, "order placed", SeverityNumber.INFO, "INFO",
         {"order.id": "A-1", "order.total": 12.5, "items": ["book", "pen"], "gift": False})
    emit(11, "POST /checkout 200", SeverityNumber.INFO, "INFO",
         {"http.request.method": "POST", "http.route": "/checkout", "http.response.status_code": 200})
    emit(12, "login failed for alice@example.com with password=hunter2", SeverityNumber.WARN, "WARN",
         {"log.category": "security", "source.ip": "203.0.113.7"})
    emit(13, "payment failed for card 4111 1111 1111 1111", SeverityNumber.ERROR, "ERROR",
         {"exception.type": "CardDeclined", "exception.message": "declined"})
    emit(14, "role changed", SeverityNumber.INFO, "INFO",
         {"log.category": "audit", "audit.actor": "u-1", "audit.action": "role.update"})
    emit(15, {"event": "profile", "contact": {"email": "carol@example.net", "plan": "pro"}},
         SeverityNumber.INFO, "INFO", {})
    request_span.end(end_time=T0 + 10_000)

    scope = InstrumentationScope("shop.checkout", "1.2.0")
    metrics = MetricsData(resource_metrics=[ResourceMetrics(resource=resource, schema_url="", scope_metrics=[
        ScopeMetrics(scope=scope, schema_url="", metrics=[
            Metric("orders_placed", "Orders placed.", "1", Sum(
                [NumberDataPoint({"shop": "eu"}, T0, T0 + 60_000_000_000, 3)],
                AggregationTemporality.CUMULATIVE, True)),
            Metric("queue_depth", "Jobs waiting.", "1", Gauge(
                [NumberDataPoint({"queue": "mail"}, T0, T0 + 60_000_000_000, 7.5)])),
            Metric("request_duration", "Server time.", "ms", Histogram(
                [HistogramDataPoint({"route": "/checkout"}, T0, T0 + 60_000_000_000, 4, 42.0,
                                    [1, 2, 1], [10.0, 100.0], 1.5, 120.0)],
                AggregationTemporality.DELTA)),
        ])])])
    Checked(metric_exporter).export(metrics)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    metric_exporter.shutdown()
    if FAILURES:
        print(f"exports failed: {FAILURES}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
