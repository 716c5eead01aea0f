"""Promise: idle, slow or unauthenticated clients cannot starve ingest or health checks.

A real `sluice receiver run` subprocess; against its OTLP/HTTP port, 100 connections send half
their headers and stall, 20 send complete headers and no body, and one trickles its body a byte at
a time. While every one of them is held open (the timeouts are set long so that they are still
open when the legitimate calls are made, and that is checked afterwards), an official-shaped OTLP/
HTTP Export, an OTLP/gRPC Export and a gRPC health check all succeed. Nothing here asserts a
speed: each call gets a generous deadline, and only success is asserted."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.http_client import request
from tests.otlp_builders import log_record, logs_request
from tests.reliability.harness import LOGS_EXPORT

CALL_DEADLINE_S = 60.0


def _open(endpoint: str, first_bytes: bytes) -> socket.socket:
    host, _, port = endpoint.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(first_bytes)
    return sock


def _still_open(sock: socket.socket) -> bool:
    """True when the server has neither closed the connection nor answered on it."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # b"" (closed) or bytes (answered): either way, not held open


def test_stalled_and_trickling_http_clients_do_not_block_exports_or_health(start_receiver: Any) -> None:
    receiver = start_receiver({
        # 8 export threads (max_requests + 4): far fewer than the stalled bodies, so a stall
        # that held a thread would leave none for the legitimate Export.
        "queue": {"max_requests": 4},
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": "127.0.0.1:0"},
            "http": {"endpoint": "127.0.0.1:0", "header_timeout_s": 600, "body_timeout_s": 600},
        }}},
    })
    http_endpoint = receiver.http_endpoint
    stalled = [_open(http_endpoint, b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Ty") for _ in range(100)]
    bodiless = [
        _open(http_endpoint, b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                             b"Content-Length: 50000\r\n\r\n")
        for _ in range(20)
    ]
    trickler = _open(http_endpoint, b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                                    b"\r\nContent-Length: 50000\r\n\r\n")
    stop_trickling = threading.Event()

    def trickle() -> None:
        while not stop_trickling.wait(0.2):
            try:
                trickler.sendall(b"\x0a")
            except OSError:
                return

    trickling = threading.Thread(target=trickle, daemon=True)
    trickling.start()
    try:
        http_reply = request(http_endpoint, body=logs_request(log_record("legit over http")).SerializeToString(),
                             timeout_s=CALL_DEADLINE_S)
        with grpc.insecure_channel(receiver.endpoint) as channel:
            channel.unary_unary(LOGS_EXPORT)(
                logs_request(log_record("legit over grpc")).SerializeToString(), timeout=CALL_DEADLINE_S)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CALL_DEADLINE_S)
        assert http_reply.status == 200
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The stalls were really held open all along (none was closed or answered early).
        assert all(_still_open(s) for s in stalled), "a stalled connection was closed: test proves nothing"
        assert all(_still_open(s) for s in bodiless)
        assert _still_open(trickler)
    finally:
        stop_trickling.set()
        trickling.join(5)
        for sock in [*stalled, *bodiless, trickler]:
            sock.close()
    time.sleep(0.2)
    assert receiver.stop() == 0, receiver.stderr
    bodies = {json.loads(line)["body"] for line in (receiver.logs_dir / "app.log").read_text().splitlines()}
    assert bodies == {"legit over http", "legit over grpc"}
