"""`ForwardSink` and `ForwardConfig`: config errors word for word, and delivery against a real
in-process gRPC server (and a real HTTP server) that can be told to fail, throttle or reject.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import ConfigError
from sluice_collector.service.config import parse_config
from sluice_collector.sinks.forward.sink import ForwardConfig, ForwardSink
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import log_record, logs_request
from tests.rsyslog_server import free_port

FAST = {"backoff_initial_s": "50ms", "backoff_max_s": "200ms", "timeout_s": 2}
LOGS_PATH = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# (code, details, trailers) or ("partial", rejected) or None for plain success.
Answer = tuple[Any, ...] | None


class OtlpGrpcServer:
    """A real gRPC server speaking OTLP logs and traces; `answers` scripts its replies in order
    (plain success once the script runs out)."""

    def __init__(self, port: int = 0) -> None:
        self.logs: list[ExportLogsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.answers: list[Answer] = []
        self.attempts = 0
        self.lock = threading.Lock()
        # No SO_REUSEPORT: a second server on a port must not share it with a stale one.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.so_reuseport", 0)])
        handlers = {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._logs, ExportLogsServiceRequest.FromString,
                ExportLogsServiceResponse.SerializeToString),
        }
        trace_handlers = {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._traces, ExportTraceServiceRequest.FromString,
                ExportTraceServiceResponse.SerializeToString),
        }
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService",
                                                 handlers),
            grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService",
                                                 trace_handlers),
        ))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")

    def start(self) -> OtlpGrpcServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0).wait()

    def _answer(self, context: grpc.ServicerContext, signal: str) -> int:
        with self.lock:
            self.attempts += 1
            self.metadata.append({"signal": signal, **{k: str(v) for k, v in context.invocation_metadata()}})
            answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            return -1
        if answer[0] == "partial":
            return int(answer[1])
        code, details, trailers = answer
        if trailers:
            context.set_trailing_metadata(trailers)
        context.abort(code, details)
        return -1  # not reached

    def _logs(self, request: ExportLogsServiceRequest, context: grpc.ServicerContext) -> Any:
        rejected = self._answer(context, "logs")
        with self.lock:
            self.logs.append(request)
        response = ExportLogsServiceResponse()
        if rejected >= 0:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = "too old"
        return response

    def _traces(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> Any:
        self._answer(context, "traces")
        with self.lock:
            self.traces.append(request)
        return ExportTraceServiceResponse()

    def bodies(self) -> list[str]:
        with self.lock:
            return [r.body.string_value for req in self.logs for rl in req.resource_logs
                    for sl in rl.scope_logs for r in sl.log_records]


@pytest.fixture
def otlp_server() -> Iterator[OtlpGrpcServer]:
    server = OtlpGrpcServer().start()
    try:
        yield server
    finally:
        server.stop()


def forward_config(*targets: dict[str, Any]) -> ForwardConfig:
    return parse_config(yaml.safe_dump({"forward": {"targets": list(targets)}})).forward


def problems_of(forward: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump({"forward": forward}))
    return [str(p) for p in info.value.problems]


def logs_batch(*bodies: str) -> Batch:
    return Batch(Signal.LOGS, logs_request(*(log_record(b) for b in bodies)), time.time_ns())


def traces_batch(name: str) -> Batch:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = name
    span.trace_id = bytes(range(16))
    span.span_id = bytes(range(8))
    return Batch(Signal.TRACES, request, time.time_ns())


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def sample(telemetry: ReceiverTelemetry, name: str, **labels: str) -> float:
    return telemetry.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Callable[..., tuple[ForwardSink, ReceiverTelemetry]]]:
    made: list[ForwardSink] = []

    def make(*targets: dict[str, Any], spool: Path | None = None) -> tuple[ForwardSink, ReceiverTelemetry]:
        telemetry = ReceiverTelemetry()
        sink = ForwardSink(forward_config(*targets), telemetry, spool or tmp_path / "spool")
        sink.start()
        made.append(sink)
        return sink, telemetry

    yield make
    for sink in made:
        sink.shutdown()


# -- configuration ------------------------------------------------------------------------------
def test_config_errors_name_the_key_the_value_and_what_is_accepted(tmp_path: Path) -> None:
    found = problems_of({"targets": [
        {"endpoint": "ftp://jaeger:4317"},
        {"endpoint": "http://a:4317", "signals": ["logs", "spans"], "protocol": "thrift"},
        {"endpoint": "http://a:4317", "compression": "zstd", "timeout_s": "soon"},
        {"endpoint": "https://a:4317", "tls": {"ca_file": str(tmp_path / "nope.pem"),
                                               "insecure_skip_verify": True}},
        {"name": "bad name", "endpoint": "http://a:4317", "backoff_initial_s": 5, "backoff_max_s": 1},
        {"signals": ["logs"]},
        {"endpoint": "http://a:4317", "spool": {"max_bytes": "1KiB"}, "colour": "red"},
    ]})
    assert found == [
        "forward.targets[0].endpoint: got 'ftp://jaeger:4317'; expected http://HOST:PORT, "
        "https://HOST:PORT (TLS) or, for grpc, dns:///HOST:PORT or ipv4:HOST:PORT,HOST:PORT,... "
        "(client-side round-robin) (PORT from 1 to 65535)",
        "forward.targets[1].protocol: got 'thrift'; expected one of: grpc, http/protobuf",
        "forward.targets[1].signals: got 'spans'; expected any of: logs, traces, metrics",
        "forward.targets[2].compression: got 'zstd'; expected one of: gzip, none",
        "forward.targets[2].timeout_s: got 'soon'; expected a duration ≥ 0.01s, e.g. 5, \"500ms\", "
        "\"30s\", \"5m\", \"1h\" or \"7d\"",
        f"forward.targets[3].tls.ca_file: got '{tmp_path / 'nope.pem'}'; expected the path of a "
        "readable file",
        "forward.targets[3].tls.insecure_skip_verify: got true; gRPC in Python cannot skip "
        "verification: give tls.ca_file with the server's CA instead",
        "forward.targets[4].name: got 'bad name'; expected letters, digits, '.', '_' or '-' "
        "(at most 64), it names the spool directory and the metrics label",
        "forward.targets[4].backoff_max_s: got 1s; expected at least backoff_initial_s (5s)",
        "forward.targets[5].endpoint: is required: http://HOST:PORT, https://HOST:PORT (TLS) or, "
        "for grpc, dns:///HOST:PORT or ipv4:HOST:PORT,HOST:PORT,... (client-side round-robin), "
        "e.g. http://jaeger:4317",
        "forward.targets[6].spool.max_bytes: got '1KiB'; expected a size in bytes ≥ 65536, e.g. "
        "1048576, \"64MiB\", \"500MB\" or \"512KiB\"",
        "forward.targets[6].colour: unknown key; known keys here: backoff_initial_s, backoff_max_s, "
        "compression, endpoint, headers, name, protocol, signals, spool, timeout_s, tls",
    ]


def test_duplicate_target_names_and_tls_without_https_are_refused() -> None:
    found = problems_of({"targets": [
        {"endpoint": "http://a:4317", "tls": {"insecure_skip_verify": False}},
        {"name": "jaeger", "endpoint": "http://b:4317"},
        {"name": "jaeger", "endpoint": "http://c:4317"},
    ]})
    assert found == [
        "forward.targets[0].tls: is set but endpoint 'http://a:4317' is not https://; use https:// "
        "for TLS",
        "forward.targets[2].name: got 'jaeger'; another target already has this name",
    ]


def test_defaults_all_signals_grpc_gzip_and_index_names() -> None:
    config = forward_config({"endpoint": "http://jaeger:4317"},
                            {"endpoint": "http://loki:3100/otlp", "protocol": "http/protobuf",
                             "signals": "logs", "headers": {"X-Scope-OrgID": "tenant-1"}})
    first, second = config.targets
    assert (first.name, first.signals, first.protocol, first.compression) == (
        "0", (Signal.LOGS, Signal.TRACES, Signal.METRICS), "grpc", "gzip")
    assert first.grpc_target() == "jaeger:4317"
    assert second.http_url(Signal.LOGS) == ("loki", 3100, "/otlp/v1/logs")
    assert second.headers == (("x-scope-orgid", "tenant-1"),)


# -- delivery -----------------------------------------------------------------------------------
def test_each_signal_goes_only_to_the_targets_that_take_it_with_headers(
    otlp_server: OtlpGrpcServer, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    endpoint = f"http://127.0.0.1:{otlp_server.port}"
    sink, telemetry = make_sink(
        {"name": "logs-only", "endpoint": endpoint, "signals": ["logs"],
         "headers": {"Authorization": "Bearer t0k3n"}, **FAST},
        {"name": "traces-only", "endpoint": endpoint, "signals": ["traces"], "compression": "none",
         **FAST},
    )
    sink.consume(logs_batch("one", "two"))
    sink.consume(traces_batch("GET /"))
    assert sink.force_flush(5)
    assert otlp_server.bodies() == ["one", "two"]
    assert [s.name for r in otlp_server.traces for rs in r.resource_spans
            for ss in rs.scope_spans for s in ss.spans] == ["GET /"]
    auth = {m["signal"]: m.get("authorization") for m in otlp_server.metadata}
    assert auth == {"logs": "Bearer t0k3n", "traces": None}
    assert sample(telemetry, "sluice_forward_sent_records_total", target="logs-only", signal="logs") == 2
    assert sample(telemetry, "sluice_forward_sent_records_total", target="traces-only",
                  signal="traces") == 1
    assert sample(telemetry, "sluice_forward_sent_records_total", target="logs-only",
                  signal="traces") == 0
    assert sink.health()["targets"]["logs-only"]["state"] == "ok"


def test_retryable_status_is_retried_after_the_servers_retry_info(
    otlp_server: OtlpGrpcServer, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    """The server asks for 0.3 s; our own backoff would wait 20 s: delivery in ~0.3 s proves the
    RetryInfo trailer wins, and the retry is counted."""
    info = RetryInfo(retry_delay=Duration(seconds=0, nanos=300_000_000)).SerializeToString()
    otlp_server.answers = [
        (grpc.StatusCode.UNAVAILABLE, "busy", (("google.rpc.retryinfo-bin", info),)),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", (("google.rpc.retryinfo-bin", info),)),
    ]
    sink, telemetry = make_sink({"name": "t", "endpoint": f"http://127.0.0.1:{otlp_server.port}",
                                 "backoff_initial_s": 20, "backoff_max_s": 40})
    started = time.monotonic()
    sink.consume(logs_batch("after retries"))
    # The backoff alone would wait 20 s: arriving well before that means RetryInfo was used.
    wait_for(lambda: otlp_server.bodies() == ["after retries"], timeout_s=15)
    assert time.monotonic() - started > 0.55  # ... and waited as long as it asked
    assert otlp_server.attempts == 3
    assert sample(telemetry, "sluice_forward_retried_requests_total", target="t", signal="logs") == 2


def test_non_retryable_status_drops_and_counts_then_delivery_goes_on(
    otlp_server: OtlpGrpcServer, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    otlp_server.answers = [(grpc.StatusCode.INVALID_ARGUMENT, "bad data", ())]
    sink, telemetry = make_sink({"name": "t", "endpoint": f"http://127.0.0.1:{otlp_server.port}", **FAST})
    sink.consume(logs_batch("refused"))
    wait_for(lambda: otlp_server.attempts == 1)
    sink.consume(logs_batch("accepted"))
    assert sink.force_flush(5)
    assert otlp_server.bodies() == ["accepted"]
    assert sample(telemetry, "sluice_forward_dropped_requests_total", target="t", signal="logs",
                  reason="INVALID_ARGUMENT") == 1
    assert sink.health()["targets"]["t"]["last_error"] == "logs: INVALID_ARGUMENT: bad data"


def test_partial_success_rejections_are_counted_not_resent(
    otlp_server: OtlpGrpcServer, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    otlp_server.answers = [("partial", 1)]
    sink, telemetry = make_sink({"name": "t", "endpoint": f"http://127.0.0.1:{otlp_server.port}", **FAST})
    sink.consume(logs_batch("a", "b", "c"))
    assert sink.force_flush(5)
    assert otlp_server.attempts == 1
    assert sample(telemetry, "sluice_forward_rejected_records_total", target="t", signal="logs") == 1
    assert sample(telemetry, "sluice_forward_sent_records_total", target="t", signal="logs") == 2


def test_dead_target_never_blocks_consume_and_spool_survives_a_restart(
    tmp_path: Path, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    """Nothing listens: consume still returns at once, force_flush gives up, health says so;
    a new sink on the same spool delivers everything, in order, once the target is up."""
    port = free_port()
    target = {"name": "jaeger", "endpoint": f"http://127.0.0.1:{port}", **FAST}
    sink, _ = make_sink(target, spool=tmp_path / "spool")
    # A consume that waited for delivery would never return while nothing listens.
    consumer = threading.Thread(
        target=lambda: [sink.consume(logs_batch(f"r{i}")) for i in range(20)], daemon=True)
    consumer.start()
    consumer.join(60)
    assert not consumer.is_alive(), "consume waited for a target that is down"
    assert sink.force_flush(0.3) is False
    wait_for(lambda: sink.health()["targets"]["jaeger"]["state"] in ("retrying", "down"))
    health = sink.health()
    assert health["state"] == "degraded"
    assert health["targets"]["jaeger"]["spool_requests"] == 20
    assert health["targets"]["jaeger"]["spool_bytes"] > 0
    assert "UNAVAILABLE" in health["targets"]["jaeger"]["last_error"]
    sink.shutdown()
    sink.shutdown()  # idempotent

    server = OtlpGrpcServer(port).start()
    try:
        again, telemetry = make_sink(target, spool=tmp_path / "spool")
        assert again.force_flush(5), again.health()
        assert server.bodies() == [f"r{i}" for i in range(20)]
        assert sample(telemetry, "sluice_forward_sent_records_total", target="jaeger",
                      signal="logs") == 20
        assert again.health() == {"state": "ok", "targets": {"jaeger": {
            "state": "ok", "endpoint": target["endpoint"], "spool_bytes": 0, "spool_requests": 0,
            "dropped": 0, "last_error": ""}}}
    finally:
        server.stop()


def test_full_spool_drops_oldest_and_counts(
    tmp_path: Path, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    sink, telemetry = make_sink({"name": "t", "endpoint": "http://127.0.0.1:9", "signals": ["logs"],
                                 "spool": {"max_bytes": "64KiB"}, **FAST})
    for i in range(40):
        sink.consume(logs_batch(f"{i:04d}" + "x" * 4000))
    dropped = sample(telemetry, "sluice_forward_dropped_requests_total", target="t", signal="logs",
                     reason="spool_full")
    assert dropped > 0
    assert sink.health()["targets"]["t"]["spool_requests"] == 40 - dropped
    assert sample(telemetry, "sluice_forward_spool_bytes", target="t", signal="logs") <= 64 * 1024


class _HttpOtlp(BaseHTTPRequestHandler):
    """Answers 503 + Retry-After once, then 200 with a decodable OTLP response."""

    answers: list[int]
    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        status = self.answers.pop(0) if self.answers else 200
        payload = ExportLogsServiceResponse().SerializeToString() if status == 200 else b"busy"
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_protobuf_posts_gzip_to_v1_logs_and_honours_retry_after(
    make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    import gzip

    handler: type[_HttpOtlp] = type("H", (_HttpOtlp,), {"answers": [503], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink, telemetry = make_sink({"name": "h", "protocol": "http/protobuf", "signals": ["logs"],
                                     "endpoint": f"http://127.0.0.1:{server.server_port}/otlp",
                                     "backoff_initial_s": 20, "backoff_max_s": 40})
        started = time.monotonic()
        sink.consume(logs_batch("over http"))
        # The backoff alone would wait 20 s: arriving before that means Retry-After was used.
        wait_for(lambda: len(handler.received) == 2, timeout_s=15)
        assert time.monotonic() - started > 0.9  # ... and waited as long as it asked
        path, headers, body = handler.received[1]
        assert path == "/otlp/v1/logs"
        assert headers["Content-Type"] == "application/x-protobuf"
        assert headers["Content-Encoding"] == "gzip"
        request = ExportLogsServiceRequest.FromString(gzip.decompress(body))
        assert request.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "over http"
        assert sink.force_flush(2)
        assert sample(telemetry, "sluice_forward_retried_requests_total", target="h", signal="logs") == 1
    finally:
        server.shutdown()
        server.server_close()


def test_fields_the_receiver_does_not_know_are_not_forwarded(
    otlp_server: OtlpGrpcServer, make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    """A future OTLP field, or a crafted one, was never masked: it must not leave either."""
    secret = b"jane.roe@example.com"
    known = logs_request(log_record("kept")).SerializeToString()
    # Field 99 (length-delimited) on the request, and again inside the log record.
    unknown = bytes([0x9A, 0x06, len(secret)]) + secret
    request = logs_request(log_record("kept"))
    request.ParseFromString(known + unknown)
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.MergeFromString(unknown)
    assert request.SerializeToString().count(secret) == 2  # protobuf keeps unknown fields
    sink, _ = make_sink({"name": "t", "endpoint": f"http://127.0.0.1:{otlp_server.port}", **FAST})
    sink.consume(Batch(Signal.LOGS, request, time.time_ns()))
    assert sink.force_flush(5)
    assert otlp_server.bodies() == ["kept"]
    assert all(secret not in r.SerializeToString() for r in otlp_server.logs)


def test_user_and_password_in_the_endpoint_become_basic_auth(
    make_sink: Callable[..., tuple[ForwardSink, ReceiverTelemetry]],
) -> None:
    """As Grafana Cloud's OTLP gateway wants it: `https://<instance>:<token>@host/otlp`."""
    import base64

    handler: type[_HttpOtlp] = type("H", (_HttpOtlp,), {"answers": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink, telemetry = make_sink({
            "name": "cloud", "protocol": "http/protobuf", "signals": ["logs"],
            "endpoint": f"http://123456:glc%40to%2Fken@127.0.0.1:{server.server_port}/otlp", **FAST})
        sink.consume(logs_batch("with basic auth"))
        assert sink.force_flush(5)
        path, headers, _ = handler.received[0]
        assert path == "/otlp/v1/logs"
        lowered = {name.lower(): value for name, value in headers.items()}
        assert lowered["authorization"] == "Basic " + base64.b64encode(b"123456:glc@to/ken").decode()
        assert "glc" not in str(sink.health())  # the password is never shown
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_in_the_endpoint_and_an_authorization_header_are_refused() -> None:
    assert problems_of({"targets": [{"endpoint": "https://u:p@tempo:4318", "protocol": "http/protobuf",
                                     "headers": {"Authorization": "Bearer x"}}]}) == [
        "forward.targets[0].headers: has an Authorization header and the endpoint has "
        "user:password@ too; give the credentials once"]
