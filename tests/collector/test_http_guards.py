"""The OTLP/HTTP port's guards against idle, slow and oversized clients, with real sockets: each
one closes or refuses what it should, answers what it can, and is counted on /metrics."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from sluice_collector.service.receiver import Receiver
from sluice_collector.testing import InMemorySink, start_receiver
from tests.http_client import request
from tests.otlp_builders import log_record, logs_request

DEADLINE_S = 30.0  # generous: the timeouts below are 1 s; only "closed eventually" is asserted


def guarded(**http: object) -> Receiver:
    return start_receiver({"receivers": {"otlp": {"protocols": {"grpc": {}, "http": http}}}},
                          sinks=[InMemorySink()])


@pytest.fixture
def short_timeouts() -> Iterator[Receiver]:
    r = guarded(header_timeout_s=1, body_timeout_s=1, idle_timeout_s=1)
    yield r
    r.stop(5)


def connect(receiver: Receiver) -> socket.socket:
    host, _, port = receiver.http_endpoint.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=DEADLINE_S)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or DEADLINE_S passes)."""
    data = b""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {DEADLINE_S}s; got {data[:200]!r}")


def refused(receiver: Receiver) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/metrics", timeout=10).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("sluice_http_refused_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_connection_that_never_sends_is_closed_after_the_header_timeout(short_timeouts: Receiver) -> None:
    with connect(short_timeouts) as sock:
        assert read_until_closed(sock) == b""
    assert refused(short_timeouts)["idle"] == 1


def test_half_sent_headers_get_408_and_the_connection_closed(short_timeouts: Receiver) -> None:
    with connect(short_timeouts) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert refused(short_timeouts)["header_timeout"] == 1


def test_headers_trickled_byte_by_byte_cannot_outlast_the_header_timeout(short_timeouts: Receiver) -> None:
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    with connect(short_timeouts) as sock:
        started = time.monotonic()
        try:
            for i in range(len(head)):
                sock.sendall(head[i:i + 1])
                time.sleep(0.05)
                if time.monotonic() - started > DEADLINE_S:
                    raise AssertionError("still accepting header bytes")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: what the guard is for
    assert refused(short_timeouts)["header_timeout"] == 1


def test_a_body_that_does_not_arrive_gets_408_and_no_pool_thread(short_timeouts: Receiver) -> None:
    with connect(short_timeouts) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"\x0a" * 10)
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in reply.lower()
    assert refused(short_timeouts)["body_timeout"] == 1
    registry = short_timeouts.telemetry.registry
    assert registry.get_sample_value("sluice_requests_total", {"signal": "logs", "outcome": "OK"}) is None


def test_a_keep_alive_connection_cannot_stay_open_by_sending_line_breaks(short_timeouts: Receiver) -> None:
    with connect(short_timeouts) as sock:
        body = logs_request(log_record()).SerializeToString()
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.3)
        sock.sendall(b"\r\n")  # starts no request, but stops the keep-alive timer
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(short_timeouts: Receiver) -> None:
    with connect(short_timeouts) as sock:
        body = logs_request(log_record()).SerializeToString()
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("how", ["one-packet", "in-pieces", "never-finished"])
def test_headers_over_max_header_bytes_get_431(how: str) -> None:
    receiver = guarded(max_header_bytes="4KiB")
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000
    try:
        with connect(receiver) as sock:
            try:
                if how == "one-packet":
                    sock.sendall(head + b"\r\n\r\n")
                else:
                    for i in range(0, len(head), 1000):
                        sock.sendall(head[i:i + 1000])
                        time.sleep(0.001)
                    if how == "in-pieces":
                        sock.sendall(b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
        assert request(receiver.http_endpoint, body=logs_request(log_record()).SerializeToString(),
                       headers={"X-Fine": "a" * 1000}).status == 200
        assert refused(receiver)["header_too_large"] == 1
    finally:
        receiver.stop(5)


def test_large_headers_and_body_in_one_packet_are_not_mistaken_for_large_headers() -> None:
    receiver = guarded(max_header_bytes="4KiB")
    body = logs_request(log_record("b" * 50_000)).SerializeToString()
    try:
        with connect(receiver) as sock:
            sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        receiver.stop(5)


def test_connections_past_max_connections_get_503_with_retry_after() -> None:
    receiver = guarded(max_connections=3)
    held = []
    try:
        held = [connect(receiver) for _ in range(3)]
        for sock in held:
            sock.sendall(b"POST /v1/logs HTTP/1.1\r\n")  # make sure each is accepted and counted
        time.sleep(0.2)
        with connect(receiver) as extra:
            reply = read_until_closed(extra)
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in reply
        assert refused(receiver)["connections"] >= 1
    finally:
        for sock in held:
            sock.close()
        receiver.stop(5)


def test_bodies_past_max_pending_bytes_get_429_until_the_first_one_finishes() -> None:
    receiver = guarded(max_pending_bytes="64KiB", body_timeout_s=60)
    payload = logs_request(log_record("x" * 70_000)).SerializeToString()
    try:
        with connect(receiver) as slow:
            slow.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(payload) + payload[:60_000])
            time.sleep(0.3)  # let the receiver buffer what was sent
            second = request(receiver.http_endpoint, body=payload)
            assert second.status == 429
            assert second.headers["retry-after"] == "1"
            slow.sendall(payload[60_000:])  # the first body, larger than the bound, still goes in
            assert slow.recv(100).startswith(b"HTTP/1.1 200 ")
        assert request(receiver.http_endpoint, body=payload).status == 200
        assert refused(receiver)["pending_bytes"] == 1
    finally:
        receiver.stop(5)


def test_a_shutting_down_receiver_answers_new_requests_503_and_cuts_off_arriving_bodies() -> None:
    receiver = guarded(body_timeout_s=120)
    with connect(receiver) as slow:
        slow.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 1000\r\n\r\nabc")
        time.sleep(0.3)
        started = time.monotonic()
        receiver.stop(60)
        stop_took = time.monotonic() - started
        reply = read_until_closed(slow)
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in reply
    assert stop_took < 60, "stop waited for a body that was never going to arrive"
