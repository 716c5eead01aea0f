"""The wire encoder and the log shipper: OTLP bytes the official protos parse, batching, spill."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from sluice import _wire
from sluice._shipper import InMemoryTransport, Item, LogShipper, severity_number
from sluice._spill import SpillQueue
from tests.sdk.otlp_sink import plain


def item(body: object = "hi", *, name: str = "app", category: str | None = None,
         attrs: dict[str, object] | None = None, tid: int = 0, sid: int = 0) -> Item:
    a = dict(attrs or {})
    if category:
        a["log.category"] = category
    return (1_700_000_000.5, logging.INFO, "INFO", name, body, "/src/app.py", "handler", 12, tid, sid,
            1 if tid else 0, a or None, None)


def decode(payload: bytes) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest.FromString(payload)


def shipper(transport: InMemoryTransport, **kwargs: object) -> LogShipper:
    return LogShipper(transport, {"service.name": "svc", "n": 3}, schedule_delay_s=60, **kwargs)  # type: ignore[arg-type]


def test_encoded_batch_parses_with_official_protos_and_keeps_every_field() -> None:
    t = InMemoryTransport()
    s = shipper(t)
    s.submit(item("héllo", tid=0x0123456789ABCDEF0123456789ABCDEF, sid=0x1122334455667788,
                  attrs={"s": "x", "i": -5, "f": 1.5, "b": True, "m": {"k": [1, "two"]}, "n": None, "o": object}))
    assert s.force_flush(5)
    request = decode(t.payloads[0])
    rl = request.resource_logs[0]
    assert {kv.key: plain(kv.value) for kv in rl.resource.attributes} == {"service.name": "svc", "n": 3}
    sl = rl.scope_logs[0]
    assert sl.scope.name == "app"
    rec = sl.log_records[0]
    assert plain(rec.body) == "héllo"
    assert rec.time_unix_nano == 1_700_000_000_500_000_000 == rec.observed_time_unix_nano
    assert rec.severity_number == 9
    assert rec.severity_text == "INFO"
    assert rec.trace_id.hex() == "0123456789abcdef0123456789abcdef"
    assert rec.span_id.hex() == "1122334455667788"
    assert rec.flags == 1
    got = {kv.key: plain(kv.value) for kv in rec.attributes}
    assert got["code.file.path"] == "/src/app.py"
    assert got["code.function.name"] == "handler"
    assert got["code.line.number"] == 12
    assert (got["s"], got["i"], got["f"], got["b"]) == ("x", -5, 1.5, True)
    assert got["m"] == {"k": [1, "two"]}
    assert got["n"] is None
    assert "object" in got["o"]
    s.shutdown(1)


def test_records_are_grouped_by_logger_into_scopes() -> None:
    t = InMemoryTransport()
    s = shipper(t)
    for name in ("a", "b", "a"):
        s.submit(item(name, name=name))
    s.force_flush(5)
    scopes = {sl.scope.name: len(sl.log_records) for sl in decode(t.payloads[0]).resource_logs[0].scope_logs}
    assert scopes == {"a": 2, "b": 1}
    s.shutdown(1)


def test_long_bodies_and_non_string_bodies_encode() -> None:
    body = "x" * 100_000
    req = decode(_wire.export_request(_wire.resource({}), [_wire.scope_logs("s", [_wire.log_record(
        time_unix_nano=1, observed_time_unix_nano=1, head=b"", body=body, attributes=b"")])]))
    assert plain(req.resource_logs[0].scope_logs[0].log_records[0].body) == body
    t = InMemoryTransport()
    s = shipper(t)
    s.submit(item({"structured": 1}))
    s.force_flush(5)
    assert plain(decode(t.payloads[0]).resource_logs[0].scope_logs[0].log_records[0].body) == {"structured": 1}
    s.shutdown(1)


def test_severity_numbers_follow_the_otel_ranges() -> None:
    assert [severity_number(x) for x in (0, 5, 10, 20, 25, 30, 40, 50, 60)] == [0, 1, 5, 9, 12, 13, 17, 21, 24]


def test_full_queue_drops_ordinary_records_and_counts_them_but_keeps_audit() -> None:
    t = InMemoryTransport()
    s = shipper(t, max_queue_size=2, max_batch_size=100)
    for _ in range(5):
        s.submit(item())
    s.submit(item(category="audit"))
    assert s.dropped == 3
    assert s.queue_depth == 3
    s.force_flush(5)
    s.shutdown(1)


def test_receiver_down_spills_audit_and_security_drops_the_rest_and_replays_later(tmp_path: Path) -> None:
    t = InMemoryTransport()
    t.fail = True
    spill = SpillQueue(tmp_path, 1_000_000)
    s = shipper(t, spill=spill, export_timeout_s=0.3)
    s.submit(item("audit", category="audit"))
    s.submit(item("sec", category="security"))
    s.submit(item("plain"))
    assert s.force_flush(0.5) is False
    assert len(spill) == 1
    assert s.dropped == 1
    t.fail = False
    s.submit(item("later"))
    assert s.force_flush(5)
    bodies = [plain(r.body) for p in t.payloads for rl in decode(p).resource_logs
              for sl in rl.scope_logs for r in sl.log_records]
    assert sorted(bodies) == ["audit", "later", "sec"]
    assert len(spill) == 0
    s.shutdown(1)


def test_spill_is_bounded_by_max_bytes(tmp_path: Path) -> None:
    spill = SpillQueue(tmp_path, 100)
    assert spill.put([("s", b"x" * 60)])
    assert not spill.put([("s", b"x" * 60)])
    assert len(spill) == 1


def test_a_transport_that_raises_anything_never_breaks_the_shipper() -> None:
    class Broken(InMemoryTransport):
        def send(self, payload: bytes, timeout_s: float) -> None:
            raise RuntimeError("boom")

    s = LogShipper(Broken(), {}, schedule_delay_s=0.05)
    s.submit(item())
    time.sleep(0.2)
    assert s.force_flush(1) is True  # nothing left queued: the batch was dropped and counted
    assert s.dropped == 1
    s.shutdown(1)


def test_worker_ships_a_full_batch_without_an_explicit_flush() -> None:
    t = InMemoryTransport()
    s = LogShipper(t, {}, schedule_delay_s=60, max_batch_size=3)
    for _ in range(3):
        s.submit(item())
    deadline = time.monotonic() + 5
    while not t.payloads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert t.payloads
    s.shutdown(1)


def test_shutdown_is_idempotent() -> None:
    s = shipper(InMemoryTransport())
    assert s.shutdown(1)
    assert s.shutdown(1)


def test_http_transport_posts_protobuf_to_v1_logs() -> None:
    """The http/protobuf path sends the same bytes to <endpoint>/v1/logs with the right content type."""
    import http.server
    import threading

    from sluice._shipper import HttpTransport, TransportError

    seen: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers["Content-Type"], body))
            self.send_response(503 if self.headers.get("x-fail") else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        s = LogShipper(HttpTransport(endpoint, headers={}), {"service.name": "h"}, schedule_delay_s=60)
        s.submit(item("over http"))
        assert s.force_flush(5)
        path, content_type, body = seen[0]
        assert path == "/v1/logs"
        assert content_type == "application/x-protobuf"
        assert plain(decode(body).resource_logs[0].scope_logs[0].log_records[0].body) == "over http"
        s.shutdown(1)
        failing = HttpTransport(endpoint, headers={"x-fail": "1"})
        with pytest.raises(TransportError) as info:
            failing.send(b"", 2)
        assert info.value.retryable
    finally:
        server.shutdown()


def test_unreachable_receiver_is_logged_once_in_one_line_and_every_failure_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    """Endpoint, what failed and what to check, on one line without a traceback; then only counts."""
    from sluice import _health
    from sluice._shipper import GrpcTransport
    from tests.sdk.otlp_sink import free_port

    _health.reset()
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    s = LogShipper(GrpcTransport(endpoint, insecure=True, headers={}), {"service.name": "u"},
                   schedule_delay_s=60, export_timeout_s=0.3)
    try:
        with caplog.at_level(logging.WARNING, logger="sluice.internal"):
            for _ in range(2):
                s.submit(item("lost"))
                assert s.force_flush(0.5) is False
        [record] = [r for r in caplog.records if r.name == "sluice.internal"]
        text = record.getMessage()
        assert not record.exc_info
        assert "\n" not in text
        assert f"cannot deliver logs to {endpoint} over gRPC: UNAVAILABLE" in text
        assert "SLUICE_ENDPOINT" in text
        assert _health.counters["errors.log_export"] >= 2
        assert s.dropped == 2
    finally:
        s.shutdown(0.1)
        _health.reset()


def test_http_transport_errors_are_one_line_with_the_url_and_a_hint() -> None:
    from sluice._shipper import HttpTransport, TransportError
    from tests.sdk.otlp_sink import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransportError) as info:
        HttpTransport(endpoint, headers={}).send(b"", 2)
    assert info.value.retryable
    assert str(info.value).startswith(f"cannot deliver logs to {endpoint}/v1/logs: ")
    assert "is a receiver listening there?" in str(info.value)
    assert "\n" not in str(info.value)


def test_spilled_records_are_replayed_under_the_resource_they_were_made_with(tmp_path: Path) -> None:
    """The spill directory is shared by every process of a service: a record another process
    replays keeps its own resource (pid, a `sluice run`'s user.id), not the replayer's."""
    t = InMemoryTransport()
    t.fail = True
    first = LogShipper(t, {"service.name": "svc", "user.id": "u-7"}, schedule_delay_s=60,
                       spill=SpillQueue(tmp_path, 1_000_000), export_timeout_s=0.3)
    first.submit(item("audit", category="audit"))
    assert first.force_flush(0.5) is False
    first.shutdown(0.1)
    other = InMemoryTransport()
    second = LogShipper(other, {"service.name": "svc", "user.id": "u-8"}, schedule_delay_s=60,
                        spill=SpillQueue(tmp_path, 1_000_000))
    second.submit(item("mine"))
    assert second.force_flush(5)
    users = {plain(r.body): {kv.key: plain(kv.value) for kv in rl.resource.attributes}["user.id"]
             for p in other.payloads for rl in decode(p).resource_logs
             for sl in rl.scope_logs for r in sl.log_records}
    assert users == {"audit": "u-7", "mine": "u-8"}
    second.shutdown(1)


def test_spill_files_without_a_resource_header_still_replay(tmp_path: Path) -> None:
    spill = SpillQueue(tmp_path, 1_000_000)
    assert spill.put([("scope", b"\x12\x02\x0a\x00")])
    claimed = spill.claim()
    assert claimed is not None
    assert claimed.resource is None
    assert claimed.entries == [("scope", b"\x12\x02\x0a\x00")]


def test_spill_all_keeps_every_undelivered_record_but_queue_overflow_still_drops(tmp_path: Path) -> None:
    t = InMemoryTransport()
    t.fail = True
    spill = SpillQueue(tmp_path, 1_000_000)
    s = shipper(t, spill=spill, export_timeout_s=0.3, spill_all=True, max_queue_size=2)
    for body in ("one", "two", "overflow"):
        s.submit(item(body))
    assert s.dropped == 1
    assert s.force_flush(0.5) is False
    assert len(spill) == 1
    t.fail = False
    assert s.force_flush(5)
    bodies = sorted(plain(r.body) for p in t.payloads for rl in decode(p).resource_logs
                    for sl in rl.scope_logs for r in sl.log_records)
    assert bodies == ["one", "two"]
    s.shutdown(1)


def test_a_record_without_a_source_location_gets_no_code_attributes() -> None:
    t = InMemoryTransport()
    s = shipper(t)
    s.submit((1_700_000_000.5, logging.ERROR, "ERROR", "sluice.run", "captured", "", "", 0, 0, 0, 0,
              {"log.iostream": "stderr"}, None))
    assert s.force_flush(5)
    rec = decode(t.payloads[0]).resource_logs[0].scope_logs[0].log_records[0]
    assert {kv.key for kv in rec.attributes} == {"log.iostream"}
    assert (rec.severity_number, rec.severity_text) == (17, "ERROR")
    s.shutdown(1)
