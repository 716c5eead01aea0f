"""The forwarding acceptance: a real receiver forwards what the official OpenTelemetry SDK
exporters send it — masked — to a second real receiver (standing in for Jaeger, which speaks the
same OTLP), loses nothing while that one is down, and speaks OTLP/HTTP to a plain HTTP server.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.collector.test_forward import OtlpGrpcServer
from tests.receiver_process import ReceiverProcess, endpoints
from tests.rsyslog_server import free_port

FAST = {"backoff_initial_s": "100ms", "backoff_max_s": "500ms", "timeout_s": 3}
SECRET = "hunter2xyz"


class App:
    """One app instrumented with the official SDK: spans and logs through OTLP/gRPC exporters."""

    def __init__(self, endpoint: str) -> None:
        resource = Resource.create({"service.name": "forward-shop"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True)))
        self.handler = LoggingHandler(logger_provider=self.logger_provider)
        self.logger = logging.getLogger(f"forward.shop.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        self.tracer = self.tracer_provider.get_tracer("forward-e2e")

    def span(self, name: str) -> None:
        with self.tracer.start_as_current_span(name):
            pass

    def log(self, message: str) -> None:
        self.logger.info(message)

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.logger.removeHandler(self.handler)


@pytest.fixture
def processes() -> Iterator[list[ReceiverProcess]]:
    started: list[ReceiverProcess] = []
    yield started
    for proc in started:
        proc.kill()


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:  # 503 while degraded still carries the JSON
        return json.load(exc)


def metric(status_url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{status_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_masked_stream_reaches_a_second_receiver_and_survives_its_outage(
    tmp_path: Path, processes: list[ReceiverProcess],
) -> None:
    port = free_port()
    downstream_settings = {"receivers": endpoints(f"127.0.0.1:{port}")}
    (tmp_path / "down").mkdir()
    downstream = ReceiverProcess(tmp_path / "down", downstream_settings).start()
    processes.append(downstream)
    probe = OtlpGrpcServer().start()  # decodes what it gets with the official proto classes
    (tmp_path / "up").mkdir()
    upstream = ReceiverProcess(tmp_path / "up", {"forward": {"targets": [
        {"name": "jaeger", "endpoint": f"http://127.0.0.1:{port}", "signals": ["traces", "logs"],
         **FAST},
        {"name": "probe", "endpoint": f"http://127.0.0.1:{probe.port}", "signals": ["logs"], **FAST},
    ]}}).start()
    processes.append(upstream)
    app = App(upstream.endpoint)
    try:
        app.span("checkout")
        app.log(f"login failed password={SECRET}")
        app.log("order placed")
        wait_for(lambda: len(downstream.read("app")) == 2 and len(downstream.read("traces")) == 1,
                 what="the first records downstream")
        bodies = sorted(r["body"] for r in downstream.read("app"))
        assert bodies[0].startswith("login failed password=[REDACTED:")
        assert bodies[1] == "order placed"
        assert downstream.read("app")[0]["resource"]["service.name"] == "forward-shop"
        assert [s["name"] for s in downstream.read("traces")] == ["checkout"]
        wait_for(lambda: len(probe.bodies()) == 2, what="the probe")
        assert any("[REDACTED:" in b for b in probe.bodies())
        assert all(SECRET not in p.read_text() for p in (tmp_path / "down" / "logs").glob("*.log"))
        assert all(SECRET not in b for b in probe.bodies())

        # The outage: downstream is stopped; the upstream keeps acknowledging and spooling.
        assert downstream.stop() == 0
        for i in range(10):
            app.log(f"during outage {i}")
        for i in range(3):
            app.span(f"outage span {i}")
        wait_for(lambda: get_json(f"{upstream.status_url}/healthz")["sinks"]["forward"]
                 ["targets"]["jaeger"]["state"] in ("retrying", "down"), what="jaeger reported down")
        health = get_json(f"{upstream.status_url}/healthz")["sinks"]["forward"]
        assert health["targets"]["jaeger"]["spool_bytes"] > 0
        assert health["targets"]["probe"]["state"] == "ok"  # the other target is not held up

        downstream = ReceiverProcess(tmp_path / "down", downstream_settings).start()
        processes.append(downstream)
        wait_for(lambda: len(downstream.read("app")) == 12 and len(downstream.read("traces")) == 4,
                 what="everything spooled during the outage")
        time.sleep(0.5)  # nothing more (no duplicates) arrives afterwards
        bodies = [r["body"] for r in downstream.read("app")]
        assert sorted(bodies[2:]) == sorted(f"during outage {i}" for i in range(10))
        assert len(downstream.read("traces")) == 4
        assert len(probe.bodies()) == 12
        assert metric(upstream.status_url, "sluice_forward_sent_records_total",
                      target="jaeger", signal="logs") == 12
        assert metric(upstream.status_url, "sluice_forward_sent_records_total",
                      target="jaeger", signal="traces") == 4
        assert metric(upstream.status_url, "sluice_forward_retried_requests_total",
                      target="jaeger", signal="logs") >= 1
    finally:
        app.close()
        probe.stop()
    assert upstream.stop() == 0


class _OtlpHttp(BaseHTTPRequestHandler):
    """A plain OTLP/HTTP endpoint: parses each body with the official proto classes."""

    received: list[tuple[str, ExportLogsServiceRequest]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, ExportLogsServiceRequest.FromString(body)))
        payload = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_protobuf_forwarding_to_a_plain_http_server(
    tmp_path: Path, processes: list[ReceiverProcess],
) -> None:
    handler: type[_OtlpHttp] = type("H", (_OtlpHttp,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = ReceiverProcess(tmp_path, {"forward": {"targets": [
        {"name": "loki", "protocol": "http/protobuf", "signals": ["logs"],
         "endpoint": f"http://127.0.0.1:{server.server_port}/otlp", **FAST},
    ]}}).start()
    processes.append(upstream)
    app = App(upstream.endpoint)
    try:
        app.log(f"token reset password={SECRET}")
        app.span("not forwarded: this target takes logs only")
        wait_for(lambda: len(handler.received) == 1, what="the HTTP post")
        path, request = handler.received[0]
        assert path == "/otlp/v1/logs"
        record = request.resource_logs[0].scope_logs[0].log_records[0]
        assert record.body.string_value.startswith("token reset password=[REDACTED:")
        assert SECRET not in str(request)
    finally:
        app.close()
        assert upstream.stop() == 0
        server.shutdown()
        server.server_close()
    assert len(handler.received) == 1


def test_client_side_round_robin_spreads_forwarded_batches_over_two_receivers(
    tmp_path: Path, processes: list[ReceiverProcess],
) -> None:
    """Scale-out without a load balancer: one gRPC target naming two receivers (`ipv4:` list,
    as `dns:///` would resolve a name to several addresses) gets batches spread over both."""
    downstreams = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        proc = ReceiverProcess(tmp_path / name, {"receivers": endpoints(f"127.0.0.1:{free_port()}")}).start()
        processes.append(proc)
        downstreams.append(proc)
    targets = ",".join(d.endpoint for d in downstreams)
    (tmp_path / "up").mkdir()
    upstream = ReceiverProcess(tmp_path / "up", {"forward": {"targets": [
        {"name": "pool", "endpoint": f"ipv4:{targets}", "signals": ["logs"], **FAST},
    ]}}).start()
    processes.append(upstream)
    app = App(upstream.endpoint)
    try:
        sent = 0
        for round_ in range(8):  # separate rounds, so the forwarder makes separate Exports
            for i in range(3):
                app.log(f"round {round_} record {i}")
                sent += 1
            wait_for(lambda expected=sent: sum(len(d.read("app")) for d in downstreams) == expected,
                     what=f"round {round_} downstream")
    finally:
        app.close()
    counts = [len(d.read("app")) for d in downstreams]
    assert sum(counts) == 24
    assert all(c > 0 for c in counts), f"one receiver got everything: {counts}"
    bodies = [r["body"] for d in downstreams for r in d.read("app")]
    assert len(set(bodies)) == 24
