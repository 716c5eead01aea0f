"""The LogQuery API's bounds, over real gRPC against an in-process receiver: hostile numbers get
INVALID_ARGUMENT (never UNKNOWN) and bounded answers; no key can take every slot; Query and
Stats run a bounded number at a time."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from sluice_collector.query._proto import query_pb2 as pb
from sluice_collector.query.store import RecordFilter
from sluice_collector.receivers.otlp_grpc import SERVICES
from sluice_collector.service.receiver import Receiver
from sluice_collector.testing import BlockingSink, start_receiver
from tests.otlp_builders import log_record, logs_request

ADMIN = "admin-key-0123456789abcdef"
ALICE = "alice-key-0123456789abcdef"
T0 = 1_763_900_000_000_000_000


def _settings(tmp_path: Path, **query: Any) -> dict[str, Any]:
    return {"files": {"directory": str(tmp_path / "logs")},
            "query": {"api_keys": {"ops": {"key": ADMIN, "role": "admin"},
                                   "alice": {"key": ALICE, "role": "user", "user_id": "alice"}},
                      **query}}


def _store(receiver: Receiver, n: int = 20) -> None:
    request = logs_request(*(log_record(f"r{i}", time_unix_nano=T0 + i * 10**9,
                                        attributes={"user.id": "alice"}) for i in range(n)))
    with grpc.insecure_channel(receiver.endpoint) as channel:
        channel.unary_unary(f"/{SERVICES[next(iter(SERVICES))]}/Export")(
            request.SerializeToString(), timeout=30)


def _call(channel: grpc.Channel, method: str, request: Any, response: Any, key: str) -> Any:
    stub = channel.unary_unary(f"/sluice.v1.LogQuery/{method}",
                               request_serializer=type(request).SerializeToString,
                               response_deserializer=response.FromString)
    return stub(request, metadata=[("x-api-key", key)], timeout=30)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = start_receiver(_settings(tmp_path))
    _store(r)
    yield r
    r.stop(5)


def test_stats_with_a_negative_since_is_invalid_and_buckets_stay_bounded(receiver: Receiver) -> None:
    with grpc.insecure_channel(receiver.endpoint) as channel:
        for key in (ADMIN, ALICE):
            with pytest.raises(grpc.RpcError) as info:
                _call(channel, "Stats", pb.StatsRequest(
                    filter=pb.Filter(since_unix_nano=-(2**63)), bucket_seconds=1),
                    pb.StatsResponse, key)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stats = _call(channel, "Stats", pb.StatsRequest(
                filter=pb.Filter(since_unix_nano=1, until_unix_nano=2**63 - 1), bucket_seconds=1),
                pb.StatsResponse, key)
            assert stats.total >= 20  # the admin also sees the audit records of its reads
            assert 1 <= len(stats.buckets) <= 1001


def test_a_forged_page_token_is_invalid_argument_not_unknown(receiver: Receiver) -> None:
    digest = RecordFilter().digest()
    raw = b'[18446744073709551615,1,true,"' + digest.encode() + b'"]'
    forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    also = base64.urlsafe_b64encode(orjson.dumps([2**63, 1, True, digest])).decode().rstrip("=")
    with grpc.insecure_channel(receiver.endpoint) as channel:
        for token in (forged, also):
            with pytest.raises(grpc.RpcError) as info:
                _call(channel, "Query", pb.QueryRequest(page_token=token, limit=5),
                      pb.QueryResponse, ADMIN)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "page_token" in (info.value.details() or "")


def _tail(channel: grpc.Channel, key: str) -> Any:
    stub = channel.unary_stream("/sluice.v1.LogQuery/Tail",
                                request_serializer=pb.TailRequest.SerializeToString,
                                response_deserializer=pb.TailResponse.FromString)
    return stub(pb.TailRequest(), metadata=[("x-api-key", key)], timeout=60)


def test_one_key_cannot_take_every_stream_slot(tmp_path: Path) -> None:
    """A user key holds at most its share of the Export/Tail slots (by default a quarter of
    `max_streams`: 2 of 8): with its share taken it is refused, and an admin still gets one."""
    receiver = start_receiver(_settings(tmp_path))
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            alice = [_tail(channel, ALICE) for _ in range(2)]
            for stream in alice:
                assert next(stream) == pb.TailResponse()  # subscribed: the slot is held
            with pytest.raises(grpc.RpcError) as info:
                next(_tail(channel, ALICE))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "share" in (info.value.details() or "")
            admin = _tail(channel, ADMIN)
            assert next(admin) == pb.TailResponse()
            for stream in (*alice, admin):
                stream.cancel()
    finally:
        receiver.stop(5)


def test_query_and_stats_run_a_bounded_number_at_a_time(tmp_path: Path) -> None:
    """Calls are held inside their audit by a sink that hangs (the shipped BlockingSink): past
    a key's share and past `max_queries` they are refused at once; the admitted ones finish
    once the sink lets go."""
    blocking = BlockingSink()
    settings = _settings(tmp_path, max_queries=2, max_queries_per_key=1)
    settings["queue"] = {"max_processing": 2}  # both audits in the sink at once, not in turn
    receiver = start_receiver(settings, extra_sinks=[blocking])
    pool = ThreadPoolExecutor(4)
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            held_alice = pool.submit(_call, channel, "Query", pb.QueryRequest(limit=1),
                                     pb.QueryResponse, ALICE)
            assert blocking.wait_for_waiting(1)
            with pytest.raises(grpc.RpcError) as info:
                _call(channel, "Stats", pb.StatsRequest(), pb.StatsResponse, ALICE)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # alice's share
            held_admin = pool.submit(_call, channel, "Stats", pb.StatsRequest(),
                                     pb.StatsResponse, ADMIN)
            assert blocking.wait_for_waiting(2)
            with pytest.raises(grpc.RpcError) as info:
                _call(channel, "Query", pb.QueryRequest(limit=1), pb.QueryResponse, ADMIN)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # all places taken
            blocking.release()
            assert held_alice.result(timeout=30) is not None
            assert held_admin.result(timeout=30).total >= 0
            # Places are given back: both keys are served again.
            _call(channel, "Query", pb.QueryRequest(limit=1), pb.QueryResponse, ALICE)
            _call(channel, "Query", pb.QueryRequest(limit=1), pb.QueryResponse, ADMIN)
    finally:
        blocking.release()
        pool.shutdown()
        receiver.stop(5)
