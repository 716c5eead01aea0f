"""Promise: idle, slow or unauthenticated clients cannot starve ingest, health checks or queries.

The attacker is a real gRPC client on its own connection that opens Export calls and never
sends their message (a slowloris): its request iterator blocks until the test lets it go. The
legitimate client, on another connection, must still get its Export stored, its health check
and its query answered while the idle calls are held open — every call with a generous
deadline: the assertion is that they succeed, not how fast.

Against grpcio's synchronous server (one pool thread per call from its headers on) 100 such
calls held every thread and the legitimate calls hit DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice_collector.query._proto import query_pb2 as pb
from tests.reliability.harness import LOGS_EXPORT, Sender, make_request, retry_delay_s, scan_logs

IDLE = 100
TOKEN = "acme-token-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
GENEROUS_S = 10.0


class Slowloris:
    """`n` Export calls on one connection of their own that never send their message."""

    def __init__(self, endpoint: str, n: int, *, metadata: list[tuple[str, str]] | None = None,
                 tag: int = 0) -> None:
        self.gate = threading.Event()
        # A channel of its own (own subchannel pool): its own TCP connection, as another host's.
        self.channel = grpc.insecure_channel(
            endpoint, options=[("grpc.use_local_subchannel_pool", 1), ("sluice.test.tag", tag)])
        export = self.channel.stream_unary(LOGS_EXPORT)
        self.calls = [export.future(self._never(), metadata=metadata) for _ in range(n)]

    def _never(self) -> Iterator[bytes]:
        self.gate.wait()
        yield from ()

    def codes(self, timeout_s: float = 30.0) -> list[grpc.StatusCode]:
        out = []
        for call in self.calls:
            try:
                call.result(timeout=timeout_s)
                out.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                out.append(exc.code())  # type: ignore[attr-defined]
        return out

    def release(self) -> None:
        self.gate.set()
        self.codes()
        self.channel.close()


def _metric(receiver: Any, name: str) -> float | None:
    text = urllib.request.urlopen(f"{receiver.status_url}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _health(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=GENEROUS_S)
    return int(response.status)


def _query(endpoint: str) -> pb.QueryResponse:
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary("/sluice.v1.LogQuery/Query",
                                   request_serializer=pb.QueryRequest.SerializeToString,
                                   response_deserializer=pb.QueryResponse.FromString)
        response: pb.QueryResponse = stub(pb.QueryRequest(limit=5), timeout=GENEROUS_S,
                                          metadata=[("x-api-key", ADMIN_KEY)])
    return response


def test_idle_streams_without_auth_do_not_starve_export_health_or_queries(start_receiver: Any) -> None:
    receiver = start_receiver({"query": {"api_keys": {"ops": {"key": ADMIN_KEY, "role": "admin"}}}})
    attacker = Slowloris(receiver.endpoint, IDLE)
    try:
        # Held open by the receiver, waiting for their message.
        _wait_for(lambda: _metric(receiver, "sluice_grpc_pending_streams") == IDLE,
                  f"{IDLE} idle calls to be pending")
        sender = Sender(receiver.endpoint)
        try:
            out = sender.call(make_request([7]), timeout_s=GENEROUS_S)
        finally:
            sender.close()
        assert out.code == grpc.StatusCode.OK, out.details
        assert _health(receiver.endpoint) == health_pb2.HealthCheckResponse.SERVING
        assert _query(receiver.endpoint) is not None
        assert not any(call.done() for call in attacker.calls)  # still held open all along
    finally:
        attacker.release()
    # Let go, they end without a message: refused (as a transport-refused message is), nothing
    # stored.
    assert set(attacker.codes()) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    receiver.stop()
    assert scan_logs(receiver.logs_dir).counts == {7: 1}


def test_idle_streams_on_the_same_connection_do_not_hold_up_an_export(start_receiver: Any) -> None:
    """The same with the legitimate call multiplexed on the attacker's own HTTP/2 connection
    (two Python channels with the same target and options share one)."""
    receiver = start_receiver({})
    attacker = Slowloris(receiver.endpoint, IDLE)
    try:
        _wait_for(lambda: _metric(receiver, "sluice_grpc_pending_streams") == IDLE,
                  f"{IDLE} idle calls to be pending")
        export = attacker.channel.unary_unary(LOGS_EXPORT)
        assert export(make_request([11]), timeout=GENEROUS_S) == b""
        status = health_pb2_grpc.HealthStub(attacker.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=GENEROUS_S).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert not any(call.done() for call in attacker.calls)
    finally:
        attacker.release()


def test_with_read_slots_one_connection_cannot_hold_them_all(start_receiver: Any) -> None:
    """`max_receiving` caps the messages read at once (the transport's memory); a connection
    gets at most its share, so an authenticated client's idle calls leave the rest to others."""
    receiver = start_receiver({
        "auth": {"tenants": {"acme": {"token": TOKEN}}},
        "receivers": {"otlp": {"protocols": {"grpc": {
            "endpoint": "127.0.0.1:0", "max_receiving": 2, "max_receiving_per_connection": 1}}}}})
    auth = [("authorization", f"Bearer {TOKEN}")]
    attacker = Slowloris(receiver.endpoint, 10, metadata=auth)
    try:
        _wait_for(lambda: _metric(receiver, "sluice_grpc_pending_streams") == 10, "10 pending")
        sender = Sender(receiver.endpoint)
        try:
            out = sender.call(make_request([12]), timeout_s=GENEROUS_S, metadata=auth)
        finally:
            sender.close()
        assert out.code == grpc.StatusCode.OK, out.details
        assert not any(call.done() for call in attacker.calls)
    finally:
        attacker.release()


def test_idle_streams_without_credentials_are_refused_before_their_message(start_receiver: Any) -> None:
    receiver = start_receiver({"auth": {"tenants": {"acme": {"token": TOKEN}}}})
    attacker = Slowloris(receiver.endpoint, IDLE)
    try:
        sender = Sender(receiver.endpoint)
        try:
            out = sender.call(make_request([8]), timeout_s=GENEROUS_S, metadata=[
                ("authorization", f"Bearer {TOKEN}")])
        finally:
            sender.close()
        assert out.code == grpc.StatusCode.OK, out.details
        assert _health(receiver.endpoint) == health_pb2.HealthCheckResponse.SERVING
        # Answered from their headers alone, while their iterators still hold back the message.
        assert set(attacker.codes()) == {grpc.StatusCode.UNAUTHENTICATED}
        assert not attacker.gate.is_set()
        assert _metric(receiver, "sluice_grpc_pending_streams") == 0
    finally:
        attacker.release()


def test_a_message_that_does_not_arrive_in_time_is_cancelled(start_receiver: Any) -> None:
    receiver = start_receiver({"receivers": {"otlp": {"protocols": {"grpc": {
        "endpoint": "127.0.0.1:0", "receive_timeout": "1s"}}}}})
    attacker = Slowloris(receiver.endpoint, 3)
    try:
        assert attacker.codes(timeout_s=GENEROUS_S) == [grpc.StatusCode.DEADLINE_EXCEEDED] * 3
        _wait_for(lambda: _metric(receiver, "sluice_grpc_pending_streams") == 0, "no pending")
        assert _metric(receiver, 'sluice_requests_total{outcome="DEADLINE_EXCEEDED",signal="logs"}') == 3
    finally:
        attacker.release()


def test_one_connection_gets_at_most_max_concurrent_streams_in(start_receiver: Any) -> None:
    """HTTP/2's own limit: a connection's calls past `max_concurrent_streams` wait on the client
    (or are refused by the transport), so one client cannot take every pending place; a client
    on another connection is served."""
    receiver = start_receiver({"receivers": {"otlp": {"protocols": {"grpc": {
        "endpoint": "127.0.0.1:0", "max_concurrent_streams": 5}}}}})
    attacker = Slowloris(receiver.endpoint, 20)
    try:
        _wait_for(lambda: _metric(receiver, "sluice_grpc_pending_streams") == 5, "5 pending")
        sender = Sender(receiver.endpoint)
        try:
            assert sender.call(make_request([9]), timeout_s=GENEROUS_S).code == grpc.StatusCode.OK
        finally:
            sender.close()
        assert _metric(receiver, "sluice_grpc_pending_streams") == 5
        for call in attacker.calls:
            if call.done():  # refused by the transport (REFUSED_STREAM): retryable
                assert call.exception().code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
    finally:
        attacker.release()


def test_pending_streams_over_all_connections_are_bounded(start_receiver: Any) -> None:
    """At most `max_pending_streams` calls wait for their message; more are refused at once
    with UNAVAILABLE and a retry delay, so a conforming exporter comes back later."""
    receiver = start_receiver({"receivers": {"otlp": {"protocols": {"grpc": {
        "endpoint": "127.0.0.1:0", "max_pending_streams": 8}}}}})
    attacker = Slowloris(receiver.endpoint, 20)
    try:
        _wait_for(lambda: sum(c.done() for c in attacker.calls) >= 12, "12 refusals")
        refused = [c for c in attacker.calls if c.done()]
        assert len(refused) == 12
        for call in refused:
            assert call.exception().code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
            assert retry_delay_s(call.exception()) is not None  # type: ignore[arg-type]
        assert _metric(receiver, "sluice_grpc_pending_streams") == 8
    finally:
        attacker.release()


def test_sigterm_answers_idle_calls_at_once_instead_of_waiting_out_the_grace(
        start_receiver: Any) -> None:
    """A call still waiting for its message has nothing in flight: on SIGTERM it is answered
    UNAVAILABLE with a retry delay, and the receiver does not wait its 60 s grace for it."""
    receiver = start_receiver({"shutdown_timeout_s": 60, "receivers": {"otlp": {"protocols": {
        "grpc": {"endpoint": "127.0.0.1:0", "receive_timeout": "120s"}}}}})
    attacker = Slowloris(receiver.endpoint, 10)
    try:
        _wait_for(lambda: _metric(receiver, "sluice_grpc_pending_streams") == 10, "10 pending")
        assert receiver.stop(timeout_s=30) == 0  # well inside the grace and the receive timeout
        assert set(attacker.codes()) == {grpc.StatusCode.UNAVAILABLE}
        assert all(retry_delay_s(call.exception()) is not None  # type: ignore[arg-type]
                   for call in attacker.calls)
    finally:
        attacker.release()
