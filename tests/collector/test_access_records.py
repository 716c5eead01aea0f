"""`AccessRecordDeriver` (processors/access.py): an access record for every HTTP server span,
through a real receiver over real gRPC, into real files and the real index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import ConfigError, SinkError
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.files.config import FilesConfig, RotationConfig
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.telemetry import ReceiverTelemetry
from sluice_collector.testing import InMemorySink, config_from, start_receiver
from tests.otlp_builders import log_record, logs_request, span, spans_request

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")

# What the official instrumentations send: the older HTTP conventions (the default of the Python
# instrumentations today) and the stable ones (OTEL_SEMCONV_STABILITY_OPT_IN=http).
OLD = {"http.method": "GET", "http.route": "/orders/<int:order_id>", "http.target": "/orders/7?x=1",
       "http.status_code": 200, "net.peer.ip": "203.0.113.9", "http.user_agent": "curl/8.5",
       "http.host": "shop.example:8080", "http.scheme": "http", "http.flavor": "1.1",
       "net.host.port": 8080}
STABLE = {"http.request.method": "POST", "http.route": "/orders", "url.path": "/orders",
          "url.scheme": "https", "http.response.status_code": 503, "client.address": "198.51.100.4",
          "user_agent.original": "python-httpx/0.28", "server.address": "shop.example",
          "server.port": 443, "network.protocol.version": "2", "error.type": "503"}


def send(receiver: Receiver, *requests: tuple[str, Any]) -> None:
    with grpc.insecure_channel(receiver.endpoint) as channel:
        for method, request in requests:
            channel.unary_unary(method)(request.SerializeToString(), timeout=10)


def access_of(sink: InMemorySink) -> list[tuple[Any, Any, Any]]:
    return sink.by_category.get("access", [])


def attrs(record: Any) -> dict[str, Any]:
    from sluice_collector.otlpvalues import attributes

    return attributes(record.attributes)


@pytest.fixture
def memory_receiver(request: pytest.FixtureRequest) -> Any:
    """A receiver with in-memory sinks; masking off (client IPs are partly masked by default),
    except for tests marked to keep it."""
    sink = InMemorySink()
    masking = request.node.get_closest_marker("masking") is not None
    receiver = start_receiver({"telemetry": {"listen": ""}, "masking": {"enabled": masking}}, sinks=[sink])
    yield receiver, sink
    receiver.stop(5)


def test_an_old_convention_server_span_becomes_an_access_record_with_stable_names(memory_receiver: Any) -> None:
    receiver, sink = memory_receiver
    send(receiver, (TRACES_EXPORT, spans_request(
        span("GET /orders/<int:order_id>", attributes=OLD, trace_id=TRACE, span_id=b"\x07" * 8,
             duration_ns=12_345_678), service="shop", scope="opentelemetry.instrumentation.flask")))
    [(rl, sl, rec)] = access_of(sink)
    assert (rec.trace_id, rec.span_id) == (TRACE, b"\x07" * 8)
    assert rec.body.string_value == '203.0.113.9 "GET /orders/7" 200 12.3ms'
    assert (rec.severity_number, rec.severity_text) == (9, "INFO")
    assert rec.time_unix_nano == 1_700_000_000_000_000_000 + 12_345_678  # when the request ended
    assert attrs(rec) == {
        "http.request.method": "GET", "http.route": "/orders/<int:order_id>", "url.path": "/orders/7",
        "url.query": "x=1", "url.scheme": "http", "http.response.status_code": 200,
        "client.address": "203.0.113.9", "user_agent.original": "curl/8.5",
        "server.address": "shop.example:8080", "server.port": 8080, "network.protocol.version": "1.1",
        "http.server.request.duration_ms": 12.346, "sluice.derived_from": "span",
    }
    assert attrs(rl.resource)["service.name"] == "shop"
    assert sl.scope.name == "opentelemetry.instrumentation.flask"
    assert len(sink.by_category["traces"]) == 1  # the span itself is stored as ever


def test_a_stable_convention_server_span_and_its_severity(memory_receiver: Any) -> None:
    receiver, sink = memory_receiver
    send(receiver, (TRACES_EXPORT, spans_request(
        span("POST /orders", attributes=STABLE, status_code=2),
        span("GET /missing", span_id=b"\x05" * 8,
             attributes={"http.request.method": "GET", "url.path": "/missing",
                         "http.response.status_code": 404}))))
    by_status = {attrs(rec)["http.response.status_code"]: rec for _rl, _sl, rec in access_of(sink)}
    error, missing = by_status[503], by_status[404]
    assert (error.severity_text, missing.severity_text) == ("ERROR", "WARN")
    assert error.body.string_value == '198.51.100.4 "POST /orders" 503 12.5ms'
    assert missing.body.string_value == '- "GET /missing" 404 12.5ms'
    a = attrs(error)
    assert {k: a[k] for k in STABLE} == STABLE


def test_only_server_spans_with_an_http_method_are_derived(memory_receiver: Any) -> None:
    receiver, sink = memory_receiver
    send(receiver, (TRACES_EXPORT, spans_request(
        span("client call", kind=3, attributes=OLD, span_id=b"\x01" * 8),  # CLIENT
        span("internal", kind=1, attributes=STABLE, span_id=b"\x02" * 8),  # INTERNAL
        span("grpc server", kind=2, attributes={"rpc.system": "grpc"}, span_id=b"\x03" * 8),
        span("GET /", attributes={"http.method": "GET"}, span_id=b"\x04" * 8))))
    assert [rec.span_id for _rl, _sl, rec in access_of(sink)] == [b"\x04" * 8]
    assert len(sink.by_category["traces"]) == 4


def test_no_second_record_for_a_span_that_has_its_own(memory_receiver: Any) -> None:
    """sluice's middleware marks its span (either order of arrival); another app's access
    record is recognised by its span id when it arrives first."""
    receiver, sink = memory_receiver
    own = log_record("app's own access line", trace_id=TRACE, span_id=b"\x0a" * 8,
                     attributes={"log.category": "access", "http.request.method": "GET"})
    send(receiver,
         (TRACES_EXPORT, spans_request(span(attributes={**STABLE, "sluice.access_record": True},
                                            span_id=b"\x0b" * 8))),
         (LOGS_EXPORT, logs_request(own)),
         (TRACES_EXPORT, spans_request(span(attributes=OLD, trace_id=TRACE, span_id=b"\x0a" * 8))))
    assert [rec.body.string_value for _rl, _sl, rec in access_of(sink)] == ["app's own access line"]
    assert receiver.telemetry.registry.get_sample_value("sluice_access_records_derived_skipped_total") == 2
    assert receiver.telemetry.registry.get_sample_value("sluice_access_records_derived_total") in (None, 0)


def test_it_can_be_turned_off_or_sent_to_another_category() -> None:
    for settings, expected in (({"enabled": False}, {}), ({"category": "web"}, {"web": 1})):
        sink = InMemorySink()
        receiver = start_receiver({"telemetry": {"listen": ""}, "access_from_spans": settings},
                                  sinks=[sink])
        try:
            send(receiver, (TRACES_EXPORT, spans_request(span(attributes=OLD))))
        finally:
            receiver.stop(5)
        assert {k: len(v) for k, v in sink.by_category.items() if k != "traces"} == expected


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("access_from_spans: {category: traces, enabeld: false}")
    text = str(info.value)
    assert "access_from_spans.category: got 'traces'" in text
    assert "access_from_spans.enabeld: unknown key; did you mean 'enabled'?" in text


@pytest.mark.masking
def test_derived_records_are_built_from_masked_spans(memory_receiver: Any) -> None:
    receiver, sink = memory_receiver
    send(receiver, (TRACES_EXPORT, spans_request(span(attributes={
        "http.method": "GET", "http.target": "/login?password=hunter2", "http.status_code": 302,
        "net.peer.ip": "203.0.113.9"}))))
    [(_rl, _sl, rec)] = access_of(sink)
    shown = rec.SerializeToString()
    assert b"hunter2" not in shown
    assert b"203.0.113.9" not in shown
    assert "REDACTED" in attrs(rec)["url.query"]


def test_files_and_index_store_the_span_and_its_access_record_together(tmp_path: Path) -> None:
    """On disk (and in the query index) as if the app had logged it; one write per file."""
    config = config_from({"files": {"directory": str(tmp_path)}, "telemetry": {"listen": ""},
                          "query": {"api_keys": {"ops": {"key": "k" * 24, "role": "admin"}}}})
    receiver = Receiver(config)
    receiver.start()
    try:
        send(receiver, (TRACES_EXPORT, spans_request(span(attributes=OLD, trace_id=TRACE), service="shop")))
    finally:
        receiver.stop(5)
    [line] = [json.loads(x) for x in (tmp_path / "access.log").read_text().splitlines()]
    [stored_span] = [json.loads(x) for x in (tmp_path / "traces.log").read_text().splitlines()]
    assert line["category"] == "access"
    assert line["service.name"] == "shop"
    assert (line["trace_id"], line["span_id"]) == (stored_span["trace_id"], stored_span["span_id"])
    assert line["attributes"]["http.route"] == "/orders/<int:order_id>"
    assert line["attributes"]["http.response.status_code"] == 200
    from sluice_collector.query.store import IndexStore

    rows = IndexStore.for_directory(tmp_path).rows()
    assert sorted((r.category, r.status) for r in rows) == [("access", "200"), ("traces", "unset")]


def test_a_failed_write_keeps_neither_the_spans_nor_their_access_records(tmp_path: Path) -> None:
    """All or nothing for the batch and what was derived from it: a retry stores each once."""
    def write(fd: int, data: Any) -> int:
        if b'"category":"access"' in bytes(data):
            raise OSError(28, "No space left on device")
        import os

        return os.write(fd, data)

    rotation = RotationConfig(max_bytes=10**9, interval="none", compress=False)
    files = RotatingFileSink(FilesConfig(directory=tmp_path, rotation=rotation), ReceiverTelemetry(),
                             write=write)
    config = config_from({"telemetry": {"listen": ""}})
    receiver = Receiver(config, sinks=[files])
    files.start(background=False)
    try:
        batch = Batch(Signal.TRACES, spans_request(span(attributes=OLD)), 1)
        with pytest.raises(SinkError):
            receiver.pipeline.process(batch)
        assert len(batch.derived) == 1
    finally:
        files.shutdown()
    assert not (tmp_path / "traces.log").exists() or (tmp_path / "traces.log").read_bytes() == b""
