"""The OTLP/HTTP front door with real HTTP requests: encodings, every status code, the hostile-input
set of the gRPC port, partial success, auth, overload and sink failure, CORS, TLS, shutdown."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice_collector.errors import ConfigError, DecodeError, RequestTooLarge
from sluice_collector.receivers.otlp_http import inflate
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.memory import BlockingSink, FailingSink
from sluice_collector.testing import InMemorySink, start_receiver
from tests.http_client import JSON, PROTOBUF, request
from tests.otlp_builders import log_record, logs_request
from tests.tlsutil import make_tls_files

TOKEN = "acme-token-0123456789abcdef"


@pytest.fixture
def memory() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def receiver(memory: InMemorySink) -> Iterator[Receiver]:
    r = start_receiver({"max_request_bytes": "1MiB", "masking": {"enabled": False}}, sinks=[memory])
    yield r
    r.stop(5)


def good_request(body: str = "ok") -> bytes:
    return logs_request(log_record(body)).SerializeToString()


def bodies(memory: InMemorySink, category: str = "app") -> list[Any]:
    return [ref[2].body.string_value for ref in memory.by_category.get(category, [])]


def json_logs(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-shop"}}]},
        "scopeLogs": [{"scope": {"name": "browser"}, "logRecords": records}],
    }]}).encode()


# -- accepted requests ------------------------------------------------------------------------------

def test_protobuf_export_is_stored_and_answered_with_an_empty_protobuf_response(
    receiver: Receiver, memory: InMemorySink
) -> None:
    reply = request(receiver.http_endpoint, body=good_request("over http"))
    assert reply.status == 200
    assert reply.headers["content-type"] == PROTOBUF
    assert not ExportLogsServiceResponse.FromString(reply.body).HasField("partial_success")
    assert bodies(memory) == ["over http"]


def test_json_export_with_hex_ids_string_int64_and_either_field_spelling_is_stored(
    receiver: Receiver, memory: InMemorySink
) -> None:
    body = json_logs([
        {"timeUnixNano": "1700000000000000001", "severityNumber": 13, "severityText": "WARN",
         "body": {"stringValue": "camel"}, "traceId": "0102030405060708090a0b0c0d0e0f10",
         "spanId": "1112131415161718",
         "attributes": [{"key": "retries", "value": {"intValue": "9007199254740993"}},
                        {"key": "ok", "value": {"boolValue": True}}]},
        {"time_unix_nano": 1700000000000000002, "severity_number": 9,
         "body": {"string_value": "snake"}, "unknownFutureField": {"x": 1}},
    ])
    reply = request(receiver.http_endpoint, body=body, content_type=JSON)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == JSON
    assert reply.json() == {}
    stored = {ref[2].body.string_value: ref[2] for ref in memory.by_category["app"]}
    assert set(stored) == {"camel", "snake"}
    camel = stored["camel"]
    assert camel.trace_id.hex() == "0102030405060708090a0b0c0d0e0f10"
    assert camel.span_id.hex() == "1112131415161718"
    assert camel.attributes[0].value.int_value == 9007199254740993
    assert stored["snake"].time_unix_nano == 1700000000000000002


@pytest.mark.parametrize(("coding", "compress"), [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("GZIP", gzip.compress),
])
def test_compressed_bodies_are_accepted(
    receiver: Receiver, memory: InMemorySink, coding: str, compress: Any
) -> None:
    reply = request(receiver.http_endpoint, body=compress(good_request("zipped " * 50)),
                    headers={"Content-Encoding": coding})
    assert reply.status == 200, reply.body
    assert bodies(memory)[0].startswith("zipped")


def test_spans_and_metrics_have_their_own_paths(receiver: Receiver, memory: InMemorySink) -> None:
    spans = ExportTraceServiceRequest()
    span = spans.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "op", b"\x01" * 16, b"\x02" * 8
    assert request(receiver.http_endpoint, "/v1/traces", spans.SerializeToString()).status == 200
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "orders"
    metric.gauge.data_points.add().as_int = 3
    assert request(receiver.http_endpoint, "/v1/metrics", metrics.SerializeToString()).status == 200
    assert [r[2].name for r in memory.by_category["traces"]] == ["op"]
    assert [r[2].name for r in memory.by_category["metrics"]] == ["orders"]


def test_keep_alive_connection_carries_many_exports(receiver: Receiver, memory: InMemorySink) -> None:
    import http.client

    host, _, port = receiver.http_endpoint.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for n in range(5):
            conn.request("POST", "/v1/logs", good_request(f"n{n}"), {"Content-Type": PROTOBUF})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert response.getheader("connection") != "close"
    finally:
        conn.close()
    assert bodies(memory) == [f"n{n}" for n in range(5)]


# -- bad input: 400, 413, 415 — never 500 ----------------------------------------------------------

def test_garbage_gets_400_with_a_status_body_and_the_receiver_keeps_serving(
    receiver: Receiver, memory: InMemorySink
) -> None:
    reply = request(receiver.http_endpoint, body=b"\xff\xfe garbage \x00\x01")
    assert reply.status == 400
    status = reply.rpc_status()
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "not a valid OTLP logs Export request" in status.message
    assert request(receiver.http_endpoint, body=good_request()).status == 200
    assert bodies(memory) == ["ok"]


def test_garbage_json_gets_400_with_a_json_status(receiver: Receiver) -> None:
    reply = request(receiver.http_endpoint, body=b'{"resourceLogs": [', content_type=JSON)
    assert reply.status == 400
    assert reply.headers["content-type"] == JSON
    assert reply.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert "not a valid OTLP/JSON logs Export request" in reply.json()["message"]


def test_json_that_is_not_an_object_gets_400(receiver: Receiver) -> None:
    assert request(receiver.http_endpoint, body=b"[1, 2]", content_type=JSON).status == 400


def test_invalid_utf8_in_a_protobuf_string_gets_400(receiver: Receiver) -> None:
    data = good_request("MARKER").replace(b"MARKER", b"MA\xff\xfeER")
    reply = request(receiver.http_endpoint, body=data)
    assert reply.status == 400
    assert reply.rpc_status().code == code_pb2.INVALID_ARGUMENT


def test_invalid_utf8_in_json_gets_400(receiver: Receiver) -> None:
    body = json_logs([{"body": {"stringValue": "MARKER"}}]).replace(b"MARKER", b"MA\xff\xfeER")
    reply = request(receiver.http_endpoint, body=body, content_type=JSON)
    assert reply.status == 400
    assert reply.json()["code"] == code_pb2.INVALID_ARGUMENT


def test_deeply_nested_json_values_get_400(receiver: Receiver, memory: InMemorySink) -> None:
    depth = 300  # written out by hand: json.dumps itself refuses to nest this deep
    value = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth + '{"stringValue": "leaf"}' \
        + "}]}}" * depth
    body = json_logs([{"body": {"stringValue": "PLACEHOLDER"}}]).replace(
        b'{"stringValue": "PLACEHOLDER"}', value.encode())
    reply = request(receiver.http_endpoint, body=body, content_type=JSON)
    assert reply.status == 400
    assert reply.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert "depth" in reply.json()["message"] or "nested" in reply.json()["message"]
    assert request(receiver.http_endpoint, body=good_request()).status == 200


def test_deeply_nested_protobuf_values_get_400(receiver: Receiver) -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    inner = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(200):
        kv = b"\x0a\x01k" + b"\x12" + _varint(len(inner)) + inner
        kvlist = b"\x0a" + _varint(len(kv)) + kv
        inner = b"\x32" + _varint(len(kvlist)) + kvlist
    record = b"\x2a" + _varint(len(inner)) + inner
    scope_logs = b"\x12" + _varint(len(record)) + record
    resource_logs = b"\x12" + _varint(len(scope_logs)) + scope_logs
    reply = request(receiver.http_endpoint, body=b"\x0a" + _varint(len(resource_logs)) + resource_logs)
    assert reply.status == 400


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize("number", [b"1" * 400, b"1e400", b"-99999999999999999999999"])
def test_huge_json_numbers_get_400(receiver: Receiver, number: bytes) -> None:
    body = b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": ' + number + b"}]}]}]}"
    reply = request(receiver.http_endpoint, body=body, content_type=JSON)
    assert reply.status == 400, reply.body
    assert reply.json()["code"] == code_pb2.INVALID_ARGUMENT


def test_ids_of_the_wrong_length_in_json_are_refused_as_partial_success(
    receiver: Receiver, memory: InMemorySink
) -> None:
    body = json_logs([
        {"body": {"stringValue": "good"}, "traceId": "01" * 16, "spanId": "02" * 8},
        {"body": {"stringValue": "short trace"}, "traceId": "01" * 5},
        {"body": {"stringValue": "long span"}, "spanId": "02" * 9},
        {"body": {"stringValue": "no ids"}},
    ])
    reply = request(receiver.http_endpoint, body=body, content_type=JSON)
    assert reply.status == 200
    partial = reply.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "2"  # int64 in OTLP JSON is a string
    assert "trace_id must be 16 bytes" in partial["errorMessage"]
    assert bodies(memory) == ["good", "no ids"]


def test_ids_that_are_not_hex_in_json_get_400(receiver: Receiver) -> None:
    body = json_logs([{"body": {"stringValue": "x"}, "traceId": "zz" * 16}])
    assert request(receiver.http_endpoint, body=body, content_type=JSON).status == 400


def test_partial_success_in_a_protobuf_body(receiver: Receiver) -> None:
    data = logs_request(log_record("bad", trace_id=b"\x01" * 5), log_record("fine")).SerializeToString()
    reply = request(receiver.http_endpoint, body=data)
    assert reply.status == 200
    assert ExportLogsServiceResponse.FromString(reply.body).partial_success.rejected_log_records == 1


def test_gzip_bomb_gets_413_and_is_not_inflated_past_the_limit(
    receiver: Receiver, memory: InMemorySink
) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in ~64 KiB
    assert len(bomb) < 1024 * 1024
    reply = request(receiver.http_endpoint, body=bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413
    assert reply.rpc_status().code == code_pb2.RESOURCE_EXHAUSTED
    assert "after gzip decompression" in reply.rpc_status().message
    assert request(receiver.http_endpoint, body=good_request()).status == 200
    assert bodies(memory) == ["ok"]


def test_inflate_stops_at_the_limit_and_reads_concatenated_members() -> None:
    with pytest.raises(RequestTooLarge):
        inflate(gzip.compress(b"a" * 10_001), "gzip", 10_000)
    assert inflate(gzip.compress(b"a" * 10_000), "gzip", 10_000) == b"a" * 10_000
    assert inflate(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"
    with pytest.raises(RequestTooLarge):  # the limit covers every member together
        inflate(gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60), "gzip", 100)
    with pytest.raises(DecodeError, match="truncated"):
        inflate(gzip.compress(b"abc" * 100)[:-12], "gzip", 10_000)
    with pytest.raises(DecodeError, match="not valid gzip"):
        inflate(b"plain bytes", "gzip", 10_000)


def test_gzip_header_on_a_plain_body_gets_400(receiver: Receiver) -> None:
    reply = request(receiver.http_endpoint, body=good_request(), headers={"Content-Encoding": "gzip"})
    assert reply.status == 400
    assert "not valid gzip data" in reply.rpc_status().message


def test_body_over_the_limit_gets_413_by_content_length(receiver: Receiver) -> None:
    data = logs_request(log_record("b" * (2 * 1024 * 1024))).SerializeToString()
    reply = _post_without_reading_the_rejection(receiver.http_endpoint, data)
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_chunked_body_over_the_limit_gets_413(receiver: Receiver) -> None:
    """Without Content-Length the limit is enforced while the chunks arrive."""
    host, _, port = receiver.http_endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        reply = b""
        try:
            for _ in range(40):  # 2.5 MiB, over the 1 MiB limit
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(200)
    assert reply.startswith(b"HTTP/1.1 413 "), reply


def _post_without_reading_the_rejection(endpoint: str, body: bytes) -> bytes:
    """Send headers announcing `body`, then read the answer the receiver gives before the body."""
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        return sock.recv(200)


@pytest.mark.parametrize("content_type", ["text/plain", "application/protobuf", "", "multipart/form-data"])
def test_other_content_types_get_415(receiver: Receiver, content_type: str) -> None:
    reply = request(receiver.http_endpoint, body=good_request(), content_type=content_type)
    assert reply.status == 415
    assert b"application/x-protobuf or application/json" in reply.body


def test_content_type_parameters_are_ignored(receiver: Receiver) -> None:
    reply = request(receiver.http_endpoint, body=b"{}", content_type="Application/JSON; charset=utf-8")
    assert reply.status == 200


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "snappy"])
def test_other_content_encodings_get_415_naming_the_supported_ones(receiver: Receiver, coding: str) -> None:
    reply = request(receiver.http_endpoint, body=good_request(), headers={"Content-Encoding": coding})
    assert reply.status == 415
    assert "send gzip, deflate or an uncompressed body" in reply.rpc_status().message
    assert reply.headers["accept-encoding"] == "gzip, deflate"


# -- paths, methods, auth --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/v1/log", "/v1/logs/extra", "/v2/logs", "/metrics"])
def test_unknown_paths_get_404(receiver: Receiver, path: str) -> None:
    assert request(receiver.http_endpoint, path, good_request()).status == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_with_allow(receiver: Receiver, method: str) -> None:
    reply = request(receiver.http_endpoint, method=method)
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"


def test_missing_or_wrong_token_gets_401_before_the_body_is_read(memory: InMemorySink) -> None:
    receiver = start_receiver({"auth": {"tenants": {"acme": {"token": TOKEN}}}}, sinks=[memory])
    try:
        endpoint = receiver.http_endpoint
        missing = request(endpoint, body=good_request())
        assert missing.status == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.rpc_status().code == code_pb2.UNAUTHENTICATED
        assert "missing bearer token" in missing.rpc_status().message
        wrong = request(endpoint, body=good_request(), headers={"Authorization": "Bearer nope-0123456789abc"})
        assert wrong.status == 401
        assert "invalid bearer token" in wrong.rpc_status().message
        # Headers alone get the answer: the receiver never waits for an unauthenticated body.
        assert _post_without_reading_the_rejection(endpoint, b"x" * 100_000).startswith(b"HTTP/1.1 401 ")
        ok = request(endpoint, body=good_request("mine"), headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
    finally:
        receiver.stop(5)
    assert bodies(memory) == ["mine"]
    assert [b.tenant for b in memory.batches] == ["acme"]


# -- overload and failing sinks: 429 / 503 with Retry-After ----------------------------------------

def test_over_capacity_gets_429_with_retry_after() -> None:
    sink = BlockingSink()
    receiver = start_receiver({"queue": {"max_requests": 1, "retry_after_s": 3}}, sinks=[sink])
    try:
        first = threading.Thread(target=request, args=(receiver.http_endpoint,),
                                 kwargs={"body": good_request("first")})
        first.start()
        assert sink.wait_for_waiting(1)
        reply = request(receiver.http_endpoint, body=good_request("second"))
        assert reply.status == 429
        assert reply.headers["retry-after"] == "3"
        assert reply.rpc_status().code == code_pb2.UNAVAILABLE
        assert "at capacity" in reply.rpc_status().message
        assert reply.retry_delay_s() == 3
        sink.release()
        first.join(20)
        assert bodies(sink) == ["first"]
    finally:
        sink.release()
        receiver.stop(5)


def test_a_failing_sink_gets_503_with_retry_after_and_nothing_is_acknowledged() -> None:
    receiver = start_receiver({}, sinks=[FailingSink(retry_after_s=2.5)])
    try:
        reply = request(receiver.http_endpoint, body=good_request())
        assert reply.status == 503
        assert reply.headers["retry-after"] == "3"  # 2.5 s rounded up: the header takes whole seconds
        assert reply.retry_delay_s() == 2.5
        assert "refusing a batch on purpose" in reply.rpc_status().message
        as_json = request(receiver.http_endpoint, body=json_logs([{"body": {"stringValue": "x"}}]),
                          content_type=JSON)
        assert as_json.status == 503
        assert as_json.json()["details"][0]["retryDelay"] == "2.500s"
    finally:
        receiver.stop(5)


def test_refusals_are_counted_per_outcome(receiver: Receiver) -> None:
    request(receiver.http_endpoint, body=b"\xff garbage")
    request(receiver.http_endpoint, body=good_request())
    request(receiver.http_endpoint, body=good_request(), content_type="text/plain")
    samples = {
        (s.labels.get("signal"), s.labels.get("outcome")): s.value
        for metric in receiver.telemetry.registry.collect() if metric.name == "sluice_requests"
        for s in metric.samples if s.name == "sluice_requests_total"
    }
    assert samples[("logs", "OK")] == 1
    assert samples[("logs", "INVALID_ARGUMENT")] == 2


# -- CORS --------------------------------------------------------------------------------------------

@pytest.fixture
def cors_receiver(memory: InMemorySink) -> Iterator[Receiver]:
    r = start_receiver({"receivers": {"otlp": {"protocols": {"grpc": {}, "http": {"cors": {
        "allowed_origins": ["https://app.example.com", "https://*.shop.example"],
        "allowed_headers": ["X-Tenant"], "max_age": 600}}}}}}, sinks=[memory])
    yield r
    r.stop(5)


def preflight(endpoint: str, origin: str, headers: str = "content-type") -> Any:
    return request(endpoint, method="OPTIONS", content_type=None, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers})


def test_cors_preflight_is_answered_for_an_allowed_origin(cors_receiver: Receiver) -> None:
    reply = preflight(cors_receiver.http_endpoint, "https://app.example.com", "content-type,x-tenant")
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == "https://app.example.com"
    assert reply.headers["access-control-allow-methods"] == "POST"
    assert reply.headers["access-control-allow-headers"] == "content-type, x-tenant"
    assert reply.headers["access-control-max-age"] == "600"
    assert reply.headers["vary"] == "Origin"


def test_cors_wildcard_origin_matches_subdomains_only(cors_receiver: Receiver) -> None:
    endpoint = cors_receiver.http_endpoint
    assert preflight(endpoint, "https://eu.shop.example").status == 204
    assert preflight(endpoint, "https://a.b.shop.example").status == 204
    for origin in ("https://shop.example", "http://eu.shop.example", "https://evil.example",
                   "https://eu.shop.example.evil.com", "https://x/.shop.example"):
        reply = preflight(endpoint, origin)
        assert reply.status == 403, origin
        assert "access-control-allow-origin" not in reply.headers


def test_cors_preflight_refuses_headers_not_allowed(cors_receiver: Receiver) -> None:
    reply = preflight(cors_receiver.http_endpoint, "https://app.example.com", "content-type, x-secret")
    assert reply.status == 403
    assert b"x-secret" in reply.body


def test_cross_origin_post_is_stored_and_answered_with_cors_headers(
    cors_receiver: Receiver, memory: InMemorySink
) -> None:
    reply = request(cors_receiver.http_endpoint, body=json_logs([{"body": {"stringValue": "from a browser"}}]),
                    content_type=JSON, headers={"Origin": "https://app.example.com"})
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == "https://app.example.com"
    assert reply.headers["access-control-expose-headers"] == "retry-after"
    assert bodies(memory) == ["from a browser"]
    refused = request(cors_receiver.http_endpoint, body=b"nonsense", content_type=JSON,
                      headers={"Origin": "https://app.example.com"})
    assert refused.status == 400  # errors carry CORS headers too, so a browser app can read them
    assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
    foreign = request(cors_receiver.http_endpoint, body=b"{}", content_type=JSON,
                      headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers


def test_cors_is_off_by_default(receiver: Receiver) -> None:
    assert preflight(receiver.http_endpoint, "https://app.example.com").status == 405
    reply = request(receiver.http_endpoint, body=b"{}", content_type=JSON,
                    headers={"Origin": "https://app.example.com"})
    assert reply.status == 200
    assert "access-control-allow-origin" not in reply.headers


def test_cors_config_names_a_bad_origin_or_header() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps({"receivers": {"otlp": {"protocols": {"http": {"cors": {
            "allowed_origins": ["app.example.com", "https://*.*.example.com", "*"],
            "allowed_headers": ["x tenant"]}}}}}}))
    text = str(info.value)
    assert "receivers.otlp.protocols.http.cors.allowed_origins[0]: got 'app.example.com'" in text
    assert "receivers.otlp.protocols.http.cors.allowed_origins[1]" in text
    assert "allowed_origins[2]" not in text
    assert "receivers.otlp.protocols.http.cors.allowed_headers[0]: got 'x tenant'" in text


# -- TLS, health, shutdown ---------------------------------------------------------------------------

def test_tls_and_client_certificates_like_the_grpc_port(tmp_path: Path, memory: InMemorySink) -> None:
    pki = make_tls_files(tmp_path / "pki")
    receiver = start_receiver({"receivers": {"otlp": {"protocols": {"http": {"tls": {
        "cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca_cert)}}}}}}, sinks=[memory])
    try:
        anonymous = ssl.create_default_context(cafile=str(pki.ca_cert))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(receiver.http_endpoint, body=good_request("no cert"), tls=anonymous)
        with pytest.raises((ConnectionError, OSError)):  # plaintext to a TLS port
            request(receiver.http_endpoint, body=good_request("plaintext"), timeout_s=5)
        with_cert = ssl.create_default_context(cafile=str(pki.ca_cert))
        with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        assert request(receiver.http_endpoint, body=good_request("mtls"), tls=with_cert).status == 200
    finally:
        receiver.stop(5)
    assert bodies(memory) == ["mtls"]


def test_healthz_lists_both_front_doors(receiver: Receiver) -> None:
    _, details = receiver.health()
    assert details["front_doors"] == {"otlp_grpc": receiver.endpoint, "otlp_http": receiver.http_endpoint}
    assert receiver.describe().startswith(
        f"otlp grpc on {receiver.endpoint}, otlp http on {receiver.http_endpoint}, telemetry on ")


def test_http_can_run_alone_and_grpc_alone(memory: InMemorySink) -> None:
    only_http = start_receiver({"receivers": {"otlp": {"protocols": {"http": {}}}}}, sinks=[memory])
    try:
        assert only_http.port == 0
        assert request(only_http.http_endpoint, body=good_request()).status == 200
    finally:
        only_http.stop(5)
    only_grpc = start_receiver({"receivers": {"otlp": {"protocols": {"grpc": {}}}}}, sinks=[memory])
    try:
        assert only_grpc.http_port == 0
        assert "otlp http" not in only_grpc.describe()
    finally:
        only_grpc.stop(5)


def test_a_busy_http_port_fails_start_naming_the_key_and_stops_the_sinks(memory: InMemorySink) -> None:
    from sluice_collector.service.receiver import ListenError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(json.dumps({"telemetry": {"listen": ""}, "receivers": {"otlp": {
            "protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": f"127.0.0.1:{port}"}}}}}))
        with pytest.raises(ListenError, match=r"receivers\.otlp\.protocols\.http\.endpoint: cannot listen"):
            Receiver(config, sinks=[memory]).start()
    assert memory.started
    assert memory.stopped


def test_stop_lets_an_http_export_in_flight_finish() -> None:
    sink = BlockingSink()
    receiver = start_receiver({}, sinks=[sink])
    replies: list[Any] = []
    first = threading.Thread(target=lambda: replies.append(
        request(receiver.http_endpoint, body=good_request("in flight"))))
    first.start()
    assert sink.wait_for_waiting(1)
    stopper = threading.Thread(target=receiver.stop, args=(15,))
    stopper.start()
    threading.Timer(0.5, sink.release).start()
    first.join(20)
    stopper.join(20)
    assert [r.status for r in replies] == [200]
    assert bodies(sink) == ["in flight"]
    assert sink.stopped
