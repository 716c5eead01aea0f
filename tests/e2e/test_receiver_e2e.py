"""The receiver as a user runs it: `sluice receiver run --config F`, fed by the official
OpenTelemetry SDK exporters, stopped with SIGTERM, then read back from its files."""

from __future__ import annotations

import logging
import re
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.receiver_process import ReceiverProcess

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
REQUIRED_LOG_FIELDS = {"timestamp", "severity", "body", "category", "service.name", "trace_id",
                       "span_id", "attributes", "resource", "scope"}


def send_everything(endpoint: str) -> dict[str, str]:
    """Emit logs, a span and a metric through the official exporters; return ids to look for."""
    resource = Resource.create({"service.name": "e2e-shop"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
    )
    logger = logging.getLogger("e2e.shop")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)

    tracer = tracer_provider.get_tracer("e2e")
    with tracer.start_as_current_span("checkout") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        span_id = format(span.get_span_context().span_id, "016x")
        logger.info("order placed", extra={"order.id": "A-1"})
        logger.info("GET /orders/1", extra={"http.request.method": "GET", "http.route": "/orders/{id}"})
        logger.warning("suspicious login", extra={"log.category": "security"})
        try:
            raise ValueError("card declined")
        except ValueError:
            logger.exception("payment failed")
    logger.info("outside any span")

    exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter_provider.get_meter("e2e").create_counter("orders_placed", unit="1").add(3, {"shop": "eu"})
    metrics_data = reader.get_metrics_data()
    assert metrics_data is not None
    assert exporter.export(metrics_data).name == "SUCCESS"

    tracer_provider.shutdown()
    logger_provider.shutdown()
    logger.removeHandler(handler)
    return {"trace_id": trace_id, "span_id": span_id}


def test_logs_spans_and_metrics_land_in_their_category_files(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    try:
        ids = send_everything(receiver.endpoint)
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr
    finally:
        receiver.kill()

    app = {r["body"]: r for r in receiver.read("app")}
    access = receiver.read("access")
    security = receiver.read("security")
    error = receiver.read("error")
    assert set(app) == {"order placed", "outside any span"}
    assert [r["body"] for r in access] == ["GET /orders/1"]
    assert [r["body"] for r in security] == ["suspicious login"]
    assert [r["body"] for r in error] == ["payment failed"]

    placed = app["order placed"]
    assert set(placed) >= REQUIRED_LOG_FIELDS
    assert RFC3339_UTC.match(placed["timestamp"])
    assert placed["severity"] == "INFO"
    assert placed["category"] == "app"
    assert placed["service.name"] == "e2e-shop"
    assert placed["trace_id"] == ids["trace_id"]
    assert placed["span_id"] == ids["span_id"]
    assert placed["attributes"]["order.id"] == "A-1"
    assert placed["resource"]["service.name"] == "e2e-shop"
    assert placed["scope"]["name"] == "e2e.shop"
    assert app["outside any span"]["trace_id"] == ""
    assert app["outside any span"]["span_id"] == ""
    assert security[0]["severity"] == "WARN"
    assert error[0]["attributes"]["exception.type"] == "ValueError"

    spans = receiver.read("traces")
    assert [s["name"] for s in spans] == ["checkout"]
    assert spans[0]["trace_id"] == ids["trace_id"]
    metrics = receiver.read("metrics")
    assert [m["name"] for m in metrics] == ["orders_placed"]
    assert metrics[0]["points"][0]["value"] == 3


def test_garbage_is_refused_and_the_receiver_keeps_serving(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            with pytest.raises(grpc.RpcError) as info:
                export(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=10)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        send_everything(receiver.endpoint)
        metrics = urllib.request.urlopen(receiver.status_url + "/metrics", timeout=5).read().decode()
        assert 'sluice_requests_total{outcome="INVALID_ARGUMENT",signal="logs"} 1.0' in metrics
        assert 'sluice_records_received_total{signal="logs"} 5.0' in metrics
        assert receiver.stop(signal.SIGTERM) == 0
    finally:
        receiver.kill()
    assert len(receiver.read("app")) == 2


def test_sigterm_exits_zero_and_leaves_complete_lines(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    try:
        send_everything(receiver.endpoint)
        assert receiver.stop(signal.SIGTERM) == 0
    finally:
        receiver.kill()
    for path in receiver.logs_dir.glob("*.log"):
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in a partial line"
    assert "stopped" in receiver.stderr


def test_the_running_receiver_logs_a_periodic_activity_line(tmp_path: Path) -> None:
    """An operator watching `sluice receiver run` sees what flows, one INFO line per period,
    and the lines add up to what was sent; nothing else is logged per request."""
    from tests.otlp_builders import log_record, logs_request

    proc = ReceiverProcess(tmp_path, {"telemetry": {"listen": "", "summary_interval_s": "200ms"}}).start()
    try:
        with grpc.insecure_channel(proc.endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            for _ in range(3):
                export(logs_request(log_record("a"), log_record("b", severity=17)).SerializeToString(),
                       timeout=10)
        assert proc.stop() == 0
    finally:
        proc.kill()
    lines = [line for line in proc.stderr_lines if "activity in the last" in line]
    assert lines, proc.stderr
    assert all(" INFO sluice.receiver: activity in the last " in line for line in lines)
    # Quiet when nothing happened: the periods without records left no line.
    assert all(re.search(r"activity in the last \d+s: logs \d+ \(", line) for line in lines), lines
    totals = {"app": 0, "error": 0}
    for line in lines:
        for category in totals:
            found = re.search(rf"\b{category} (\d+)", line)
            totals[category] += int(found.group(1)) if found else 0
    assert totals == {"app": 3, "error": 3}
