"""Quickstart: an app that sends logs, a span and a metric to the sluice receiver over OTLP.

    python examples/quickstart.py            # receiver at $OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317

It uses the plain OpenTelemetry SDK, so it shows what any OTLP client gets from the receiver:
an access log (it has HTTP attributes), an error, a security and an audit record (they name their
category with `log.category`), an ordinary app log, a span and a counter.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def main() -> None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")
    resource = Resource.create({"service.name": "quickstart", "deployment.environment": "demo"})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(tracer_provider)

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True))
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))

    log = logging.getLogger("quickstart")
    tracer = trace.get_tracer("quickstart")
    orders = metrics.get_meter("quickstart").create_counter("orders", unit="1")

    with tracer.start_as_current_span("checkout"):
        log.info("GET /orders/42", extra={"http.request.method": "GET", "http.route": "/orders/{id}",
                                           "http.response.status_code": 200})
        log.info("order placed", extra={"order.id": "A-1042", "user.id": "u-17"})
        log.warning("login failed for user u-17 (password=hunter2)",
                    extra={"log.category": "security", "source.ip": "203.0.113.9"})
        log.info("order 42 price changed", extra={"log.category": "audit", "audit.actor": "u-17",
                                                  "audit.action": "update"})
        try:
            raise ValueError("card declined")
        except ValueError:
            log.exception("payment failed")
        orders.add(1, {"shop": "demo"})

    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()


if __name__ == "__main__":
    main()
